/**
 * banger-helper: the narrow root helper. Serves helperOps (ops.ts) on a Unix
 * socket owned by the daemon's user (mode 0600), so only that user (and
 * root) can reach it. It starts no VM and holds no VM state: stopping or
 * restarting it never touches a running VM.
 *
 *   banger-helper --owner-uid UID [--owner-gid GID] [--socket PATH]
 *                 [--subnet CIDR (default: the first of 10.213.0.0/24, … no host route overlaps)]
 *                 [--bridge NAME] [--log FILE] [--netns NS]
 *   banger-helper --help | --version
 */
import { dirname } from 'node:path';
import { chownSync } from 'node:fs';
import { BangerError, messageOf } from '../errors/errors.js';
import { checkBridgeName, parseSubnet, pickSubnet } from '../model/net.js';
import { currentOp, serveTable } from '../rpc/server.js';
import { installCrashPolicy } from '../system/crash-policy.js';
import { createRunner } from '../system/runner.js';
import { ensureDir } from '../system/fs.js';
import { fileLogger, silentLogger } from '../log/log.js';
import { VERSION } from '../version.js';
import { HostNet } from './host-net.js';
import { HELPER_PROTOCOL, helperHandlers, helperOps } from './ops.js';
import { systemResolver } from './resolver.js';
import { DEFAULT_HELPER_SOCKET, HELPER_USAGE, parseHelperArgs } from './args.js';

export { DEFAULT_HELPER_SOCKET };

async function main(): Promise<void> {
  const args = parseHelperArgs(process.argv.slice(2));
  if (args.kind === 'help') return void process.stdout.write(HELPER_USAGE);
  if (args.kind === 'version') return void process.stdout.write(`${VERSION}\n`);
  const values = args.values;
  if (process.getuid?.() !== 0) throw new BangerError('bad_request', 'banger-helper must run as root', 'start it with sudo, or install it: `sudo banger system install`');
  const uid = Number(values['owner-uid']);
  if (!Number.isInteger(uid) || uid < 0) throw new BangerError('bad_request', '--owner-uid must be the daemon user\'s uid');
  const gid = values['owner-gid'] !== undefined ? Number(values['owner-gid']) : uid;
  const runner = createRunner();
  // Default: the first candidate no route on this host overlaps.
  const subnet = parseSubnet(values.subnet ?? pickSubnet((await runner.run(['ip', '-4', 'route', 'show', 'table', 'all'], { allowFailure: true })).stdout));
  const bridge = checkBridgeName(values.bridge);
  const log = values.log ? fileLogger(values.log) : silentLogger();
  // An error nothing caught: logged with the op id it ran for; an uncaught exception closes the socket and exits 1.
  let closeServer = async (): Promise<void> => undefined;
  installCrashPolicy({ log, currentOp: () => currentOp.getStore(), shutdown: () => closeServer() });
  const net = new HostNet(runner, { bridge, subnet, ownerUid: uid, netns: values.netns });
  // The socket's directory: root's, but the daemon user must be able to traverse it.
  ensureDir(dirname(values.socket), 0o755);
  const server = await serveTable({
    socketPath: values.socket,
    table: helperOps,
    handlers: helperHandlers(net, systemResolver(runner), VERSION),
    log,
    version: VERSION,
    protocol: HELPER_PROTOCOL,
    helloMethod: 'helper.hello',
    owner: { uid, gid },
  });
  chownSync(values.socket, uid, gid);
  closeServer = () => server.close();
  log.info({ socket: values.socket, uid, subnet: subnet.cidr, bridge }, 'banger-helper listening');
  process.stdout.write(`banger-helper: listening on ${values.socket} for uid ${uid} (bridge ${bridge}, subnet ${subnet.cidr})\n`);
  const stop = () => {
    // No child processes and no VM state here: leaving is just closing the socket.
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`banger-helper: ${messageOf(e)}${e instanceof BangerError && e.hint ? `\n  hint: ${e.hint}` : ''}\n`);
  process.exit(2);
});
