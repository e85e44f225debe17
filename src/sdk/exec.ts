/**
 * Running a command in a VM over SSH: the argv is quoted for the guest's
 * shell so it arrives byte-identical; output is streamed to callbacks (or
 * streams) as it arrives and kept, bounded, for the result.
 */
import { Readable, Writable } from 'node:stream';
import { BangerError } from '../errors/errors.js';
import { shellJoin } from '../model/quote.js';
import type { SshTarget } from '../model/types.js';
import { sshExec } from '../guest/ssh.js';
import { collector, DEFAULT_COLLECT_BYTES } from '../system/streams.js';

/** Longest argv, in bytes once quoted (Linux's ARG_MAX is 2 MiB; sshd's limit on a request is lower). */
export const MAX_COMMAND_BYTES = 256 * 1024;

export interface ExecOptions {
  /** Directory in the guest to run in (e.g. /root/repo). */
  cwd?: string;
  /** Called with each piece of the command's stdout as it arrives. */
  onStdout?: (data: Buffer) => void;
  /** Called with each piece of the command's stderr as it arrives. */
  onStderr?: (data: Buffer) => void;
  /** A stream the command's stdout is written to as it arrives (with backpressure), e.g. process.stdout. */
  stdout?: NodeJS.WritableStream;
  /** The same for stderr. */
  stderr?: NodeJS.WritableStream;
  /** Given to the command as its stdin; without it the command reads EOF at once. */
  stdin?: string | Buffer | NodeJS.ReadableStream;
  /** Aborting ends the command (SIGTERM, then the connection closes) and rejects with code `interrupted`. */
  signal?: AbortSignal;
  /** How much of stdout and of stderr the result keeps, each (default 16 MiB; 0: none); callbacks and streams see everything. */
  maxBufferBytes?: number;
}

export interface ExecResult {
  /** The command's exit status; killed by signal N gives 128+N, like a shell. */
  exitCode: number;
  /** The output as UTF-8 (at most maxBufferBytes of it: see stdoutTruncated). */
  stdout: string;
  stderr: string;
  /** The signal that ended the command, e.g. "SIGKILL". */
  signal?: string;
  /** True when more output came than the result keeps (the callbacks saw all of it). */
  stdoutTruncated?: boolean;
  stderrTruncated?: boolean;
}

/** Validates an argv from an SDK caller: a non-empty array of strings without NUL bytes, bounded. */
export function checkArgv(argv: unknown, what = 'command'): string[] {
  if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string')) {
    throw new BangerError('bad_request', `the ${what} must be a non-empty array of strings (an argv)`, "e.g. ['sh', '-c', 'echo hi']");
  }
  const args = argv as string[];
  if (args.some((a) => a.includes('\0'))) throw new BangerError('bad_request', `the ${what} contains a NUL byte`, 'argv strings cannot carry NUL');
  if (Buffer.byteLength(shellJoin(args)) > MAX_COMMAND_BYTES) {
    throw new BangerError('bad_request', `the ${what} is longer than ${MAX_COMMAND_BYTES / 1024} KiB once quoted`, 'pass large data on stdin instead');
  }
  return args;
}

/** CMD as one shell line, run in `cwd` when given (a failed cd is reported and ends it). */
export function inDir(cwd: string | undefined, cmd: readonly string[]): string {
  return cwd ? `cd ${shellJoin([cwd])} && ${shellJoin(cmd)}` : shellJoin(cmd);
}

/** Runs argv in the guest at `target`; resolves with its exit status and output (never rejects for a non-zero status). */
export async function execArgv(target: SshTarget, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  if (opts.cwd !== undefined && (typeof opts.cwd !== 'string' || opts.cwd === '' || opts.cwd.includes('\0') || opts.cwd.length > 4096)) {
    throw new BangerError('bad_request', 'cwd must be a non-empty path without NUL bytes, at most 4096 characters', "e.g. cwd: '/root/repo'");
  }
  const limit = opts.maxBufferBytes ?? DEFAULT_COLLECT_BYTES;
  const out = keeper(limit, opts.onStdout, opts.stdout);
  const err = keeper(limit, opts.onStderr, opts.stderr);
  const stdin = opts.stdin === undefined ? null : typeof opts.stdin === 'string' || Buffer.isBuffer(opts.stdin) ? Readable.from([Buffer.from(opts.stdin)]) : opts.stdin;
  const res = await sshExec(target, inDir(opts.cwd, argv), { stdout: out.stream, stderr: err.stream, stdin, signal: opts.signal });
  const result: ExecResult = { exitCode: res.exitCode, stdout: out.text(), stderr: err.text() };
  if (res.signal) result.signal = res.signal;
  if (out.truncated()) result.stdoutTruncated = true;
  if (err.truncated()) result.stderrTruncated = true;
  return result;
}

/** A writable that hands each chunk to `each` and `to`, and keeps the first `limit` bytes. */
function keeper(limit: number, each?: (data: Buffer) => void, to?: NodeJS.WritableStream) {
  const kept = collector(limit);
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      kept.write(chunk);
      try {
        each?.(chunk);
      } catch {
        // A throwing callback is the caller's bug; it must not tear down the SSH stream.
      }
      if (to && !to.write(chunk)) to.once('drain', () => cb());
      else cb();
    },
  });
  return { stream, text: () => kept.buffer().toString('utf8'), truncated: () => kept.overflowed };
}
