/**
 * A handle on one VM: what you do with it (exec, workspace, lifecycle).
 * It holds the VM's name and the view last seen; every method asks the
 * daemon, so the handle never acts on stale state.
 */
import { resolve } from 'node:path';
import { BangerError } from '../errors/errors.js';
import type { RpcClient } from '../rpc/client.js';
import type { StopReport, VmCreateResult, VmLogsResult, VmPort, VmSshTarget, VmStats, WorkspacePrepareResult, WorkspaceStatus } from '../rpc/methods.js';
import type { KILL_SIGNALS } from '../model/types.js';
import type { ImageRecord, ProgressEvent, VmView, WorkspaceMode } from '../model/types.js';
import { checkArgv, execArgv, type ExecOptions, type ExecResult } from './exec.js';
import { exportPatch, exportPatchTo, prepareSummary, type ExportOptions, type ExportToResult } from './workspace.js';

export type KillSignal = (typeof KILL_SIGNALS)[number];

export interface ProgressOption {
  /** Progress lines from the daemon (boot steps, image builds); default: the one given to Banger.connect. */
  onProgress?: (ev: ProgressEvent) => void;
}

export interface PrepareOptions extends ProgressOption {
  /** Also send untracked files that git does not ignore. */
  includeUntracked?: boolean;
  /** archive (every file; the default) or delta (only files that differ in the guest). */
  mode?: WorkspaceMode;
}

/** What start and restart return: the VM, how long its boot took, and how to reach it. */
export type StartResult = VmCreateResult;

export interface StopResult {
  vm: VmView;
  report: StopReport;
}

/** @internal What a Vm needs from the Banger that made it. */
export interface VmHost {
  client: RpcClient;
  progress(o?: ProgressOption): ((ev: ProgressEvent) => void) | undefined;
}

export class Vm {
  /** @internal */
  constructor(
    private readonly host: VmHost,
    readonly name: string,
    private view: VmView | null,
    /** How the boot went, when this handle came from createVm (or start/restart). */
    public boot: { bootMs: number; clonedFrom: string | null } | null = null,
  ) {}

  /** The VM as last seen by this handle (createVm, start, stop, refresh …); null until one of those ran. */
  get info(): VmView | null {
    return this.view;
  }

  /** Its state as last seen (refresh() asks again). */
  get state(): VmView['state'] | undefined {
    return this.view?.state;
  }

  /** The VM as the daemon has it now. */
  async refresh(): Promise<VmView> {
    this.view = await this.host.client.call('vm.show', { name: this.name });
    return this.view;
  }

  /**
   * Runs argv in the VM (no shell: each element arrives byte-identical).
   * Resolves with the exit status and output; a non-zero status is a result,
   * not an error.
   */
  async exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const cmd = checkArgv(argv);
    const target = await this.sshTarget();
    return execArgv(target, cmd, opts);
  }

  /** Where and how to SSH in (the key and known_hosts banger manages). Refused with not_running when stopped. */
  sshTarget(): Promise<VmSshTarget> {
    return this.host.client.call('vm.ssh_target', { name: this.name });
  }

  /** Copies a git repo's tracked files (edits included) and history into /root/repo; again to resync. */
  async prepareWorkspace(path: string, opts: PrepareOptions = {}): Promise<WorkspacePrepareResult> {
    if (typeof path !== 'string' || path === '') throw new BangerError('bad_request', 'prepareWorkspace needs the path of a directory in a git repo', "e.g. vm.prepareWorkspace('./repo')");
    const progress = this.host.progress(opts);
    const r = await this.host.client.call(
      'vm.workspace.prepare',
      { name: this.name, path: resolve(path), includeUntracked: opts.includeUntracked === true, mode: opts.mode },
      progress,
    );
    if (progress) for (const ev of prepareSummary(this.name, r)) progress(ev);
    return r;
  }

  /** The guest's changes to /root/repo since the prepare, as a git patch ('' when none). */
  exportWorkspace(opts: ExportOptions = {}): Promise<string> {
    return exportPatch(this.host.client, this.name, opts);
  }

  /** The same patch, written to FILE (atomically: FILE appears only once the whole patch arrived). */
  exportWorkspaceTo(file: string, opts: ExportOptions = {}): Promise<ExportToResult> {
    return exportPatchTo(this.host.client, this.name, file, opts);
  }

  /** The workspace (null: none) and whether the host repo changed since it was prepared. */
  workspaceStatus(): Promise<WorkspaceStatus> {
    return this.host.client.call('vm.workspace.status', { name: this.name });
  }

  async start(opts: ProgressOption = {}): Promise<StartResult> {
    return this.booted(await this.host.client.call('vm.start', { name: this.name }, this.host.progress(opts)));
  }

  /** Reboots for real (stop, keeping writes, then start): the boot_id changes. */
  async restart(opts: ProgressOption = {}): Promise<StartResult> {
    return this.booted(await this.host.client.call('vm.restart', { name: this.name }, this.host.progress(opts)));
  }

  /** Graceful: sync, power off, wait (bounded), then kill. */
  async stop(): Promise<StopResult> {
    const r = await this.host.client.call('vm.stop', { name: this.name });
    this.view = r.vm;
    return r;
  }

  /** Forceful: signals the VMM (no guest sync); the VM ends stopped. */
  async kill(signal: KillSignal = 'KILL'): Promise<VmView> {
    this.view = await this.host.client.call('vm.kill', { name: this.name, signal });
    return this.view;
  }

  /** Deletes the VM and every file of it; a running VM needs { force: true }. */
  async delete(opts: { force?: boolean } = {}): Promise<{ deleted: string }> {
    const r = await this.host.client.call('vm.delete', { name: this.name, force: opts.force === true });
    this.view = null;
    return r;
  }

  /** Changes a stopped VM: vCPUs, memory, or grows its /root work disk. */
  async set(change: { vcpu?: number; memoryMib?: number; diskBytes?: number }): Promise<VmView> {
    this.view = await this.host.client.call('vm.set', { name: this.name, vcpu: change.vcpu, memoryMib: change.memoryMib, diskBytes: change.diskBytes });
    return this.view;
  }

  /** Makes a stopped VM's root disk an image (its work disk stays out). */
  commit(image: string, opts: { force?: boolean } & ProgressOption = {}): Promise<ImageRecord> {
    return this.host.client.call('vm.commit', { name: this.name, image, force: opts.force === true }, this.host.progress(opts));
  }

  /** Console output from byte `offset` (pass back the returned offset to follow). */
  logs(offset?: number): Promise<VmLogsResult> {
    return this.host.client.call('vm.logs', { name: this.name, offset });
  }

  stats(): Promise<VmStats> {
    return this.host.client.call('vm.stats', { name: this.name });
  }

  /** Listening sockets in the guest and where the host reaches them. */
  ports(): Promise<VmPort[]> {
    return this.host.client.call('vm.ports', { name: this.name });
  }

  /** JSON.stringify(vm) gives the VM as last seen: the shape of `banger vm show --json`. */
  toJSON(): VmView | { name: string } {
    return this.view ?? { name: this.name };
  }

  private booted(r: VmCreateResult): VmCreateResult {
    this.view = r.vm;
    if (r.bootMs > 0) this.boot = { bootMs: r.bootMs, clonedFrom: r.clonedFrom ?? null };
    return r;
  }
}
