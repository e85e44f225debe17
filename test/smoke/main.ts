/**
 * banger smoke suite: real VMs under real QEMU.
 *   node dist/test/smoke/main.js --list
 *   node dist/test/smoke/main.js [--scenario a,b] [--jobs N] [--state DIR]
 * Each run gets isolated state/runtime/config/cache directories (under
 * .smoke/run-<time>, or --state DIR to reuse a built image). After each
 * scenario a leak census checks that no qemu process, VM directory, socket
 * directory or DB row is left (a warm-clone template the daemon is building
 * in the background is waited for first, bounded; then any QEMU is a leak).
 * With --jobs > 1 scenarios run in parallel and the census runs once at the
 * end (a per-scenario census would see peers);
 * scenarios marked exclusive (they stop and restart the daemon, or break a
 * snapshot peers would clone from) run alone
 * after the pool, each with its census.
 */
import { mkdirSync, rmSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { bangerFor, leakCensus, makeRunDirs, repoRoot, AssertionFailed } from './harness.js';
import { stopImageFixtures } from './scenarios-images.js';
import { bridgeLeaks, bridgeUnavailable, runBridge, startBridge, stopBridge } from './bridge.js';
import { FIRST_USE, scenarios, type Scenario } from './scenarios.js';

interface Args {
  list: boolean;
  only?: string[];
  jobs: number;
  state?: string;
  keep: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { list: false, jobs: 1, keep: false };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i]!;
    const next = () => {
      const n = argv[++i];
      if (n === undefined) usage(`${v} needs a value`);
      return n!;
    };
    if (v === '--list') a.list = true;
    else if (v === '--scenario') a.only = next().split(',').filter(Boolean);
    else if (v === '--jobs') a.jobs = Math.max(1, Number(next()) || 1);
    else if (v === '--state') a.state = next();
    else if (v === '--keep') a.keep = true;
    else if (v === '-h' || v === '--help') usage();
    else usage(`unknown argument ${v}`);
  }
  return a;
}

function usage(err?: string): never {
  if (err) console.error(`smoke: ${err}`);
  console.error('usage: smoke [--list] [--scenario NAME[,NAME]] [--jobs N] [--state DIR] [--keep]');
  process.exit(err ? 2 : 0);
}

const args = parseArgs(process.argv.slice(2));
if (args.list) {
  for (const s of scenarios) console.log(`${s.name.padEnd(16)} ${s.description}`);
  process.exit(0);
}
let selected: Scenario[] = scenarios;
if (args.only) {
  const unknown = args.only.filter((n) => !scenarios.some((s) => s.name === n));
  if (unknown.length) usage(`unknown scenario(s): ${unknown.join(', ')} (see --list)`);
  selected = scenarios.filter((s) => args.only!.includes(s.name));
}

const runRoot = join(repoRoot, '.smoke', `run-${new Date().toISOString().replace(/[:.]/g, '-')}`);
mkdirSync(runRoot, { recursive: true });
const dirs = makeRunDirs(runRoot, args.state);
const logFile = join(runRoot, 'smoke.log');
const say = (line: string) => {
  console.log(line);
  appendFileSync(logFile, line + '\n');
};
const started = Date.now();
say(`smoke: ${selected.length} scenario(s), jobs ${args.jobs}, state ${dirs.stateDir}`);

const results: Array<{ name: string; status: 'pass' | 'fail' | 'not run'; detail: string; ms: number }> = [];

async function runOne(s: Scenario, census: boolean): Promise<void> {
  const lines: string[] = [];
  const log = (l: string) => {
    lines.push(l);
    appendFileSync(logFile, `[${s.name}] ${l}\n`);
    if (args.jobs === 1) console.log(`  ${l}`);
  };
  const banger = bangerFor(dirs, log);
  const t0 = Date.now();
  const missing = s.needs === 'root' ? bridgeUnavailable() : null;
  if (missing) {
    results.push({ name: s.name, status: 'not run', detail: missing, ms: 0 });
    say(`NOT RUN ${s.name}: ${missing}`);
    return;
  }
  if (args.jobs === 1) say(`── ${s.name}: ${s.description}`);
  try {
    await s.run({ banger, dirs, log });
    if (census) {
      const leaks = await censusAll(banger, log);
      if (leaks.length) throw new AssertionFailed(`leak census: ${leaks.join('; ')}`);
    }
    results.push({ name: s.name, status: 'pass', detail: '', ms: Date.now() - t0 });
    say(`PASS ${s.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    const detail = e instanceof Error ? e.message : String(e);
    results.push({ name: s.name, status: 'fail', detail, ms: Date.now() - t0 });
    say(`FAIL ${s.name} (${((Date.now() - t0) / 1000).toFixed(1)} s): ${detail}`);
    if (args.jobs > 1) for (const l of lines) say(`  ${l}`);
  }
}

/** VMs, files and rows (harness; template builds in flight are waited for), plus this run's taps and iptables rules. */
async function censusAll(banger: ReturnType<typeof bangerFor>, log?: (line: string) => void): Promise<string[]> {
  const b = runBridge();
  return [...(await leakCensus(dirs, banger, log)), ...(b ? bridgeLeaks(b) : [])];
}

async function main(): Promise<number> {
  const banger = bangerFor(dirs, (l) => appendFileSync(logFile, `[setup] ${l}\n`));
  // The run's root helper (its own bridge and subnet), when the bridge scenarios can run here.
  const noBridge = bridgeUnavailable();
  if (noBridge) say(`setup: no root helper: ${noBridge}`);
  else {
    const b = await startBridge(dirs);
    say(`setup: root helper on ${b.socket} (bridge ${b.bridge}, subnet ${b.subnet}, dns ${b.gateway}:${b.dnsPort})`);
  }
  // The first-use scenario needs a state dir with no image; it then builds it for the rest.
  let queue = selected;
  const first = selected.find((s) => s.name === FIRST_USE);
  if (first) {
    queue = selected.filter((s) => s !== first);
    if ((await banger(['image', 'show', 'bookworm'])).code === 0) {
      say(`NOT RUN ${FIRST_USE}: the image already exists in ${dirs.stateDir} (run without --state to exercise the first-use build)`);
      results.push({ name: FIRST_USE, status: 'not run', detail: 'image already present', ms: 0 });
    } else {
      await runOne(first, args.jobs === 1);
    }
  }
  // Build (or find) the default image once, so the other scenarios measure boots, not builds.
  const t0 = Date.now();
  const img = await banger(['image', 'show', 'bookworm']);
  if (img.code !== 0) {
    say('setup: building the default image (first run only)…');
    const b = await banger(['image', 'build']);
    if (b.code !== 0) {
      say(`setup: image build failed:\n${b.stderr}`);
      for (const s of queue) results.push({ name: s.name, status: 'not run', detail: 'image build failed', ms: 0 });
      return finish(banger);
    }
    say(`setup: image built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  if (args.jobs === 1) {
    for (const s of queue) await runOne(s, true);
  } else {
    const alone = queue.filter((s) => s.exclusive);
    queue = queue.filter((s) => !s.exclusive);
    await Promise.all(
      Array.from({ length: Math.min(args.jobs, queue.length) }, async () => {
        for (let s = queue.shift(); s; s = queue.shift()) await runOne(s, false);
      }),
    );
    for (const s of alone) await runOne(s, true);
    const leaks = await censusAll(banger, say);
    if (leaks.length) {
      say(`FAIL leak census after the parallel pool: ${leaks.join('; ')}`);
      results.push({ name: 'leak_census', status: 'fail', detail: leaks.join('; '), ms: 0 });
    } else say('PASS leak census after the parallel pool');
  }
  return finish(banger);
}

async function finish(banger: ReturnType<typeof bangerFor>): Promise<number> {
  await banger(['daemon', 'stop']);
  await stopImageFixtures();
  // The test images and the registry's storage (hundreds of MiB); the blob cache goes with the run's cache dir.
  rmSync(join(runRoot, 'oci'), { recursive: true, force: true });
  await stopBridge().catch((e: unknown) => say(`setup: removing the run's bridge failed: ${String(e)}`));
  if (!args.keep && !args.state) rmSync(join(runRoot, 'state'), { recursive: true, force: true });
  rmSync(dirs.runtimeDir, { recursive: true, force: true });
  const pass = results.filter((r) => r.status === 'pass').length;
  const fail = results.filter((r) => r.status === 'fail').length;
  const notRun = results.filter((r) => r.status === 'not run').length;
  say(`smoke: ${pass} passed, ${fail} failed, ${notRun} not run (of ${results.length}) in ${((Date.now() - started) / 1000).toFixed(0)} s — log ${logFile}`);
  return fail + notRun > 0 ? 1 : 0;
}

// Interrupted: the run's bridge, taps and rules go anyway (VMs are the daemon's: `banger vm prune`).
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    say(`smoke: ${sig}: removing the run's bridge and stopping`);
    void stopBridge()
      .catch(() => undefined)
      .finally(() => process.exit(130));
  });
}

process.exitCode = await main();
