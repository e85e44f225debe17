/** Shared by the tests that play a hostile peer: a seeded PRNG, a crash watcher, and the census they take before and after. */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Runner } from '../../src/system/runner.js';

/** A small seeded PRNG (mulberry32): the same seed gives the same run. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Collects every uncaught exception and unhandled rejection while it runs:
 * an error thrown out of a socket handler would land here (vitest's worker
 * would die of it), so a test asserts `crashes` stayed empty.
 */
export function watchCrashes(): { crashes: unknown[]; stop: () => void } {
  const crashes: unknown[] = [];
  const onCrash = (e: unknown) => crashes.push(e);
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  return {
    crashes,
    stop: () => {
      process.off('uncaughtException', onCrash);
      process.off('unhandledRejection', onCrash);
    },
  };
}

/** Live child processes of `pid` (zombies, state Z, excluded: PID 1 here reaps them late). */
export function liveChildren(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid && fields[0] !== 'Z') out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Every directory (with a trailing /) and file under `dir`, relative to it, but files whose name matches `skip`. */
export function filesUnder(dir: string, skip: RegExp, base = dir): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return [`${p.slice(base.length)}/`, ...filesUnder(p, skip, base)];
    return skip.test(f) ? [] : [p.slice(base.length)];
  });
}

/** What a hostile request to the root helper must not change in its netns: links, both iptables tables, ip_forward. */
export async function netnsCensus(runner: Runner, ns: string): Promise<string> {
  const inNs = async (...cmd: string[]) => (await runner.run(['ip', 'netns', 'exec', ns, ...cmd])).stdout;
  return (await inNs('ip', '-o', 'link', 'show')).replace(/\s+/g, ' ') + (await inNs('iptables-save')).replace(/^#.*$/gm, '') + (await inNs('sysctl', '-n', 'net.ipv4.ip_forward'));
}
