/**
 * npm run soak -- --cycles N [--state DIR] [--network user|bridge] [--keep]
 *
 * N cycles of create → exec → stop → start (+ exec) → delete through the real
 * CLI against an isolated state dir (the smoke harness's run dirs; --state DIR
 * reuses a built image — no other banger may use DIR meanwhile). After every
 * cycle a census: qemu processes, files under the state and runtime dirs
 * (against the set after cycle 1), DB rows, known_hosts entries, taps and
 * iptables rules (bridge), and the daemon's pid (it must not change: a crashed
 * and auto-restarted daemon would hide a leak), open fds and RSS. The first
 * cold create has the daemon make a warm-clone snapshot in the background:
 * the census waits for such a build (bounded) and then counts every QEMU
 * (snapshots live under state/images, which the file census skips); later
 * cycles are warm clones.
 * One line per cycle, then a summary; exits 1 when a cycle failed or leaked.
 * Default network: bridge with --nat when root can run a helper of the soak's
 * own (taps and rules are then counted), else user.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, lstatSync } from 'node:fs';
import { join, relative } from 'node:path';
import { tmpdir } from 'node:os';
import { bangerFor, leakCensus, makeRunDirs, qemuProcesses, type RunDirs } from '../smoke/harness.js';
import { bridgeLeaks, bridgeUnavailable, runBridge, startBridge, stopBridge } from '../smoke/bridge.js';

interface Args {
  cycles: number;
  state?: string;
  network?: 'user' | 'bridge';
  keep: boolean;
}

function usage(err?: string): never {
  if (err) console.error(`soak: ${err}`);
  console.error('usage: npm run soak -- --cycles N [--state DIR] [--network user|bridge] [--keep]');
  process.exit(err ? 2 : 0);
}

function parseArgs(argv: string[]): Args {
  const a: Args = { cycles: 10, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i]!;
    const next = () => argv[++i] ?? usage(`${v} needs a value`);
    if (v === '--cycles') {
      a.cycles = Number(next());
      if (!Number.isInteger(a.cycles) || a.cycles < 1) usage('--cycles must be a whole number ≥ 1');
    } else if (v === '--state') a.state = next();
    else if (v === '--network') {
      const n = next();
      if (n !== 'user' && n !== 'bridge') usage('--network is user or bridge');
      a.network = n;
    } else if (v === '--keep') a.keep = true;
    else if (v === '-h' || v === '--help') usage();
    else usage(`unknown argument ${v}`);
  }
  return a;
}

interface DaemonSample {
  pid: number;
  fds: number;
  rssKib: number;
}

function daemonSample(dirs: RunDirs): DaemonSample | undefined {
  try {
    const pid = Number(readFileSync(join(dirs.runtimeDir, 'bangerd.pid'), 'utf8').trim());
    const fds = readdirSync(`/proc/${pid}/fd`).length;
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { pid, fds, rssKib: Number(rss?.[1] ?? 0) };
  } catch {
    return undefined;
  }
}

/** Every path under the state and runtime dirs, except the image store and files that only grow or churn (logs, SQLite's WAL). */
function fileSet(dirs: RunDirs): Set<string> {
  const out = new Set<string>();
  // run/templates: the parent of template builds' socket dirs, made by the first build (whenever that is); leakCensus counts what is in it.
  const skip = /^(state\/images(\/|$)|state\/bangerd\.(log|out)$|state\/state\.db(-wal|-shm)?$|state\/ssh\/known_hosts\.lock$|run\/templates$)/;
  const walk = (root: string, label: string, dir: string) => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir)) {
      const p = join(dir, e);
      const rel = `${label}/${relative(root, p)}`;
      if (skip.test(rel)) continue;
      out.add(rel);
      if (lstatSync(p).isDirectory()) walk(root, label, p);
    }
  };
  walk(dirs.stateDir, 'state', dirs.stateDir);
  walk(dirs.runtimeDir, 'run', dirs.runtimeDir);
  return out;
}

const mib = (kib: number) => (kib / 1024).toFixed(1);
const secs = (ms: number) => (ms / 1000).toFixed(1);

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  // Short paths: the runtime dir holds Unix sockets (108-byte limit).
  const root = mkdtempSync(join(tmpdir(), 'banger-soak-'));
  const dirs = makeRunDirs(root, args.state);
  const say = (l: string) => console.log(l);
  const banger = bangerFor(dirs, () => undefined);
  const noBridge = bridgeUnavailable();
  const network = args.network ?? (noBridge ? 'user' : 'bridge');
  if (network === 'bridge' && noBridge) usage(`--network bridge: ${noBridge}`);
  let current: string | undefined;
  let stopping = false;
  let leakCount = 0;
  let failed = 0;
  const cleanupAll = async () => {
    if (current) await banger(['vm', 'delete', '-f', current]);
    await banger(['daemon', 'stop']);
    await stopBridge().catch((e: unknown) => say(`soak: removing the soak's bridge failed: ${String(e)}`));
    rmSync(dirs.runtimeDir, { recursive: true, force: true });
    // Kept with --keep or after a failure (the helper's log; the daemon's log is in the state dir).
    if (args.keep || failed + leakCount > 0) say(`soak: kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      if (stopping) return;
      stopping = true;
      say(`soak: ${sig}: deleting the current VM, stopping the daemon and the helper`);
      void cleanupAll().finally(() => process.exit(130));
    });
  }

  const started = Date.now();
  if (network === 'bridge') {
    const b = await startBridge(dirs);
    say(`soak: root helper ${b.socket} (bridge ${b.bridge}, subnet ${b.subnet})`);
  }
  say(`soak: ${args.cycles} cycle(s), network ${network}${network === 'bridge' ? ' --nat' : ''}, state ${dirs.stateDir}, run dir ${root}`);
  const img = await banger(['image', 'show', 'bookworm']);
  if (img.code !== 0) {
    say('soak: building the default image first (a few minutes; pass --state DIR to reuse one)…');
    const t0 = Date.now();
    const built = await banger(['image', 'build']);
    if (built.code !== 0) {
      say(`soak: image build failed:\n${built.stderr}`);
      failed++;
      await cleanupAll();
      return 1;
    }
    say(`soak: image built in ${secs(Date.now() - t0)} s`);
  }
  const pre = await leakCensus(dirs, banger);
  if (pre.length) {
    say(`soak: the state is not clean before cycle 1 (${pre.join('; ')}); refusing to start`);
    failed++;
    await cleanupAll();
    return 1;
  }

  const samples: DaemonSample[] = [];
  const kh = join(dirs.stateDir, 'ssh', 'known_hosts');
  let baseline: Set<string> | undefined;
  let cycles = 0;
  const createArgs = network === 'bridge' ? ['--network', 'bridge', '--nat'] : [];
  for (let c = 1; c <= args.cycles && !stopping; c++) {
    const name = `soak-${c}`;
    current = name;
    const times: string[] = [];
    let failure = '';
    const step = async (label: string, argv: string[], want?: (out: string) => boolean) => {
      if (failure) return;
      const t0 = Date.now();
      const r = await banger(argv, { timeoutMs: 10 * 60_000 });
      times.push(`${label} ${secs(Date.now() - t0)}`);
      if (r.code !== 0) failure = `${label}: exit ${r.code}: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`;
      else if (want && !want(r.stdout)) failure = `${label}: unexpected output ${JSON.stringify(r.stdout.slice(0, 200))}`;
    };
    await step('create', ['vm', 'create', '--name', name, ...createArgs]);
    await step('exec', ['vm', 'exec', name, '--', 'sh', '-c', `echo ${name} > /root/soak-marker && cat /root/soak-marker`], (o) => o.trim() === name);
    await step('stop', ['vm', 'stop', name]);
    await step('start', ['vm', 'start', name]);
    await step('exec', ['vm', 'exec', name, '--', 'cat', '/root/soak-marker'], (o) => o.trim() === name);
    await step('delete', ['vm', 'delete', '-f', name]);
    if (failure) await banger(['vm', 'delete', '-f', name]); // the census then says whether even that left something
    current = undefined;

    // The census.
    const leaks = await leakCensus(dirs, banger);
    const b = runBridge();
    if (b) leaks.push(...bridgeLeaks(b));
    if (existsSync(kh) && readFileSync(kh, 'utf8').includes(`${name}.vm `)) leaks.push(`known_hosts entry for ${name}.vm`);
    const files = fileSet(dirs);
    if (baseline) {
      const extra = [...files].filter((f) => !baseline!.has(f));
      if (extra.length) leaks.push(`files not there after cycle 1: ${extra.slice(0, 10).join(', ')}${extra.length > 10 ? ` (+${extra.length - 10})` : ''}`);
    } else baseline = files;
    const s = daemonSample(dirs);
    if (!s) leaks.push('no daemon to sample (bangerd.pid unreadable or the daemon is gone)');
    else {
      if (samples.length && samples[0]!.pid !== s.pid) leaks.push(`the daemon changed: pid ${samples[0]!.pid} → ${s.pid} (it crashed or was restarted)`);
      samples.push(s);
    }
    const qemu = qemuProcesses(dirs).length;
    cycles++;
    if (failure) failed++;
    leakCount += leaks.length;
    say(
      `cycle ${String(c).padStart(String(args.cycles).length)}/${args.cycles} ${failure ? 'FAIL' : 'ok  '} ${times.join(' ')} s | ` +
        `qemu ${qemu} files ${files.size} | daemon ${s ? `pid ${s.pid} fds ${s.fds} rss ${mib(s.rssKib)} MiB` : 'none'}` +
        `${leaks.length ? ` | LEAKS: ${leaks.join('; ')}` : ' | leaks 0'}${failure ? ` | ${failure}` : ''}`,
    );
  }

  const stat = (xs: number[]) => ({ first: xs[0] ?? 0, last: xs[xs.length - 1] ?? 0, max: Math.max(0, ...xs) });
  const rss = stat(samples.map((x) => x.rssKib));
  const fds = stat(samples.map((x) => x.fds));
  say(
    `soak: ${cycles} cycle(s) in ${secs(Date.now() - started)} s, ${failed} failed, leaks found: ${leakCount}; ` +
      `daemon rss first/last/max ${mib(rss.first)}/${mib(rss.last)}/${mib(rss.max)} MiB; fds first/last/max ${fds.first}/${fds.last}/${fds.max}`,
  );
  await cleanupAll();
  return failed + leakCount > 0 ? 1 : 0;
}

process.exitCode = await main();
