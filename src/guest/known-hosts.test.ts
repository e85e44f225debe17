import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { createHmac, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../system/runner.js';
import { BangerError } from '../errors/errors.js';
import {
  checkHost,
  fingerprintSha256,
  lookupHost,
  removeHost,
  verifyOrPin,
  withLock,
} from './known-hosts.js';

const runner = createRunner();
let dir: string;
const keys: { type: string; b64: string; fp: string }[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'banger-kh-'));
  for (const [i, t] of ['ed25519', 'ed25519', 'ecdsa'].entries()) {
    const f = join(dir, `k${i}`);
    await runner.run(['ssh-keygen', '-q', '-t', t, '-N', '', '-f', f]);
    const [type, b64] = readFileSync(`${f}.pub`, 'utf8').split(' ');
    const fp = (await runner.run(['ssh-keygen', '-l', '-E', 'sha256', '-f', `${f}.pub`])).stdout.split(' ')[1]!;
    keys.push({ type: type!, b64: b64!, fp });
  }
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const fresh = () => join(mkdtempSync(join(dir, 'case-')), 'ssh', 'known_hosts');

describe('known_hosts', () => {
  it('computes the same SHA256 fingerprint as ssh-keygen -l', () => {
    for (const k of keys) expect(fingerprintSha256(k.b64)).toBe(k.fp);
  });

  it('pins on first use (0600 file in a 0700 dir), then matches', () => {
    const file = fresh();
    const [k0] = keys;
    expect(verifyOrPin(file, 'one.vm', k0!.type, k0!.b64)).toBe('pinned');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(file, '..')).mode & 0o777).toBe(0o700);
    expect(readFileSync(file, 'utf8')).toBe(`one.vm ${k0!.type} ${k0!.b64}\n`);
    expect(verifyOrPin(file, 'one.vm', k0!.type, k0!.b64)).toBe('match');
    expect(checkHost(file, 'one.vm', k0!.type, k0!.b64)).toBe('match');
    expect(checkHost(file, 'two.vm', k0!.type, k0!.b64)).toBe('unknown');
    // no temp or lock files left behind
    expect(readdirSync(join(file, '..'))).toEqual(['known_hosts']);
  });

  it('refuses a different key with an explicit, coded error and leaves the file alone', () => {
    const file = fresh();
    const [k0, k1, k2] = keys;
    verifyOrPin(file, 'web.vm', k0!.type, k0!.b64);
    const before = readFileSync(file, 'utf8');
    for (const other of [k1!, k2!]) {
      let err: unknown;
      try {
        verifyOrPin(file, 'web.vm', other.type, other.b64);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BangerError);
      const e = err as BangerError;
      expect(e.code).toBe('host_key_mismatch');
      expect(e.message).toContain('VM web (web.vm)');
      expect(e.message).toContain(`expected ${k0!.fp}`);
      expect(e.message).toContain(`presented ${other.fp}`);
      expect(e.message).toMatch(/replaced/);
      expect(e.message).toMatch(/intercepting/);
      expect(e.hint).toContain('`banger vm delete -f web`');
      expect(e.hint).toContain(file);
    }
    expect(readFileSync(file, 'utf8')).toBe(before);
  });

  it('writes lines OpenSSH finds (ssh-keygen -F)', async () => {
    const file = fresh();
    verifyOrPin(file, 'found.vm', keys[0]!.type, keys[0]!.b64);
    const r = await runner.run(['ssh-keygen', '-F', 'found.vm', '-f', file]);
    expect(r.stdout).toContain(`found.vm ${keys[0]!.type} ${keys[0]!.b64}`);
  });

  it('removeHost drops only that alias, keeps comments and other hosts, and re-pinning works', () => {
    const file = fresh();
    const [k0, k1] = keys;
    verifyOrPin(file, 'a.vm', k0!.type, k0!.b64);
    writeFileSync(file, readFileSync(file, 'utf8') + '# a comment\n', { mode: 0o600 });
    verifyOrPin(file, 'b.vm', k0!.type, k0!.b64);
    expect(removeHost(file, 'a.vm')).toBe(1);
    expect(removeHost(file, 'a.vm')).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe(`# a comment\nb.vm ${k0!.type} ${k0!.b64}\n`);
    expect(lookupHost(file, 'a.vm')).toEqual([]);
    expect(verifyOrPin(file, 'a.vm', k1!.type, k1!.b64)).toBe('pinned');
    expect(lookupHost(file, 'a.vm')).toEqual([{ keyType: k1!.type, keyBase64: k1!.b64 }]);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(removeHost(join(dir, 'nonexistent', 'known_hosts'), 'a.vm')).toBe(0);
  });

  it('reads the rest of the OpenSSH format: hashed hosts, lists, patterns, negation, markers', async () => {
    const file = fresh();
    const [k0, k1, k2] = keys;
    // a hashed entry made by ssh-keygen -H
    verifyOrPin(file, 'hashed.vm', k0!.type, k0!.b64);
    await runner.run(['ssh-keygen', '-H', '-f', file]);
    rmSync(`${file}.old`, { force: true });
    expect(readFileSync(file, 'utf8')).toMatch(/^\|1\|/);
    expect(verifyOrPin(file, 'hashed.vm', k0!.type, k0!.b64)).toBe('match');
    expect(() => verifyOrPin(file, 'hashed.vm', k1!.type, k1!.b64)).toThrow(/has changed/);
    // hand-written hashed line
    const salt = randomBytes(20);
    const h = createHmac('sha1', salt).update('hand.vm').digest('base64');
    const extra = [
      `|1|${salt.toString('base64')}|${h} ${k1!.type} ${k1!.b64}`,
      `list.vm,10.0.0.9 ${k1!.type} ${k1!.b64} some comment`,
      `*.wild,!tame.wild ${k2!.type} ${k2!.b64}`,
      `@cert-authority *.vm ${k2!.type} ${k2!.b64}`,
      `@revoked bad.vm ${k2!.type} ${k2!.b64}`,
      `garbage-line-without-key`,
    ];
    writeFileSync(file, readFileSync(file, 'utf8') + extra.join('\n') + '\n');
    expect(verifyOrPin(file, 'hand.vm', k1!.type, k1!.b64)).toBe('match');
    expect(verifyOrPin(file, 'list.vm', k1!.type, k1!.b64)).toBe('match');
    expect(verifyOrPin(file, '10.0.0.9', k1!.type, k1!.b64)).toBe('match');
    expect(verifyOrPin(file, 'x.wild', k2!.type, k2!.b64)).toBe('match');
    expect(() => verifyOrPin(file, 'x.wild', k0!.type, k0!.b64)).toThrow(BangerError);
    // negated: tame.wild has no pin yet, so it is pinned
    expect(verifyOrPin(file, 'tame.wild', k0!.type, k0!.b64)).toBe('pinned');
    // a @cert-authority line is not a pin
    expect(verifyOrPin(file, 'ca.vm', k0!.type, k0!.b64)).toBe('pinned');
    // a revoked key is refused even on first use
    expect(() => verifyOrPin(file, 'bad.vm', k2!.type, k2!.b64)).toThrow(/revoked/);
    // removeHost leaves wildcard lines alone and drops a list line naming the alias
    expect(removeHost(file, 'x.wild')).toBe(0);
    expect(removeHost(file, 'list.vm')).toBe(1);
    expect(readFileSync(file, 'utf8')).not.toContain('list.vm');
    expect(readFileSync(file, 'utf8')).toContain('garbage-line-without-key');
  });

  it('rejects aliases OpenSSH would not match literally', () => {
    const file = fresh();
    for (const bad of ['', 'Upper.vm', 'a b', 'a,b', '*.vm', '!x', '#x', '|1|x', 'a\nb']) {
      expect(() => verifyOrPin(file, bad, keys[0]!.type, keys[0]!.b64)).toThrow(BangerError);
    }
    expect(() => verifyOrPin(file, 'ok.vm', 'ssh ed25519', keys[0]!.b64)).toThrow(BangerError);
    expect(() => verifyOrPin(file, 'ok.vm', keys[2]!.type, keys[0]!.b64)).toThrow(BangerError); // type ≠ blob
    expect(() => verifyOrPin(file, 'ok.vm', keys[0]!.type, 'AAAA')).toThrow(BangerError);
    expect(existsSync(file)).toBe(false);
  });

  it('serialises writers with a lock file: a stale lock of a dead pid is broken, a live one waits', async () => {
    const file = fresh();
    verifyOrPin(file, 'first.vm', keys[0]!.type, keys[0]!.b64);
    // stale: a pid that has exited
    const dead = await runner.run(['sh', '-c', 'echo $$']);
    writeFileSync(`${file}.lock`, dead.stdout.trim());
    expect(verifyOrPin(file, 'second.vm', keys[0]!.type, keys[0]!.b64)).toBe('pinned');
    expect(existsSync(`${file}.lock`)).toBe(false);
    // live holder (this process): times out with a coded error
    writeFileSync(`${file}.lock`, String(process.pid));
    let err: unknown;
    try {
      withLock(file, () => 1, 200);
    } catch (e) {
      err = e;
    }
    expect((err as BangerError).code).toBe('unavailable');
    rmSync(`${file}.lock`);
    expect(withLock(file, () => 7)).toBe(7);
  });

  it('keeps every pin when several processes pin at once', async () => {
    const file = fresh();
    verifyOrPin(file, 'seed.vm', keys[0]!.type, keys[0]!.b64);
    // Compile this module (and what it imports) to JS so plain node children can use it.
    const out = mkdtempSync(join(dir, 'js-'));
    const src = new URL('./known-hosts.ts', import.meta.url).pathname;
    await runner.run(
      [
        join(process.cwd(), 'node_modules', '.bin', 'tsc'),
        '--outDir', out, '--rootDir', join(src, '..', '..'),
        '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022',
        '--skipLibCheck', '--types', 'node', src,
      ],
      { timeoutMs: 60_000 },
    );
    writeFileSync(join(out, 'package.json'), '{"type":"module"}');
    const child = join(out, 'child.mjs');
    writeFileSync(
      child,
      `import { verifyOrPin } from './guest/known-hosts.js';
       const [file, p, type, b64] = process.argv.slice(2);
       for (let i = 0; i < 25; i++) verifyOrPin(file, 'p' + p + '-' + i + '.vm', type, b64);`,
    );
    await Promise.all(
      [0, 1, 2, 3].map((p) =>
        runner.run([process.execPath, child, file, String(p), keys[0]!.type, keys[0]!.b64], { timeoutMs: 30_000 }),
      ),
    );
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(101);
    expect(new Set(lines).size).toBe(101);
    expect(existsSync(`${file}.lock`)).toBe(false);
  }, 60_000);
});
