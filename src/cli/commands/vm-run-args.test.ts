import { describe, it, expect } from 'vitest';
import { splitRunArgs } from './vm.js';
import { validateRevision } from '../../model/revision.js';
import { parseProbe } from '../../workspace/guest-scripts.js';
import { isBangerError } from '../../errors/errors.js';

describe('vm run [PATH] -- CMD', () => {
  it('PATH before --, CMD after', () => {
    expect(splitRunArgs(['./repo', '--', 'make', 'test'], true)).toEqual({ path: './repo', cmd: ['make', 'test'] });
  });
  it('a leading -- (consumed by commander) means everything is CMD', () => {
    expect(splitRunArgs(['uname', '-a'], true)).toEqual({ path: undefined, cmd: ['uname', '-a'] });
  });
  it('no -- at all: the one operand is PATH (vm run -d ./repo)', () => {
    expect(splitRunArgs(['./repo'], false)).toEqual({ path: './repo', cmd: [] });
    expect(splitRunArgs([], false)).toEqual({ path: undefined, cmd: [] });
  });
  it('a later -- inside CMD is kept', () => {
    expect(splitRunArgs(['.', '--', 'git', 'log', '--', 'a'], true)).toEqual({ path: '.', cmd: ['git', 'log', '--', 'a'] });
  });
  it('two operands before -- (or a command without --) is refused with the usage', () => {
    for (const [args, dd] of [[['a', 'b', '--', 'c'], true], [['uname', '-a'], false]] as const) {
      let err: unknown;
      try {
        splitRunArgs([...args], dd);
      } catch (e) {
        err = e;
      }
      expect(isBangerError(err) && err.code).toBe('bad_request');
      expect(isBangerError(err) && err.hint).toMatch(/vm run \[PATH\] -- CMD/);
    }
  });
});

describe('--base-commit', () => {
  it('accepts commit ids and ref names', () => {
    for (const r of ['0123abcd', 'a'.repeat(40), 'main', 'HEAD~2', 'feature/x', 'v1.2.3']) expect(validateRevision(r)).toBe(r);
  });
  it('refuses options, ranges, spaces and empty', () => {
    for (const r of ['--upload-pack=x', '-p', 'a..b', 'a b', '', 'x;rm', '$(id)']) {
      expect(() => validateRevision(r)).toThrow(/is not a commit/);
    }
  });
});

describe('parseProbe', () => {
  it('reads the base commit and the guest listing', () => {
    const sha = 'a'.repeat(40);
    const out = Buffer.from(`${sha}\n100644 ${'b'.repeat(40)} 0\tdir/f.txt\u0000120000 ${'c'.repeat(40)} 0\tlink\u0000`);
    const p = parseProbe(out);
    expect(p.have).toBe(sha);
    expect(p.guestFiles?.get('dir/f.txt')).toBe(`100644 ${'b'.repeat(40)}`);
    expect(p.guestFiles?.get('link')).toBe(`120000 ${'c'.repeat(40)}`);
  });
  it('no workspace: no base, no listing', () => {
    expect(parseProbe(Buffer.from('\n'))).toEqual({ have: null, guestFiles: null });
    expect(parseProbe(Buffer.alloc(0))).toEqual({ have: null, guestFiles: null });
  });
});
