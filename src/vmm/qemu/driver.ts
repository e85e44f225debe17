/**
 * The QEMU driver: `qemu-system-x86_64 -M microvm` started with -daemonize
 * (its own session: it outlives the daemon), a qcow2 root overlay, QMP for
 * the power button, qemu-guest-agent on a virtio-serial port whose host end
 * is a Unix socket. Its handle is what tells its process apart from a reused
 * pid (pid + start time) and where its sockets are.
 */
import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { BangerError, messageOf } from '../../errors/errors.js';
import type { Logger } from '../../log/log.js';
import type { Runner } from '../../system/runner.js';
import { isSameProcess, killProcess, readCmdline, readPidFile, readStartTime, waitForExit } from '../../system/proc.js';
import type { BootSpec, DiskInfo, DiskSpec, HostTool, SavedState, VmFiles, VmmCapabilities, VmmDriver, VmmHandle } from '../driver.js';
import { SnapshotUnusable } from '../driver.js';
import { announceDiskSizes, loadState, maxStateBytes, MIGRATE_SOCKET, saveState } from './snapshot.js';
import type { AccelProbe } from '../accel.js';
import { hostTscKhz, probeKvm } from './accel.js';
import { kernelCmdline, MACHINE_REVISION, qemuArgv, type QemuPaths } from './argv.js';
import { QmpClient } from './qmp.js';

/** QEMU's own files in a VM's directories (the same names src/paths gives them). */
export const QEMU_PID_FILE = 'qemu.pid';
export const QMP_SOCKET = 'qmp.sock';
export const QGA_SOCKET = 'qga.sock';

export function qemuPaths(files: VmFiles): QemuPaths {
  return {
    overlay: files.overlay,
    configDisk: files.configDisk,
    workDisk: files.workDisk,
    ...(files.extraDisks?.length ? { extraDisks: files.extraDisks } : {}),
    consoleLog: files.consoleLog,
    pidFile: join(files.dir, QEMU_PID_FILE),
    qmpSocket: join(files.socketsDir, QMP_SOCKET),
    qgaSocket: join(files.socketsDir, QGA_SOCKET),
  };
}

/**
 * The handle, as written into runtime.json's "driver" (and, before drivers,
 * flat in runtime.json itself: the daemon reads that shape into this one).
 * Parsed before any field is used: a pid is signalled, sockets connected to.
 */
const handleSchema = z.object({
  // Never 0, 1 or negative: kill(0|-1|-pid) signals groups, pid 1 is init.
  pid: z.number().int().min(2).max(4_194_304),
  /** Field 22 of /proc/PID/stat: tells our QEMU from a reused pid. */
  pidStartTime: z.string().regex(/^\d{1,20}$/),
  qmpSocket: z.string().min(1).max(4096),
  qgaSocket: z.string().min(1).max(4096),
});
export type QemuHandle = z.output<typeof handleSchema>;

const QEMU_IMG_TIMEOUT_MS = 10_000;

/**
 * Under TCG the guest's TSC runs at the host's rate off the host's clock, but
 * the kernel finds the vCPUs' TSCs "unsynchronized", drops to refined-jiffies
 * and loses time whenever the host is busy (measured: clones ~2 % slow at
 * idle, cold VMs 7-16 s behind on a loaded 2-core host). tsc=reliable keeps
 * the TSC as the clocksource.
 */
const TCG_CMDLINE_EXTRA = ['tsc=reliable'];

export class QemuDriver implements VmmDriver {
  readonly vmm = 'qemu' as const;
  readonly capabilities: VmmCapabilities = {
    userNetworking: true,
    tapNetworking: true,
    agentChannel: 'virtio-serial',
    qcow2Overlays: true,
    snapshots: true,
  };
  readonly hostTools: readonly HostTool[] = [
    { name: 'qemu-system-x86_64', argv: ['qemu-system-x86_64', '--version'], pkg: 'qemu-system-x86', why: 'runs the VMs' },
    { name: 'qemu-img', argv: ['qemu-img', '--version'], pkg: 'qemu-utils', why: 'makes per-VM overlays' },
  ];

  private versionText: Promise<string> | undefined;

  constructor(private readonly deps: { runner: Runner; log: Logger }) {}

  probeAccel(kernel: string): Promise<AccelProbe> {
    return probeKvm({ runner: this.deps.runner }, { kernel });
  }

  async prepareDisks(spec: DiskSpec): Promise<void> {
    if (spec.fromSnapshot) {
      // The copy of the template's overlay: grown to this VM's size (never shrunk; the daemon checks).
      await this.deps.runner.run(['qemu-img', 'resize', '-q', '-f', 'qcow2', spec.files.overlay, String(spec.rootBytes)], { timeoutMs: 60_000 });
      return;
    }
    await this.deps.runner.run(
      ['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', spec.baseImage, '-F', 'raw', spec.files.overlay, String(spec.rootBytes)],
      { timeoutMs: 60_000 },
    );
  }

  boot(spec: BootSpec): Promise<VmmHandle> {
    return this.start(spec, false);
  }

  async exportRootDisk(files: VmFiles, out: string): Promise<void> {
    // -S 4k: runs of zeros stay holes (the result is as sparse as the image).
    await this.deps.runner.run(['qemu-img', 'convert', '-q', '-f', 'qcow2', '-O', 'raw', '-S', '4k', files.overlay, out], { timeoutMs: 30 * 60 * 1000 });
  }

  private async start(spec: BootSpec, incoming: boolean): Promise<VmmHandle> {
    const paths = qemuPaths(spec.files);
    const net = spec.network;
    const argv = qemuArgv({
      vcpu: spec.vcpu,
      memoryMib: spec.memoryMib,
      accel: spec.accel,
      kernel: spec.kernel,
      initrd: spec.initrd,
      // Under TCG the guest's TSC calibration can hang under load unless told the frequency.
      cmdline: kernelCmdline({
        hostname: spec.name,
        tscKhz: spec.accel === 'tcg' ? hostTscKhz() : undefined,
        extra: spec.accel === 'tcg' ? TCG_CMDLINE_EXTRA : [],
      }),
      paths,
      sshHostPort: net.mode === 'user' ? net.sshHostPort : 0,
      tap: net.mode === 'tap' ? net.tap : undefined,
      mac: net.mac,
      name: spec.name,
      restrictNet: net.mode === 'user' && net.restrict,
      noNetBackend: net.mode === 'none',
      incoming,
    });
    this.deps.log.info({ vm: spec.name, argv }, incoming ? 'starting qemu (from a snapshot)' : 'starting qemu');
    // -daemonize: returns once QEMU is set up (errors on stderr); the VM runs in its own session.
    await this.deps.runner.run(argv, { timeoutMs: 60_000 });
    const pid = readPidFile(paths.pidFile);
    const start = pid !== undefined ? readStartTime(pid) : null;
    if (pid === undefined || start === null) {
      throw new BangerError('operation_failed', `QEMU for ${spec.name} started but is not running`, `see ${spec.files.consoleLog}`);
    }
    const handle: QemuHandle = { pid, pidStartTime: start, qmpSocket: paths.qmpSocket, qgaSocket: paths.qgaSocket };
    return handle;
  }

  /** QEMU's pid file names it; trusted only when that process's argv carries this VM's -pidfile path. */
  findOrphan(files: VmFiles): VmmHandle | undefined {
    const paths = qemuPaths(files);
    const pid = readPidFile(paths.pidFile);
    if (pid === undefined) return undefined;
    const argv = readCmdline(pid);
    const at = argv?.indexOf('-pidfile') ?? -1;
    if (!argv || at < 0 || argv[at + 1] !== paths.pidFile) return undefined;
    const start = readStartTime(pid);
    if (start === null) return undefined;
    const handle: QemuHandle = { pid, pidStartTime: start, qmpSocket: paths.qmpSocket, qgaSocket: paths.qgaSocket };
    return handle;
  }

  parseHandle(json: unknown): VmmHandle | undefined {
    const r = handleSchema.safeParse(json);
    return r.success ? r.data : undefined;
  }

  isAlive(handle: VmmHandle): boolean {
    const h = own(handle);
    return isSameProcess(h.pid, h.pidStartTime);
  }

  waitForExit(handle: VmmHandle, timeoutMs: number): Promise<boolean> {
    const h = own(handle);
    return waitForExit(h.pid, h.pidStartTime, timeoutMs);
  }

  signal(handle: VmmHandle, signal: NodeJS.Signals): void {
    const h = own(handle);
    killProcess(h.pid, h.pidStartTime, signal);
  }

  async requestPowerdown(handle: VmmHandle, timeoutMs: number): Promise<void> {
    const qmp = await QmpClient.connect(own(handle).qmpSocket, { timeoutMs: Math.min(2000, timeoutMs) });
    try {
      await qmp.systemPowerdown();
    } finally {
      qmp.close();
    }
  }

  agentSocket(handle: VmmHandle): string {
    return own(handle).qgaSocket;
  }

  hostProcess(handle: VmmHandle): { pid: number; startTime: string } {
    const h = own(handle);
    return { pid: h.pid, startTime: h.pidStartTime };
  }

  /** The root overlay (qemu-img: allocated vs virtual) and the work disk when there is one. */
  async describeDisks(files: VmFiles): Promise<DiskInfo[]> {
    // -U: the running QEMU holds the image's write lock; a shared read is fine for info.
    const res = await this.deps.runner.run(['qemu-img', 'info', '-U', '--output=json', files.overlay], { timeoutMs: QEMU_IMG_TIMEOUT_MS });
    const disks: DiskInfo[] = [{ name: 'root', path: files.overlay, ...parseQemuImgInfo(res.stdout) }];
    try {
      const st = await stat(files.workDisk);
      disks.push({ name: 'work', path: files.workDisk, allocatedBytes: st.blocks * 512, virtualBytes: st.size });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return disks;
  }

  version(): Promise<string> {
    this.versionText ??= this.deps.runner.run(['qemu-system-x86_64', '--version'], { timeoutMs: QEMU_IMG_TIMEOUT_MS }).then((r) => {
      const m = /version\s+(\d+\.\d+\.\d+)/.exec(r.stdout);
      if (!m) throw new BangerError('operation_failed', 'qemu-system-x86_64 --version printed no version');
      return `qemu ${m[1]} microvm-r${MACHINE_REVISION}`;
    });
    this.versionText.catch(() => (this.versionText = undefined));
    return this.versionText;
  }

  async saveSnapshot(handle: VmmHandle, file: string, timeoutMs: number): Promise<SavedState> {
    const h = own(handle);
    const qmp = await QmpClient.connect(h.qmpSocket, { timeoutMs: 5000 });
    try {
      const saved = await saveState(qmp, join(dirname(h.qmpSocket), MIGRATE_SOCKET), file, { maxBytes: maxStateBytes(memoryOf(h.pid)), timeoutMs });
      await qmp.quit();
      // The state is saved; a QEMU slow to exit (a big guest under load) is killed,
      // never left running paused after the caller was told the VMM ended.
      if (!(await waitForExit(h.pid, h.pidStartTime, 10_000))) {
        killProcess(h.pid, h.pidStartTime, 'SIGKILL');
        await waitForExit(h.pid, h.pidStartTime, 10_000);
      }
      return saved;
    } finally {
      qmp.close();
    }
  }

  async restore(spec: BootSpec, state: SavedState): Promise<VmmHandle> {
    const handle = await this.start(spec, true);
    const h = own(handle);
    try {
      const qmp = await QmpClient.connect(h.qmpSocket, { timeoutMs: 10_000 }).catch((e: unknown) => {
        throw new SnapshotUnusable(`QEMU for ${spec.name} did not open its control socket: ${messageOf(e)}`, { cause: e });
      });
      try {
        await loadState(qmp, join(spec.files.socketsDir, MIGRATE_SOCKET), state, {
          maxBytes: maxStateBytes(spec.memoryMib),
          timeoutMs: 60_000,
          isAlive: () => this.isAlive(handle),
        });
        // The guest still believes the template's disk sizes: tell it this VM's.
        await announceDiskSizes(qmp, ['root', 'work']);
        await qmp.execute('cont', undefined, { timeoutMs: 10_000 });
      } finally {
        qmp.close();
      }
    } catch (e) {
      killProcess(h.pid, h.pidStartTime, 'SIGKILL');
      await waitForExit(h.pid, h.pidStartTime, 5000);
      throw e;
    }
    return handle;
  }
}

/** The -m of a running QEMU in MiB (its saved state is bounded by it); unknown: a generous bound. */
function memoryOf(pid: number): number {
  const argv = readCmdline(pid) ?? [];
  const at = argv.indexOf('-m');
  const mib = at >= 0 ? /^(\d+)M$/.exec(argv[at + 1] ?? '') : null;
  return mib ? Number(mib[1]) : 1024 * 1024;
}

/** A handle the daemon passes back: made by boot/findOrphan/parseHandle, so it parses; anything else is a bug. */
function own(handle: VmmHandle): QemuHandle {
  const r = handleSchema.safeParse(handle);
  if (!r.success) throw new BangerError('internal', 'the QEMU driver was handed a handle it did not make');
  return r.data;
}

/** `qemu-img info --output=json` → allocated (actual-size) and virtual size of that one file. */
export function parseQemuImgInfo(json: string): { allocatedBytes: number; virtualBytes: number } {
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(json) as Record<string, unknown>;
  } catch {
    throw new BangerError('operation_failed', 'qemu-img info printed something that is not JSON');
  }
  const actual = info['actual-size'];
  const virtual = info['virtual-size'];
  if (typeof virtual !== 'number') throw new BangerError('operation_failed', 'qemu-img info reported no virtual-size');
  // actual-size is absent when the file system cannot tell; 0 is the honest lower bound then
  return { allocatedBytes: typeof actual === 'number' ? actual : 0, virtualBytes: virtual };
}
