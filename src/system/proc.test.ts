import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from './runner.js';
import {
  isSameProcess,
  killProcess,
  parseStat,
  parseVmRss,
  readPidFile,
  readProcStat,
  readStartTime,
  readVmRss,
  waitForExit,
} from './proc.js';

/** A /proc/PID/stat line with the given comm and start time (field 22). */
function statLine(pid: number, comm: string, state: string, startTime: string): string {
  // fields 4..21 are 18 numbers, then 22 = start time, then a few more
  const middle = Array.from({ length: 18 }, (_, i) => String(i + 1)).join(' ');
  return `${pid} (${comm}) ${state} ${middle} ${startTime} 123456 789 18446744073709551615\n`;
}

describe('parseStat', () => {
  it('reads state, ids and field 22', () => {
    const s = parseStat(statLine(42, 'qemu-system-x86', 'S', '987654'));
    expect(s).toMatchObject({ pid: 42, comm: 'qemu-system-x86', state: 'S', ppid: 1, pgrp: 2, session: 3, startTime: '987654' });
  });

  it('copes with spaces and parentheses in comm', () => {
    const s = parseStat(statLine(7, 'evil) S 1 2 (x', 'R', '555'));
    expect(s?.comm).toBe('evil) S 1 2 (x');
    expect(s?.state).toBe('R');
    expect(s?.startTime).toBe('555');
  });

  it('reads utime and stime (fields 14 and 15)', () => {
    // statLine numbers fields 4..21 as 1..18, so field 14 is 11 and field 15 is 12
    const s = parseStat(statLine(9, 'qemu (x)', 'S', '777'));
    expect(s).toMatchObject({ utime: 11, stime: 12, startTime: '777' });
  });

  it('rejects garbage', () => {
    expect(parseStat('')).toBeNull();
    expect(parseStat('hello')).toBeNull();
    expect(parseStat('12 (x) S 1 2')).toBeNull();
    expect(parseStat('-1 (x) ' + 'S '.repeat(30))).toBeNull();
  });
});

describe('parseVmRss / readVmRss', () => {
  const status = ['Name:\tqemu-system-x86', 'State:\tS (sleeping)', 'VmHWM:\t  312000 kB', 'VmRSS:\t  301234 kB', 'RssAnon:\t  290000 kB', 'Threads:\t5', ''].join('\n');

  it('reads VmRSS in bytes, not VmHWM or RssAnon', () => {
    expect(parseVmRss(status)).toBe(301234 * 1024);
  });

  it('null without a VmRSS line (kernel thread, zombie) or with a malformed one', () => {
    expect(parseVmRss('Name:\tkthreadd\nState:\tS (sleeping)\n')).toBeNull();
    expect(parseVmRss('VmRSS:\t  lots kB\n')).toBeNull();
    expect(parseVmRss('')).toBeNull();
  });

  it('this process: positive; a wrong start time or a bad pid: null', () => {
    const rss = readVmRss(process.pid, readStartTime(process.pid)!);
    expect(rss).toBeGreaterThan(0);
    expect(readVmRss(process.pid)).toBeGreaterThan(0);
    expect(readVmRss(process.pid, '1')).toBeNull();
    expect(readVmRss(0)).toBeNull();
    expect(readVmRss(-5)).toBeNull();
  });
});

describe('real processes', () => {
  const runner = createRunner();
  const started: Array<{ pid: number; start: string | null }> = [];

  afterEach(() => {
    for (const p of started.splice(0)) {
      if (p.start) killProcess(p.pid, p.start, 'SIGKILL');
    }
  });

  function spawnSleep(): { pid: number; start: string } {
    const pid = runner.spawnDetached(['sleep', '60']);
    const start = readStartTime(pid);
    started.push({ pid, start });
    expect(start).toMatch(/^\d+$/);
    return { pid, start: start! };
  }

  it('reads our own start time and stat', () => {
    expect(readStartTime(process.pid)).toMatch(/^\d+$/);
    expect(readProcStat(process.pid)?.pid).toBe(process.pid);
    expect(isSameProcess(process.pid, readStartTime(process.pid)!)).toBe(true);
  });

  it('a detached child is in its own session', () => {
    const { pid } = spawnSleep();
    const stat = readProcStat(pid)!;
    expect(stat.session).toBe(pid);
    expect(stat.session).not.toBe(readProcStat(process.pid)!.session);
  });

  it('identifies a process by pid and start time', () => {
    const { pid, start } = spawnSleep();
    expect(isSameProcess(pid, start)).toBe(true);
    expect(isSameProcess(pid, String(Number(start) + 1))).toBe(false);
    expect(isSameProcess(pid, '')).toBe(false);
  });

  it('refuses to signal a pid whose start time differs (reused pid)', async () => {
    const { pid, start } = spawnSleep();
    expect(killProcess(pid, String(Number(start) - 1), 'SIGKILL')).toBe(false);
    // still alive: the wrong identity was not signalled
    expect(await waitForExit(pid, start, 200)).toBe(false);
    expect(isSameProcess(pid, start)).toBe(true);
  });

  it('kills the right process and waits for it to exit', async () => {
    const { pid, start } = spawnSleep();
    expect(killProcess(pid, start, 'SIGTERM')).toBe(true);
    expect(await waitForExit(pid, start, 5000)).toBe(true);
    expect(isSameProcess(pid, start)).toBe(false);
    expect(killProcess(pid, start, 'SIGKILL')).toBe(false);
  });

  it('never signals pid 0 or negative pids', () => {
    expect(killProcess(0, '1', 'SIGTERM')).toBe(false);
    expect(killProcess(-1, '1', 'SIGTERM')).toBe(false);
    expect(readStartTime(0)).toBeNull();
    expect(readStartTime(-5)).toBeNull();
  });

  it('reports a missing process', async () => {
    expect(readStartTime(4_000_000)).toBeNull();
    expect(isSameProcess(4_000_000, '1')).toBe(false);
    expect(await waitForExit(4_000_000, '1', 1000)).toBe(true);
  });
});

describe('readPidFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-proc-'));
  it('parses a QEMU-style pid file and rejects junk', () => {
    const f = join(dir, 'x.pid');
    writeFileSync(f, '12345\n');
    expect(readPidFile(f)).toBe(12345);
    writeFileSync(f, '  77  \n');
    expect(readPidFile(f)).toBe(77);
    writeFileSync(f, '');
    expect(readPidFile(f)).toBeUndefined();
    writeFileSync(f, 'abc\n');
    expect(readPidFile(f)).toBeUndefined();
    writeFileSync(f, '0\n');
    expect(readPidFile(f)).toBeUndefined();
    writeFileSync(f, '-3\n');
    expect(readPidFile(f)).toBeUndefined();
    expect(readPidFile(join(dir, 'missing.pid'))).toBeUndefined();
    rmSync(dir, { recursive: true, force: true });
  });
});
