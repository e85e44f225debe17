import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsInRoot, readInRoot, resolveInRoot } from './tree.js';
import { createRunner } from '../system/runner.js';

let tmp: string;
let root: string;
let outside: string;
beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'banger-tree-'));
  root = join(tmp, 'root');
  outside = join(tmp, 'outside');
  mkdirSync(join(root, 'usr/lib'), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, 'secret'), 'host file');
});
afterEach(() => rmSync(tmp, { recursive: true, force: true }));

describe('resolveInRoot', () => {
  it('follows relative and absolute links inside the tree (merged /usr)', () => {
    symlinkSync('usr/lib', join(root, 'lib'));
    expect(resolveInRoot(root, 'lib/modules/6.1')).toBe(join(root, 'usr/lib/modules/6.1'));
    rmSync(join(root, 'lib'));
    symlinkSync('/usr/lib', join(root, 'lib'));
    expect(resolveInRoot(root, '/lib/modules')).toBe(join(root, 'usr/lib/modules'));
  });

  it('keeps an absolute link to the host inside the tree', () => {
    symlinkSync(outside, join(root, 'etc'));
    expect(resolveInRoot(root, 'etc/shadow')).toBe(join(root, outside.slice(1), 'shadow'));
  });

  it('stops .. at the root, in the path and in link targets', () => {
    symlinkSync('../../../../outside', join(root, 'up'));
    expect(resolveInRoot(root, 'up/secret')).toBe(join(root, 'outside/secret'));
    expect(resolveInRoot(root, '../../x')).toBe(join(root, 'x'));
  });

  it('returns the last link itself unless told to follow it', () => {
    symlinkSync('/etc/passwd', join(root, 'shadow'));
    expect(resolveInRoot(root, 'shadow')).toBe(join(root, 'shadow'));
    expect(resolveInRoot(root, 'shadow', { followLast: true })).toBe(join(root, 'etc/passwd'));
  });

  it('refuses a symlink loop with a coded error', () => {
    symlinkSync('b', join(root, 'a'));
    symlinkSync('a', join(root, 'b'));
    expect(() => resolveInRoot(root, 'a/x')).toThrow(expect.objectContaining({ code: 'operation_failed', message: expect.stringMatching(/symbolic links/) }));
  });
});

describe('readInRoot / existsInRoot', () => {
  it('reads a file through an in-tree link, never the host file the link names', () => {
    mkdirSync(join(root, 'etc'));
    writeFileSync(join(root, 'etc/os-release'), 'ID=debian\n');
    symlinkSync('/etc/os-release', join(root, 'usr/lib/os-release'));
    expect(readInRoot(root, 'usr/lib/os-release')).toBe('ID=debian\n');
    symlinkSync(join(outside, 'secret'), join(root, 'leak'));
    expect(readInRoot(root, 'leak')).toBeUndefined();
    expect(existsInRoot(root, 'leak')).toBe(false);
    expect(existsInRoot(root, 'usr/lib/os-release')).toBe(true);
  });

  it('refuses a FIFO (no hang), a directory and an oversized file', async () => {
    await createRunner().run(['mkfifo', join(root, 'fifo')]);
    expect(() => readInRoot(root, 'fifo')).toThrow(/not a regular file/);
    expect(() => readInRoot(root, 'usr')).toThrow(/not a regular file/);
    writeFileSync(join(root, 'big'), Buffer.alloc(100));
    expect(() => readInRoot(root, 'big', 10)).toThrow(/larger than 10 bytes/);
  });
});
