/**
 * npm run fuzz -- [--frames N] [--seed S] [--concurrency C] [--no-helper]
 *
 * Long RPC fuzz runs against the real processes: a bangerd started for the
 * run (isolated state, runtime, config and cache directories) and, as root,
 * a real banger-helper serving a throwaway network namespace. Prints frames
 * sent, connections, crashes (must be 0), the daemon's RSS before, after and
 * at its peak, the log's growth, and the census (rows, files, child
 * processes, links, rules) before and after, which must match. Exits 1 on a
 * crash or a census change.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { RpcClient } from '../../src/rpc/client.js';
import { MAX_REQUEST_BYTES } from '../../src/rpc/framing.js';
import { PROTOCOL_VERSION } from '../../src/rpc/methods.js';
import { HELPER_PROTOCOL } from '../../src/helper/ops.js';
import { connectHelper } from '../../src/helper/client.js';
import { createRunner } from '../../src/system/runner.js';
import { fuzz, holdPartialLines, type FuzzStats } from './frames.js';
import { filesUnder, liveChildren as childrenOf, netnsCensus } from '../support/hostile.js';

/** The census's files: everything under the state dir but logs, sockets and SQLite's WAL files. */
const tree = (dir: string) => filesUnder(dir, /\.log(\.\d)?$|\.sock$|\.db-(wal|shm)$/);

const distRoot = resolve(import.meta.dirname, '..', '..');
const runner = createRunner();

interface Args {
  frames: number;
  seed: number;
  concurrency: number;
  helper: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { frames: 10_000, seed: 1, concurrency: 16, helper: process.getuid?.() === 0 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    const num = () => {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < 0) usage(`${v} needs a whole number`);
      return n;
    };
    if (v === '--frames') a.frames = num();
    else if (v === '--seed') a.seed = num();
    else if (v === '--concurrency') a.concurrency = Math.max(1, num());
    else if (v === '--no-helper') a.helper = false;
    else usage(`unknown argument ${v}`);
  }
  return a;
}

function usage(msg: string): never {
  console.error(`fuzz: ${msg}\nusage: npm run fuzz -- [--frames N] [--seed S] [--concurrency C] [--no-helper]`);
  process.exit(2);
}

function rssKb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function logBytes(path: string): number {
  let n = 0;
  for (const p of [path, `${path}.1`]) if (existsSync(p)) n += statSync(p).size;
  return n;
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
}

function fmtStats(s: FuzzStats): string {
  return `${s.frames} frames over ${s.connections} connections (${s.droppedByPeer} dropped by the server, ${s.connectFailures} connect failures); by kind: ${Object.entries(s.byKind)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}`;
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const root = mkdtempSync(join(tmpdir(), 'banger-fuzz-run-'));
  const dirs = { state: join(root, 'state'), run: join(root, 'run'), config: join(root, 'config'), cache: join(root, 'cache') };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true, mode: 0o700 });
  writeFileSync(join(dirs.config, "config.toml"), `network = "user"\nhelper_socket = "${join(root, "no-helper.sock")}"\ndns_port = ${30000 + (process.pid % 20000)}\n`);
  const env = { ...process.env, BANGER_STATE_DIR: dirs.state, BANGER_RUNTIME_DIR: dirs.run, BANGER_CONFIG_DIR: dirs.config, BANGER_CACHE_DIR: dirs.cache };
  const socketPath = join(dirs.run, 'bangerd.sock');
  const logPath = join(dirs.state, 'bangerd.log');
  let failures = 0;
  const daemon = spawn(process.execPath, [join(distRoot, 'src', 'daemon', 'main.js')], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  let helper: ChildProcess | undefined;
  const ns = `bgrfz-${process.pid}`;
  try {
    if (!(await waitFor(() => existsSync(socketPath), 15_000))) throw new Error('bangerd did not start (no socket after 15 s)');
    const c0 = await RpcClient.connect(socketPath, 'fuzz');
    await c0.call('vm.list', {});
    c0.close();
    const before = { rss: rssKb(daemon.pid!), log: logBytes(logPath), files: tree(dirs.state), children: childrenOf(daemon.pid!) };
    let peak = before.rss;
    const sampler = setInterval(() => (peak = Math.max(peak, rssKb(daemon.pid!))), 50);
    const t0 = Date.now();
    const stats = await fuzz({
      socketPath,
      table: 'daemon',
      frames: args.frames,
      seed: args.seed,
      concurrency: args.concurrency,
      maxFrame: MAX_REQUEST_BYTES,
      hello: { id: 0, method: 'rpc.hello', params: { protocol: PROTOCOL_VERSION, client: 'fuzz' } },
    });
    const held = await holdPartialLines(socketPath, 96, 1000 * 1024);
    clearInterval(sampler);
    const ms = Date.now() - t0;
    const crashed = !alive(daemon);
    let answered = false;
    let rows = -1;
    if (!crashed) {
      const c = await RpcClient.connect(socketPath, 'fuzz-after');
      rows = (await c.call('vm.list', {})).length + (await c.call('image.list', {})).length;
      answered = true;
      c.close();
    }
    const after = { rss: rssKb(daemon.pid!), log: logBytes(logPath), files: tree(dirs.state), children: childrenOf(daemon.pid!) };
    const filesSame = JSON.stringify(after.files) === JSON.stringify(before.files);
    const childrenSame = JSON.stringify(after.children) === JSON.stringify(before.children);
    console.log(`fuzz bangerd: ${fmtStats(stats)} in ${(ms / 1000).toFixed(1)} s`);
    console.log(`fuzz bangerd: 96 connections holding ~1000 KiB unfinished lines: ${held.dropped} of ${held.opened} dropped by the byte budget`);
    console.log(`fuzz bangerd: crashes ${crashed ? 1 : 0}; answered a valid request afterwards: ${answered}`);
    console.log(`fuzz bangerd: RSS before ${(before.rss / 1024).toFixed(1)} MiB, after ${(after.rss / 1024).toFixed(1)} MiB, peak ${(peak / 1024).toFixed(1)} MiB`);
    console.log(`fuzz bangerd: log ${before.log} → ${after.log} bytes (+${after.log - before.log})`);
    console.log(`fuzz bangerd: census: rows ${rows}, files ${filesSame ? 'unchanged' : 'CHANGED'}, child processes ${childrenSame ? 'unchanged' : 'CHANGED'}`);
    if (crashed || !answered || rows !== 0 || !filesSame || !childrenSame) failures++;
    if (!filesSame) console.log(`  files before: ${before.files.join(' ')}\n  files after:  ${after.files.join(' ')}`);

    if (args.helper) {
      failures += await fuzzHelper(args, root, ns, (h) => (helper = h));
    } else {
      console.log('fuzz banger-helper: NOT RUN (needs root and ip netns; or --no-helper was given)');
    }
  } finally {
    if (alive(daemon)) daemon.kill('SIGTERM');
    await waitFor(() => !alive(daemon), 5000);
    if (helper && alive(helper)) helper.kill('SIGTERM');
    await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
    rmSync(root, { recursive: true, force: true });
  }
  console.log(failures === 0 ? 'fuzz: passed (0 crashes, census unchanged)' : `fuzz: FAILED (${failures} check(s) failed)`);
  return failures === 0 ? 0 : 1;
}

async function fuzzHelper(args: Args, root: string, ns: string, keep: (h: ChildProcess) => void): Promise<number> {
  if ((await runner.run(['ip', 'netns', 'add', ns], { allowFailure: true })).code !== 0) {
    console.log('fuzz banger-helper: NOT RUN (ip netns add failed)');
    return 0;
  }
  const sock = join(root, 'helper', 'helper.sock');
  const helper = spawn(
    process.execPath,
    [join(distRoot, 'src', 'helper', 'main.js'), '--owner-uid', '0', '--socket', sock, '--netns', ns, '--subnet', '10.213.11.0/24', '--log', join(root, 'helper.log')],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  keep(helper);
  if (!(await waitFor(() => existsSync(sock), 15_000))) {
    console.log('fuzz banger-helper: did not start');
    return 1;
  }
  const census = () => netnsCensus(runner, ns);
  const before = { census: await census(), rss: rssKb(helper.pid!), log: logBytes(join(root, 'helper.log')) };
  let peak = before.rss;
  const sampler = setInterval(() => (peak = Math.max(peak, rssKb(helper.pid!))), 50);
  const t0 = Date.now();
  const stats = await fuzz({
    socketPath: sock,
    table: 'helper',
    frames: args.frames,
    seed: args.seed + 1,
    concurrency: args.concurrency,
    maxFrame: MAX_REQUEST_BYTES,
    hello: { id: 0, method: 'helper.hello', params: { protocol: HELPER_PROTOCOL, client: 'fuzz' } },
  });
  clearInterval(sampler);
  const crashed = !alive(helper);
  let answered = false;
  if (!crashed) {
    const c = await connectHelper(sock);
    answered = typeof (await c.call('state', {})).bridgeUp === 'boolean';
    c.close();
  }
  const same = (await census()) === before.census;
  const log = logBytes(join(root, 'helper.log'));
  console.log(`fuzz banger-helper: ${fmtStats(stats)} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  console.log(`fuzz banger-helper: crashes ${crashed ? 1 : 0}; answered a valid request afterwards: ${answered}`);
  console.log(`fuzz banger-helper: RSS before ${(before.rss / 1024).toFixed(1)} MiB, after ${(rssKb(helper.pid!) / 1024).toFixed(1)} MiB, peak ${(peak / 1024).toFixed(1)} MiB; log +${log - before.log} bytes`);
  console.log(`fuzz banger-helper: census (links, iptables, ip_forward in its netns): ${same ? 'unchanged' : 'CHANGED'}`);
  return crashed || !answered || !same ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`fuzz: ${e instanceof Error ? e.stack : String(e)}`);
    process.exit(1);
  },
);
