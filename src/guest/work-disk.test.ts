import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner, type Runner } from '../system/runner.js';
import { BangerError } from '../errors/errors.js';
import { onPath, toolPath } from '../system/which.js';
import {
  MIN_WORK_DISK_BYTES,
  WORK_DISK_LABEL,
  WORK_DISK_MKFS_OPTIONS,
  createWorkDisk,
  growWorkDisk,
  workDiskBytes,
  workDiskFileBytes,
} from './work-disk.js';

const MiB = 1024 * 1024;
const runner = createRunner();
const haveTools = ['mkfs.ext4', 'e2fsck', 'resize2fs', 'dumpe2fs', 'debugfs'].every((t) => toolPath(t).startsWith('/') || onPath(t) !== undefined);


/** Runner that records argv and delegates to the real one. */
function recording(): { runner: Runner; calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    runner: {
      run: (argv, opts) => {
        calls.push(argv);
        return runner.run(argv, opts);
      },
      spawnDetached: (argv, opts) => runner.spawnDetached(argv, opts),
      runInteractive: (argv, opts) => runner.runInteractive(argv, opts),
    },
  };
}

/** dumpe2fs -h as key → value. */
async function superblock(file: string): Promise<Record<string, string>> {
  const r = await runner.run([toolPath('dumpe2fs'), '-h', file], { timeoutMs: 30_000 });
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (m) out[m[1]!.trim()] = m[2]!.trim();
  }
  return out;
}

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function codeOf(e: unknown): string {
  expect(e).toBeInstanceOf(BangerError);
  return (e as BangerError).code;
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-work-disk-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('workDiskFileBytes', () => {
  it('rounds up to whole MiB', () => {
    expect(workDiskFileBytes(64 * MiB)).toBe(64 * MiB);
    expect(workDiskFileBytes(64 * MiB + 1)).toBe(65 * MiB);
    expect(workDiskFileBytes(1e9)).toBe(954 * MiB);
  });
});

describe('mkfs options', () => {
  it('labels the disk, reserves nothing, makes root own it and initialises lazily', () => {
    const opts = WORK_DISK_MKFS_OPTIONS.join(' ');
    expect(opts).toContain(`-L ${WORK_DISK_LABEL}`);
    expect(opts).toContain('-m 0');
    expect(opts).toMatch(/-E \S*lazy_itable_init=1/);
    expect(opts).toMatch(/-E \S*lazy_journal_init=1/);
    expect(opts).toMatch(/-E \S*root_owner=0:0/);
    expect(WORK_DISK_LABEL).toBe('banger-work');
  });
});

describe.skipIf(!haveTools)('createWorkDisk (real mkfs.ext4)', () => {
  it('makes a sparse ext4 image of the requested size, labelled banger-work, root owned by root', async () => {
    const file = join(dir, 'work.ext4');
    const rec = recording();
    await createWorkDisk(rec.runner, file, 256 * MiB);
    const st = statSync(file);
    expect(st.size).toBe(256 * MiB);
    expect(st.mode & 0o777).toBe(0o600);
    // sparse: mkfs wrote a few MiB, not 256
    expect(st.blocks * 512).toBeLessThan(32 * MiB);
    const sb = await superblock(file);
    expect(sb['Filesystem volume name']).toBe(WORK_DISK_LABEL);
    expect(Number(sb['Block count']) * Number(sb['Block size'])).toBe(256 * MiB);
    expect(Number(sb['Reserved block count'])).toBe(0);
    expect(sb['Filesystem features']).toContain('has_journal');
    expect(sb['Filesystem features']).toContain('extent');
    const root = await runner.run([toolPath('debugfs'), '-R', 'stat /', file], { timeoutMs: 30_000 });
    expect(root.stdout).toMatch(/User:\s+0\s+Group:\s+0/);
    // clean filesystem
    const fsck = await runner.run([toolPath('e2fsck'), '-fn', file], { timeoutMs: 30_000, allowFailure: true });
    expect(fsck.code).toBe(0);
    // nothing else left in the directory
    expect(readdirSync(dir)).toEqual(['work.ext4']);
    expect(rec.calls).toHaveLength(1);
    expect(rec.calls[0]!.at(-1)).not.toBe(file); // built under a temporary name
    expect(workDiskBytes(file)).toBe(256 * MiB);
  });

  it('rounds the size up to whole MiB', async () => {
    const file = join(dir, 'work.ext4');
    await createWorkDisk(runner, file, 100 * MiB + 5);
    expect(statSync(file).size).toBe(101 * MiB);
  });

  it('never replaces an existing file, and leaves nothing behind', async () => {
    const file = join(dir, 'work.ext4');
    writeFileSync(file, 'precious');
    const err = await createWorkDisk(runner, file, 64 * MiB).catch((e: unknown) => e);
    expect(codeOf(err)).toBe('already_exists');
    expect(readFileSync(file, 'utf8')).toBe('precious');
    expect(readdirSync(dir)).toEqual(['work.ext4']);
  });

  it('leaves no half-made file when mkfs fails', async () => {
    const file = join(dir, 'work.ext4');
    const failing: Runner = {
      ...runner,
      run: async (argv, opts) => runner.run(['sh', '-c', 'echo "mkfs broke" >&2; exit 1', ...argv], opts),
    };
    const err = await createWorkDisk(failing, file, 64 * MiB).catch((e: unknown) => e);
    expect(codeOf(err)).toBe('operation_failed');
    expect(String((err as Error).message)).toContain('mkfs broke');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses sizes it cannot make a work disk of, before touching the disk', async () => {
    const file = join(dir, 'work.ext4');
    for (const bad of [0, -1, 1.5, Number.NaN, MIN_WORK_DISK_BYTES - 1, 3 * 1024 ** 4, 64 * 1024 ** 4]) {
      const err = await createWorkDisk(runner, file, bad).catch((e: unknown) => e);
      expect(codeOf(err)).toBe('bad_request');
      expect((err as BangerError).field).toBe('diskBytes'); // the CLI names the flag, not the daemon
      expect((err as BangerError).message).not.toContain('--');
    }
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe.skipIf(!haveTools)('growWorkDisk (real e2fsck + resize2fs)', () => {
  it('grows the file and the filesystem, keeping the data', async () => {
    const file = join(dir, 'work.ext4');
    await createWorkDisk(runner, file, 128 * MiB);
    // put a file on it (debugfs edits the image; nothing is mounted)
    const src = join(dir, 'hello.txt');
    writeFileSync(src, 'hello from the work disk\n');
    await runner.run([toolPath('debugfs'), '-w', '-R', `write ${src} hello.txt`, file], { timeoutMs: 30_000 });
    const before = await superblock(file);

    const rec = recording();
    await growWorkDisk(rec.runner, file, 512 * MiB);
    expect(statSync(file).size).toBe(512 * MiB);
    expect(statSync(file).blocks * 512).toBeLessThan(64 * MiB); // still sparse
    const after = await superblock(file);
    expect(Number(after['Block count'])).toBeGreaterThan(Number(before['Block count']));
    expect(Number(after['Block count']) * Number(after['Block size'])).toBe(512 * MiB);
    expect(after['Filesystem volume name']).toBe(WORK_DISK_LABEL);
    const tools = rec.calls.map((c) => c[0]!.split('/').pop());
    expect(tools).toEqual(['e2fsck', 'resize2fs']);
    expect(rec.calls[0]).toContain('-fy');
    expect(rec.calls[1]!.at(-1)).toBe(file);

    const cat = await runner.run([toolPath('debugfs'), '-R', 'cat hello.txt', file], { timeoutMs: 30_000 });
    expect(cat.stdout).toBe('hello from the work disk\n');
    const fsck = await runner.run([toolPath('e2fsck'), '-fn', file], { timeoutMs: 30_000, allowFailure: true });
    expect(fsck.code).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(['hello.txt', 'work.ext4']);
  });

  it('does nothing when the size is unchanged (after rounding)', async () => {
    const file = join(dir, 'work.ext4');
    await createWorkDisk(runner, file, 100 * MiB + 5);
    const sum = sha256(file);
    const rec = recording();
    await growWorkDisk(rec.runner, file, 100 * MiB + 5);
    await growWorkDisk(rec.runner, file, 101 * MiB);
    expect(rec.calls).toEqual([]);
    expect(sha256(file)).toBe(sum);
  });

  it('refuses to shrink, naming the diskBytes field and both sizes, and leaves the file untouched', async () => {
    const file = join(dir, 'work.ext4');
    await createWorkDisk(runner, file, 128 * MiB);
    const sum = sha256(file);
    const mtime = statSync(file).mtimeMs;
    const rec = recording();
    const err = await growWorkDisk(rec.runner, file, 64 * MiB).catch((e: unknown) => e);
    expect(codeOf(err)).toBe('bad_request');
    const e = err as BangerError;
    expect(e.field).toBe('diskBytes');
    expect(e.message).toContain('64 MiB');
    expect(e.message).toContain('128 MiB');
    expect(e.hint).toBeTruthy();
    expect(rec.calls).toEqual([]);
    expect(statSync(file).size).toBe(128 * MiB);
    expect(statSync(file).mtimeMs).toBe(mtime);
    expect(sha256(file)).toBe(sum);
  });

  it('does not resize a filesystem e2fsck cannot repair', async () => {
    const file = join(dir, 'work.ext4');
    writeFileSync(file, Buffer.alloc(64 * MiB)); // no filesystem at all
    const err = await growWorkDisk(runner, file, 128 * MiB).catch((e: unknown) => e);
    expect(codeOf(err)).toBe('operation_failed');
    expect((err as BangerError).message).toContain('e2fsck');
    expect(statSync(file).size).toBe(64 * MiB);
  });

  it('reports a missing disk as not_found', async () => {
    const err = await growWorkDisk(runner, join(dir, 'nope.ext4'), 128 * MiB).catch((e: unknown) => e);
    expect(codeOf(err)).toBe('not_found');
    expect(() => workDiskBytes(join(dir, 'nope.ext4'))).toThrow(BangerError);
  });
});
