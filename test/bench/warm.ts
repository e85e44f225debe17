/**
 * npm run bench -- --warm [--pairs N]: warm clones against cold boots, in
 * one run, alternately (cold, warm, cold, warm, …), N pairs (default 7):
 *   cold: `banger vm run --rm --cold -- true`
 *   warm: `banger vm run --rm -- true` (restores the snapshot of the shape)
 * Before the pairs the snapshot of the default shape is made (`banger image
 * snapshot`) unless a current one is there, and before each sample the bench
 * waits until no template build runs (with the snapshot present a cold
 * create schedules none; one that appears anyway is reported). Prints each
 * side's min/median/max, the per-pair ratio's, where the time goes (stages,
 * test/bench/stages.ts) and last `ratio warm/cold: X.XX` (median of the
 * per-pair ratios).
 *
 * npm run bench -- --memory [--idle S]: an idle VM's host RSS (VmRSS of its
 * QEMU process) against its guest's used memory, for a cold VM and a warm
 * clone, each measured after S seconds idle (default 10).
 *
 * Benchmarks: they never fail on time.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createRunner } from '../../src/system/runner.js';
import { imagePaths, type Layout } from '../../src/paths/paths.js';
import { loadConfig } from '../../src/config/config.js';
import { readCmdline, readVmRss } from '../../src/system/proc.js';
import { parseMeminfo } from '../../src/daemon/inspect-service.js';
import { probeKvm, resolveAccel } from '../../src/vmm/qemu/accel.js';
import type { ImageView, VmView } from '../../src/model/types.js';
import type { VmStats } from '../../src/rpc/methods.js';
import { repoRoot, templateBuilds as harnessTemplateBuilds } from '../smoke/harness.js';
import { deleteStartFromLog, LineStamper, meminfoCacheMib, median, parseFreeUsedMib, smapsSplit, spread, stageBreakdown, STAGES, type StageBreakdown, type Stage } from './stages.js';

const IMAGE = 'bookworm';
const bangerBin = join(repoRoot, 'bin', 'banger.js');
const runner = createRunner();
const banger = (args: string[]) => runner.run([process.execPath, bangerBin, ...args], { allowFailure: true, env: { ...process.env, NO_COLOR: '1' } });
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const mib = (bytes: number) => bytes / 2 ** 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function ok(args: string[]): Promise<string> {
  const r = await banger(args);
  if (r.code !== 0) throw new Error(`banger ${args.join(' ')} → exit ${r.code}: ${r.stderr.trim().split('\n').slice(-4).join(' | ')}`);
  return r.stdout;
}

/** Template builds under way, of any image (each shares the CPUs with a sample). */
const templateBuilds = (layout: Layout) => harnessTemplateBuilds({ stateDir: layout.stateDir });

/** Waits until no template build runs (none seen twice, half a second apart); returns how long it waited. */
export async function waitNoTemplateBuild(layout: Layout, timeoutMs = 600_000): Promise<number> {
  const t0 = Date.now();
  let quiet = 0;
  let said = false;
  for (;;) {
    const busy = templateBuilds(layout);
    if (busy.length === 0) {
      if (++quiet >= 2) return Date.now() - t0;
      await sleep(500);
      continue;
    }
    quiet = 0;
    if (!said) {
      said = true;
      console.log(`  waiting for a template build to finish (${busy.join(', ')})…`);
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`a template build is still running after ${timeoutMs / 1000} s: ${busy.join(', ')}`);
    await sleep(1000);
  }
}

/** Makes sure a current snapshot of the default shape exists (`banger image snapshot` otherwise). */
async function ensureSnapshot(layout: Layout): Promise<string> {
  const cfg = loadConfig(layout.configFile);
  const accel = resolveAccel(cfg.accel, await probeKvm({ runner }, { kernel: imagePaths(layout, IMAGE).kernel })).accel;
  const view = JSON.parse(await ok(['image', 'show', IMAGE, '--json'])) as ImageView;
  const current = view.snapshots.find((x) => x.current && x.vmm === cfg.vmm && x.accel === accel && x.vcpu === cfg.vcpu && x.memoryMib === cfg.memoryMib);
  await waitNoTemplateBuild(layout);
  if (current) {
    console.log(`bench: snapshot ${current.key} of ${IMAGE} is current (made ${current.createdAt}); reusing it`);
    return current.key;
  }
  console.log(`bench: making the snapshot of ${IMAGE} for ${cfg.vcpu} vCPU, ${cfg.memoryMib} MiB (banger image snapshot; not timed)…`);
  const out = await ok(['image', 'snapshot', IMAGE]);
  console.log(`  ${out.trim()}`);
  return /^snapshot (\S+)/.exec(out.trim())?.[1] ?? '?';
}

interface Sample {
  ms: number;
  stages: StageBreakdown;
  /** Template builds seen right after the sample. */
  builds: string[];
}

/** Bytes appended to the daemon log since `offset`. */
function logSince(path: string, offset: number): string {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return '';
  }
  try {
    const size = statSync(path).size;
    if (size <= offset) return '';
    const buf = Buffer.alloc(Math.min(size - offset, 16 * 1024 * 1024));
    const n = readSync(fd, buf, 0, buf.length, offset);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** One `vm run --rm [--cold] -- true`, timed, its stderr lines stamped as they arrive. */
async function sample(layout: Layout, cold: boolean): Promise<Sample> {
  const logOffset = existsSync(layout.daemonLog) ? statSync(layout.daemonLog).size : 0;
  const args = ['vm', 'run', '--rm', ...(cold ? ['--cold'] : []), '--', 'true'];
  const epoch0 = Date.now();
  const t0 = performance.now();
  const stamper = new LineStamper(() => performance.now() - t0);
  const child = spawn(process.execPath, [bangerBin, ...args], { env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => stamper.push(c.toString()));
  const code = await new Promise<number>((res) => child.on('close', (c, sig) => res(c ?? (sig ? 128 : 1))));
  const exitAt = performance.now() - t0;
  stamper.end();
  if (code !== 0) {
    throw new Error(`banger ${args.join(' ')} → exit ${code}: ${stamper.lines.slice(-6).map((l) => l.text).join(' | ')} ${stdout.trim()}`);
  }
  const deleteEpoch = deleteStartFromLog(logSince(layout.daemonLog, logOffset), epoch0);
  const stages = stageBreakdown({ lines: stamper.lines, exitAt, ...(deleteEpoch !== undefined ? { deleteAt: deleteEpoch - epoch0 } : {}) });
  if (cold && stages.warm === true) throw new Error(`a --cold sample restored snapshot ${stages.snapshot}`);
  if (!cold && stages.warm === false) throw new Error('a warm sample booted cold: the snapshot is gone or stale (see the daemon log)');
  return { ms: exitAt, stages, builds: templateBuilds(layout) };
}

export interface WarmOptions {
  layout: Layout;
  pairs: number;
}

export async function warmBench({ layout, pairs }: WarmOptions): Promise<void> {
  console.log(`bench warm: ${pairs} pairs of \`banger vm run --rm [--cold] -- true\`, alternating cold and warm`);
  const key = await ensureSnapshot(layout);
  console.log('bench: warm-up, one of each (daemon start, page cache; not counted)…');
  for (const cold of [true, false]) {
    await waitNoTemplateBuild(layout);
    const w = await sample(layout, cold);
    console.log(`  warm-up ${cold ? 'cold' : 'warm'}: ${s(w.ms)}`);
  }
  const cold: Sample[] = [];
  const warm: Sample[] = [];
  const ratios: number[] = [];
  const notes: string[] = [];
  for (let i = 0; i < pairs; i++) {
    for (const side of ['cold', 'warm'] as const) {
      const waited = await waitNoTemplateBuild(layout);
      if (waited > 2500) notes.push(`pair ${i + 1} ${side}: waited ${s(waited)} for a template build before the sample`);
      const x = await sample(layout, side === 'cold');
      if (x.builds.length) notes.push(`pair ${i + 1} ${side}: a template build ran at the end of the sample (${x.builds.join(', ')})`);
      (side === 'cold' ? cold : warm).push(x);
    }
    ratios.push(warm[i]!.ms / cold[i]!.ms);
    console.log(`  pair ${i + 1}: cold ${s(cold[i]!.ms)}  warm ${s(warm[i]!.ms)}  warm/cold ${ratios[i]!.toFixed(2)}`);
  }
  const ms = (xs: Sample[]) => xs.map((x) => x.ms);
  console.log(`cold (vm run --rm --cold -- true): ${spread(ms(cold), s)} over ${pairs}`);
  console.log(`warm (vm run --rm -- true, snapshot ${key}): ${spread(ms(warm), s)} over ${pairs}`);
  console.log(`per-pair ratio warm/cold: ${spread(ratios, (r) => r.toFixed(2))}`);
  console.log(`median cold: ${s(median(ms(cold)))}`);
  console.log(`median warm: ${s(median(ms(warm)))}`);
  printStages(warm, cold);
  for (const n of notes) console.log(`note: ${n}`);
  console.log(notes.length ? `template builds: ${notes.length} sample(s) noted above` : 'template builds: none ran during the samples');
  console.log(`ratio warm/cold: ${median(ratios).toFixed(2)}`);
}

/** Median per stage, warm beside cold; a stage a sample could not time is reported with the line it lacked. */
function printStages(warm: Sample[], cold: Sample[]): void {
  const col = (xs: Sample[], st: Stage): string => {
    const got = xs.map((x) => x.stages.ms[st]).filter((v): v is number => v !== undefined);
    if (got.length === 0) return '-';
    return `${s(median(got))}${got.length < xs.length ? ` (${got.length}/${xs.length})` : ''}`;
  };
  const label: Record<Stage, string> = {
    setup: 'setup (CLI, daemon, disks → "starting QEMU")',
    restore: 'restore (→ "QEMU running"; cold: QEMU starts)',
    identity: 'identity (the clone\'s own clock, ids, keys, …)',
    'agent+SSH': 'agent+SSH (→ "ready"; cold: the guest boots)',
    exec: 'exec (ready → vm.delete begins)',
    delete: 'delete (→ the CLI exits)',
  };
  console.log('where the time goes (median per stage, from the progress lines\' arrival on stderr; vm.delete from the daemon log):');
  console.log(`  ${'stage'.padEnd(48)} ${'warm'.padStart(9)}  ${'cold'.padStart(9)}`);
  for (const st of STAGES) console.log(`  ${label[st].padEnd(48)} ${col(warm, st).padStart(9)}  ${(st === 'identity' ? 'n/a' : col(cold, st)).padStart(9)}`);
  const answered = (xs: Sample[], k: 'agentAnsweredMs' | 'sshAnsweredMs') => {
    const v = xs.map((x) => x.stages[k]).filter((n): n is number => n !== undefined);
    return v.length ? s(median(v)) : 'no line';
  };
  console.log(`  within agent+SSH: guest agent answered at +${answered(warm, 'agentAnsweredMs')} warm, +${answered(cold, 'agentAnsweredMs')} cold; SSH ready at +${answered(warm, 'sshAnsweredMs')} warm, +${answered(cold, 'sshAnsweredMs')} cold`);
  for (const [side, xs] of [['warm', warm], ['cold', cold]] as const) {
    const combined = xs.map((x) => x.stages.execAndDeleteMs).filter((n): n is number => n !== undefined);
    if (combined.length) console.log(`  ${side}: exec and delete together (no vm.delete in the daemon log): ${s(median(combined))} in ${combined.length} sample(s)`);
    const missing = new Map<string, number>();
    for (const x of xs) {
      for (const [st, why] of Object.entries(x.stages.missing)) {
        if (side === 'cold' && st === 'identity') continue;
        const k = `${st}: ${why}`;
        missing.set(k, (missing.get(k) ?? 0) + 1);
      }
    }
    for (const [k, n] of missing) console.log(`  ${side}: stage ${k} in ${n} of ${xs.length} sample(s)`);
  }
}

// ---- memory ---------------------------------------------------------------

interface MemoryReading {
  label: string;
  pid: number;
  rssMib: number;
  freeUsedMib: number | undefined;
  meminfoUsedMib: number;
  statsRssMib: number | undefined;
  /** QEMU's RSS in the guest's RAM mapping, and outside it (QEMU, libraries, heap, TCG's translation cache). */
  split: { ramMib: number; otherMib: number } | undefined;
  guestCacheMib: number | undefined;
}

async function measureIdle(label: string, name: string, cold: boolean, idleMs: number): Promise<MemoryReading> {
  const created = await banger(['vm', 'create', '--name', name, ...(cold ? ['--cold'] : [])]);
  if (created.code !== 0) throw new Error(`vm create ${name} failed: ${created.stderr.trim().split('\n').slice(-4).join(' | ')}`);
  const clone = /warm clone of snapshot (\S+)\)/.exec(created.stderr)?.[1];
  if (cold === (clone !== undefined)) throw new Error(`${name}: expected a ${cold ? 'cold boot' : 'warm clone'}; stderr: ${created.stderr.trim()}`);
  await sleep(idleMs);
  const vm = JSON.parse(await ok(['vm', 'show', name, '--json'])) as VmView;
  const pid = vm.runtime?.pid;
  if (!pid) throw new Error(`${name}: vm show has no runtime pid`);
  const argv0 = readCmdline(pid)?.[0] ?? '';
  if (!argv0.includes('qemu')) throw new Error(`${name}: pid ${pid} is not QEMU (${argv0})`);
  const rss = readVmRss(pid);
  if (rss === null) throw new Error(`${name}: no VmRSS for pid ${pid}`);
  let smaps = '';
  try {
    smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    /* no split then */
  }
  const sp = smapsSplit(smaps, vm.memoryMib * 2 ** 20);
  // The guest, after the host figure (an exec touches guest pages too).
  const free = await ok(['vm', 'exec', name, '--', 'free', '-m']);
  const meminfoText = await ok(['vm', 'exec', name, '--', 'cat', '/proc/meminfo']);
  const meminfo = parseMeminfo(meminfoText);
  const stats = await banger(['vm', 'stats', name, '--json']);
  const statsRss = stats.code === 0 ? (JSON.parse(stats.stdout) as Partial<VmStats>).hostRssBytes : undefined;
  return {
    label: clone ? `${label} (snapshot ${clone})` : label,
    pid,
    rssMib: mib(rss),
    freeUsedMib: parseFreeUsedMib(free),
    meminfoUsedMib: mib(meminfo.usedBytes),
    statsRssMib: typeof statsRss === 'number' ? mib(statsRss) : undefined,
    split: sp ? { ramMib: sp.ramKb / 1024, otherMib: sp.otherKb / 1024 } : undefined,
    guestCacheMib: meminfoCacheMib(meminfoText),
  };
}

export async function memoryReport({ layout, idleMs }: { layout: Layout; idleMs: number }): Promise<void> {
  const cfg = loadConfig(layout.configFile);
  console.log(`bench memory: an idle VM (${cfg.vcpu} vCPU, ${cfg.memoryMib} MiB) ${idleMs / 1000} s after its create: host RSS of QEMU against the guest's used memory`);
  await ensureSnapshot(layout);
  const readings: MemoryReading[] = [];
  for (const [label, cold] of [['cold VM', true], ['warm clone', false]] as const) {
    await waitNoTemplateBuild(layout);
    const name = `bench-mem-${cold ? 'cold' : 'warm'}-${process.pid}`;
    try {
      readings.push(await measureIdle(label, name, cold, idleMs));
    } finally {
      await banger(['vm', 'delete', '-f', name]);
    }
  }
  const f = (n: number | undefined) => (n === undefined ? '?' : `${n.toFixed(0)} MiB`);
  const sign = (n: number) => `${n >= 0 ? '+' : ''}${n.toFixed(0)} MiB`;
  console.log(`  ${'VM'.padEnd(40)} ${'host RSS'.padStart(10)} ${'used (free -m)'.padStart(15)} ${'used (total-avail)'.padStart(19)} ${'RSS - used'.padStart(11)} ${'vm stats RSS'.padStart(13)}`);
  for (const r of readings) {
    const used = r.freeUsedMib ?? r.meminfoUsedMib;
    console.log(`  ${r.label.padEnd(40)} ${f(r.rssMib).padStart(10)} ${f(r.freeUsedMib).padStart(15)} ${f(r.meminfoUsedMib).padStart(19)} ${sign(r.rssMib - used).padStart(11)} ${f(r.statsRssMib).padStart(13)}`);
  }
  console.log('  where the host RSS is (smaps): the guest RAM mapping (used + page cache + pages touched and not yet returned) and the rest (QEMU, libraries, heap, TCG translation cache):');
  for (const r of readings) {
    const used = r.freeUsedMib ?? r.meminfoUsedMib;
    const untouched = r.split && r.guestCacheMib !== undefined ? r.split.ramMib - used - r.guestCacheMib : undefined;
    console.log(
      `  ${r.label.padEnd(40)} guest RAM ${f(r.split?.ramMib)} (used ${f(used)}, page cache ${f(r.guestCacheMib)}, other ${untouched === undefined ? '?' : sign(untouched)}); outside guest RAM ${f(r.split?.otherMib)}`,
    );
  }
  const [c, w] = readings as [MemoryReading, MemoryReading];
  console.log(`warm - cold: host RSS ${sign(w.rssMib - c.rssMib)}, guest used (free -m) ${c.freeUsedMib !== undefined && w.freeUsedMib !== undefined ? sign(w.freeUsedMib - c.freeUsedMib) : '?'}, guest used (total-avail) ${sign(w.meminfoUsedMib - c.meminfoUsedMib)}`);
}
