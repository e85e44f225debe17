/**
 * Connecting to bangerd, starting it first when it is not running
 * (detached, in its own session, logging to <state>/bangerd.log).
 */
import { fileURLToPath } from 'node:url';
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BangerError, isBangerError } from '../errors/errors.js';
import type { Layout } from '../paths/paths.js';
import { RpcClient } from '../rpc/client.js';
import { checkRuntimeDir, ensureRuntimeDir, ensureStateDir, readFileNoFollow } from '../system/private-dir.js';
import { isSameProcess, readStartTime } from '../system/proc.js';
import { parseStartFailure } from '../errors/start-failure.js';
import type { Runner } from '../system/runner.js';
import { tail } from '../system/runner.js';
import { VERSION } from '../version.js';

const CLIENT = `banger ${VERSION}`;

function isNotListening(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ECONNREFUSED';
}

/**
 * Connects to a running daemon; undefined when none is running. The runtime
 * dir is checked first: a socket in a directory someone else could write is
 * never trusted (src/system/private-dir.ts).
 */
export async function tryConnect(layout: Layout): Promise<RpcClient | undefined> {
  if (!checkRuntimeDir(layout.runtimeDir)) return undefined;
  try {
    return await RpcClient.connect(layout.socketPath, CLIENT);
  } catch (e) {
    if (isNotListening(e)) return undefined;
    if (isBangerError(e)) throw e;
    throw new BangerError('unavailable', `cannot reach bangerd at ${layout.socketPath}: ${(e as Error).message}`, 'check `banger daemon status`');
  }
}

export interface StartOptions {
  /** How long to wait for a daemon that keeps running but does not answer (default 15 s). */
  timeoutMs?: number;
  /** How often to look (default 100 ms). */
  pollMs?: number;
}

/**
 * Connects, starting bangerd first when none is running. The daemon it spawns
 * is watched: when that process exits, the CLI stops waiting and shows the
 * coded error the daemon wrote for this start (src/errors/start-failure.ts),
 * or the output of this start alone, never text left by an earlier start.
 */
export async function connectOrStart(layout: Layout, runner: Runner, opts: StartOptions = {}): Promise<RpcClient> {
  const existing = await tryConnect(layout);
  if (existing) return existing;
  // Fail on a bad config here, with the key named, rather than as a dead daemon.
  // (Loaded here only: a CLI talking to a running daemon never parses TOML.)
  const { loadConfig } = await import('../config/config.js');
  loadConfig(layout.configFile);
  ensureStateDir(layout.stateDir);
  ensureRuntimeDir(layout.runtimeDir);
  const outPath = `${layout.stateDir}/bangerd.out`;
  const outStart = fileSize(outPath);
  const daemonMain = fileURLToPath(new URL('../daemon/main.js', import.meta.url));
  const pid = runner.spawnDetached([process.execPath, daemonMain], { logPath: outPath });
  const startTime = readStartTime(pid);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  let exited = false;
  for (;;) {
    try {
      const c = await tryConnect(layout);
      if (c) return c;
    } catch (e) {
      last = e;
    }
    if (!exited && (startTime === null || !isSameProcess(pid, startTime))) {
      exited = true;
      const failure = parseStartFailure(readFrom(outPath, outStart));
      if (failure) throw BangerError.fromShape(failure);
      // It exited without saying why. When another daemon holds the lock (two
      // CLIs started one each), that one is coming up: keep waiting for it.
      if (!lockHolderAlive(layout, pid)) {
        const c = await tryConnect(layout).catch(() => undefined);
        if (c) return c;
        throw startError(layout, 'bangerd exited during start-up', readFrom(outPath, outStart));
      }
    }
    if (Date.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 100));
  }
  throw startError(
    layout,
    `bangerd did not start within ${Math.round(timeoutMs / 1000)} s${last ? ` (${(last as Error).message})` : ''}`,
    readFrom(outPath, outStart),
  );
}

function startError(layout: Layout, what: string, output: string): BangerError {
  const out = tail(output, 800);
  return new BangerError('unavailable', `${what}${out ? `:\n${out}` : ''}`, `see ${layout.daemonLog}`);
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** What was appended to `path` from byte `from` on (at most 64 KiB, the tail). */
function readFrom(path: string, from: number): string {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return '';
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(from, size - 64 * 1024);
    if (size <= start) return '';
    const buf = Buffer.alloc(size - start);
    const n = readSync(fd, buf, 0, buf.length, start);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** A live daemon other than `ourPid` holds the runtime dir's lock ("pid starttime"). */
function lockHolderAlive(layout: Layout, ourPid: number): boolean {
  const [pidText, start] = (readFileNoFollow(join(layout.runtimeDir, 'bangerd.lock')) ?? '').trim().split(' ');
  const pid = Number(pidText);
  return pid > 0 && pid !== ourPid && !!start && isSameProcess(pid, start);
}
