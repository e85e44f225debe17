import { describe, it, expect, vi, afterEach } from 'vitest';
import { checkSpecFlags, splitRunArgs, vmRun } from './vm.js';
import { diskSizeFlag } from './vm-lifecycle.js';
import { BangerError } from '../../errors/errors.js';
import type { RpcClient } from '../../rpc/client.js';
import type { CliContext } from '../context.js';
import { Banger } from '../../sdk/banger.js';
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
  it('the error carries the param (the daemon runs this check), not the flag: the CLI names --base-commit', () => {
    const e = (() => {
      try {
        validateRevision('a..b');
      } catch (x) {
        return x;
      }
    })();
    expect(isBangerError(e) && e.field).toBe('baseCommit');
    expect(isBangerError(e) && e.message).not.toMatch(/--/);
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

describe('vm run validates everything it can before printing or creating anything', () => {
  afterEach(() => vi.restoreAllMocks());

  function fakeCtx(call: (method: string) => Promise<unknown>) {
    const calls: string[] = [];
    const client = { call: async (method: string) => (calls.push(method), call(method)), close: () => undefined } as unknown as RpcClient;
    let connected = 0;
    const banger = Banger.withClient(client, { connect: async () => client });
    const ctx = { banger: async () => (connected++, banger), progress: () => undefined } as unknown as CliContext;
    let err = '';
    vi.spyOn(process.stderr, 'write').mockImplementation(((chunk: string) => ((err += chunk), true)) as typeof process.stderr.write);
    return { ctx, calls, connected: () => connected, stderr: () => err };
  }

  it.each([
    [{ image: '../../etc' }, /invalid image name/],
    [{ name: 'Bad_Name' }, /invalid VM name/],
    [{ vcpu: 0 }, /--vcpu must be at least 1/],
    [{ memory: 16 }, /--memory must be at least 256/],
  ])('%j: refused with bad_request, no daemon contacted, nothing printed', async (opts, re) => {
    const f = fakeCtx(async () => ({}));
    const e = (await vmRun(f.ctx, { cmd: ['true'] }, opts).catch((x: unknown) => x)) as BangerError;
    expect(e).toBeInstanceOf(BangerError);
    expect(e.code).toBe('bad_request');
    expect(e.message).toMatch(re);
    expect(f.connected()).toBe(0);
    expect(f.stderr()).toBe('');
  });

  it('a create the daemon refuses prints no "creating VM" line', async () => {
    const f = fakeCtx(async () => {
      throw new BangerError('not_found', 'image nope not found');
    });
    await expect(vmRun(f.ctx, { cmd: ['true'] }, { image: 'nope' })).rejects.toMatchObject({ code: 'not_found' });
    expect(f.calls).toEqual(['vm.create']);
    expect(f.stderr()).not.toContain('creating VM');
  });

  it('checkSpecFlags returns the name (generated when absent)', () => {
    expect(checkSpecFlags({ name: 'box', image: 'bookworm', vcpu: 1, memory: 512 })).toBe('box');
    expect(checkSpecFlags({})).toMatch(/^[a-z]+-[a-z]+-[0-9a-f]{4}$/);
  });
});

describe('--disk-size has an upper bound (2 TiB), checked as it is parsed', () => {
  const parse = diskSizeFlag('--disk-size');
  it('accepts sizes within 64 MiB .. 2 TiB', () => {
    expect(parse('8G')).toBe(8 * 1024 ** 3);
    expect(parse('2T')).toBe(2 * 1024 ** 4);
    expect(parse('64M')).toBe(64 * 1024 ** 2);
  });
  it.each(['3T', '8000G', '99999999999T', '1M'])('refuses %s with bad_request naming the flag and a hint', (v) => {
    try {
      parse(v);
      expect.fail('should throw');
    } catch (e) {
      expect((e as BangerError).code).toBe('bad_request');
      expect((e as BangerError).message).toMatch(/^--disk-size must be at (most|least)/);
      expect((e as BangerError).hint).toMatch(/sparse/);
    }
  });
});
