/**
 * Connecting to bangerd, starting it first when it is not running
 * (detached, in its own session, logging to <state>/bangerd.log).
 */
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { BangerError, isBangerError } from '../errors/errors.js';
import type { Layout } from '../paths/paths.js';
import { RpcClient } from '../rpc/client.js';
import { ensureDir } from '../system/fs.js';
import type { Runner } from '../system/runner.js';
import { tail } from '../system/runner.js';
import { loadConfig } from '../config/config.js';
import { VERSION } from '../version.js';

const CLIENT = `banger ${VERSION}`;

function isNotListening(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ECONNREFUSED';
}

/** Connects to a running daemon; undefined when none is running. */
export async function tryConnect(layout: Layout): Promise<RpcClient | undefined> {
  try {
    return await RpcClient.connect(layout.socketPath, CLIENT);
  } catch (e) {
    if (isNotListening(e)) return undefined;
    if (isBangerError(e)) throw e;
    throw new BangerError('unavailable', `cannot reach bangerd at ${layout.socketPath}: ${(e as Error).message}`, 'check `banger daemon status`');
  }
}

export async function connectOrStart(layout: Layout, runner: Runner): Promise<RpcClient> {
  const existing = await tryConnect(layout);
  if (existing) return existing;
  // Fail on a bad config here, with the key named, rather than as a dead daemon.
  loadConfig(layout.configFile);
  ensureDir(layout.stateDir);
  ensureDir(layout.runtimeDir);
  const daemonMain = fileURLToPath(new URL('../daemon/main.js', import.meta.url));
  runner.spawnDetached([process.execPath, daemonMain], { logPath: `${layout.stateDir}/bangerd.out` });
  const deadline = Date.now() + 15_000;
  let last: unknown;
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    try {
      const c = await tryConnect(layout);
      if (c) return c;
    } catch (e) {
      last = e;
    }
  }
  let out = '';
  try {
    out = tail(readFileSync(`${layout.stateDir}/bangerd.out`, 'utf8'), 800);
  } catch {
    /* nothing written */
  }
  throw new BangerError(
    'unavailable',
    `bangerd did not start within 15 s${last ? ` (${(last as Error).message})` : ''}${out ? `:\n${out}` : ''}`,
    `see ${layout.daemonLog}`,
  );
}
