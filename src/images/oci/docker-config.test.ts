import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../../errors/errors.js';
import { credentialsFor, dockerConfigPath } from './docker-config.js';

let dir: string;
let path: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-dockercfg-'));
  path = join(dir, 'config.json');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const b64 = (s: string) => Buffer.from(s).toString('base64');
const write = (cfg: unknown) => writeFileSync(path, typeof cfg === 'string' ? cfg : JSON.stringify(cfg));

describe('credentialsFor', () => {
  it('decodes an "auth" entry (a password may contain ":")', () => {
    write({ auths: { 'ghcr.io': { auth: b64('me:p:a:ss') } } });
    expect(credentialsFor('ghcr.io', { path })).toEqual({ configPath: path, credentials: { username: 'me', password: 'p:a:ss', source: path } });
  });

  it('reads username/password entries', () => {
    write({ auths: { 'reg.example:5000': { username: 'u', password: 'pw' } } });
    expect(credentialsFor('reg.example:5000', { path }).credentials).toMatchObject({ username: 'u', password: 'pw' });
  });

  it('matches keys with a scheme or a path, and Docker Hub by its legacy key', () => {
    write({ auths: { 'http://127.0.0.1:5000/v2/': { auth: b64('a:b') }, 'https://index.docker.io/v1/': { auth: b64('hub:x') } } });
    expect(credentialsFor('127.0.0.1:5000', { path }).credentials?.username).toBe('a');
    expect(credentialsFor('docker.io', { path }).credentials?.username).toBe('hub');
    expect(credentialsFor('127.0.0.1:5001', { path }).credentials).toBeUndefined();
  });

  it('has none, and no note, without a file or an entry', () => {
    expect(credentialsFor('ghcr.io', { path })).toEqual({ configPath: path });
    write({ auths: { 'quay.io': { auth: b64('a:b') } } });
    expect(credentialsFor('ghcr.io', { path })).toEqual({ configPath: path });
  });

  it('notes a credential helper only when the registry has no plain entry', () => {
    write({ credsStore: 'desktop', auths: { 'ghcr.io': {}, 'quay.io': { auth: b64('q:p') } } });
    const none = credentialsFor('ghcr.io', { path });
    expect(none.credentials).toBeUndefined();
    expect(none.note).toContain('"docker-credential-desktop"');
    expect(none.note).toContain(path);
    expect(credentialsFor('quay.io', { path })).toEqual({ configPath: path, credentials: { username: 'q', password: 'p', source: path } });
    write({ credHelpers: { 'ecr.example': 'ecr-login' } });
    expect(credentialsFor('ecr.example', { path }).note).toContain('docker-credential-ecr-login');
    expect(credentialsFor('ghcr.io', { path }).note).toBeUndefined();
  });

  it('notes an identity-token-only entry', () => {
    write({ auths: { 'reg.example': { identitytoken: 'xyz' } } });
    expect(credentialsFor('reg.example', { path }).note).toMatch(/identity token, which banger does not use/);
  });

  it.each([
    ['not JSON', '{auths:', /is not valid JSON/],
    ['a wrong shape', { auths: { 'ghcr.io': { auth: 42 } } }, /is not a Docker config \(auths\.ghcr\.io\.auth/],
    ['an auth that is not base64 of user:password', { auths: { 'ghcr.io': { auth: b64('nocolon') } } }, /not base64 of "user:password"/],
    ['an auth with invalid base64', { auths: { 'ghcr.io': { auth: '***' } } }, /not base64/],
  ])('refuses %s, naming the file', (_what, cfg, re) => {
    write(cfg);
    let e: unknown;
    try {
      credentialsFor('ghcr.io', { path });
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(BangerError);
    expect((e as BangerError).code).toBe('bad_request');
    expect((e as BangerError).message).toContain(path);
    expect((e as BangerError).message).toMatch(re);
  });
});

describe('dockerConfigPath', () => {
  it('follows DOCKER_CONFIG, else ~/.docker', () => {
    expect(dockerConfigPath({ DOCKER_CONFIG: '/d' })).toBe('/d/config.json');
    expect(dockerConfigPath({ HOME: '/home/x' })).toBe('/home/x/.docker/config.json');
  });

  it('is where credentialsFor looks by default', () => {
    write({ auths: { 'ghcr.io': { auth: b64('env:pw') } } });
    expect(credentialsFor('ghcr.io', { env: { DOCKER_CONFIG: dir } }).credentials?.username).toBe('env');
  });
});
