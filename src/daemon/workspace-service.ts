/**
 * Workspaces: copy a host repo into a running VM's /root/repo and bring the
 * guest's edits back as a patch. The host half is src/workspace (scan,
 * snapshot), the guest half is the scripts in src/workspace/guest-scripts.ts;
 * this service runs them under the VM's lock (a stop waits for a prepare to
 * finish, so a prepared workspace is on disk before the guest powers off)
 * and records the result in the store.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BangerError, isBangerError, messageOf } from '../errors/errors.js';
import { formatSize } from '../model/sizes.js';
import { validateRevision } from '../model/revision.js';
import type { ProgressEvent, SshTarget, WorkspaceMode, WorkspaceRecord } from '../model/types.js';
import type { Layout } from '../paths/paths.js';
import type { Store } from '../store/store.js';
import type { Runner } from '../system/runner.js';
import { tail } from '../system/runner.js';
import type { Logger } from '../log/log.js';
import { sshExec } from '../guest/ssh.js';
import { scanRepo, type RepoScan } from '../workspace/scan.js';
import { dropSnapshot, makeSnapshot, worktreeTree } from '../workspace/snapshot.js';
import { applyCommand, BAD_BASE_EXIT, BASE_MISSING_EXIT, exportCommand, GUEST_REPO, NO_WORKSPACE_EXIT, parseProbe, probeCommand } from '../workspace/guest-scripts.js';
import { ensureDir } from '../system/fs.js';
import { collector, forwarder, sink } from '../system/streams.js';
import type { WorkspaceExportResult as ExportResult, WorkspacePrepareResult as PrepareResult, WorkspaceStatus } from '../rpc/methods.js';
import type { VmService } from './vm-service.js';

/** Guest stderr kept for an error message (its tail is what is shown). */
const STDERR_KEEP_BYTES = 256 * 1024;
/** Bound on a probe's output (one line per file of the work tree, from the guest). */
const PROBE_MAX_BYTES = 64 * 1024 * 1024;

export interface WorkspaceServiceDeps {
  store: Store;
  runner: Runner;
  layout: Layout;
  log: Logger;
  vms: VmService;
  /** How often a long transfer reports progress (ms). */
  progressIntervalMs?: number;
}

export interface PrepareParams {
  name: string;
  /** Absolute path inside the host repo. */
  path: string;
  includeUntracked?: boolean;
  mode?: WorkspaceMode;
}

type Progress = (ev: ProgressEvent) => void;

/** Above these a prepare says what it is doing before the transfer starts. */
const BIG_REPO_FILES = 5000;
const BIG_REPO_BYTES = 50 * 1024 * 1024;

export class WorkspaceService {
  constructor(private readonly deps: WorkspaceServiceDeps) {}

  private get tmpRoot(): string {
    return join(this.deps.layout.cacheDir, 'tmp');
  }

  async prepare(p: PrepareParams, progress: Progress, signal?: AbortSignal): Promise<PrepareResult> {
    const started = Date.now();
    const mode = p.mode ?? 'archive';
    // Scan before taking the lock: a bad repo fails without waiting for anything.
    const scan = await scanRepo(this.deps.runner, p.path, { includeUntracked: p.includeUntracked });
    return this.deps.vms.withRunning(p.name, async (vm, target) => {
      progress({ stage: 'workspace', message: `sending ${describe(scan)} from ${scan.root} to ${vm.name}:${GUEST_REPO}` });
      // The base whose history the guest has: in delta mode the probe says (it
      // lists the guest's files anyway); in archive mode the last prepare's
      // HEAD, which the apply script verifies (exit BASE_MISSING_EXIT → send all).
      let have: string | null;
      let guestFiles: Map<string, string> | null = null;
      if (mode === 'delta') {
        ({ have, guestFiles } = parseProbe((await this.capture(target, probeCommand(GUEST_REPO, true), signal)).stdoutBuf));
      } else {
        have = this.deps.store.findWorkspace(vm.id)?.head ?? null;
      }
      let sent = await this.send(vm.name, target, scan, { have, guestFiles }, progress, signal);
      if (sent === 'base-missing') sent = await this.send(vm.name, target, scan, { have: null, guestFiles }, progress, signal);
      if (sent === 'base-missing') throw new BangerError('internal', 'the guest reported a missing base with no base sent');
      const workspace: WorkspaceRecord = {
        hostPath: scan.root,
        guestPath: GUEST_REPO,
        includeUntracked: scan.includeUntracked,
        tree: sent.tree,
        commit: sent.commit,
        head: scan.head,
        branch: scan.branch,
        files: scan.entries.length,
        bytes: scan.totalBytes,
        mode,
        preparedAt: new Date().toISOString(),
      };
      this.deps.store.upsertWorkspace(vm.id, workspace);
      const ms = Date.now() - started;
      this.deps.log.info({ vm: vm.name, files: workspace.files, sentFiles: sent.sentFiles, sentBytes: sent.bytes, ms }, 'workspace prepared');
      return { name: vm.name, workspace, sentBytes: sent.bytes, sentFiles: sent.sentFiles, skipped: scan.skipped, ms };
    });
  }

  /** One snapshot → apply round: the pack then the archive on the apply script's stdin. */
  private async send(
    vmName: string,
    target: SshTarget,
    scan: RepoScan,
    base: { have: string | null; guestFiles: Map<string, string> | null },
    progress: Progress,
    signal?: AbortSignal,
  ): Promise<{ tree: string; commit: string; sentFiles: number; bytes: number } | 'base-missing'> {
    if (scan.entries.length > BIG_REPO_FILES || scan.totalBytes > BIG_REPO_BYTES) {
      progress({ stage: 'workspace', message: `packing git history and ${describe(scan)} (big repo: this takes a while)` });
    }
    const snap = await makeSnapshot(this.deps.runner, scan, { tmpRoot: this.tmpRoot, ...base });
    try {
      if (base.guestFiles) progress({ stage: 'workspace', message: `delta: ${snap.sentFiles} of ${scan.entries.length} files differ in the guest` });
      const total = snap.packBytes + snap.tarBytes;
      const errOut = collector(STDERR_KEEP_BYTES);
      const res = await sshExec(
        target,
        applyCommand({
          repo: GUEST_REPO,
          packBytes: snap.packBytes,
          commit: snap.commit,
          indexTree: snap.indexTree,
          head: scan.head,
          branch: scan.branch,
          shallow: snap.shallow,
          base: snap.base,
        }),
        { stdout: sink(), stderr: errOut, stdin: Readable.from(this.concat([snap.packFile, snap.tarFile], total, progress)), signal },
      );
      if (res.exitCode === BASE_MISSING_EXIT && snap.base) return 'base-missing';
      if (res.exitCode !== 0) {
        throw new BangerError(
          'operation_failed',
          `writing the workspace into ${vmName}:${GUEST_REPO} failed (exit ${res.exitCode})${guestStderr(errOut)}`,
          `the work disk may be full: \`banger vm stats ${vmName}\`; \`banger vm set ${vmName} --disk-size\` grows it while stopped`,
        );
      }
      return { tree: snap.tree, commit: snap.commit, sentFiles: snap.sentFiles, bytes: total };
    } finally {
      await dropSnapshot(snap);
    }
  }

  /**
   * Streams the guest's patch to `sendChunk` as the guest produces it: the
   * daemon never holds a whole export (it can be any size). The client
   * keeps the chunks aside and uses them only once this resolves; a failure
   * after some chunks went out means "discard them".
   */
  async export(name: string, baseCommit: string | null, sendChunk: (data: Buffer) => Promise<void>, signal?: AbortSignal): Promise<ExportResult> {
    if (baseCommit !== null) validateRevision(baseCommit);
    return this.deps.vms.withRunning(name, async (vm, target) => {
      const out = forwarder(sendChunk);
      const err = collector(STDERR_KEEP_BYTES);
      const res = await sshExec(target, exportCommand(GUEST_REPO, baseCommit), { stdout: out, stderr: err, signal });
      const stderr = err.buffer().toString('utf8');
      if (res.exitCode === NO_WORKSPACE_EXIT) {
        throw new BangerError('not_found', `${vm.name} has no prepared workspace at ${GUEST_REPO}`, `prepare one with \`banger vm workspace prepare ${vm.name} PATH\``);
      }
      if (res.exitCode === BAD_BASE_EXIT) {
        throw new BangerError('bad_request', `${baseCommit}: ${tail(stderr.trim(), 500)}`, `pass a commit of the guest's history, e.g. the host's HEAD at prepare time (\`banger vm show ${vm.name}\` names it)`, { field: 'baseCommit' });
      }
      if (res.exitCode !== 0) {
        throw new BangerError('operation_failed', `exporting the workspace of ${vm.name} failed (exit ${res.exitCode})${stderr ? `:\n${tail(stderr)}` : ''}`);
      }
      if (out.failed !== undefined) {
        throw new BangerError('interrupted', `the export of ${vm.name} could not be delivered: ${messageOf(out.failed)}`);
      }
      return { bytes: out.total, baseCommit };
    });
  }

  /** Does the host repo still match what was prepared? (vm exec warns when not.) */
  async status(name: string): Promise<WorkspaceStatus> {
    const vm = this.deps.vms.show(name);
    const ws = vm.workspace;
    if (!ws) return { workspace: null, changed: null, reason: null };
    let scan: RepoScan;
    try {
      scan = await scanRepo(this.deps.runner, ws.hostPath, { includeUntracked: ws.includeUntracked });
    } catch (e) {
      return { workspace: ws, changed: null, reason: messageOf(e) };
    }
    ensureDir(this.tmpRoot);
    const dir = await mkdtemp(join(this.tmpRoot, 'ws-status-'));
    try {
      const { tree } = await worktreeTree(this.deps.runner, scan, dir);
      const changed = tree !== ws.tree || scan.head !== ws.head;
      return { workspace: ws, changed, reason: changed ? `${ws.hostPath} changed since it was prepared at ${ws.preparedAt}` : null };
    } catch (e) {
      return { workspace: ws, changed: null, reason: isBangerError(e) ? e.message : messageOf(e) };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** The files one after the other, reporting progress while they stream. */
  private async *concat(files: string[], total: number, progress: Progress): AsyncGenerator<Buffer> {
    const interval = this.deps.progressIntervalMs ?? 1000;
    let sent = 0;
    let last = Date.now();
    for (const f of files) {
      for await (const chunk of createReadStream(f)) {
        const b = chunk as Buffer;
        sent += b.length;
        if (Date.now() - last >= interval) {
          last = Date.now();
          progress({ stage: 'workspace', message: `sent ${formatSize(sent)} of ${formatSize(total)} (${Math.floor((sent / total) * 100)}%)` });
        }
        yield b;
      }
    }
  }

  /** Runs a probe in the guest and keeps its output, bounded: the guest chooses how much it sends. */
  private async capture(target: SshTarget, command: string, signal?: AbortSignal) {
    const out = collector(PROBE_MAX_BYTES);
    const err = collector(STDERR_KEEP_BYTES);
    const res = await sshExec(target, command, { stdout: out, stderr: err, signal });
    if (out.overflowed) {
      throw new BangerError('operation_failed', `the guest's answer to a workspace probe passed ${formatSize(PROBE_MAX_BYTES)}`, 'the guest sent more than a work tree listing; recreate the VM if it is not yours to trust');
    }
    return { exitCode: res.exitCode, stdoutBuf: out.buffer(), stdout: out.buffer().toString('utf8'), stderr: err.buffer().toString('utf8') };
  }

}

function describe(scan: RepoScan): string {
  return `${scan.entries.length} file${scan.entries.length === 1 ? '' : 's'} (${formatSize(scan.totalBytes)})`;
}

function guestStderr(c: { buffer(): Buffer }): string {
  const t = tail(c.buffer().toString('utf8'));
  return t ? `:\n${t}` : '';
}

