/** Plain data shapes shared by the daemon, the RPC table and the CLI. No I/O. */

/** Signals `vm kill --signal` accepts (QEMU ends on each of them). */
export const KILL_SIGNALS = ['KILL', 'TERM', 'INT', 'HUP', 'QUIT'] as const;

export const VM_STATES = ['creating', 'running', 'stopped', 'error', 'deleting'] as const;
export type VmState = (typeof VM_STATES)[number];

export const ACCELS = ['auto', 'kvm', 'tcg'] as const;
export type Accel = (typeof ACCELS)[number];

export const VMMS = ['qemu', 'firecracker'] as const;
export type Vmm = (typeof VMMS)[number];

export const NETWORK_MODES = ['user', 'bridge'] as const;
export type NetworkMode = (typeof NETWORK_MODES)[number];

/** A VM as stored (durable intent and identity). */
export interface VmRecord {
  id: string;
  name: string;
  image: string;
  vcpu: number;
  memoryMib: number;
  systemOverlayBytes: number;
  /** Size of the persistent work disk mounted at /root. */
  diskBytes: number;
  vmm: Vmm;
  network: NetworkMode;
  state: VmState;
  /** Delete this VM when the client that created it goes away (vm run --rm). */
  ephemeral: boolean;
  /** The guest may reach the network (--nat); otherwise it has no route off the host. */
  nat: boolean;
  /** Bridge networking: the guest's address (its MAC and tap follow from it); null in user networking. */
  ip: string | null;
  /** The catalog kernel it boots (`vm create --kernel`); null: its image's. */
  kernel: string | null;
  lastError: string | null;
  createdAt: string;
  updatedAt: string;
}

/**
 * What is true right now about a running VM, as shown (vm show, RPC):
 * rebuilt from runtime.json and the OS on daemon start. What only the VMM
 * driver reads (its pid start time, control sockets) stays in runtime.json.
 */
export interface VmRuntime {
  vmm: Vmm;
  /** The VMM's host process. */
  pid: number;
  accel: 'kvm' | 'tcg';
  sshHost: string;
  sshPort: number;
  startedAt: string;
}

/** A VM as shown to users: the record plus what is known of its runtime. */
export interface VmView extends VmRecord {
  runtime: VmRuntime | null;
  workspace: WorkspaceRecord | null;
}

export const WORKSPACE_MODES = ['archive', 'delta'] as const;
export type WorkspaceMode = (typeof WORKSPACE_MODES)[number];

/** The last `vm workspace prepare` of a VM (one per VM). */
export interface WorkspaceRecord {
  /** The host repo's top directory. */
  hostPath: string;
  /** Where it is in the guest. */
  guestPath: string;
  includeUntracked: boolean;
  /** git tree of the work tree as sent: the dirty check compares against it. */
  tree: string;
  /** The guest's refs/banger/prepared: `tree` on top of `head`. */
  commit: string;
  head: string | null;
  branch: string | null;
  files: number;
  bytes: number;
  mode: WorkspaceMode;
  preparedAt: string;
}

/** Where an image's root tree came from (src/images/pipeline.ts). */
export const IMAGE_SOURCE_KINDS = ['debian', 'oci', 'oci-archive', 'vm', 'image', 'bundle'] as const;
export type ImageSourceKind = (typeof IMAGE_SOURCE_KINDS)[number];

export interface ImageRecord {
  name: string;
  /** How it was made, in words, e.g. "mmdebstrap bookworm (http://deb.debian.org/debian)". */
  source: string;
  /** debian (mmdebstrap), oci (a registry), oci-archive (image import), vm (vm commit), image (image build --from). */
  sourceKind: ImageSourceKind;
  /** The source's reference: suite and mirror, image reference with its digest, archive file, VM. */
  sourceRef: string;
  kernelVersion: string;
  /** The catalog kernel it boots (`image pull --kernel`); null: its own (or banger's, copied in). */
  kernel: string | null;
  rootfsBytes: number;
  packages: string[];
  createdAt: string;
}

/** A warm-clone snapshot of an image (image show, image snapshot). */
export interface SnapshotInfo {
  /** VMM, accelerator and shape, e.g. `qemu-tcg-2c-1024m`. */
  key: string;
  vmm: string;
  accel: 'kvm' | 'tcg';
  vcpu: number;
  memoryMib: number;
  /** Bytes on disk (saved state + root disk). */
  bytes: number;
  createdAt: string;
  /** How long making it took (template boot + save). */
  buildMs: number;
  /** Usable now; false: stale (`reason`), made again on demand. */
  current: boolean;
  reason?: string;
}

/** An image as `image show` shows it: its record and its snapshots. */
export interface ImageView extends ImageRecord {
  snapshots: SnapshotInfo[];
}

export interface ProgressEvent {
  stage: string;
  message: string;
  /** 'warn' lines are always shown; 'info' lines are progress. */
  level?: 'info' | 'warn';
  /**
   * A running count (bytes of a layer, a rate): on a terminal it replaces
   * the previous transient line; elsewhere it is not shown (the step's own
   * line follows when it ends).
   */
  transient?: boolean;
}

/** How to reach a guest's sshd: used by the daemon (readiness) and the CLI (exec, ssh). */
export interface SshTarget {
  host: string;
  port: number;
  user: string;
  privateKeyPath: string;
  knownHostsPath: string;
  /** The name the host key is pinned under in banger's known_hosts (`<vmname>.vm`). */
  hostKeyAlias: string;
}
