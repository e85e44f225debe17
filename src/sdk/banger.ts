/**
 * The SDK's entry point: one connection to bangerd (started when needed,
 * like the CLI does) and the use cases on top of it. The CLI is its first
 * user; every result it returns was validated against the method table's
 * schema, and every failure is a BangerError.
 */
import { BangerError } from '../errors/errors.js';
import { generateVmName, validateImageName, validateVmName } from '../model/names.js';
import type { ImageRecord, ImageView, NetworkMode, ProgressEvent, SnapshotInfo, VmView } from '../model/types.js';
import { resolveLayout, type Layout } from '../paths/paths.js';
import type { CallOptions, RpcClient } from '../rpc/client.js';
import type { CatalogKernel, DaemonStatus, ImageExportResult, KernelInfo, MethodName, NetworkShow, ParamsOf, ResultOf, VmCreateResult } from '../rpc/methods.js';
import { createRunner, type Runner } from '../system/runner.js';
import { connectOrStart, tryConnect } from './connect.js';
import { runThrowaway, type RunOptions, type RunResult } from './run.js';
import { Vm, type ProgressOption, type VmHost } from './vm.js';

export interface ConnectOptions {
  /** Start bangerd when none is running (default true, like the CLI). */
  start?: boolean;
  /** Default progress callback for calls that report progress (boots, image builds, pulls). */
  onProgress?: (ev: ProgressEvent) => void;
  /** Where to find banger's directories (BANGER_STATE_DIR, XDG_*, …); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** How long to wait for a daemon this call started (default 15 s). */
  startTimeoutMs?: number;
}

/** What a new VM looks like; anything left out comes from banger's config. */
export interface VmSpec {
  /** A DNS label; generated (adjective-noun-hex) when omitted. */
  name?: string;
  /** Image to boot (default: the default image, built on first use). */
  image?: string;
  vcpu?: number;
  memoryMib?: number;
  /** Size of the persistent /root work disk, bytes. */
  diskBytes?: number;
  /** Let the guest reach the network (default: no route off the host). */
  nat?: boolean;
  /** user (rootless) or bridge (own IP, NAME.vm DNS; needs the root helper). */
  network?: NetworkMode;
  /** Boot the kernel even when a snapshot could start a warm clone. */
  cold?: boolean;
  /** A kernel from the kernel catalog to boot instead of the image's (pulled when missing; such a VM boots cold). */
  kernel?: string;
}

export interface CreateVmOptions extends VmSpec, ProgressOption {
  /** false: make the disks, do not boot (default true). */
  start?: boolean;
  /** Delete the VM when this Banger closes, or when this process ends. */
  ephemeral?: boolean;
}

export interface ImageBuildOptions extends ProgressOption {
  force?: boolean;
  /** Debian suite: bookworm (default) or trixie. */
  suite?: string;
  /** Only what banger needs in a guest: no compilers, make, python3, curl. */
  minimal?: boolean;
  /** More Debian packages. */
  packages?: string[];
  /** Start from this image (Debian family) and add `packages`, in a build VM. */
  from?: string;
  /** false: keep Debian's stock boot (slower; for comparing boots). */
  tuned?: boolean;
}

export interface ImagePullOptions extends ProgressOption {
  /** Image name (default: from the reference, debian:bookworm → debian-bookworm). */
  name?: string;
  /** e.g. linux/amd64 (the default) or linux/arm64/v8. */
  platform?: string;
  /** Allow plain HTTP to a registry that is not on a loopback address. */
  insecure?: boolean;
  /** Boot this catalog kernel (pulled when missing) instead of banger's; it is copied into the image. */
  kernel?: string;
  /** Replace an image of that name. */
  force?: boolean;
  /** For a bundle URL: check its signature with this PEM public key (an absolute path) instead of banger's. */
  pubkey?: string;
}

export class Banger {
  private readonly host: VmHost;
  private closed = false;

  private constructor(
    /** @internal The connection (its lifetime is the lifetime of this Banger's ephemeral VMs). */
    readonly client: RpcClient,
    /** @internal */
    readonly layout: Layout,
    /** @internal */
    readonly runner: Runner,
    private readonly defaultProgress: ((ev: ProgressEvent) => void) | undefined,
    private readonly openConnection: () => Promise<RpcClient | undefined> = () => tryConnect(layout),
  ) {
    this.host = { client, progress: (o) => this.progressFor(o) };
  }

  /** Connects to bangerd, starting it first when it is not running (unless `start: false`). */
  static async connect(opts: ConnectOptions = {}): Promise<Banger> {
    const layout = resolveLayout(opts.env ?? process.env);
    const runner = createRunner();
    let client: RpcClient | undefined;
    if (opts.start === false) {
      client = await tryConnect(layout);
      if (!client) throw new BangerError('unavailable', `bangerd is not running (no socket at ${layout.socketPath})`, 'start it with `banger daemon start`, or connect without start: false');
    } else {
      client = await connectOrStart(layout, runner, { timeoutMs: opts.startTimeoutMs });
    }
    return new Banger(client, layout, runner, opts.onProgress);
  }

  /**
   * @internal A Banger over a given client (tests with a fake daemon);
   * `connect` opens the extra connection a run uses (default: none).
   */
  static withClient(client: RpcClient, o: { layout?: Layout; runner?: Runner; onProgress?: (ev: ProgressEvent) => void; connect?: () => Promise<RpcClient | undefined> } = {}): Banger {
    return new Banger(client, o.layout ?? resolveLayout(), o.runner ?? createRunner(), o.onProgress, o.connect ?? (() => Promise.resolve(undefined)));
  }

  /** @internal A new connection of the same daemon (a run's VM lives as long as its connection). */
  connectAgain(): Promise<RpcClient | undefined> {
    return this.openConnection();
  }

  /** Closes the connection: ephemeral VMs made through it are deleted by the daemon. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }

  /** Creates a VM and (unless start: false) boots it; resolves once it answers SSH. */
  async createVm(opts: CreateVmOptions = {}): Promise<Vm> {
    const r = await this.createRaw(opts);
    return new Vm(this.host, r.vm.name, r.vm, r.bootMs > 0 ? { bootMs: r.bootMs, clonedFrom: r.clonedFrom ?? null } : null);
  }

  /** @internal createVm's result as the daemon gives it (the CLI prints it). */
  async createRaw(opts: CreateVmOptions, client: RpcClient = this.client): Promise<VmCreateResult> {
    const name = opts.name !== undefined ? validateVmName(opts.name, 'name') : generateVmName();
    if (opts.image !== undefined) validateImageName(opts.image, 'image');
    return client.call(
      'vm.create',
      {
        name,
        image: opts.image,
        vcpu: opts.vcpu,
        memoryMib: opts.memoryMib,
        diskBytes: opts.diskBytes,
        ephemeral: opts.ephemeral === true,
        start: opts.start,
        nat: opts.nat === true,
        network: opts.network,
        cold: opts.cold === true,
        kernel: opts.kernel,
      },
      this.progressFor(opts),
    );
  }

  /** A handle on an existing VM (no call is made; the name is checked). */
  vm(name: string): Vm {
    return new Vm(this.host, validateVmName(name), null);
  }

  /** A handle on an existing VM, with its current view (not_found when there is none). */
  async getVm(name: string): Promise<Vm> {
    const vm = this.vm(name);
    await vm.refresh();
    return vm;
  }

  listVms(): Promise<VmView[]> {
    return this.client.call('vm.list', {});
  }

  /**
   * Runs a command in a throwaway VM: created, the repo (if any) copied in,
   * the command run there, the VM deleted, also on failure or abort.
   */
  run(opts: RunOptions): Promise<RunResult> {
    return runThrowaway(this, opts);
  }

  /** Deletes VMs that are not running (all of them, or those in `names`); dryRun: only says which. */
  pruneVms(opts: { names?: string[]; dryRun?: boolean } = {}): Promise<{ removed: string[]; skipped: string[]; candidates: string[] }> {
    return this.client.call('vm.prune', { names: opts.names, dryRun: opts.dryRun });
  }

  listImages(): Promise<ImageRecord[]> {
    return this.client.call('image.list', {});
  }

  showImage(name: string): Promise<ImageView> {
    return this.client.call('image.show', { name });
  }

  /** Builds a Debian image with mmdebstrap (needs root), or from another image with `from`. */
  buildImage(name: string, opts: ImageBuildOptions = {}): Promise<ImageRecord> {
    return this.client.call(
      'image.build',
      { name, force: opts.force === true, tuned: opts.tuned, suite: opts.suite, minimal: opts.minimal === true ? true : undefined, packages: opts.packages, from: opts.from },
      this.progressFor(opts),
    );
  }

  /** Pulls an OCI image from a registry and makes it a banger image. */
  pullImage(ref: string, opts: ImagePullOptions = {}): Promise<ImageRecord> {
    return this.client.call('image.pull', { ref, name: opts.name, platform: opts.platform, insecure: opts.insecure === true, force: opts.force === true, pubkey: opts.pubkey, kernel: opts.kernel }, this.progressFor(opts));
  }

  /**
   * Imports an OCI layout, a `docker save` archive or an image bundle (a
   * directory or a tar; the path is absolute). A bundle is checked whole
   * (every sha256; its signature, when signed, with banger's key or `pubkey`,
   * an absolute path to a PEM) before anything is published.
   */
  importImage(path: string, opts: Omit<ImagePullOptions, 'insecure'> & { pubkey?: string } = {}): Promise<ImageRecord> {
    return this.client.call('image.import', { path, name: opts.name, platform: opts.platform, force: opts.force === true, pubkey: opts.pubkey, kernel: opts.kernel }, this.progressFor(opts));
  }

  /** Writes image `name` as a bundle to `path` (absolute; must not exist), signed with the PEM private key at `sign` (absolute) when given. */
  exportImage(name: string, path: string, opts: { sign?: string } = {}): Promise<ImageExportResult> {
    return this.client.call('image.export', { name, path, sign: opts.sign });
  }

  deleteImage(name: string): Promise<{ deleted: string }> {
    return this.client.call('image.delete', { name });
  }

  /** Kernels pulled from the signed catalog (config kernel_catalog_url). */
  listKernels(): Promise<KernelInfo[]> {
    return this.client.call('kernel.list', {});
  }

  /** What the catalog offers (its signature checked). */
  kernelCatalog(): Promise<CatalogKernel[]> {
    return this.client.call('kernel.catalog', {});
  }

  showKernel(name: string): Promise<KernelInfo> {
    return this.client.call('kernel.show', { name });
  }

  /** Pulls a kernel from the catalog: its signature and every file's sha256 are checked before it appears. */
  pullKernel(name: string, opts: { force?: boolean } = {}): Promise<KernelInfo> {
    return this.client.call('kernel.pull', { name, force: opts.force === true });
  }

  deleteKernel(name: string): Promise<{ deleted: string }> {
    return this.client.call('kernel.delete', { name });
  }

  /** Drops cached OCI layers no pulled image names. */
  pruneImages(): Promise<{ removed: number; bytes: number; kept: number }> {
    return this.client.call('image.prune', {});
  }

  /** Makes (or remakes) the warm-clone snapshot of an image for a machine shape (default: config's). */
  snapshotImage(name: string, opts: { vcpu?: number; memoryMib?: number } & ProgressOption = {}): Promise<SnapshotInfo> {
    return this.client.call('image.snapshot', { name, vcpu: opts.vcpu, memoryMib: opts.memoryMib }, this.progressFor(opts));
  }

  network(): Promise<NetworkShow> {
    return this.client.call('network.show', {});
  }

  daemonStatus(): Promise<DaemonStatus> {
    return this.client.call('daemon.status', {});
  }

  /** Asks bangerd to stop (running VMs keep running; a new connect starts it again). */
  stopDaemon(): Promise<{ stopping: true }> {
    return this.client.call('daemon.stop', {});
  }

  /** Any method of the RPC table (src/rpc/methods.ts), typed; the result is validated like every other. */
  call<M extends MethodName>(method: M, params: ParamsOf<M>, opts?: CallOptions): Promise<ResultOf<M>> {
    return this.client.call(method, params, opts);
  }

  /** @internal */
  progressFor(o?: ProgressOption): ((ev: ProgressEvent) => void) | undefined {
    return o?.onProgress ?? this.defaultProgress;
  }
}
