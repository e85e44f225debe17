/**
 * VMs: create, start, stop, restart, kill, delete, prune, set, and
 * reconcile on daemon start. The VMM is reached only through its driver
 * (src/vmm/driver.ts): it outlives the daemon (QEMU: -daemonize, its own
 * session) and is identified afterwards by the handle in runtime.json, which
 * only its driver reads (QEMU: pid AND start time, so a reused pid is never
 * signalled). Operations on one VM are serialised by its lock; different VMs
 * proceed in parallel.
 */
import { isAbsolute, join, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { availableParallelism, totalmem } from 'node:os';
import { BangerError, messageOf } from '../errors/errors.js';
import type { Accel, ImageRecord, ImageView, NetworkMode, ProgressEvent, SnapshotInfo, SshTarget as GuestSshTarget, Vmm, VmRecord, VmRuntime, VmView } from '../model/types.js';
import { generateVmId, generateVmName, validateImageName, validateVmName } from '../model/names.js';
import { formatSize } from '../model/sizes.js';
import { DISK_SIZE_HINT, diskSizeProblem } from '../model/limits.js';
import { imagePaths, vmPaths, type Layout, type VmPaths } from '../paths/paths.js';
import { invalidRowError, type InvalidRow, type Store } from '../store/store.js';
import type { Runner } from '../system/runner.js';
import { ensureDir } from '../system/fs.js';
import type { Logger } from '../log/log.js';
import { MIN_MEMORY_MIB, type Config } from '../config/config.js';
import { resolveAccel, type AccelChoice } from '../vmm/accel.js';
import { SnapshotUnusable, type DriverRegistry, type VmmDriver, type VmmHandle } from '../vmm/driver.js';
import { lookupHost, removeHost } from '../guest/known-hosts.js';
import { createWorkDisk, growWorkDisk } from '../guest/work-disk.js';
import { KILL_SIGNALS, type VmSshTarget as SshTarget, type VmCreateResult } from '../rpc/methods.js';
import type { Connection } from '../rpc/server.js';
import { DEFAULT_IMAGE, describeSource, type ImageService } from './image-service.js';
import { commitVmImage } from '../images/commit.js';
import type { NetworkService } from './network-service.js';
import { KeyedMutex } from './locks.js';
import { readRuntime, removeRuntime, type RuntimeRecord } from './runtime-file.js';
import { runSteps, type Step } from './steps.js';
import { BootStalled, bootSteps, VMM_NAMES, type BootKernel } from './vm-boot.js';
import { checkKernelName, KERNEL_FILES, type LocalKernel } from '../images/kernels.js';
import { forceStop, gracefulStop, type BootedVmm, type StopReport } from './vm-stop.js';
import { realGuestOps, type GuestOps } from './guest-ops.js';
import { removeTreeUnder } from './safe-remove.js';
import type { CloneSource, SnapshotService } from './snapshot-service.js';

export interface VmServiceDeps {
  store: Store;
  runner: Runner;
  layout: Layout;
  config: Config;
  log: Logger;
  images: ImageService;
  network: NetworkService;
  /** The VMM drivers (src/vmm/drivers.ts); a VM's `vmm` picks its driver. */
  drivers: DriverRegistry;
  /** Guest agent and SSH (readiness, stop chain); default the real ones (tests pass fakes). */
  guest?: GuestOps;
  /** Boot deadline (agent + SSH), ms. */
  bootTimeoutMs: number;
  /** A cold boot whose console is silent this long before the agent answers is booted again once (vm-boot.ts BOOT_STALL_MS). */
  bootStallMs?: number;
  /** Warm clones (snapshots of booted guests); absent: every boot is cold. */
  snapshots?: SnapshotService;
  /** Test-only fault injection, called as each create/start step begins (compose.ts: BANGER_TEST_CRASH_AT_STEP). */
  onStepStart?: (step: string) => void;
  /** Catalog kernels (`vm create --kernel`): the kernel, pulled first when it is missing (once, however many ask). */
  kernels?: { ensure: (name: string, signal?: AbortSignal) => Promise<LocalKernel> };
}

export interface CreateParams {
  name?: string;
  image?: string;
  vcpu?: number;
  memoryMib?: number;
  diskBytes?: number;
  ephemeral?: boolean;
  /** false: create the VM's disks but do not boot it (vm create --no-start). */
  start?: boolean;
  /** Let the guest reach the network. */
  nat?: boolean;
  /** A catalog kernel to boot instead of the image's (pulled when missing). */
  kernel?: string;
  /** user or bridge; default: config `network` (auto: bridge when the root helper answers). */
  network?: NetworkMode;
  /** Boot cold even when a current snapshot of this shape exists. */
  cold?: boolean;
  /**
   * Internal (no RPC param carries it): raw disks attached after the work
   * disk, for the image pipeline's build VM. Files under the build dir only;
   * such a VM always boots cold.
   */
  extraDisks?: string[];
}

export interface SetParams {
  vcpu?: number;
  memoryMib?: number;
  diskBytes?: number;
}

export type KillSignal = (typeof KILL_SIGNALS)[number];

export { MIN_DISK_BYTES, MAX_DISK_BYTES } from '../model/limits.js';

type Progress = (ev: ProgressEvent) => void;
const noProgress: Progress = () => undefined;

/** A VM's runtime.json, read back with its driver and the driver's parsed handle. */
interface Booted extends BootedVmm {
  record: RuntimeRecord;
}

export class VmService {
  private readonly locks = new KeyedMutex();
  private readonly reservedPorts = new Set<number>();
  /** Invalid rows already logged by list (a client polling vm list must not grow the log). */
  private readonly warnedRows = new Set<number>();
  /** One accelerator probe per VMM per daemon. */
  private readonly accelChoice = new Map<Vmm, Promise<AccelChoice>>();
  private readonly guest: GuestOps;

  constructor(private readonly deps: VmServiceDeps) {
    this.guest = deps.guest ?? realGuestOps;
  }

  // ---- queries -------------------------------------------------------

  /**
   * The valid VMs. A row that fails validation (src/store/store.ts) is
   * skipped with a warning in the log, once per row per daemon; `vm show`
   * of its name is a `conflict` naming the row; reconcile leaves it and its
   * files alone. Nothing is ever built from such a row.
   */
  list(): VmView[] {
    const { valid, invalid } = this.deps.store.scanVms();
    for (const row of invalid) {
      if (this.warnedRows.has(row.rowid)) continue;
      this.warnedRows.add(row.rowid);
      this.warnInvalid(row, 'list');
    }
    return valid.map((vm) => this.view(vm));
  }

  show(name: string): VmView {
    return this.view(this.find(name));
  }

  /** A VM as shown, with its VMM (driver + handle) when that is alive: for read-only inspection (vm stats, vm ports). */
  booted(name: string): { vm: VmView; vmm: BootedVmm | null } {
    const vm = this.find(name);
    const b = this.liveBooted(vm);
    return { vm: this.viewWith(vm, b ? viewRuntime(b) : null), vmm: b };
  }

  sshTarget(name: string): SshTarget {
    const vm = this.find(name);
    const rt = this.liveRuntime(vm);
    if (vm.state !== 'running' || !rt) throw notRunning(vm);
    return this.targetFor(vm, rt);
  }

  /**
   * Runs fn under the VM's lock while it is running (a stop or delete waits
   * for it), with its SSH target.
   */
  async withRunning<T>(name: string, fn: (vm: VmRecord, target: SshTarget) => Promise<T>): Promise<T> {
    const vm0 = this.find(name);
    return this.locks.run(vm0.id, async () => {
      const vm = this.current(vm0);
      const rt = this.liveRuntime(vm);
      if (vm.state !== 'running' || !rt) throw notRunning(vm);
      return fn(vm, this.targetFor(vm, rt));
    });
  }

  count(): number {
    return this.deps.store.listVms().length;
  }

  // ---- create --------------------------------------------------------

  async create(params: CreateParams, conn: Connection, progress: Progress): Promise<VmCreateResult> {
    const { config, store } = this.deps;
    const vcpu = params.vcpu ?? config.vcpu;
    const memoryMib = params.memoryMib ?? config.memoryMib;
    const diskBytes = params.diskBytes ?? config.diskSizeBytes;
    const imageName = params.image ?? DEFAULT_IMAGE;
    // Everything is validated before the first side effect.
    this.validateResources(
      { vcpu, memoryMib, diskBytes },
      { vcpu: params.vcpu === undefined, memoryMib: params.memoryMib === undefined, diskBytes: params.diskBytes === undefined },
    );
    validateImageName(imageName, 'image');
    const kernel = params.kernel === undefined ? null : checkKernelName(params.kernel, 'kernel');
    if (kernel !== null) this.requireKernels();
    const driver = this.deps.drivers(config.vmm);
    if (!driver) {
      throw new BangerError('unavailable', `vmm = "${config.vmm}" in config.toml: only the qemu driver is available in this version`, 'set vmm = "qemu" (or remove the key)');
    }
    if (imageName !== DEFAULT_IMAGE) this.deps.images.show(imageName); // not_found before any side effect
    for (const d of params.extraDisks ?? []) {
      if (!isAbsolute(d) || !d.startsWith(this.deps.layout.buildDir + sep)) throw new BangerError('internal', `extra disk ${d} is not under ${this.deps.layout.buildDir}`);
    }
    const name = params.name !== undefined ? validateVmName(params.name, 'name') : this.uniqueName();
    const start = params.start !== false;
    if (!start && params.ephemeral) throw new BangerError('bad_request', 'an ephemeral VM (deleted when its client goes) must be started', 'create it started, or keep it', { field: 'ephemeral' });
    const { mode: network } = await this.deps.network.resolveMode(params.network);
    const can = driver.capabilities;
    if (network === 'user' ? !can.userNetworking : !can.tapNetworking) {
      throw new BangerError('unavailable', `the ${driver.vmm} driver has no ${network} networking`, `pick the other network mode`, { field: 'network' });
    }

    const now = new Date().toISOString();
    const vm: VmRecord = {
      id: generateVmId(),
      name,
      image: imageName,
      vcpu,
      memoryMib,
      systemOverlayBytes: config.systemOverlayBytes,
      diskBytes,
      vmm: driver.vmm,
      network,
      state: 'creating',
      ephemeral: params.ephemeral === true,
      nat: params.nat === true,
      ip: null,
      kernel,
      lastError: null,
      createdAt: now,
      updatedAt: now,
    };
    // UNIQUE constraints settle races: the name (already_exists), a bridge address (taken meanwhile: next one).
    for (let attempt = 0; ; attempt++) {
      if (network === 'bridge') vm.ip = await this.deps.network.allocateIp();
      try {
        store.insertVm(vm);
        break;
      } catch (e) {
        if (!(e instanceof BangerError && e.code === 'conflict' && attempt < 20)) throw e;
      }
    }

    const abort = new AbortController();
    if (vm.ephemeral) {
      conn.onClose(() => {
        abort.abort();
        if (!store.findVmById(vm.id)) return; // the client deleted it already
        this.deps.log.info({ vm: vm.name }, 'ephemeral VM: client went away, removing');
        void this.delete(vm.name, true).catch((e: unknown) => {
          if (!(e instanceof BangerError && e.code === 'not_found')) {
            this.deps.log.error({ vm: vm.name, err: messageOf(e) }, 'removing ephemeral VM failed');
          }
        });
      });
    }

    const started = Date.now();
    const p = { ...vmPaths(this.deps.layout, vm.id), ...(params.extraDisks?.length ? { extraDisks: params.extraDisks } : {}) };
    let clonedFrom: string | null = null;
    try {
      const rt = await this.locks.run(vm.id, async () => {
        const hooks = this.stepHooks(vm, progress, abort.signal);
        await runSteps(
          [
            {
              name: 'image',
              message: `image ${vm.image}`,
              run: async () => void (await this.deps.images.ensure(vm.image, { onProgress: progress, signal: abort.signal })),
            },
            // The row names the kernel from here on, so a `kernel delete` meanwhile is refused.
            ...(vm.kernel === null
              ? []
              : [{ name: 'kernel', message: `kernel ${vm.kernel} (from the kernel catalog; pulled when missing)`, run: async () => void (await this.requireKernels().ensure(vm.kernel!, abort.signal)) }]),
          ],
          hooks,
        );
        if (!start) {
          await runSteps([this.disksStep(vm, p, driver)], hooks);
          store.setVmState(vm.id, 'stopped');
          return null;
        }
        // A VM with a kernel of its own boots cold: the image's snapshots booted the image's kernel.
        const clone = params.cold === true || params.extraDisks?.length || !config.warmClones || vm.kernel !== null ? undefined : await this.pickClone(vm, driver);
        try {
          const booted = await this.createBoot(vm, p, driver, clone, progress, abort.signal);
          clonedFrom = clone?.key ?? null;
          return booted;
        } catch (e) {
          if (e instanceof BootStalled && !clone) {
            // The boot's steps rolled back (no QEMU, no disks); the same boot again usually passes.
            progress({ stage: 'boot', level: 'warn', message: `${e.message}; booting once more` });
            this.deps.log.warn({ vm: vm.name }, 'cold boot stalled early; retrying once');
            return await this.createBoot(vm, p, driver, undefined, progress, abort.signal);
          }
          if (!(clone && e instanceof SnapshotUnusable)) throw e;
          // Never a broken VM: the snapshot goes, this VM boots cold (and a new snapshot is made after).
          progress({ stage: 'boot', level: 'warn', message: `snapshot ${clone.key} of ${vm.image} is unusable (${e.message}); booting cold` });
          clone.release();
          this.deps.snapshots?.drop(vm.image, clone.key, e.message);
          return await this.createBoot(vm, p, driver, undefined, progress, abort.signal);
        } finally {
          clone?.release();
        }
      });
      const fresh = this.find(vm.name);
      return {
        vm: this.viewWith(fresh, rt ? viewRuntime(rt) : null),
        ssh: rt ? this.targetFor(fresh, rt.record) : null,
        bootMs: Date.now() - started,
        clonedFrom,
      };
    } catch (e) {
      // Nothing is left behind by a failed create: the steps rolled back, the row goes too.
      store.deleteVm(vm.id);
      throw e;
    }
  }

  /** The disks step of a create: the root disk (over the image, or a copy of the snapshot's) and the work disk. */
  private disksStep(vm: VmRecord, p: VmPaths, driver: VmmDriver, clone?: CloneSource): Step {
    const img = imagePaths(this.deps.layout, vm.image);
    return {
      name: 'disks',
      message: `root overlay (${formatSize(vm.systemOverlayBytes)}${clone ? `, from snapshot ${clone.key}` : ''}) and work disk (${formatSize(vm.diskBytes)})`,
      run: async () => {
        ensureDir(p.dir);
        if (clone) clone.copyRoot(p.overlay);
        await driver.prepareDisks({ files: p, baseImage: img.rootfs, rootBytes: vm.systemOverlayBytes, ...(clone ? { fromSnapshot: true } : {}) });
        await createWorkDisk(this.deps.runner, p.workDisk, vm.diskBytes);
      },
      rollback: async () => this.removeFiles(vm, p),
    };
  }

  /** Disks and boot of a new VM; a cold boot then has its shape's snapshot made in the background. */
  private async createBoot(vm: VmRecord, p: VmPaths, driver: VmmDriver, clone: CloneSource | undefined, progress: Progress, signal: AbortSignal): Promise<Booted> {
    const boot = this.bootStepsFor(vm, p, progress, signal, clone);
    await runSteps([this.disksStep(vm, p, driver, clone), ...boot.steps], this.stepHooks(vm, progress, signal));
    this.deps.store.setVmState(vm.id, 'running');
    const result = { ...boot.result(), driver };
    if (!clone && this.deps.config.warmClones && vm.kernel === null) this.deps.snapshots?.scheduleBuild(vm.image, driver, result.record.accel, vm);
    return result;
  }

  /** The current snapshot of this VM's image and shape, or undefined (why is logged). */
  private async pickClone(vm: VmRecord, driver: VmmDriver): Promise<CloneSource | undefined> {
    if (!this.deps.snapshots) return undefined;
    const img = imagePaths(this.deps.layout, vm.image);
    const { accel } = await this.chooseAccel(driver, this.deps.config.accel, img.kernel);
    const picked = await this.deps.snapshots.select(vm, driver, accel);
    if ('reason' in picked) {
      this.deps.log.info({ vm: vm.name, why: picked.reason }, 'cold boot');
      return undefined;
    }
    return picked;
  }

  // ---- snapshots -----------------------------------------------------

  /** An image with its warm-clone snapshots (each marked current or stale for this daemon's VMM). */
  async showImage(name: string): Promise<ImageView> {
    const image = this.deps.images.show(name);
    const driver = this.deps.drivers(this.deps.config.vmm);
    const snapshots = driver && this.deps.snapshots ? await this.deps.snapshots.list(name, driver) : [];
    return { ...image, snapshots };
  }

  /** `image snapshot`: makes the snapshot of this image and shape now (default shape: config's). */
  async snapshotImage(name: string, shape: { vcpu?: number; memoryMib?: number }, progress: Progress, signal: AbortSignal): Promise<SnapshotInfo> {
    const { config } = this.deps;
    const vcpu = shape.vcpu ?? config.vcpu;
    const memoryMib = shape.memoryMib ?? config.memoryMib;
    this.validateResources({ vcpu, memoryMib, diskBytes: config.diskSizeBytes }, { vcpu: shape.vcpu === undefined, memoryMib: shape.memoryMib === undefined, diskBytes: true });
    validateImageName(name, 'name');
    const driver = this.requireDriver(config.vmm);
    if (!driver.capabilities.snapshots || !this.deps.snapshots) {
      throw new BangerError('unavailable', `the ${driver.vmm} driver cannot snapshot VMs`, 'VMs of this VMM always boot cold');
    }
    await this.deps.images.ensure(name, { onProgress: progress, signal });
    const { accel } = await this.chooseAccel(driver, config.accel, imagePaths(this.deps.layout, name).kernel);
    return this.deps.snapshots.build(name, driver, accel, { vcpu, memoryMib }, progress, signal);
  }

  // ---- start / stop / restart / kill --------------------------------

  /** Boots a stopped VM. The boot never depends on the request: a client that goes away does not stop it. */
  async start(name: string, progress: Progress = noProgress): Promise<VmCreateResult> {
    const vm0 = this.find(name);
    return this.locks.run(vm0.id, async () => {
      const vm = this.current(vm0);
      const started = Date.now();
      const live = this.liveRuntime(vm);
      if (vm.state === 'running' && live) {
        progress({ stage: 'start', message: `${vm.name} is already running` });
        return { vm: this.view(vm), ssh: this.targetFor(vm, live), bootMs: 0 };
      }
      const rt = await this.bootStopped(vm, progress);
      const fresh = this.current(vm);
      return { vm: this.viewWith(fresh, viewRuntime(rt)), ssh: this.targetFor(fresh, rt.record), bootMs: Date.now() - started };
    });
  }

  async stop(name: string): Promise<{ vm: VmView; report: StopReport }> {
    const vm0 = this.find(name);
    return this.locks.run(vm0.id, async () => {
      const vm = this.current(vm0);
      const report = await this.stopLocked(vm);
      return { vm: this.view(this.current(vm)), report };
    });
  }

  /** A real reboot: the guest stops (keeping its writes) and boots again; its boot_id changes. */
  async restart(name: string, progress: Progress = noProgress): Promise<VmCreateResult> {
    const vm0 = this.find(name);
    return this.locks.run(vm0.id, async () => {
      const vm = this.current(vm0);
      const started = Date.now();
      progress({ stage: 'stop', message: `stopping ${vm.name}` });
      await this.stopLocked(vm);
      const rt = await this.bootStopped(this.current(vm), progress);
      const fresh = this.current(vm);
      return { vm: this.viewWith(fresh, viewRuntime(rt)), ssh: this.targetFor(fresh, rt.record), bootMs: Date.now() - started };
    });
  }

  /** Forceful: signals the VMM (default SIGKILL); the VM ends `stopped` with its resources released. */
  async kill(name: string, signal: KillSignal = 'KILL'): Promise<VmView> {
    const vm0 = this.find(name);
    return this.locks.run(vm0.id, async () => {
      const vm = this.current(vm0);
      const p = vmPaths(this.deps.layout, vm.id);
      const b = this.liveBooted(vm);
      if (b) {
        this.deps.log.info({ vm: vm.name, signal }, 'kill');
        b.driver.signal(b.handle, `SIG${signal}`);
        if (!(await b.driver.waitForExit(b.handle, 10_000))) {
          this.deps.log.warn({ vm: vm.name, signal }, `${VMM_NAMES[b.driver.vmm]} survived SIG${signal} for 10 s; SIGKILL`);
          await forceStop(this.deps.log, vm.name, b, 'SIGKILL');
        }
      }
      this.releaseRuntime(p);
      await this.deps.network.detach(vm);
      this.deps.store.setVmState(vm.id, 'stopped');
      return this.view(this.current(vm));
    });
  }

  // ---- delete / prune / set -----------------------------------------

  async delete(name: string, force = false): Promise<void> {
    const vm0 = this.find(name);
    await this.locks.run(vm0.id, async () => {
      const vm = this.current(vm0);
      const p = vmPaths(this.deps.layout, vm.id);
      const b = this.liveBooted(vm);
      if (b && !force) {
        throw new BangerError('conflict', `VM ${vm.name} is running`, `stop it first (\`banger vm stop ${vm.name}\`), or delete it anyway with \`banger vm delete -f ${vm.name}\``);
      }
      this.deps.store.setVmState(vm.id, 'deleting');
      if (b) await forceStop(this.deps.log, vm.name, b); // its disks are about to go: no need to be gentle
      await this.deps.network.detach(vm);
      this.removeFiles(vm, p);
      this.deps.store.deleteVm(vm.id);
      this.deps.log.info({ vm: vm.name }, 'vm deleted');
    });
  }

  /**
   * VMs prune would remove: stopped (or failed) ones with no live VMM. A VM
   * being created or started is not a candidate, and delete re-checks
   * liveness under the VM's lock, so a peer's VM that comes up meanwhile is kept.
   */
  pruneCandidates(): VmView[] {
    return this.list().filter((v) => (v.state === 'stopped' || v.state === 'error') && v.runtime === null);
  }

  /** Deletes the named VMs (or all prune candidates) that are still not running; a running one is skipped. */
  async prune(names?: string[]): Promise<{ removed: string[]; skipped: string[] }> {
    const wanted = names ?? this.pruneCandidates().map((v) => v.name);
    const removed: string[] = [];
    const skipped: string[] = [];
    for (const name of wanted) {
      try {
        await this.delete(name, false);
        removed.push(name);
      } catch (e) {
        if (e instanceof BangerError && (e.code === 'conflict' || e.code === 'not_found')) skipped.push(name);
        else throw e;
      }
    }
    return { removed, skipped };
  }

  async set(name: string, params: SetParams): Promise<VmView> {
    const vm0 = this.find(name);
    return this.locks.run(vm0.id, async () => {
      const vm = this.current(vm0);
      if (this.liveRuntime(vm)) {
        throw new BangerError('conflict', `VM ${vm.name} is running; vm set changes a stopped VM`, `stop it first: \`banger vm stop ${vm.name}\``);
      }
      const next = {
        vcpu: params.vcpu ?? vm.vcpu,
        memoryMib: params.memoryMib ?? vm.memoryMib,
        diskBytes: params.diskBytes ?? vm.diskBytes,
      };
      this.validateResources(next);
      if (next.diskBytes !== vm.diskBytes) {
        // Refuses a shrink (bad_request naming --disk-size) before anything changes.
        await growWorkDisk(this.deps.runner, vmPaths(this.deps.layout, vm.id).workDisk, next.diskBytes);
      }
      this.deps.store.updateVmResources(vm.id, next);
      return this.view(this.current(vm));
    });
  }

  // ---- commit --------------------------------------------------------

  /**
   * A stopped VM's root disk becomes image `imageName` (src/images/commit.ts):
   * its work disk stays out, per-VM identity is scrubbed, its image's kernel
   * comes along. The VM is kept and untouched.
   */
  async commit(name: string, imageName: string, opts: { force?: boolean }, progress: Progress): Promise<ImageRecord> {
    validateImageName(imageName, 'image');
    const vm0 = this.find(name);
    return this.locks.run(vm0.id, async () => {
      const vm = this.current(vm0);
      if (this.liveRuntime(vm) || vm.state !== 'stopped') {
        throw new BangerError('conflict', `VM ${vm.name} is ${vm.state}; vm commit takes a stopped VM`, `stop it first: \`banger vm stop ${vm.name}\``);
      }
      const driver = this.deps.drivers(vm.vmm);
      if (!driver) throw new BangerError('unavailable', `VM ${vm.name} runs on ${vm.vmm}, which this build does not carry`);
      const base = this.deps.images.show(vm.image);
      // The kernel the VM boots comes along: its image's, or its own catalog kernel.
      const own = vm.kernel === null ? undefined : await this.requireKernels().ensure(vm.kernel);
      const kernelVersion = own ? own.version : base.kernelVersion;
      const files = vmPaths(this.deps.layout, vm.id);
      return this.deps.images.create(imageName, opts.force === true, async (paths, workDir) => {
        const r = await commitVmImage(
          { runner: this.deps.runner, log: (m) => this.deps.log.info({ vm: vm.name, image: imageName }, m) },
          {
            name: imageName,
            vmRef: `${vm.name} (image ${vm.image})`,
            baseDir: own ? own.dir : imagePaths(this.deps.layout, vm.image).dir,
            kernelVersion,
            ...(own ? { kernel: own.name } : base.kernel ? { kernel: base.kernel } : {}),
            packages: base.packages,
            outDir: paths.dir,
            workDir,
            exportRoot: (out) => driver.exportRootDisk(files, out),
            onProgress: (stage, message) => progress({ stage: `image:${stage}`, message }),
          },
        );
        return {
          name: imageName,
          source: describeSource('vm', r.sourceRef),
          sourceKind: 'vm',
          sourceRef: r.sourceRef,
          kernelVersion,
          kernel: own ? own.name : base.kernel,
          rootfsBytes: r.rootfsBytes,
          packages: base.packages,
          createdAt: new Date().toISOString(),
        };
      });
    });
  }

  // ---- reconcile -----------------------------------------------------

  /**
   * Daemon start: adopt VMs whose VMM is alive (its driver says so from the
   * handle in runtime.json: QEMU's same pid AND start time), demote dead ones
   * to stopped, and roll back anything caught mid-create, mid-delete, or
   * ephemeral (its client cannot have survived the restart). A stopped VM
   * with a live VMM was caught mid-start: that start is rolled back.
   * runtime.json written before the driver split is read too (runtime-file.ts).
   */
  async reconcile(): Promise<void> {
    const { valid, invalid } = this.deps.store.scanVms();
    // A row that fails validation is not acted on: no path is built from it, its files and row stay.
    for (const row of invalid) this.warnInvalid(row, 'reconcile');
    for (const vm of valid) {
      const p = vmPaths(this.deps.layout, vm.id);
      const b = this.readBooted(p);
      const alive = b !== undefined && b.driver.isAlive(b.handle);
      // A VMM that started but never made it into runtime.json (the daemon died in between).
      const driver = this.deps.drivers(vm.vmm);
      const orphanHandle = alive || !driver ? undefined : driver.findOrphan(p);
      const orphan: BootedVmm | undefined = driver && orphanHandle ? { driver, handle: orphanHandle } : undefined;
      const log = this.deps.log.child({ vm: vm.name, state: vm.state });
      if (vm.state === 'creating' || vm.state === 'deleting' || vm.ephemeral) {
        log.info({ ephemeral: vm.ephemeral, orphan: orphan && pidOf(orphan) }, 'reconcile: rolling back');
        if (b && alive) await forceStop(this.deps.log, vm.name, b);
        else if (orphan) await forceStop(this.deps.log, vm.name, orphan);
        await this.deps.network.detach(vm);
        this.removeFiles(vm, p);
        this.deps.store.deleteVm(vm.id);
      } else if (vm.state === 'running' && alive) {
        log.info({ pid: pidOf(b!) }, 'reconcile: adopted');
      } else if (alive || orphan) {
        const vmm = alive ? b! : orphan!;
        log.info({ pid: pidOf(vmm) }, 'reconcile: a start was interrupted; stopping its VMM');
        await forceStop(this.deps.log, vm.name, vmm);
        this.releaseRuntime(p);
        if (vm.state === 'running') this.deps.store.setVmState(vm.id, 'stopped');
      } else if (vm.state === 'running' || b) {
        log.info('reconcile: VMM gone, demoting to stopped');
        this.releaseRuntime(p);
        this.deps.store.setVmState(vm.id, 'stopped');
      }
    }
    // Taps and NAT rules of VMs that are not running go; running ones are re-attached (idempotent).
    await this.deps.network.reconcile(this.deps.store.listVms().filter((v) => v.state === 'running'));
  }

  // ---- internals -----------------------------------------------------

  private async bootStopped(vm: VmRecord, progress: Progress): Promise<Booted> {
    const p = vmPaths(this.deps.layout, vm.id);
    let boot = this.bootStepsFor(vm, p, progress);
    try {
      try {
        await runSteps(boot.steps, this.stepHooks(vm, progress));
      } catch (e) {
        if (!(e instanceof BootStalled)) throw e;
        progress({ stage: 'boot', level: 'warn', message: `${e.message}; booting once more` });
        this.deps.log.warn({ vm: vm.name }, 'boot stalled early; retrying once');
        boot = this.bootStepsFor(vm, p, progress);
        await runSteps(boot.steps, this.stepHooks(vm, progress));
      }
    } catch (e) {
      this.deps.store.setVmState(vm.id, 'stopped', messageOf(e).split('\n')[0] ?? null);
      throw e;
    }
    this.deps.store.setVmState(vm.id, 'running');
    return { ...boot.result(), driver: this.requireDriver(vm.vmm) };
  }

  private async stopLocked(vm: VmRecord): Promise<StopReport> {
    const p = vmPaths(this.deps.layout, vm.id);
    const b = this.liveBooted(vm);
    let report: StopReport = { asked: 'none', synced: false, ended: 'already gone', ms: 0 };
    if (b) {
      report = await gracefulStop(this.deps.log, vm.name, b, this.targetFor(vm, b.record), this.deps.config.stopTimeoutSeconds * 1000, this.guest);
    }
    this.releaseRuntime(p);
    await this.deps.network.detach(vm);
    this.deps.store.setVmState(vm.id, 'stopped');
    return report;
  }

  private bootStepsFor(vm: VmRecord, p: VmPaths, progress: Progress, signal?: AbortSignal, clone?: CloneSource) {
    return bootSteps({
      ...(clone ? { clone } : {}),
      vm,
      paths: p,
      layout: this.deps.layout,
      runner: this.deps.runner,
      log: this.deps.log,
      progress,
      signal,
      bootTimeoutMs: this.deps.bootTimeoutMs,
      stallMs: this.deps.bootStallMs,
      driver: this.requireDriver(vm.vmm),
      guest: this.guest,
      chooseAccel: (kernel) => this.chooseAccel(this.requireDriver(vm.vmm), this.deps.config.accel, kernel),
      catalogKernel: (name, sig) => this.catalogKernel(name, sig),
      reservedPorts: this.reservedPorts,
      targetFor: (rt) => this.targetFor(vm, rt),
      hostKeyPinned: () => lookupHost(this.deps.layout.knownHosts, hostKeyAlias(vm.name)).length > 0,
      onFault: this.deps.onStepStart,
      bridge: vm.network === 'bridge' ? { attach: () => this.deps.network.attach(vm), detach: () => this.deps.network.detach(vm) } : undefined,
    });
  }

  /** The kernel catalog, or a coded error (the daemon always has one; some tests build VmService without). */
  private requireKernels(): NonNullable<VmServiceDeps['kernels']> {
    if (!this.deps.kernels) throw new BangerError('unavailable', 'this daemon has no kernel catalog', undefined, { field: 'kernel' });
    return this.deps.kernels;
  }

  private async catalogKernel(name: string, signal?: AbortSignal): Promise<BootKernel> {
    const k = await this.requireKernels().ensure(name, signal);
    return { kernel: join(k.dir, KERNEL_FILES.kernel), initrd: join(k.dir, KERNEL_FILES.initrd) };
  }

  private stepHooks(vm: VmRecord, progress: Progress, signal?: AbortSignal) {
    return {
      signal,
      onStart: (s: Step) => {
        this.deps.onStepStart?.(s.name);
        progress({ stage: s.name, message: s.message });
      },
      onRollbackError: (s: Step, e: unknown) => this.deps.log.error({ vm: vm.name, step: s.name, err: messageOf(e) }, 'rollback failed'),
    };
  }

  /**
   * Resource bounds. Errors carry the RPC field (vcpu, memoryMib, diskBytes)
   * and never name a CLI flag: the CLI maps the field to its flag. A value
   * that came from config.toml (`fromConfig`) is named by its config key.
   */
  private validateResources(
    r: { vcpu: number; memoryMib: number; diskBytes: number },
    fromConfig: { vcpu?: boolean; memoryMib?: boolean; diskBytes?: boolean } = {},
  ): void {
    const fail = (field: 'vcpu' | 'memoryMib' | 'diskBytes', configKey: string, message: string, hint: string): never => {
      if (fromConfig[field]) throw new BangerError('bad_request', `${configKey} in config.toml: ${message}`, `fix ${configKey} in config.toml; ${hint}`);
      throw new BangerError('bad_request', message, hint, { field });
    };
    const cpus = availableParallelism();
    if (!Number.isInteger(r.vcpu) || r.vcpu < 1) fail('vcpu', 'vcpu', `the vCPU count must be at least 1 (got ${r.vcpu})`, `pick 1 to ${cpus}`);
    if (r.vcpu > cpus) fail('vcpu', 'vcpu', `${r.vcpu} vCPUs is more than this host's ${cpus} CPUs`, `pick 1 to ${cpus}`);
    const hostMib = Math.floor(totalmem() / 1024 / 1024);
    if (!Number.isInteger(r.memoryMib) || r.memoryMib < MIN_MEMORY_MIB) {
      fail('memoryMib', 'memory_mib', `memory must be at least ${MIN_MEMORY_MIB} MiB (got ${r.memoryMib})`, `pick ${MIN_MEMORY_MIB} to ${hostMib} MiB, e.g. 1024`);
    }
    if (r.memoryMib > hostMib) fail('memoryMib', 'memory_mib', `${r.memoryMib} MiB of memory is more than this host's ${hostMib} MiB`, `pick at most ${hostMib} MiB`);
    const disk = diskSizeProblem(r.diskBytes);
    if (disk !== undefined) fail('diskBytes', 'disk_size', `the work disk size ${disk}`, DISK_SIZE_HINT);
  }

  private warnInvalid(row: InvalidRow, during: string): void {
    this.deps.log.warn({ rowid: row.rowid, vm: row.label, problem: row.problem, during }, 'state.db: skipping an invalid VM row (left untouched, no file of it is touched)');
  }

  private chooseAccel(driver: VmmDriver, requested: Accel, kernel: string): Promise<AccelChoice> {
    if (requested === 'tcg') return Promise.resolve({ accel: 'tcg' });
    // The probe boots a kernel for a few seconds: do it once per daemon (per VMM).
    let choice = this.accelChoice.get(driver.vmm);
    if (!choice) {
      choice = driver.probeAccel(kernel).then((probe) => {
        this.deps.log.info({ probe }, 'kvm probe');
        return resolveAccel(requested, probe);
      });
      this.accelChoice.set(driver.vmm, choice);
      choice.catch(() => this.accelChoice.delete(driver.vmm));
    }
    return choice;
  }

  /** The driver of a VM's VMM; `unavailable` when this build does not carry it. */
  private requireDriver(vmm: Vmm): VmmDriver {
    const driver = this.deps.drivers(vmm);
    if (!driver) throw new BangerError('unavailable', `this VM uses the ${vmm} VMM, which this version of banger does not carry`, 'delete it, or use a banger that has that driver');
    return driver;
  }

  /** runtime.json with its driver and that driver's parsed handle; undefined when missing or unreadable. */
  private readBooted(p: VmPaths): Booted | undefined {
    const record = readRuntime(p.runtimeFile);
    if (!record) return undefined;
    const driver = this.deps.drivers(record.vmm);
    const handle: VmmHandle | undefined = driver?.parseHandle(record.driver);
    return driver && handle ? { record, driver, handle } : undefined;
  }

  private uniqueName(): string {
    for (let i = 0; i < 50; i++) {
      const n = generateVmName();
      if (!this.deps.store.findVmByName(n)) return n;
    }
    return `vm-${randomBytes(4).toString('hex')}`;
  }

  /** Runtime file and sockets go; the disks and the console log stay. */
  private releaseRuntime(p: VmPaths): void {
    removeRuntime(p.runtimeFile);
    removeTreeUnder(this.deps.layout.vmSocketsDir, p.socketsDir);
  }

  private removeFiles(vm: VmRecord, p: VmPaths): void {
    removeTreeUnder(this.deps.layout.vmsDir, p.dir);
    removeTreeUnder(this.deps.layout.vmSocketsDir, p.socketsDir);
    try {
      // Its name, and on a bridge its address (an entry `ssh root@IP` may have added).
      removeHost(this.deps.layout.knownHosts, hostKeyAlias(vm.name));
      if (vm.ip) removeHost(this.deps.layout.knownHosts, vm.ip);
    } catch (e) {
      this.deps.log.warn({ vm: vm.name, err: messageOf(e) }, 'could not drop known_hosts entry');
    }
  }

  private find(name: string): VmRecord {
    const vm = this.deps.store.findVmByName(validateVmName(name, 'name'));
    if (!vm) {
      const bad = this.deps.store.invalidVmNamed(name);
      if (bad) throw invalidRowError(bad, this.deps.store.path);
      throw new BangerError('not_found', `no VM named ${name}`, 'list VMs with `banger vm list`');
    }
    return vm;
  }

  /** Re-reads a VM under its lock (it may have changed, or gone, while we waited). */
  private current(vm: VmRecord): VmRecord {
    const now = this.deps.store.findVmById(vm.id);
    if (!now) throw new BangerError('not_found', `no VM named ${vm.name}`, 'it was deleted meanwhile');
    return now;
  }

  /** The VM's booted VMM when it is alive. */
  private liveBooted(vm: VmRecord): Booted | null {
    const b = this.readBooted(vmPaths(this.deps.layout, vm.id));
    return b && b.driver.isAlive(b.handle) ? b : null;
  }

  private liveRuntime(vm: VmRecord): VmRuntime | null {
    const b = this.liveBooted(vm);
    return b ? viewRuntime(b) : null;
  }

  private view(vm: VmRecord): VmView {
    return this.viewWith(vm, this.liveRuntime(vm));
  }

  private viewWith(vm: VmRecord, runtime: VmRuntime | null): VmView {
    return { ...vm, runtime, workspace: this.deps.store.findWorkspace(vm.id) };
  }

  private targetFor(vm: VmRecord, rt: Pick<VmRuntime, 'sshHost' | 'sshPort'>): SshTarget & GuestSshTarget {
    return {
      name: vm.name,
      host: rt.sshHost,
      port: rt.sshPort,
      user: 'root',
      privateKeyPath: this.deps.layout.sshKey,
      knownHostsPath: this.deps.layout.knownHosts,
      hostKeyAlias: hostKeyAlias(vm.name),
    };
  }
}

/** The view of a booted VM's runtime (vm show, RPC): the daemon's part and the VMM's pid. */
function viewRuntime(b: Booted): VmRuntime {
  const { vmm, accel, sshHost, sshPort, startedAt } = b.record;
  return { vmm, pid: pidOf(b), accel, sshHost, sshPort, startedAt };
}

function pidOf(b: BootedVmm): number {
  return b.driver.hostProcess(b.handle).pid;
}

function notRunning(vm: VmRecord): BangerError {
  return new BangerError('not_running', `VM ${vm.name} is not running (state: ${vm.state})`, `start it with \`banger vm start ${vm.name}\``);
}

export function hostKeyAlias(name: string): string {
  return `${name}.vm`;
}
