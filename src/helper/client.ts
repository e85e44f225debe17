/** The daemon's client of the root helper. */
import { TableClient } from '../rpc/client.js';
import { VERSION } from '../version.js';
import { HELPER_PROTOCOL, helperOps, type HelperOps } from './ops.js';

export type HelperClient = TableClient<HelperOps>;

export function connectHelper(socketPath: string): Promise<HelperClient> {
  return TableClient.open(socketPath, { table: helperOps, helloMethod: 'helper.hello', protocol: HELPER_PROTOCOL, client: `bangerd ${VERSION}`, peer: 'root helper' });
}
