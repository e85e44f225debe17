/**
 * banger-helper's command line: `--help` and `--version` answer and exit 0
 * (before the root check: anyone may ask); anything else unknown is a
 * bad_request that points at `--help`.
 */
import { parseArgs } from 'node:util';
import { BangerError, messageOf } from '../errors/errors.js';
import { DEFAULT_BRIDGE } from '../model/net.js';

export const DEFAULT_HELPER_SOCKET = '/run/banger/helper.sock';

export const HELPER_USAGE = `usage: banger-helper --owner-uid UID [options]

The root helper of banger: makes the bridge, taps and NAT rules the daemon of
user UID asks for, on a Unix socket only that user (and root) can reach.
Runs as root; normally started by systemd (\`sudo banger system install\`).

  --owner-uid UID   the daemon's user (required)
  --owner-gid GID   its group (default: UID)
  --socket PATH     the socket (default ${DEFAULT_HELPER_SOCKET})
  --subnet CIDR     bridge subnet (default: the first of 10.213.0.0/24, … that no host route overlaps)
  --bridge NAME     bridge name (default ${DEFAULT_BRIDGE})
  --log FILE        log file
  --netns NS        run every command in this network namespace (tests)
  -h, --help        print this text
  --version         print the version
`;

export interface HelperOptions {
  'owner-uid'?: string;
  'owner-gid'?: string;
  socket: string;
  subnet?: string;
  bridge: string;
  log?: string;
  netns?: string;
}

export type HelperArgs = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; values: HelperOptions };

export function parseHelperArgs(args: string[]): HelperArgs {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
        'owner-uid': { type: 'string' },
        'owner-gid': { type: 'string' },
        socket: { type: 'string', default: DEFAULT_HELPER_SOCKET },
        subnet: { type: 'string' },
        bridge: { type: 'string', default: DEFAULT_BRIDGE },
        log: { type: 'string' },
        netns: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new BangerError('bad_request', messageOf(e), 'see `banger-helper --help`');
  }
  if (values.help) return { kind: 'help' };
  if (values.version) return { kind: 'version' };
  return {
    kind: 'run',
    values: { 'owner-uid': values['owner-uid'], 'owner-gid': values['owner-gid'], socket: values.socket, subnet: values.subnet, bridge: values.bridge, log: values.log, netns: values.netns },
  };
}
