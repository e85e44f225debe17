/**
 * banger.run: a throwaway VM for one command (the SDK's `vm run --rm`).
 *
 * The VM is created over a connection of its own, as an ephemeral VM: the
 * daemon deletes it when that connection goes, so a caller that dies takes
 * its VM with it. An abort closes that connection (the daemon stops a boot
 * in flight and removes the VM), then deletes the VM over the main
 * connection and waits until it is gone before rejecting with
 * `interrupted`: when run() settles, no VM of it is left.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { Writable } from 'node:stream';
import { BangerError, isBangerError } from '../errors/errors.js';
import { GUEST_REPO } from '../workspace/guest-scripts.js';
import { scanRepo, type RepoScan } from '../workspace/scan.js';
import type { WorkspaceMode } from '../model/types.js';
import type { RpcClient } from '../rpc/client.js';
import type { VmCreateResult, WorkspacePrepareResult } from '../rpc/methods.js';
import { generateVmName, validateVmName } from '../model/names.js';
import type { Banger, VmSpec } from './banger.js';
import { bootstrapMise, hasMiseConfig } from './bootstrap.js';
import { checkArgv, execArgv, type ExecOptions, type ExecResult } from './exec.js';
import { Vm, type ProgressOption } from './vm.js';

export interface RunOptions extends VmSpec, ProgressOption, Omit<ExecOptions, 'cwd'> {
  /** The command, as an argv (each element arrives byte-identical). */
  cmd: readonly string[];
  /** A directory in a git repo: its tracked files are copied to /root/repo and the command runs there. */
  repo?: string;
  /** Also send untracked files that git does not ignore. */
  includeUntracked?: boolean;
  mode?: WorkspaceMode;
  /** Run `mise install` first when the repo has a mise config (default true; needs nat). */
  bootstrap?: boolean;
  /** Keep the VM after the command (default false: it is deleted). */
  keep?: boolean;
  /** Called once the VM is up, before the repo is copied and the command runs. */
  onReady?: (vm: Vm, created: VmCreateResult) => void;
  /**
   * @internal Replaces the command (the CLI's interactive shell and -d):
   * resolves with the exit code to report.
   */
  session?: (vm: Vm, cwd: string | undefined) => Promise<number>;
}

export interface RunResult extends ExecResult {
  /** The VM's name (gone by now unless keep). */
  name: string;
  /** How long the VM took to be ready, ms. */
  bootMs: number;
  /** The snapshot the VM was a warm clone of; null: it booted cold. */
  clonedFrom: string | null;
  /** What the repo's copy did (null: no repo). */
  workspace: WorkspacePrepareResult | null;
  /** The VM is still there (keep). */
  kept: boolean;
}

export async function runThrowaway(banger: Banger, opts: RunOptions): Promise<RunResult> {
  const cmd = opts.session ? [] : checkArgv(opts.cmd, 'cmd');
  const name = opts.name !== undefined ? validateVmName(opts.name, 'name') : generateVmName();
  const keep = opts.keep === true;
  const progress = banger.progressFor(opts);
  if (opts.signal?.aborted) throw interrupted(name, false);
  const scan = opts.repo !== undefined ? await scanForRun(banger, opts.repo) : undefined;
  const needsBootstrap = scan !== undefined && opts.bootstrap !== false && hasMiseConfig(scan);
  if (needsBootstrap && !opts.nat) {
    throw new BangerError(
      'bad_request',
      `${scan.root} has a mise config (.mise.toml): bootstrapping it (\`mise install\`) needs the network, and without nat the VM has none`,
      'allow the network (CLI: --nat), or skip the bootstrap (CLI: --no-bootstrap)',
      { field: 'nat' },
    );
  }
  const conn = await banger.connectAgain();
  if (!conn) throw new BangerError('unavailable', 'bangerd went away', 'connect again (Banger.connect starts it)');
  let aborted = false;
  let created = false;
  const onAbort = () => {
    aborted = true;
    conn.close(); // the daemon aborts a boot in flight and deletes the ephemeral VM
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    // An abort during the scan or the connect came before the listener: it never fires for it.
    if (opts.signal?.aborted) onAbort();
    const r = await banger.createRaw({ ...opts, name, ephemeral: !keep }, conn);
    created = true;
    const vm = new Vm({ client: conn, progress: () => progress }, name, r.vm, { bootMs: r.bootMs, clonedFrom: r.clonedFrom ?? null });
    opts.onReady?.(vm, r);
    let workspace: WorkspacePrepareResult | null = null;
    if (scan) {
      workspace = await vm.prepareWorkspace(scan.root, { includeUntracked: opts.includeUntracked, mode: opts.mode, onProgress: progress });
      if (needsBootstrap) {
        if (!r.ssh) throw new BangerError('internal', 'vm.create returned no SSH target for a started VM');
        await bootstrapMise(r.ssh, name, { onProgress: progress, output: opts.stderr ?? stderrSink(opts.onStderr), signal: opts.signal });
      }
    }
    const cwd = scan ? GUEST_REPO : undefined;
    let res: ExecResult;
    if (opts.session) res = { exitCode: await opts.session(vm, cwd), stdout: '', stderr: '' };
    else {
      if (!r.ssh) throw new BangerError('internal', 'vm.create returned no SSH target for a started VM');
      res = await execArgv(r.ssh, cmd, { ...opts, cwd });
    }
    if (!keep) await conn.call('vm.delete', { name, force: true });
    return { ...res, name, bootMs: r.bootMs, clonedFrom: r.clonedFrom ?? null, workspace, kept: keep };
  } catch (e) {
    if (aborted || opts.signal?.aborted) {
      if (!keep) await removeAfterAbort(banger.client, name);
      throw interrupted(name, !keep);
    }
    if (!keep && created) await conn.call('vm.delete', { name, force: true }).catch(() => undefined);
    throw e;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    conn.close();
  }
}

function interrupted(name: string, deleted: boolean): BangerError {
  return new BangerError('interrupted', `the run in ${name} was aborted${deleted ? '; the VM was deleted' : ''}`);
}

/** A repo for run (checked here, before any VM exists). */
async function scanForRun(banger: Banger, path: string): Promise<RepoScan> {
  if (typeof path !== 'string' || !existsSync(path)) {
    throw new BangerError('bad_request', `repo ${String(path)} does not exist`, 'a repo must be a directory in a git repo; the command goes in cmd', { field: 'repo' });
  }
  return scanRepo(banger.runner, resolve(path));
}

/**
 * After an abort: the daemon removes the ephemeral VM when the run's
 * connection closes; a delete here covers a VM whose create had finished,
 * and the wait makes "settled" mean "gone".
 */
async function removeAfterAbort(client: RpcClient, name: string): Promise<void> {
  try {
    await client.call('vm.delete', { name, force: true });
  } catch (e) {
    if (!isBangerError(e)) return;
  }
  for (let i = 0; i < 100; i++) {
    try {
      const vms = await client.call('vm.list', {});
      if (!vms.some((v) => v.name === name)) return;
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

function stderrSink(onStderr: ((b: Buffer) => void) | undefined): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      try {
        onStderr?.(chunk);
      } catch {
        // the caller's callback failing must not break the SSH stream
      }
      cb();
    },
  });
}
