/** Maps the RPC method table onto the services. Handlers return data; the CLI renders it. */
import type { Connection, Handlers } from '../rpc/server.js';
import type { Layout } from '../paths/paths.js';
import { PROTOCOL_VERSION } from '../rpc/methods.js';
import { VERSION } from '../version.js';
import { BangerError } from '../errors/errors.js';
import { DEFAULT_IMAGE, recipeOf } from './image-service.js';
import type { Services } from './compose.js';

/** A signal that fires when the client goes away (its work is then pointless). */
function abortOnClose(conn: Connection): AbortSignal {
  const abort = new AbortController();
  conn.onClose(() => abort.abort());
  return abort.signal;
}

export function makeHandlers(s: Services, ctx: { layout: Layout; startedAt: number; requestStop: () => void }): Handlers {
  return {
    'rpc.hello': async () => ({ protocol: PROTOCOL_VERSION, version: VERSION, pid: process.pid }),
    'daemon.status': async () => ({
      pid: process.pid,
      version: VERSION,
      protocol: PROTOCOL_VERSION,
      socket: ctx.layout.socketPath,
      stateDir: ctx.layout.stateDir,
      logFile: ctx.layout.daemonLog,
      uptimeSeconds: Math.round((Date.now() - ctx.startedAt) / 1000),
      vms: s.vms.count(),
    }),
    'daemon.stop': async () => {
      setTimeout(ctx.requestStop, 50);
      return { stopping: true };
    },
    'vm.create': async (p, rc) => s.vms.create(p, rc.connection, rc.progress),
    'vm.start': async (p, rc) => s.vms.start(p.name, rc.progress),
    'vm.stop': async (p) => s.vms.stop(p.name),
    'vm.restart': async (p, rc) => s.vms.restart(p.name, rc.progress),
    'vm.kill': async (p) => s.vms.kill(p.name, p.signal),
    'vm.prune': async (p) => {
      const candidates = s.vms.pruneCandidates().map((v) => v.name);
      if (p.dryRun) return { removed: [], skipped: [], candidates };
      return { ...(await s.vms.prune(p.names)), candidates };
    },
    'vm.set': async (p) => s.vms.set(p.name, { vcpu: p.vcpu, memoryMib: p.memoryMib, diskBytes: p.diskBytes }),
    'vm.list': async () => s.vms.list(),
    'vm.show': async (p) => s.vms.show(p.name),
    'vm.delete': async (p) => {
      await s.vms.delete(p.name, p.force === true);
      return { deleted: p.name };
    },
    'vm.logs': async (p) => s.inspect.logs(p.name, p.offset ?? 0),
    'vm.stats': async (p) => s.inspect.stats(p.name),
    'vm.ports': async (p) => s.inspect.ports(p.name),
    'vm.ssh_target': async (p) => s.vms.sshTarget(p.name),
    'vm.workspace.prepare': async (p, rc) => s.workspaces.prepare(p, rc.progress, abortOnClose(rc.connection)),
    'vm.workspace.export': async (p, rc) => s.workspaces.export(p.name, p.baseCommit ?? null, rc.sendChunk, abortOnClose(rc.connection)),
    'vm.workspace.status': async (p) => s.workspaces.status(p.name),
    'image.build': async (p, rc) =>
      s.images.build(p.name ?? DEFAULT_IMAGE, {
        force: p.force,
        tuned: p.tuned,
        recipe: p.suite !== undefined || p.minimal !== undefined || p.packages !== undefined ? recipeOf(p) : undefined,
        from: p.from,
        onProgress: rc.progress,
        signal: abortOnClose(rc.connection),
      }),
    'network.show': async () => s.network.show(),
    'image.pull': async (p, rc) =>
      /^https?:\/\//i.test(p.ref)
        ? s.bundles.pull({ url: p.ref, name: p.name, force: p.force, pubkey: p.pubkey, ...noKernel(p.kernel) }, abortOnClose(rc.connection))
        : s.images.pull(p, { onProgress: rc.progress, signal: abortOnClose(rc.connection) }),
    'image.import': async (p, rc) =>
      (await s.bundles.isBundle(p.path))
        ? s.bundles.import({ path: p.path, name: p.name, force: p.force, pubkey: p.pubkey, ...noKernel(p.kernel) })
        : s.images.pull({ ref: p.path, archive: p.path, name: p.name, platform: p.platform, force: p.force, kernel: p.kernel }, { onProgress: rc.progress, signal: abortOnClose(rc.connection) }),
    'image.export': async (p) => s.bundles.export(p),
    'kernel.list': async () => s.kernels.list(),
    'kernel.catalog': async (_p, rc) => s.kernels.catalog(abortOnClose(rc.connection)),
    'kernel.show': async (p) => s.kernels.show(p.name),
    'kernel.pull': async (p, rc) => s.kernels.pull(p.name, { force: p.force, signal: abortOnClose(rc.connection) }),
    'kernel.delete': async (p) => s.kernels.delete(p.name),
    'image.prune': async () => s.images.pruneBlobs(),
    'image.list': async () => s.images.list(),
    'vm.commit': async (p, rc) => s.vms.commit(p.name, p.image, { force: p.force }, rc.progress),
    'image.show': async (p) => s.vms.showImage(p.name),
    'image.snapshot': async (p, rc) =>
      s.vms.snapshotImage(p.name, { vcpu: p.vcpu, memoryMib: p.memoryMib }, rc.progress, abortOnClose(rc.connection)),
    'image.delete': async (p) => {
      // Its snapshots go with its directory; a template being made for it is stopped first.
      await s.snapshots.abortBuilds(p.name, `image ${p.name} is being deleted`);
      await s.images.delete(p.name);
      return { deleted: p.name };
    },
  };
}

/** A bundle carries its own kernel: a kernel asked for with one is refused, not ignored. */
function noKernel(kernel: string | undefined): Record<string, never> {
  if (kernel !== undefined) throw new BangerError('bad_request', 'an image bundle carries its own kernel', 'leave out the kernel, or pull an OCI image with it', { field: 'kernel' });
  return {};
}
