/**
 * Process identity from /proc. A pid alone is not an identity: pids are
 * reused. banger records a VMM's pid together with its start time (field 22
 * of /proc/PID/stat, in clock ticks since boot) and only ever signals a pid
 * whose start time still matches, so a reused pid is never mistaken for a VM.
 *
 * (There is a tiny window between the check and the kill(2) in which the pid
 * could be reused; Node has no pidfd_send_signal. Pids are handed out
 * sequentially, so hitting that window needs a full wrap of the pid space
 * within microseconds.)
 */
import { readFileSync } from 'node:fs';

export interface ProcStat {
  pid: number;
  /** Field 2, without the parentheses. May contain spaces and parentheses. */
  comm: string;
  /** Field 3: R, S, D, Z, T, t, X, I, ... */
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  /** Field 14: CPU time spent in user mode, in clock ticks (USER_HZ). */
  utime: number;
  /** Field 15: CPU time spent in kernel mode, in clock ticks (USER_HZ). */
  stime: number;
  /** Field 22: start time in clock ticks after boot, kept as a decimal string. */
  startTime: string;
}

/**
 * The kernel's USER_HZ, the unit of the tick counts in /proc/PID/stat. It is
 * part of the ABI and 100 on every architecture banger runs on (x86-64, arm64).
 */
export const USER_HZ = 100;

/**
 * Parses the text of /proc/PID/stat. The comm field is in parentheses and
 * may itself contain spaces and ')' characters, so the fields after it are
 * found from the LAST ')' in the line.
 */
export function parseStat(text: string): ProcStat | null {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open <= 0 || close < open) return null;
  const pid = Number(text.slice(0, open).trim());
  if (!isValidPid(pid)) return null;
  const comm = text.slice(open + 1, close);
  // The rest starts with field 3 (state).
  const rest = text.slice(close + 1).trim().split(/\s+/);
  const field = (n: number): string | undefined => rest[n - 3];
  const state = field(3);
  const startTime = field(22);
  if (state === undefined || startTime === undefined || !/^\d+$/.test(startTime)) return null;
  return {
    pid,
    comm,
    state,
    ppid: Number(field(4)),
    pgrp: Number(field(5)),
    session: Number(field(6)),
    utime: Number(field(14)),
    stime: Number(field(15)),
    startTime,
  };
}

export function readProcStat(pid: number): ProcStat | null {
  if (!isValidPid(pid)) return null;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const stat = parseStat(text);
  return stat && stat.pid === pid ? stat : null;
}

/** Field 22 of /proc/PID/stat, or null when there is no such process. */
export function readStartTime(pid: number): string | null {
  return readProcStat(pid)?.startTime ?? null;
}

/**
 * True when `pid` is a live (not zombie) process that started at `startTime`.
 * A zombie has exited already: it only waits for its parent to reap it.
 */
export function isSameProcess(pid: number, startTime: string): boolean {
  if (!startTime) return false;
  const stat = readProcStat(pid);
  return stat !== null && stat.startTime === startTime && !isDead(stat.state);
}

/**
 * Sends `signal` to `pid` only if it is still the process that started at
 * `startTime`. Returns true when the signal was delivered, false when the
 * process is gone, a zombie, or the pid now belongs to someone else.
 */
export function killProcess(pid: number, startTime: string, signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
  // Never pass 0 or a negative number to kill(2): those address process groups.
  if (!isValidPid(pid) || !isSameProcess(pid, startTime)) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw e;
  }
}

/**
 * Polls until the process identified by (pid, startTime) is gone (or a
 * zombie). Resolves true if it exited within `timeoutMs`, false otherwise.
 */
export async function waitForExit(pid: number, startTime: string, timeoutMs: number, pollMs = 50): Promise<boolean> {
  const deadline = Date.now() + Math.max(0, timeoutMs);
  for (;;) {
    if (!isSameProcess(pid, startTime)) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await new Promise((r) => setTimeout(r, Math.min(pollMs, left)));
  }
}

/**
 * VmRSS from the text of /proc/PID/status, in bytes: the process's resident
 * memory (anonymous + file + shared). Null when the line is missing (kernel
 * threads and zombies have none) or malformed.
 */
export function parseVmRss(statusText: string): number | null {
  const m = /^VmRSS:\s+(\d+)\s+kB\s*$/m.exec(statusText);
  return m ? Number(m[1]) * 1024 : null;
}

/** VmRSS of `pid` in bytes, or null when it is gone, a zombie, unreadable, or no longer the process that started at `startTime`. */
export function readVmRss(pid: number, startTime?: string): number | null {
  if (!isValidPid(pid)) return null;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  // Checked after the read: a pid reused before it would show a new start time now.
  if (startTime !== undefined && !isSameProcess(pid, startTime)) return null;
  return parseVmRss(text);
}

/** A process's argv from /proc/PID/cmdline; undefined when it is gone or unreadable. */
export function readCmdline(pid: number): string[] | undefined {
  if (!isValidPid(pid)) return undefined;
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`);
    if (raw.length === 0) return undefined;
    return raw.toString('utf8').replace(/\0$/, '').split('\0');
  } catch {
    return undefined;
  }
}

/**
 * Reads a pid file as written by QEMU's -pidfile (a decimal pid and a
 * newline). Undefined when it is missing, empty or not a valid pid.
 */
export function readPidFile(path: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const first = text.trim().split(/\s+/)[0] ?? '';
  if (!/^\d+$/.test(first)) return undefined;
  const pid = Number(first);
  return isValidPid(pid) ? pid : undefined;
}

function isValidPid(pid: number): boolean {
  // Linux caps pid_max at 2^22.
  return Number.isSafeInteger(pid) && pid > 0 && pid <= 4_194_304;
}

function isDead(state: string): boolean {
  return state === 'Z' || state === 'X' || state === 'x';
}
