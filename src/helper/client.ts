/** The daemon's client of the root helper. */
import { resultsOf, TableClient } from '../rpc/client.js';
import { VERSION } from '../version.js';
import { HELPER_PROTOCOL, helperOps, type HelperInfo, type HelperOps } from './ops.js';

export type HelperClient = TableClient<HelperOps> & { hello: HelperInfo };

/** Connects and says hello; the helper's answer (bridge, subnet, owner uid) is `client.hello`. */
export async function connectHelper(socketPath: string): Promise<HelperClient> {
  const c = await TableClient.open(socketPath, { results: resultsOf(helperOps), helloMethod: 'helper.hello', protocol: HELPER_PROTOCOL, client: `bangerd ${VERSION}`, peer: 'root helper' });
  return c as HelperClient;
}
