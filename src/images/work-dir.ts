/**
 * The build's scratch directory and the processes run in it: every image
 * stage works under one work dir, which is always removed afterwards, after
 * killing what still runs inside it and unmounting what is mounted below it.
 * Also the helpers that make a cancelled build stop promptly.
 */
import { readFileSync, readdirSync, readlinkSync, existsSync, rmSync } from 'node:fs';
import { resolve, sep } from 'node:path';
import { BangerError } from '../errors/errors.js';
import type { Runner } from '../system/runner.js';
import { toolPath } from '../system/which.js';

/**
 * Removes the work directory safely: kills processes still running inside
 * it (an aborted mmdebstrap leaves apt/dpkg behind), unmounts whatever is
 * mounted below it (deepest first) and only then deletes it. Refuses to
 * delete while something is still mounted there (rm -r would reach into
 * the host's /dev, /proc or /sys).
 */
export async function cleanupWorkDir(runner: Runner, workDir: string): Promise<void> {
  const dir = resolve(workDir);
  if (!existsSync(dir)) return;
  for (let round = 0; round < 10 && killBuildProcesses(dir) > 0; round++) {
    await new Promise((r) => setTimeout(r, 200));
  }
  for (let round = 0; round < 3; round++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) break;
    for (const m of mounts) {
      const r = await runner.run([toolPath('umount'), m], { allowFailure: true, timeoutMs: 60_000 });
      if (r.code !== 0) await runner.run([toolPath('umount'), '--lazy', m], { allowFailure: true, timeoutMs: 60_000 });
    }
  }
  const left = mountsUnder(dir);
  if (left.length > 0) {
    throw new BangerError('operation_failed', `not removing ${dir}: still mounted there: ${left.join(', ')}`, `unmount them (umount -R ${dir}) and remove ${dir}`);
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Mount points at or below dir, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dir: string, mountinfo?: string): string[] {
  let text = mountinfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/mountinfo', 'utf8');
    } catch {
      return [];
    }
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const raw = line.split(' ')[4];
    if (!raw) continue;
    const mp = raw.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mp === dir || isInside(mp, dir)) out.push(mp);
  }
  return [...new Set(out)].sort((a, b) => b.length - a.length);
}

/**
 * Kills (SIGKILL) every process of the build: each process whose cwd or
 * root is inside `dir` (mmdebstrap runs with cwd=workDir; its forks,
 * apt-get and dpkg in the chroot inherit or live there, even once orphaned)
 * together with all its descendants (taken from the process table before
 * anything is killed). Returns how many were signalled.
 */
export function killBuildProcesses(dir: string): number {
  const table = processTable();
  const victims = new Set<number>();
  const inside = (pid: number) =>
    ['cwd', 'root'].some((what) => {
      try {
        const target = readlinkSync(`/proc/${pid}/${what}`);
        return target === dir || isInside(target, dir);
      } catch {
        return false;
      }
    });
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of table) {
    const list = children.get(ppid) ?? [];
    list.push(pid);
    children.set(ppid, list);
  }
  const addTree = (pid: number) => {
    if (victims.has(pid)) return;
    victims.add(pid);
    for (const c of children.get(pid) ?? []) addTree(c);
  };
  for (const pid of table.keys()) {
    if (pid !== process.pid && inside(pid)) addTree(pid);
  }
  victims.delete(process.pid);
  let n = 0;
  for (const pid of victims) {
    try {
      process.kill(pid, 'SIGKILL');
      n++;
    } catch {
      /* already gone */
    }
  }
  return n;
}

/** pid → ppid of every process (from /proc/PID/stat). */
function processTable(): Map<number, number> {
  const out = new Map<number, number>();
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((f) => /^[0-9]+$/.test(f));
  } catch {
    return out;
  }
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may contain spaces and parentheses
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(pid), Number(fields[1]));
    } catch {
      /* gone */
    }
  }
  return out;
}

export function isInside(path: string, dir: string): boolean {
  return path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

/**
 * Waits for `p`; once `signal` aborts, waits at most `graceMs` more (a
 * process that escaped the kill may hold the output pipes open forever).
 */
export async function settledOrAbandoned<T>(p: Promise<T>, signal: AbortSignal | undefined, graceMs: number): Promise<T> {
  if (!signal) return p;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const abandoned = new Promise<never>((_, reject) => {
    const arm = () => {
      timer = setTimeout(() => reject(new BangerError('interrupted', 'cancelled')), graceMs);
    };
    if (signal.aborted) arm();
    else {
      onAbort = arm;
      signal.addEventListener('abort', onAbort, { once: true });
    }
  });
  abandoned.catch(() => undefined);
  try {
    return await Promise.race([p, abandoned]);
  } finally {
    if (timer) clearTimeout(timer);
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

/** Longest line lineSplitter holds before it hands out what it has. */
const MAX_LINE = 64 * 1024;

/** Splits a byte stream into trimmed, non-empty lines (also on \r, for apt's progress); a line is at most MAX_LINE characters. */
export function lineSplitter(onLine: (line: string) => void): { push: (chunk: Buffer) => void; flush: () => void } {
  let buf = '';
  return {
    push: (chunk) => {
      buf += chunk.toString('utf8');
      const parts = buf.split(/\r?\n|\r/);
      buf = parts.pop() ?? '';
      for (const p of parts) {
        const t = p.trim();
        if (t) onLine(t);
      }
      // A line that never ends (a hostile guest's output) is cut, never held whole.
      while (buf.length > MAX_LINE) {
        onLine(buf.slice(0, MAX_LINE).trim());
        buf = buf.slice(MAX_LINE);
      }
    },
    flush: () => {
      const t = buf.trim();
      buf = '';
      if (t) onLine(t);
    },
  };
}
