/**
 * The VMM driver interface (in the spirit of Lima's pkg/driver): what the
 * daemon asks of a virtual machine monitor, and nothing about how. One
 * implementation per VMM (`src/vmm/qemu/driver.ts`); the daemon reaches them
 * only through `src/vmm/drivers.ts` and this file, never a VMM's own modules
 * (test/unit/policy.test.ts).
 *
 * The daemon owns the VM: its row, its steps and their rollback, the
 * network, the per-boot config disk, the work disk, readiness (guest agent
 * and SSH) and the stop chain. A driver owns the VMM: its disks' format, its
 * command line, its process, its control socket, where its guest-agent
 * channel ends on the host. `boot` returns a handle that the daemon writes
 * into runtime.json ("driver") without looking inside, and hands back to the
 * driver for everything after (alive? power down, kill, describe).
 */
import { BangerError } from '../errors/errors.js';
import type { Vmm } from '../model/types.js';
import type { AccelProbe } from './accel.js';

export type { AccelProbe };

/** What a VMM can do; the daemon reads these instead of asking which VMM it is. */
export interface VmmCapabilities {
  /** Rootless user-mode networking, with the guest's SSH forwarded from a host loopback port. */
  userNetworking: boolean;
  /** Attach the guest's NIC to an existing tap (bridge networking). */
  tapNetworking: boolean;
  /**
   * How the guest agent (qemu-guest-agent's protocol) is reached:
   * 'virtio-serial' — a host Unix socket (`agentSocket`) wired to a
   * virtio-serial port; 'none' — no agent channel (the daemon then relies
   * on SSH alone).
   */
  agentChannel: 'virtio-serial' | 'none';
  /** The root disk is a qcow2 copy-on-write overlay over the image's rootfs. */
  qcow2Overlays: boolean;
  /**
   * Save a running VM's state (memory and devices) to a file and start new
   * VMs from it (`saveSnapshot`, `restore`): warm clones.
   */
  snapshots: boolean;
}

/**
 * What `boot` returns: a JSON object the daemon persists in runtime.json and
 * passes back. Only the driver that made it reads inside it; a handle read
 * from disk is trusted only after `parseHandle`.
 */
export type VmmHandle = Readonly<Record<string, unknown>>;

/**
 * A VM's files, as the daemon lays them out (src/paths). The driver names
 * its own files (pid file, control sockets) inside `dir` and `socketsDir`.
 */
export interface VmFiles {
  /** Per-VM state directory (disks, console log, runtime.json). */
  dir: string;
  /** Per-VM runtime directory (sockets). */
  socketsDir: string;
  /** The root disk over the image: made by `prepareDisks`. */
  overlay: string;
  /** Per-boot config disk (read-only in the guest): made by the daemon. */
  configDisk: string;
  /** Persistent work disk (the guest's /root): made by the daemon. */
  workDisk: string;
  /** The serial console, written by the VMM. */
  consoleLog: string;
  /**
   * Raw disks attached read-write after the work disk (/dev/vdd, …): only a
   * throwaway build VM has them (the image pipeline's package install into
   * a pulled image). Such a VM is never a snapshot template or a clone.
   */
  extraDisks?: string[];
}

export interface DiskSpec {
  files: VmFiles;
  /** The image's root filesystem (raw ext4, read-only, shared by every VM of the image). */
  baseImage: string;
  /** Size of the VM's root disk. */
  rootBytes: number;
  /**
   * A clone: `files.overlay` already holds a copy of a snapshot's root disk
   * (the daemon copied and verified it); the driver only grows it to
   * rootBytes instead of making a fresh one.
   */
  fromSnapshot?: boolean;
}

export type BootNetwork =
  /** User networking: SSH forwarded from 127.0.0.1:sshHostPort; `restrict`: no route off the host. */
  | { mode: 'user'; sshHostPort: number; restrict: boolean; mac: string }
  /** An existing tap owned by our user (made by the root helper). */
  | { mode: 'tap'; tap: string; mac: string }
  /**
   * A snapshot's template: the NIC is there (so clones have it) but has no
   * backend, so the saved state holds no network backend's state and a
   * clone can attach either backend (a NIC's negotiated features are then
   * those every backend offers).
   */
  | { mode: 'none'; mac: string };

export interface BootSpec {
  /** The VM's name: its hostname and the VMM's guest name. */
  name: string;
  vcpu: number;
  memoryMib: number;
  accel: 'kvm' | 'tcg';
  kernel: string;
  /** Empty string: no initrd. */
  initrd: string;
  files: VmFiles;
  network: BootNetwork;
}

/** One disk of a VM as `vm stats` shows it. */
export interface DiskInfo {
  name: string;
  path: string;
  allocatedBytes: number;
  virtualBytes: number;
}

/** A snapshot's saved state as the daemon recorded it (snapshot.json). */
export interface SavedState {
  /** The file `saveSnapshot` wrote. */
  file: string;
  /** An open descriptor of `file` that restore reads instead (positional reads: the offset is not moved). */
  fd?: number;
  bytes: number;
  /** Hex sha256 of the file. */
  sha256: string;
}

/**
 * `restore` could not use the snapshot (missing, truncated, corrupt, or not
 * loadable by this VMM): nothing of the VM runs, and the caller boots cold.
 */
export class SnapshotUnusable extends BangerError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('operation_failed', message, 'the snapshot is dropped and made again; this VM boots cold', options);
  }
}

/** A host program the driver needs (`banger doctor` checks each). */
export interface HostTool {
  name: string;
  /** A harmless invocation that succeeds when the tool is installed (e.g. --version). */
  argv: string[];
  /** The Debian package that provides it. */
  pkg: string;
  why: string;
}

export interface VmmDriver {
  readonly vmm: Vmm;
  readonly capabilities: VmmCapabilities;
  readonly hostTools: readonly HostTool[];

  /** Whether hardware acceleration works on this host; may boot `kernel` for a few seconds, never hangs. */
  probeAccel(kernel: string): Promise<AccelProbe>;

  /** Makes the disks of a new VM that are the VMM's: its root disk over the image (create only). */
  prepareDisks(spec: DiskSpec): Promise<void>;

  /**
   * Starts the VMM detached from the daemon (it outlives it) and resolves
   * once it runs, with the handle to persist. On failure nothing of it
   * runs, or `findOrphan` finds what does.
   */
  boot(spec: BootSpec): Promise<VmmHandle>;

  /**
   * This VM's VMM when no handle reached runtime.json (the daemon died, or
   * the boot failed, after the VMM started): found through the driver's own
   * files and trusted only when the process proves to be that VM's.
   */
  findOrphan(files: VmFiles): VmmHandle | undefined;

  /** A handle read back from runtime.json; undefined when it is not one of this driver's. */
  parseHandle(json: unknown): VmmHandle | undefined;

  /** The VMM process of this handle is still the one `boot` started (a reused pid is not). */
  isAlive(handle: VmmHandle): boolean;
  /** Resolves true once that process is gone, false after timeoutMs. */
  waitForExit(handle: VmmHandle, timeoutMs: number): Promise<boolean>;
  /** Sends a signal to that process (never to a reused pid). */
  signal(handle: VmmHandle, signal: NodeJS.Signals): void;

  /** The VMM's own polite request to the guest: the ACPI power button. Resolves once it was sent. */
  requestPowerdown(handle: VmmHandle, timeoutMs: number): Promise<void>;

  /** The host end of the guest-agent channel (capabilities.agentChannel 'virtio-serial'), else undefined. */
  agentSocket(handle: VmmHandle): string | undefined;

  /** The host process that runs the VM: its pid (vm show) and start time (vm stats samples its CPU). */
  hostProcess(handle: VmmHandle): { pid: number; startTime: string };

  /** The VM's disks with their allocated and virtual sizes (vm stats). */
  describeDisks(files: VmFiles): Promise<DiskInfo[]>;

  /**
   * Writes a stopped VM's root disk (its overlay with the image under it)
   * as one raw, sparse file at `out` (vm commit: the new image's rootfs).
   */
  exportRootDisk(files: VmFiles, out: string): Promise<void>;

  /**
   * The VMM's version (e.g. "qemu 7.2.22"): a snapshot made by another
   * version is not restored (capabilities.snapshots).
   */
  version(): Promise<string>;

  /**
   * Pauses the VM, writes its state to `file` (atomically: a temp file
   * beside it, renamed when complete) and ends the VMM. The root disk
   * (`files.overlay` of its boot) is then consistent with that state: the
   * pair is the snapshot. Resolves with what was written.
   */
  saveSnapshot(handle: VmmHandle, file: string, timeoutMs: number): Promise<SavedState>;

  /**
   * Boots a VM from a snapshot instead of its kernel: `spec` as for `boot`
   * (same machine shape as the template's; the disks the VM's own), the
   * guest resumed where the template was saved. The state is checked
   * against `state` (size, sha256) while it loads, and the guest resumes
   * only when it matches; the guest is told its disks' sizes, which may
   * differ from the template's. Throws SnapshotUnusable (nothing left
   * running) when the snapshot cannot be used.
   */
  restore(spec: BootSpec, state: SavedState): Promise<VmmHandle>;
}

/** The drivers a daemon has: undefined for a VMM this build does not carry. */
export type DriverRegistry = (vmm: Vmm) => VmmDriver | undefined;
