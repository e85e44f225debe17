/**
 * The composition root: the one place that builds the daemon's services
 * and hands each its explicit deps. No module-level state anywhere else.
 */
import type { Config } from '../config/config.js';
import type { Logger } from '../log/log.js';
import type { Layout } from '../paths/paths.js';
import type { Store } from '../store/store.js';
import type { Runner } from '../system/runner.js';
import { buildDebianImage } from '../images/build.js';
import { pullOciImage } from '../images/pull.js';
import { builtinDrivers } from '../vmm/drivers.js';
import type { DriverRegistry } from '../vmm/driver.js';
import { SnapshotService } from './snapshot-service.js';
import { realGuestOps } from './guest-ops.js';
import { ImageService } from './image-service.js';
import { guestInstaller } from './guest-install.js';
import { VmService } from './vm-service.js';
import { InspectService } from './inspect-service.js';
import { WorkspaceService } from './workspace-service.js';
import { NetworkService } from './network-service.js';
import { KernelService } from './kernel-service.js';
import { publicKeyFrom } from '../release/verify.js';
import { exportImageBundle, importImageBundle, pullImageBundle } from './image-bundles.js';
import { isBundle } from '../images/bundle.js';

export interface Services {
  images: ImageService;
  vms: VmService;
  inspect: InspectService;
  workspaces: WorkspaceService;
  network: NetworkService;
  snapshots: SnapshotService;
  /** The VMM drivers this build carries. */
  drivers: DriverRegistry;
  kernels: KernelService;
  /** Image bundles: export, and import of a file that is one (src/daemon/image-bundles.ts). */
  bundles: {
    isBundle(path: string): Promise<boolean>;
    export: (p: Parameters<typeof exportImageBundle>[2]) => ReturnType<typeof exportImageBundle>;
    import: (p: Parameters<typeof importImageBundle>[2]) => ReturnType<typeof importImageBundle>;
    pull: (p: Parameters<typeof pullImageBundle>[2], signal?: AbortSignal) => ReturnType<typeof pullImageBundle>;
  };
}

export function composeServices(deps: { store: Store; runner: Runner; layout: Layout; config: Config; log: Logger }): Services {
  const pubkey = deps.config.kernelCatalogPubkey;
  const kernels = new KernelService({
    kernelsDir: deps.layout.kernelsDir,
    catalogUrl: deps.config.kernelCatalogUrl,
    key: () => publicKeyFrom(pubkey ? { path: pubkey, what: `kernel_catalog_pubkey ${pubkey}`, hint: 'fix kernel_catalog_pubkey in config.toml' } : undefined),
    log: deps.log,
    // Images and VMs whose rows name the kernel.
    usersOf: (name) => deps.store.kernelUsers(name),
  });
  const images = new ImageService({
    ...deps,
    buildImage: buildDebianImage,
    pullImage: pullOciImage,
    withKernel: (name, signal, fn) => kernels.using(name, signal, fn),
  });
  const bootTimeoutMs = Number(process.env.BANGER_BOOT_TIMEOUT_S ?? 300) * 1000;
  const network = new NetworkService({
    store: deps.store,
    log: deps.log,
    helperSocket: deps.config.helperSocket,
    configured: deps.config.network,
    dnsPort: deps.config.dnsPort,
  });
  const onStepStart = crashAtStep(process.env.BANGER_TEST_CRASH_AT_STEP, deps.log);
  // The VMM drivers: the daemon reaches QEMU only through them (src/vmm/driver.ts).
  const drivers = builtinDrivers({ runner: deps.runner, log: deps.log });
  const snapshots = new SnapshotService({
    layout: deps.layout,
    runner: deps.runner,
    log: deps.log,
    guest: realGuestOps,
    image: (name) => images.show(name),
    systemOverlayBytes: deps.config.systemOverlayBytes,
    bootTimeoutMs,
  });
  const vms = new VmService({ ...deps, images, network, drivers, snapshots, bootTimeoutMs, onStepStart, kernels });
  images.setInstaller(guestInstaller({ vms, guest: realGuestOps, log: deps.log }));
  const inspect = new InspectService({ ...deps, vms });
  const workspaces = new WorkspaceService({ ...deps, vms });
  const bundles: Services['bundles'] = {
    isBundle: (path) => isBundle(deps.runner.run.bind(deps.runner), path),
    export: (p) => exportImageBundle(images, deps, p),
    import: (p) => importImageBundle(images, deps, p),
    pull: (p, signal) => pullImageBundle(images, deps, p, signal),
  };
  return { images, vms, inspect, workspaces, network, snapshots, drivers, bundles, kernels };
}

/**
 * Test-only fault injection (the smoke scenarios crash_mid_create*): with
 * BANGER_TEST_CRASH_AT_STEP=NAME the daemon SIGKILLs itself as a VM step
 * called NAME (disks, network, config, accel, boot, ready, …) starts, so a
 * restarted daemon's reconcile can be checked against a real mid-create crash.
 */
function crashAtStep(step: string | undefined, log: Logger): ((name: string) => void) | undefined {
  if (!step) return undefined;
  log.warn({ step }, 'BANGER_TEST_CRASH_AT_STEP is set: this daemon kills itself when that step starts');
  return (name) => {
    if (name !== step) return;
    log.warn({ step }, 'fault injection: SIGKILL at step start');
    process.kill(process.pid, 'SIGKILL');
  };
}
