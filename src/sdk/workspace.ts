/**
 * `workspace export`: the patch streams from the daemon in chunks. It is
 * complete only once the daemon's result says how many bytes it sent and
 * that many arrived; a file is written beside its destination and renamed
 * only then, so a cut-off export never leaves a partial patch behind.
 */
import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { randomHex } from '../model/random.js';
import { BangerError, messageOf } from '../errors/errors.js';
import type { RpcClient } from '../rpc/client.js';
import type { WorkspacePrepareResult } from '../rpc/methods.js';
import type { ProgressEvent } from '../model/types.js';
import { formatSize } from '../model/sizes.js';

/** The most a patch returned as a string may be; bigger ones go to a file (exportWorkspaceTo). */
export const MAX_PATCH_STRING_BYTES = 256 * 1024 * 1024;

export interface ExportOptions {
  /** Include the guest's commits after this commit, as a series for `git am`. */
  baseCommit?: string;
}

export interface ExportToResult {
  /** Where the patch is (absolute). */
  path: string;
  bytes: number;
  baseCommit: string | null;
}

export async function exportPatch(client: RpcClient, name: string, opts: ExportOptions): Promise<string> {
  const chunks: Buffer[] = [];
  let kept = 0;
  await receivePatch(client, name, opts, (data) => {
    if (kept + data.length > MAX_PATCH_STRING_BYTES) {
      throw new BangerError('operation_failed', `the patch of ${name} is over ${MAX_PATCH_STRING_BYTES / 1024 / 1024} MiB`, 'write it to a file with exportWorkspaceTo (CLI: -o FILE)');
    }
    chunks.push(data);
    kept += data.length;
  });
  return Buffer.concat(chunks).toString('utf8');
}

export async function exportPatchTo(client: RpcClient, name: string, file: string, opts: ExportOptions): Promise<ExportToResult> {
  const path = resolve(file);
  const tmp = join(dirname(path), `.${basename(path)}.${randomHex(4)}.tmp`);
  let fd: number;
  try {
    fd = openSync(tmp, 'wx', 0o600);
  } catch (e) {
    throw new BangerError('bad_request', `cannot write the patch beside ${path}: ${messageOf(e)}`, 'pick a file in a directory you can write');
  }
  let closed = false;
  try {
    const r = await receivePatch(client, name, opts, (data) => {
      try {
        writeSync(fd, data);
      } catch (e) {
        throw new BangerError('operation_failed', `cannot write the patch to ${tmp}: ${messageOf(e)}`, 'check the disk has room');
      }
    });
    closeSync(fd);
    closed = true;
    try {
      renameSync(tmp, path);
    } catch (e) {
      throw new BangerError('operation_failed', `cannot write the patch to ${path}: ${messageOf(e)}`, 'pick a file in a directory you can write');
    }
    return { path, bytes: r.bytes, baseCommit: r.baseCommit };
  } finally {
    if (!closed) closeSync(fd);
    rmSync(tmp, { force: true });
  }
}

/**
 * Streams NAME's patch into `sink`, chunk by chunk, and resolves with the
 * daemon's result once every byte it says it sent arrived. A sink that throws
 * takes no more chunks; its error is thrown after the call (thrown inside
 * onChunk, it would land in the socket's data handler).
 */
async function receivePatch(client: RpcClient, name: string, opts: ExportOptions, sink: (data: Buffer) => void): Promise<{ bytes: number; baseCommit: string | null }> {
  let received = 0;
  let failed: { error: unknown } | undefined;
  const r = await client.call('vm.workspace.export', { name, baseCommit: opts.baseCommit }, {
    onChunk: (data) => {
      if (failed) return;
      try {
        sink(data);
        received += data.length;
      } catch (e) {
        failed = { error: e };
      }
    },
  });
  if (failed) throw failed.error;
  if (received !== r.bytes) throw incomplete(name, received, r.bytes);
  return r;
}

function incomplete(name: string, got: number, want: number): BangerError {
  return new BangerError('operation_failed', `the export of ${name} arrived incomplete (${got} of ${want} bytes)`, 'try again; the daemon log may say why');
}

/** The lines a prepare reports once it is done: skipped submodules (warnings), then what went where. */
export function prepareSummary(name: string, r: WorkspacePrepareResult): ProgressEvent[] {
  const lines: ProgressEvent[] = r.skipped.map((s) => ({ stage: 'workspace', level: 'warn', message: `${s} is a submodule or nested repo: not sent` }));
  lines.push({
    stage: 'workspace',
    message:
      `${r.workspace.hostPath} → ${name}:${r.workspace.guestPath}: ${r.workspace.files} files (${formatSize(r.workspace.bytes)})` +
      `${r.sentFiles !== r.workspace.files ? `, ${r.sentFiles} sent` : ''} in ${(r.ms / 1000).toFixed(1)} s`,
  });
  return lines;
}
