/**
 * Where a `banger vm run --rm -- true` spends its time, from the moments its
 * progress lines reached stderr (and, for the delete, the daemon's log):
 *   setup     spawn → "starting QEMU[ from snapshot KEY]" (CLI, daemon, image, disks)
 *   restore   → "QEMU running (pid …)" (warm: the saved state is loaded; cold: QEMU starts)
 *   identity  → the line after "making the clone a VM of its own" (warm only)
 *   agent+SSH → "NAME ready in X s" (cold: the agent, then SSH; the guest boots here. Warm: nothing, ready follows the identity step)
 *   exec      → vm.delete begins (the command over SSH)
 *   delete    → the CLI exits
 * Pure functions: test/unit/bench-stages.test.ts pins them.
 */

import { meminfoFields } from '../../src/daemon/inspect-service.js';

export const STAGES = ['setup', 'restore', 'identity', 'agent+SSH', 'exec', 'delete'] as const;
export type Stage = (typeof STAGES)[number];

/** One stderr line and when it arrived, in ms since the CLI was spawned. */
export interface TimedLine {
  at: number;
  text: string;
}

export interface SampleTrace {
  lines: TimedLine[];
  /** ms since spawn when the CLI exited. */
  exitAt: number;
  /** ms since spawn when the daemon began vm.delete; undefined when its log did not say. */
  deleteAt?: number;
}

export interface StageBreakdown {
  /** true: restored from a snapshot; false: booted cold; undefined: no "starting" line. */
  warm: boolean | undefined;
  snapshot?: string;
  /** Each stage's duration in ms; absent when a line it needs is missing (see `missing`). */
  ms: Partial<Record<Stage, number>>;
  /** When the delete's start is unknown: exec and delete together. */
  execAndDeleteMs?: number;
  /** When the two readiness answers came, ms after the agent+SSH stage began. */
  agentAnsweredMs?: number;
  sshAnsweredMs?: number;
  /** Per stage, the line it lacks, e.g. `restore: no "QEMU running" line`. */
  missing: Partial<Record<Stage, string>>;
}

/** A progress line without colour codes, its bullet or surrounding blanks. */
export function cleanLine(raw: string): string {
  return raw.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').replace(/\r/g, '').trim().replace(/^•\s*/, '');
}

const RE = {
  starting: /^starting (\S+)(?: from snapshot (\S+))?\s*$/,
  running: /^\S+ running \(pid \d+/,
  identity: /^making the clone a VM of its own\b/,
  agent: /^guest agent answered\s*$/,
  ssh: /^(SSH answered|sshd listening \(host key pinned\))\s*$/,
  ready: /^\S+ ready in [\d.]+ s\b/,
};

/** Splits a stream into lines as chunks arrive; each line is stamped with the arrival of its newline. */
export class LineStamper {
  readonly lines: TimedLine[] = [];
  private partial = '';
  constructor(private readonly now: () => number) {}

  push(chunk: string): void {
    const at = this.now();
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const p of parts) this.lines.push({ at, text: cleanLine(p) });
  }

  /** The last line when the stream ends without a newline. */
  end(): void {
    if (this.partial.trim()) this.lines.push({ at: this.now(), text: cleanLine(this.partial) });
    this.partial = '';
  }
}

export function stageBreakdown(trace: SampleTrace): StageBreakdown {
  const lines = trace.lines.map((l) => ({ at: l.at, text: cleanLine(l.text) }));
  const find = (re: RegExp, from = 0) => {
    for (let i = from; i < lines.length; i++) if (re.test(lines[i]!.text)) return i;
    return -1;
  };
  const out: StageBreakdown = { warm: undefined, ms: {}, missing: {} };
  const iStart = find(RE.starting);
  if (iStart >= 0) {
    const m = RE.starting.exec(lines[iStart]!.text)!;
    out.warm = m[2] !== undefined;
    if (m[2] !== undefined) out.snapshot = m[2];
  }
  const at = (i: number) => (i >= 0 ? lines[i]!.at : undefined);
  const tStart = at(iStart);
  const iRun = find(RE.running, Math.max(0, iStart));
  const tRun = at(iRun);
  const iAgent = find(RE.agent);
  const iSsh = find(RE.ssh);
  const iReady = find(RE.ready);
  const tReady = at(iReady);

  const span = (stage: Stage, from: number | undefined, to: number | undefined, why: string) => {
    if (from === undefined || to === undefined || to < from) out.missing[stage] = why;
    else out.ms[stage] = to - from;
  };
  span('setup', 0, tStart, 'no "starting …" line');
  span('restore', tStart, tRun, tStart === undefined ? 'no "starting …" line' : 'no "… running (pid …)" line');

  // identity: from "running" to the line after "making the clone …" (the next step's), else "guest agent answered".
  let readyFrom = tRun;
  if (out.warm !== false) {
    const iId = find(RE.identity, Math.max(0, iRun));
    const next = iId >= 0 && iId + 1 < lines.length ? iId + 1 : -1;
    const tIdEnd = next >= 0 ? at(next) : at(iAgent);
    if (iId < 0) span('identity', undefined, undefined, 'no "making the clone a VM of its own" line');
    else span('identity', tRun, tIdEnd, tRun === undefined ? 'no "… running (pid …)" line' : 'no line after the identity step');
    readyFrom = out.ms.identity !== undefined ? tIdEnd : undefined;
  }
  span('agent+SSH', readyFrom, tReady, tReady === undefined ? 'no "… ready in X s" line' : 'the stage before it is missing');
  if (readyFrom !== undefined) {
    if (iAgent >= 0) out.agentAnsweredMs = at(iAgent)! - readyFrom;
    if (iSsh >= 0) out.sshAnsweredMs = at(iSsh)! - readyFrom;
  }
  if (trace.deleteAt !== undefined && tReady !== undefined && trace.deleteAt >= tReady && trace.deleteAt <= trace.exitAt) {
    span('exec', tReady, trace.deleteAt, '');
    span('delete', trace.deleteAt, trace.exitAt, '');
  } else {
    const why = tReady === undefined ? 'no "… ready in X s" line' : 'no vm.delete in the daemon log';
    out.missing.exec = why;
    out.missing.delete = why;
    if (tReady !== undefined) out.execAndDeleteMs = trace.exitAt - tReady;
  }
  return out;
}

/**
 * When the daemon began a vm.delete that ended at or after `sinceEpochMs`,
 * from its JSON log (pino: `time` is when "request ok" was written, `ms` how
 * long the request took). The last such request wins; undefined if none.
 */
export function deleteStartFromLog(logText: string, sinceEpochMs: number): number | undefined {
  let found: number | undefined;
  for (const line of logText.split('\n')) {
    if (!line.includes('vm.delete')) continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      continue;
    }
    if (typeof rec !== 'object' || rec === null) continue;
    const r = rec as { method?: unknown; msg?: unknown; time?: unknown; ms?: unknown };
    if (r.method !== 'vm.delete' || (r.msg !== 'request ok' && r.msg !== 'request failed')) continue;
    if (typeof r.time !== 'number' || typeof r.ms !== 'number' || r.time < sinceEpochMs) continue;
    found = r.time - r.ms;
  }
  return found;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** `min X  median Y  max Z` with `fmt` for each. */
export function spread(xs: number[], fmt: (n: number) => string): string {
  return `min ${fmt(Math.min(...xs))}  median ${fmt(median(xs))}  max ${fmt(Math.max(...xs))}`;
}

/** `free -m` → the "used" column of its Mem: line, MiB; undefined when there is none. */
export function parseFreeUsedMib(text: string): number | undefined {
  const header = text.split('\n').find((l) => /\btotal\b/.test(l) && /\bused\b/.test(l));
  const mem = text.split('\n').find((l) => /^\s*Mem:/.test(l));
  if (!mem) return undefined;
  const cols = header ? header.trim().split(/\s+/) : ['total', 'used'];
  const vals = mem.trim().split(/\s+/).slice(1);
  const i = cols.indexOf('used');
  const v = vals[i < 0 ? 1 : i];
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/**
 * A QEMU process's RSS split by /proc/PID/smaps: the guest's RAM (the one
 * mapping at least `ramBytes` long) and everything else (QEMU itself, its
 * libraries and heap, and TCG's translation cache). kB values, as smaps has them.
 */
export function smapsSplit(text: string, ramBytes: number): { ramKb: number; otherKb: number } | undefined {
  let ramKb = 0;
  let otherKb = 0;
  let size = 0;
  let found = false;
  for (const line of text.split('\n')) {
    const sz = /^Size:\s+(\d+) kB/.exec(line);
    if (sz) {
      size = Number(sz[1]) * 1024;
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (!rss) continue;
    if (size >= ramBytes && !found) {
      ramKb += Number(rss[1]);
      found = true;
    } else {
      otherKb += Number(rss[1]);
    }
  }
  return found ? { ramKb, otherKb } : undefined;
}

/** Buffers + Cached from /proc/meminfo text, in MiB. */
export function meminfoCacheMib(text: string): number | undefined {
  const kb = meminfoFields(text);
  const b = kb.get('Buffers');
  const c = kb.get('Cached');
  return b === undefined || c === undefined ? undefined : (b + c) / 1024;
}

/**
 * Runs `pairs` pairs of two samples, alternating which goes first (neither
 * always follows the other's teardown), and logs each pair as
 * `pair N: A x  B y  A/B r`. Returns both sides' times and the per-pair
 * ratios a/b. (Not pure: it runs the samples.)
 */
export async function alternatePairs(
  pairs: number,
  a: { label: string; run: () => Promise<number> },
  b: { label: string; run: () => Promise<number> },
  log: (line: string) => void = console.log,
): Promise<{ a: number[]; b: number[]; ratios: number[] }> {
  const out = { a: [] as number[], b: [] as number[], ratios: [] as number[] };
  const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  for (let i = 0; i < pairs; i++) {
    if (i % 2 === 0) {
      out.a.push(await a.run());
      out.b.push(await b.run());
    } else {
      out.b.push(await b.run());
      out.a.push(await a.run());
    }
    out.ratios.push(out.a[i]! / out.b[i]!);
    log(`  pair ${i + 1}: ${a.label} ${sec(out.a[i]!)}  ${b.label} ${sec(out.b[i]!)}  ${a.label}/${b.label} ${out.ratios[i]!.toFixed(2)}`);
  }
  return out;
}
