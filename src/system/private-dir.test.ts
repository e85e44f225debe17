import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { checkRuntimeDir, ensureRuntimeDir, ensureStateDir, readFileNoFollow } from './private-dir.js';
import { writeFileAtomic } from './fs.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-private-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function caught(f: () => unknown): BangerError {
  try {
    f();
  } catch (e) {
    if (e instanceof BangerError) return e;
    throw e;
  }
  throw new Error('expected a BangerError');
}

describe('private dirs', () => {
  it('creates a missing runtime dir (and its parents) with mode 0700, whatever the umask', () => {
    const old = process.umask(0o000);
    try {
      const rt = join(dir, 'a', 'banger-0');
      ensureRuntimeDir(rt);
      expect(statSync(rt).mode & 0o777).toBe(0o700);
      expect(checkRuntimeDir(rt)).toBe(true);
    } finally {
      process.umask(old);
    }
  });

  it('a missing runtime dir is not an error for a check (nothing to connect to)', () => {
    expect(checkRuntimeDir(join(dir, 'none'))).toBe(false);
  });

  it('refuses a pre-created 0777 (or group-writable) runtime dir with a coded error, and writes nothing into it', () => {
    for (const mode of [0o777, 0o770, 0o1777]) {
      const rt = join(dir, `open-${mode.toString(8)}`);
      mkdirSync(rt);
      chmodSync(rt, mode);
      const e = caught(() => ensureRuntimeDir(rt));
      expect(e.code).toBe('operation_failed');
      expect(e.message).toMatch(/unsafe runtime dir: .* is writable by others/);
      expect(e.hint).toContain(`chmod 700 ${rt}`);
      expect(() => checkRuntimeDir(rt)).toThrow(BangerError);
      expect(readdirSync(rt)).toEqual([]);
      expect(statSync(rt).mode & 0o7777).toBe(mode); // not "fixed" behind the user's back
    }
  });

  it.skipIf(process.getuid?.() !== 0)('refuses a runtime dir owned by another uid', () => {
    const rt = join(dir, 'theirs');
    mkdirSync(rt, { mode: 0o700 });
    chownSync(rt, 4242, 4242); // needs root (the suite runs as root)
    const e = caught(() => ensureRuntimeDir(rt));
    expect(e.message).toMatch(/owned by uid 4242, not by you/);
    expect(e.hint).toContain('BANGER_RUNTIME_DIR');
    expect(readdirSync(rt)).toEqual([]);
  });

  it('refuses a runtime dir that is a symlink, even to a good directory', () => {
    const real = join(dir, 'real');
    mkdirSync(real, { mode: 0o700 });
    const rt = join(dir, 'link');
    symlinkSync(real, rt);
    expect(caught(() => ensureRuntimeDir(rt)).message).toMatch(/is a symbolic link/);
    symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling'));
    expect(caught(() => ensureRuntimeDir(join(dir, 'dangling'))).message).toMatch(/is a symbolic link/);
    expect(readdirSync(real)).toEqual([]);
  });

  it('refuses a file where the dir should be', () => {
    writeFileSync(join(dir, 'file'), '');
    expect(caught(() => ensureRuntimeDir(join(dir, 'file'))).message).toMatch(/is not a directory/);
  });

  it.skipIf(process.getuid?.() !== 0)('the state dir may be its owner\'s symlink to a private dir, but not an open or foreign one', () => {
    const real = join(dir, 'disk', 'banger');
    mkdirSync(real, { recursive: true, mode: 0o700 });
    symlinkSync(real, join(dir, 'state'));
    expect(() => ensureStateDir(join(dir, 'state'))).not.toThrow();
    chmodSync(real, 0o777);
    const e = caught(() => ensureStateDir(join(dir, 'state')));
    expect(e.message).toMatch(/unsafe state dir/);
    chmodSync(real, 0o700);
    chownSync(real, 4242, 4242);
    expect(caught(() => ensureStateDir(join(dir, 'state'))).hint).toContain('BANGER_STATE_DIR');
    const fresh = join(dir, 'fresh', 'state');
    ensureStateDir(fresh);
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
  });
});

describe('pid files', () => {
  it('writeFileAtomic replaces a planted symlink and leaves its victim untouched', () => {
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    const pid = join(dir, 'bangerd.pid');
    symlinkSync(victim, pid);
    writeFileAtomic(pid, '1234\n', 0o600);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(lstatSync(pid).isSymbolicLink()).toBe(false);
    expect(readFileSync(pid, 'utf8')).toBe('1234\n');
    expect(statSync(pid).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).sort()).toEqual(['bangerd.pid', 'victim']); // no temp file left
  });

  it('writeFileAtomic writes a fresh file and replaces an old one', () => {
    const p = join(dir, 'x.pid');
    writeFileAtomic(p, 'one\n');
    writeFileAtomic(p, 'two\n');
    expect(readFileSync(p, 'utf8')).toBe('two\n');
  });

  it('readFileNoFollow does not read through a link', () => {
    writeFileSync(join(dir, 'victim'), 'secret');
    symlinkSync(join(dir, 'victim'), join(dir, 'lock'));
    expect(readFileNoFollow(join(dir, 'lock'))).toBeUndefined();
    expect(readFileNoFollow(join(dir, 'none'))).toBeUndefined();
    writeFileSync(join(dir, 'real'), '12 34\n');
    expect(readFileNoFollow(join(dir, 'real'))).toBe('12 34\n');
  });
});
