/**
 * Smoke harness: runs the real `banger` CLI (dist build) against a real
 * daemon, real QEMU and real guests, in state directories isolated per run.
 */
import { mkdirSync, readdirSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';

export const repoRoot = resolve(import.meta.dirname, '..', '..', '..');
const bangerBin = join(repoRoot, 'bin', 'banger.js');

export interface RunDirs {
  root: string;
  env: NodeJS.ProcessEnv;
  stateDir: string;
  runtimeDir: string;
}

export function makeRunDirs(root: string, stateDir?: string): RunDirs {
  const state = stateDir ?? join(root, 'state');
  const runtime = join(root, 'run');
  for (const d of [state, runtime, join(root, 'config'), join(root, 'cache')]) mkdirSync(d, { recursive: true, mode: 0o700 });
  // User networking unless a scenario asks for the bridge (the run may have a root helper).
  writeFileSync(join(root, 'config', 'config.toml'), `network = "user"\ndns_port = ${20000 + (process.pid % 20000)}\n`);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BANGER_STATE_DIR: state,
    BANGER_RUNTIME_DIR: runtime,
    BANGER_CONFIG_DIR: join(root, 'config'),
    BANGER_CACHE_DIR: join(root, 'cache'),
    NO_COLOR: '1',
  };
  return { root, env, stateDir: state, runtimeDir: runtime };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Banger {
  (args: string[], opts?: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv }): Promise<CliResult>;
  spawn(args: string[]): ChildProcess;
}

export function bangerFor(dirs: RunDirs, log: (line: string) => void): Banger {
  const run = (args: string[], opts: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}) =>
    new Promise<CliResult>((resolvePromise) => {
      log(`$ banger ${args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ')}`);
      const child = spawn(process.execPath, [bangerBin, ...args], { env: { ...dirs.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 20 * 60_000);
      child.stdin.end(opts.input ?? '');
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const res = { code: code ?? (signal ? 128 + (signal === 'SIGKILL' ? 9 : 15) : 1), stdout, stderr };
        log(`  → exit ${res.code}${stderr.trim() ? `; stderr: ${stderr.trim().split('\n').slice(-6).join(' | ')}` : ''}`);
        resolvePromise(res);
      });
    });
  const b = run as Banger;
  b.spawn = (args) => spawn(process.execPath, [bangerBin, ...args], { env: dirs.env, stdio: ['ignore', 'pipe', 'pipe'] });
  return b;
}

/** qemu-system processes whose argv mentions this run's directories (`templates`: only warm-clone template builds). */
export function qemuProcesses(dirs: RunDirs, which: 'all' | 'templates' = 'all'): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      const ours = cmd.some((a) => a.includes(dirs.stateDir) || a.includes(dirs.runtimeDir));
      // A template's argv names its build directory (its pid file, disks and console log are in it).
      if (cmd[0]?.includes('qemu-system') && ours && (which === 'all' || cmd.some((a) => a.includes('/snapshots/.build-')))) {
        pids.push(Number(entry));
      }
    } catch {
      /* raced with exit */
    }
  }
  return pids;
}

/** Live processes (any program) whose argv mentions `needle`, e.g. a VM id. Zombies have no argv, so they are not counted. */
export function liveProcessesMentioning(needle: string): Array<{ pid: number; argv0: string }> {
  const found: Array<{ pid: number; argv0: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (cmd.some((a) => a.includes(needle))) found.push({ pid: Number(entry), argv0: cmd[0] ?? '' });
    } catch {
      /* raced with exit */
    }
  }
  return found;
}

/** Warm-clone template builds under way: `images/<image>/snapshots/.build-<id>` directories (each holds a template VM's pid file). */
export function templateBuilds(dirs: Pick<RunDirs, 'stateDir'>): string[] {
  const images = join(dirs.stateDir, 'images');
  if (!existsSync(images)) return [];
  const found: string[] = [];
  for (const image of readdirSync(images)) {
    const snaps = join(images, image, 'snapshots');
    if (!existsSync(snaps)) continue;
    for (const e of readdirSync(snaps)) if (/^\.build-/.test(e)) found.push(`${image}/snapshots/${e}`);
  }
  return found;
}

/**
 * Waits (bounded) until the daemon has no template build in flight: a cold
 * create schedules one in the background, and it is not a leak while it
 * runs. Quiet must hold twice, a second apart: between two queued builds,
 * or before a scheduled one has made its directory, there is a moment with
 * none. Returns the builds still there at the deadline.
 */
export async function settleTemplateBuilds(dirs: RunDirs, log?: (line: string) => void, timeoutMs = TEMPLATE_SETTLE_MS): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  let announced = false;
  let quiet = 0;
  for (;;) {
    // Only the directory says a build is under way: a template QEMU whose directory is gone is a leak (the census counts it).
    const busy = templateBuilds(dirs);
    quiet = busy.length ? 0 : quiet + 1;
    if (quiet >= 2) return [];
    if (busy.length && Date.now() >= deadline) return busy;
    if (busy.length && !announced && log) {
      announced = true;
      const qemu = qemuProcesses(dirs, 'templates');
      log(`  census: waiting (at most ${Math.round(timeoutMs / 1000)} s) for a template build to finish: ${busy.join(', ')}${qemu.length ? ` (template qemu ${qemu.join(', ')})` : ''}`);
    }
    await sleep(1000);
  }
}

/** How long the census waits for template builds in flight (a cold template boot and save under TCG, on a busy 2-core host). */
export const TEMPLATE_SETTLE_MS = 300_000;

/**
 * The leak census: no qemu, VM directory, VM socket dir or DB row may remain.
 * A warm-clone template build in flight is waited for first (bounded); after
 * that no QEMU may run at all (a template left running is a leak), and no
 * template socket directory may remain. Snapshots (under images/) are the
 * image's, not a VM's: they are not counted.
 */
export async function leakCensus(dirs: RunDirs, banger: Banger, log?: (line: string) => void): Promise<string[]> {
  const leaks: string[] = [];
  const building = await settleTemplateBuilds(dirs, log);
  if (building.length) leaks.push(`template build still in flight after ${TEMPLATE_SETTLE_MS / 1000} s (stuck, or left by a daemon that is gone): ${building.join(', ')}`);
  const tplSockets = join(dirs.runtimeDir, 'templates');
  if (!building.length && existsSync(tplSockets) && readdirSync(tplSockets).length) leaks.push(`template socket directories left: ${readdirSync(tplSockets).join(', ')}`);
  const q = qemuProcesses(dirs);
  if (q.length) leaks.push(`qemu processes still running: ${q.join(', ')}`);
  const vmsDir = join(dirs.stateDir, 'vms');
  if (existsSync(vmsDir) && readdirSync(vmsDir).length) leaks.push(`VM directories left: ${readdirSync(vmsDir).join(', ')}`);
  const sockDir = join(dirs.runtimeDir, 'vms');
  if (existsSync(sockDir) && readdirSync(sockDir).length) leaks.push(`VM socket directories left: ${readdirSync(sockDir).join(', ')}`);
  const build = join(dirs.root, 'cache', 'build');
  if (existsSync(build) && readdirSync(build).length) leaks.push(`image build/pull work directories left: ${readdirSync(build).join(', ')}`);
  const tmp = join(dirs.root, 'cache', 'tmp');
  if (existsSync(tmp) && readdirSync(tmp).length) leaks.push(`workspace temp files left: ${readdirSync(tmp).join(', ')}`);
  const list = await banger(['vm', 'list', '--json']);
  if (list.code !== 0) leaks.push(`vm list failed: ${list.stderr.trim()}`);
  else {
    const rows = JSON.parse(list.stdout) as Array<{ name: string }>;
    if (rows.length) leaks.push(`DB rows left: ${rows.map((r) => r.name).join(', ')}`);
  }
  return leaks;
}

export class AssertionFailed extends Error {}

/** Runs banger ARGS; fails the scenario unless it exits 0. Returns stdout. */
export async function ok(banger: Banger, args: string[]): Promise<string> {
  const r = await banger(args);
  check(r.code === 0, `banger ${args.join(' ')} → exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

/** Deletes the scenario's VMs whatever happened (tests clean up after themselves). */
export async function cleanup(banger: Banger, ...names: string[]): Promise<void> {
  for (const n of names) await banger(['vm', 'delete', '-f', n]);
}

export function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new AssertionFailed(message);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** git with a fixed identity and no system config (test repos must not depend on the host's git setup). */
const GIT_ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: 'smoke',
  GIT_AUTHOR_EMAIL: 'smoke@example.invalid',
  GIT_COMMITTER_NAME: 'smoke',
  GIT_COMMITTER_EMAIL: 'smoke@example.invalid',
  GIT_CONFIG_NOSYSTEM: '1',
};

export function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, env: GIT_ENV, encoding: 'utf8' });
}

function fmt(args: string[]): string {
  return args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** Runs FILE ARGS (no shell), logged like the harness's banger calls, with how long it took. */
export function runLogged(
  log: (l: string) => void,
  file: string,
  args: string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number; label?: string },
): Promise<CliResult & { ms: number }> {
  log(`$ ${opts.label ?? file} ${fmt(args)}`);
  const t0 = Date.now();
  return new Promise((resolvePromise) => {
    const child = spawn(file, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    const done = (res: CliResult) => {
      clearTimeout(timer);
      const ms = Date.now() - t0;
      log(`  → exit ${res.code} in ${(ms / 1000).toFixed(1)} s${res.stderr.trim() ? `; stderr: ${res.stderr.trim().split('\n').slice(-6).join(' | ')}` : ''}`);
      resolvePromise({ ...res, ms });
    };
    child.on('error', (e) => done({ code: 127, stdout, stderr: `${stderr}${e.message}\n` }));
    child.on('close', (code, signal) => done({ code: code ?? (signal === 'SIGKILL' ? 137 : 143), stdout, stderr }));
  });
}
