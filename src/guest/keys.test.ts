import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../system/runner.js';
import { BangerError } from '../errors/errors.js';
import { ensureKeypair } from './keys.js';

const runner = createRunner();
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-keys-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('ensureKeypair', () => {
  it('creates an ed25519 keypair (key 0600 in a 0700 dir) on first use', async () => {
    const keyPath = join(dir, 'a', 'ssh', 'id_ed25519');
    const kp = await ensureKeypair(runner, keyPath);
    expect(kp.privateKeyPath).toBe(keyPath);
    expect(kp.publicKey).toMatch(/^ssh-ed25519 [A-Za-z0-9+/]+=* banger$/);
    expect(statSync(keyPath).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'a', 'ssh')).mode & 0o777).toBe(0o700);
    expect(readFileSync(`${keyPath}.pub`, 'utf8')).toBe(`${kp.publicKey}\n`);
    // OpenSSH derives the same public key from the private one
    const derived = (await runner.run(['ssh-keygen', '-y', '-f', keyPath])).stdout.trim().split(' ');
    expect(kp.publicKey.split(' ').slice(0, 2)).toEqual(derived.slice(0, 2));
    expect(readdirSync(join(dir, 'a', 'ssh')).sort()).toEqual(['id_ed25519', 'id_ed25519.pub']);
  });

  it('is idempotent: returns the existing key and does not touch it', async () => {
    const keyPath = join(dir, 'b', 'id_ed25519');
    const first = await ensureKeypair(runner, keyPath);
    const bytes = readFileSync(keyPath);
    const mtime = statSync(keyPath).mtimeMs;
    const second = await ensureKeypair(runner, keyPath);
    expect(second).toEqual(first);
    expect(readFileSync(keyPath).equals(bytes)).toBe(true);
    expect(statSync(keyPath).mtimeMs).toBe(mtime);
  });

  it('is safe when many callers race on first use: one key, everyone gets it, no temp files', async () => {
    const keyPath = join(dir, 'c', 'id_ed25519');
    const results = await Promise.all(Array.from({ length: 8 }, () => ensureKeypair(runner, keyPath)));
    const pubs = new Set(results.map((r) => r.publicKey));
    expect(pubs.size).toBe(1);
    const derived = (await runner.run(['ssh-keygen', '-y', '-f', keyPath])).stdout.trim().split(' ')[1];
    expect([...pubs][0]!.split(' ')[1]).toBe(derived);
    expect(readdirSync(join(dir, 'c')).sort()).toEqual(['id_ed25519', 'id_ed25519.pub']);
  });

  it('rewrites a missing or stale .pub from the private key', async () => {
    const keyPath = join(dir, 'd', 'id_ed25519');
    const kp = await ensureKeypair(runner, keyPath);
    rmSync(`${keyPath}.pub`);
    expect(await ensureKeypair(runner, keyPath)).toEqual(kp);
    expect(readFileSync(`${keyPath}.pub`, 'utf8')).toBe(`${kp.publicKey}\n`);
    const other = await ensureKeypair(runner, join(dir, 'd2', 'id_ed25519'));
    writeFileSync(`${keyPath}.pub`, `${other.publicKey}\n`);
    expect(await ensureKeypair(runner, keyPath)).toEqual(kp);
    expect(readFileSync(`${keyPath}.pub`, 'utf8')).toBe(`${kp.publicKey}\n`);
  });

  it('refuses (and keeps) a file that is not a usable private key', async () => {
    mkdirSync(join(dir, 'e'), { recursive: true });
    const keyPath = join(dir, 'e', 'id_ed25519');
    writeFileSync(keyPath, 'not a key\n', { mode: 0o600 });
    const err = await ensureKeypair(runner, keyPath).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect((err as BangerError).code).toBe('operation_failed');
    expect((err as BangerError).hint).toContain(keyPath);
    expect(readFileSync(keyPath, 'utf8')).toBe('not a key\n');
  });
});
