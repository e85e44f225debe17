/**
 * VMs: create (boot as steps with rollback), list, show, delete, SSH
 * target, and reconcile on daemon start. The QEMU process outlives the
 * daemon: it is started with -daemonize (its own session), and identified
 * afterwards by pid AND start time, so a reused pid is never signalled.
 */
import { randomBytes } from 'node:crypto';
import { availableParallelism, totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import { BangerError, messageOf } from '../errors/errors.js';
import type { Accel, ProgressEvent, VmRecord, VmRuntime, VmView } from '../model/types.js';
import { generateVmName, validateVmName } from '../model/names.js';
import { formatSize } from '../model/sizes.js';
import { imagePaths, vmPaths, type Layout, type VmPaths } from '../paths/paths.js';
import type { Store } from '../store/store.js';
import type { Runner } from '../system/runner.js';
import { tail } from '../system/runner.js';
import { ensureDir, removePath } from '../system/fs.js';
import { freeLoopbackPort } from '../system/ports.js';
import { isSameProcess, killProcess, readPidFile, readStartTime, waitForExit } from '../system/proc.js';
import type { Logger } from '../log/log.js';
import type { Config } from '../config/config.js';
import { kernelCmdline, qemuArgv } from '../vmm/qemu/argv.js';
import { hostTscKhz, probeKvm, resolveAccel } from '../vmm/qemu/accel.js';
import { writeConfigDisk } from '../guest/config-disk.js';
import { waitForAgent } from '../guest/agent.js';
import { waitForSsh } from '../guest/ssh.js';
import { ensureKeypair } from '../guest/keys.js';
import { removeHost } from '../guest/known-hosts.js';
import type { VmSshTarget as SshTarget, VmCreateResult } from '../rpc/methods.js';
import type { Connection } from '../rpc/server.js';
import { DEFAULT_IMAGE, type ImageService } from './image-service.js';
import { KeyedMutex } from './locks.js';
import { readRuntime, removeRuntime, writeRuntime } from './runtime-file.js';
import { runSteps, type Step } from './steps.js';

/** User-mode (slirp) network: the guest's fixed address, gateway and DNS. */
const USER_NET = { address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', dns: ['10.0.2.3'] };

export interface VmServiceDeps {
  store: Store;
  runner: Runner;
  layout: Layout;
  config: Config;
  log: Logger;
  images: ImageService;
  /** Boot deadline (agent + SSH), ms. */
  bootTimeoutMs: number;
}

export interface CreateParams {
  name?: string;
  image?: string;
  vcpu?: number;
  memoryMib?: number;
  ephemeral?: boolean;
}

export class VmService {
  private readonly locks = new KeyedMutex();
  private readonly reservedPorts = new Set<number>();
  private accelChoice: Promise<{ accel: 'kvm' | 'tcg'; warning?: string }> | undefined;

  constructor(private readonly deps: VmServiceDeps) {}

  // ---- queries -------------------------------------------------------

  list(): VmView[] {
    return this.deps.store.listVms().map((vm) => this.view(vm));
  }

  show(name: string): VmView {
    return this.view(this.find(name));
  }

  sshTarget(name: string): SshTarget {
    const vm = this.find(name);
    const rt = this.liveRuntime(vm);
    if (vm.state !== 'running' || !rt) {
      throw new BangerError('not_running', `VM ${name} is not running (state: ${vm.state})`, `delete it with \`banger vm delete ${name}\``);
    }
    return this.targetFor(vm, rt);
  }

  // ---- create --------------------------------------------------------

  async create(params: CreateParams, conn: Connection, progress: (ev: ProgressEvent) => void): Promise<VmCreateResult> {
    const { config, store } = this.deps;
    const vcpu = params.vcpu ?? config.vcpu;
    const memoryMib = params.memoryMib ?? config.memoryMib;
    const imageName = params.image ?? DEFAULT_IMAGE;
    this.validateResources(vcpu, memoryMib);
    if (config.vmm !== 'qemu') {
      throw new BangerError('unavailable', `vmm = "${config.vmm}" in config.toml: only the qemu driver is available in this version`, 'set vmm = "qemu" (or remove the key)');
    }
    if (config.network !== 'user') {
      throw new BangerError('unavailable', `network = "${config.network}" in config.toml: bridge networking is not available in this version`, 'set network = "user" (or remove the key)');
    }
    if (imageName !== DEFAULT_IMAGE) this.deps.images.show(imageName); // not_found before any side effect
    const name = params.name !== undefined ? validateVmName(params.name) : this.uniqueName();

    const now = new Date().toISOString();
    const vm: VmRecord = {
      id: randomBytes(6).toString('hex'),
      name,
      image: imageName,
      vcpu,
      memoryMib,
      systemOverlayBytes: config.systemOverlayBytes,
      vmm: 'qemu',
      network: 'user',
      state: 'creating',
      ephemeral: params.ephemeral === true,
      lastError: null,
      createdAt: now,
      updatedAt: now,
    };
    store.insertVm(vm); // the UNIQUE name constraint settles create races: already_exists

    const abort = new AbortController();
    if (vm.ephemeral) {
      conn.onClose(() => {
        abort.abort();
        if (!this.deps.store.findVmById(vm.id)) return; // the client deleted it already
        this.deps.log.info({ vm: vm.name }, 'ephemeral VM: client went away, removing');
        void this.delete(vm.name).catch((e: unknown) => {
          if (!(e instanceof BangerError && e.code === 'not_found')) {
            this.deps.log.error({ vm: vm.name, err: messageOf(e) }, 'removing ephemeral VM failed');
          }
        });
      });
    }

    const started = Date.now();
    try {
      const rt = await this.locks.run(vm.id, () => this.boot(vm, progress, abort.signal));
      store.setVmState(vm.id, 'running');
      const fresh = this.find(vm.name);
      return { vm: { ...fresh, runtime: rt }, ssh: this.targetFor(fresh, rt), bootMs: Date.now() - started };
    } catch (e) {
      // Nothing is left behind by a failed create: the steps rolled back, the row goes too.
      store.deleteVm(vm.id);
      throw e;
    }
  }

  private validateResources(vcpu: number, memoryMib: number): void {
    const cpus = availableParallelism();
    if (!Number.isInteger(vcpu) || vcpu < 1) {
      throw new BangerError('bad_request', `--vcpu must be at least 1 (got ${vcpu})`, `pick 1 to ${cpus}`);
    }
    if (vcpu > cpus) {
      throw new BangerError('bad_request', `--vcpu ${vcpu} is more than this host's ${cpus} CPUs`, `pick 1 to ${cpus}`);
    }
    const hostMib = Math.floor(totalmem() / 1024 / 1024);
    if (!Number.isInteger(memoryMib) || memoryMib < 256) {
      throw new BangerError('bad_request', `--memory must be at least 256 MiB (got ${memoryMib})`, 'e.g. --memory 1024');
    }
    if (memoryMib > hostMib) {
      throw new BangerError('bad_request', `--memory ${memoryMib} MiB is more than this host's ${hostMib} MiB`, `pick at most ${hostMib}`);
    }
  }

  private uniqueName(): string {
    for (let i = 0; i < 50; i++) {
      const n = generateVmName();
      if (!this.deps.store.findVmByName(n)) return n;
    }
    return `vm-${randomBytes(4).toString('hex')}`;
  }

  private async boot(vm: VmRecord, progress: (ev: ProgressEvent) => void, signal: AbortSignal): Promise<VmRuntime> {
    const { layout, runner, log } = this.deps;
    const p = vmPaths(layout, vm.id);
    const img = imagePaths(layout, vm.image);
    let accel: 'kvm' | 'tcg' = 'tcg';
    let port = 0;
    let runtime: VmRuntime | undefined;
    const deadline = () => Date.now() + this.deps.bootTimeoutMs;
    let readyBy = 0;

    const steps: Step[] = [
      {
        name: 'image',
        message: `image ${vm.image}`,
        run: async () => {
          await this.deps.images.ensure(vm.image, { onProgress: progress, signal });
        },
      },
      {
        name: 'disks',
        message: `root overlay (${formatSize(vm.systemOverlayBytes)}) and config disk`,
        run: async () => {
          ensureDir(p.dir);
          ensureDir(p.socketsDir);
          await runner.run(
            ['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', img.rootfs, '-F', 'raw', p.overlay, String(vm.systemOverlayBytes)],
            { timeoutMs: 60_000 },
          );
          const key = await ensureKeypair(runner, layout.sshKey);
          await writeConfigDisk(
            runner,
            p.configDisk,
            {
              hostname: vm.name,
              authorizedKeys: [key.publicKey],
              network: { mac: macFor(vm.id), ...USER_NET },
            },
            p.dir,
          );
        },
        rollback: async () => this.removeFiles(vm, p),
      },
      {
        name: 'accel',
        message: 'accelerator',
        run: async () => {
          const choice = await this.chooseAccel(this.deps.config.accel, img.kernel);
          accel = choice.accel;
          if (choice.warning) progress({ stage: 'accel', message: choice.warning, level: 'warn' });
        },
      },
      {
        name: 'boot',
        message: 'starting QEMU',
        run: async () => {
          port = await freeLoopbackPort(this.reservedPorts);
          this.reservedPorts.add(port);
          const argv = qemuArgv({
            vcpu: vm.vcpu,
            memoryMib: vm.memoryMib,
            accel,
            kernel: img.kernel,
            initrd: img.initrd,
            // Under TCG the guest's TSC calibration can hang under load unless told the frequency.
            cmdline: kernelCmdline({ hostname: vm.name, tscKhz: accel === 'tcg' ? hostTscKhz() : undefined }),
            paths: p,
            sshHostPort: port,
            mac: macFor(vm.id),
            name: vm.name,
          });
          log.info({ vm: vm.name, argv }, 'starting qemu');
          await runner.run(argv, { timeoutMs: 60_000 });
          const pid = readPidFile(p.pidFile);
          const start = pid !== undefined ? readStartTime(pid) : null;
          if (pid === undefined || start === null) {
            throw new BangerError('operation_failed', `QEMU for ${vm.name} started but is not running`, `see ${p.qemuLog} and ${p.consoleLog}`);
          }
          runtime = {
            pid,
            pidStartTime: start,
            accel,
            sshHost: '127.0.0.1',
            sshPort: port,
            qmpSocket: p.qmpSocket,
            qgaSocket: p.qgaSocket,
            startedAt: new Date().toISOString(),
          };
          writeRuntime(p.runtimeFile, runtime);
          readyBy = deadline();
          progress({ stage: 'boot', message: `QEMU running (pid ${pid}, ${accel.toUpperCase()})` });
        },
        rollback: async () => {
          if (runtime) await this.stopProcess(vm, runtime);
          this.reservedPorts.delete(port);
          removeRuntime(p.runtimeFile);
        },
      },
      {
        name: 'agent',
        message: 'waiting for the guest agent',
        run: async () => {
          await this.guardBoot(vm, p, runtime!, () => waitForAgent(p.qgaSocket, readyBy, signal));
        },
      },
      {
        name: 'ssh',
        message: 'waiting for SSH',
        run: async () => {
          const target = this.targetFor(vm, runtime!);
          await this.guardBoot(vm, p, runtime!, () => waitForSsh(target, { deadlineMs: readyBy, signal }));
        },
      },
    ];

    await runSteps(steps, {
      signal,
      onStart: (s) => progress({ stage: s.name, message: s.message }),
      onRollbackError: (s, e) => log.error({ vm: vm.name, step: s.name, err: messageOf(e) }, 'rollback failed'),
    });
    this.reservedPorts.delete(port);
    return runtime!;
  }

  /** Runs a readiness wait; if QEMU died meanwhile, say so with the console tail. */
  private async guardBoot(vm: VmRecord, p: VmPaths, rt: VmRuntime, wait: () => Promise<void>): Promise<void> {
    try {
      await wait();
    } catch (e) {
      const alive = isSameProcess(rt.pid, rt.pidStartTime);
      const consoleTail = tail(safeRead(p.consoleLog), 1500);
      const detail = alive ? '' : ' (QEMU exited)';
      if (e instanceof BangerError) {
        throw new BangerError(e.code, `${vm.name}: ${e.message}${detail}\n--- console (last lines) ---\n${consoleTail}`, e.hint ?? `full console log: ${p.consoleLog}`);
      }
      throw e;
    }
  }

  private chooseAccel(requested: Accel, kernel: string): Promise<{ accel: 'kvm' | 'tcg'; warning?: string }> {
    if (requested === 'tcg') return Promise.resolve({ accel: 'tcg' });
    // The probe boots a kernel for a few seconds: do it once per daemon.
    this.accelChoice ??= probeKvm({ runner: this.deps.runner }, { kernel }).then((probe) => {
      this.deps.log.info({ probe }, 'kvm probe');
      return probe;
    }).then((probe) => resolveAccel(requested, probe));
    const choice = this.accelChoice;
    choice.catch(() => (this.accelChoice = undefined));
    return choice;
  }

  // ---- delete --------------------------------------------------------

  async delete(name: string): Promise<void> {
    const vm = this.find(name);
    await this.locks.run(vm.id, async () => {
      const current = this.deps.store.findVmById(vm.id);
      if (!current) throw this.notFound(name);
      this.deps.store.setVmState(vm.id, 'deleting');
      const p = vmPaths(this.deps.layout, vm.id);
      const rt = readRuntime(p.runtimeFile);
      if (rt) await this.stopProcess(vm, rt);
      this.removeFiles(vm, p);
      this.deps.store.deleteVm(vm.id);
      this.deps.log.info({ vm: vm.name }, 'vm deleted');
    });
  }

  /** SIGTERM (QEMU exits cleanly), then SIGKILL; never signals a reused pid. */
  private async stopProcess(vm: VmRecord, rt: VmRuntime): Promise<void> {
    if (!isSameProcess(rt.pid, rt.pidStartTime)) return;
    killProcess(rt.pid, rt.pidStartTime, 'SIGTERM');
    if (await waitForExit(rt.pid, rt.pidStartTime, 5000)) return;
    this.deps.log.warn({ vm: vm.name, pid: rt.pid }, 'qemu ignored SIGTERM; sending SIGKILL');
    killProcess(rt.pid, rt.pidStartTime, 'SIGKILL');
    await waitForExit(rt.pid, rt.pidStartTime, 5000);
  }

  private removeFiles(vm: VmRecord, p: VmPaths): void {
    removePath(p.dir);
    removePath(p.socketsDir);
    try {
      removeHost(this.deps.layout.knownHosts, hostKeyAlias(vm.name));
    } catch (e) {
      this.deps.log.warn({ vm: vm.name, err: messageOf(e) }, 'could not drop known_hosts entry');
    }
  }

  // ---- reconcile -----------------------------------------------------

  /**
   * Daemon start: adopt VMs whose QEMU (same pid AND start time) is alive,
   * demote dead ones to stopped, and roll back anything caught mid-create,
   * mid-delete, or ephemeral (its client cannot have survived the restart).
   */
  async reconcile(): Promise<void> {
    for (const vm of this.deps.store.listVms()) {
      const p = vmPaths(this.deps.layout, vm.id);
      const rt = readRuntime(p.runtimeFile);
      const alive = rt !== undefined && isSameProcess(rt.pid, rt.pidStartTime);
      if (vm.state === 'creating' || vm.state === 'deleting' || vm.ephemeral) {
        this.deps.log.info({ vm: vm.name, state: vm.state, ephemeral: vm.ephemeral }, 'reconcile: removing');
        if (rt && alive) await this.stopProcess(vm, rt);
        this.removeFiles(vm, p);
        this.deps.store.deleteVm(vm.id);
        continue;
      }
      if (vm.state === 'running' && !alive) {
        this.deps.log.info({ vm: vm.name }, 'reconcile: qemu gone, demoting to stopped');
        removeRuntime(p.runtimeFile);
        removePath(p.socketsDir);
        this.deps.store.setVmState(vm.id, 'stopped');
      } else if (vm.state === 'running') {
        this.deps.log.info({ vm: vm.name, pid: rt!.pid }, 'reconcile: adopted');
      }
    }
  }

  // ---- helpers -------------------------------------------------------

  private find(name: string): VmRecord {
    const vm = this.deps.store.findVmByName(name);
    if (!vm) throw this.notFound(name);
    return vm;
  }

  private notFound(name: string): BangerError {
    return new BangerError('not_found', `no VM named ${name}`, 'list VMs with `banger vm list`');
  }

  private liveRuntime(vm: VmRecord): VmRuntime | null {
    const rt = readRuntime(vmPaths(this.deps.layout, vm.id).runtimeFile);
    return rt && isSameProcess(rt.pid, rt.pidStartTime) ? rt : null;
  }

  private view(vm: VmRecord): VmView {
    return { ...vm, runtime: this.liveRuntime(vm) };
  }

  private targetFor(vm: VmRecord, rt: VmRuntime): SshTarget {
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

  count(): number {
    return this.deps.store.listVms().length;
  }
}

export function hostKeyAlias(name: string): string {
  return `${name}.vm`;
}

/** A stable locally administered MAC from the VM id. */
export function macFor(id: string): string {
  const hex = id.padEnd(6, '0').slice(0, 6);
  return `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
}

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
