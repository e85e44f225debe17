import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../../errors/errors.js';
import { parseImageRef } from '../oci-ref.js';
import { BlobStore } from './blob-store.js';
import { credentialsFor } from './docker-config.js';
import { FakeRegistry, MT, sha } from './fake-registry.test-support.js';
import { RegistryClient, type RegistryClientOptions } from './registry.js';

let reg: FakeRegistry;
let dir: string;
const clients: RegistryClient[] = [];
beforeEach(async () => {
  reg = await new FakeRegistry().start();
  dir = mkdtempSync(join(tmpdir(), 'banger-registry-'));
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await reg.close();
  rmSync(dir, { recursive: true, force: true });
});

function client(ref: string, opts: RegistryClientOptions = {}): RegistryClient {
  const c = new RegistryClient(parseImageRef(`${reg.host}/${ref}`), opts);
  clients.push(c);
  return c;
}

async function rejection(p: Promise<unknown>): Promise<BangerError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(BangerError);
    return e as BangerError;
  }
  throw new Error('resolved');
}

const layers = [Buffer.from('layer one'), Buffer.from('layer two, a bit longer')];

describe('RegistryClient: anonymous', () => {
  it('resolves a tag and fetches its layers into the store', async () => {
    const img = reg.addImage('team/app', 'v1', layers);
    const c = client('team/app:v1', { userAgent: 'banger-test/1' });
    const r = await c.resolve();
    expect(r.manifestDigest).toBe(img.manifest.digest);
    expect(r.indexDigest).toBeUndefined();
    expect(r.configDigest).toBe(img.config.digest);
    expect(r.config.config?.Cmd).toEqual(['/bin/sh']);
    expect(r.layers.map((l) => l.digest)).toEqual(img.layers.map((l) => l.digest));
    const store = new BlobStore(join(dir, 'blobs'));
    for (const l of r.layers) expect((await c.fetchBlob(l, store)).downloaded).toBe(l.size);
    for (const l of r.layers) expect((await c.fetchBlob(l, store)).downloaded).toBe(0);
    expect(reg.count((s) => s.url.includes('/blobs/') && s.url.includes(img.layers[0]!.digest))).toBe(1);
    expect(reg.seen.every((s) => s.headers['user-agent'] === 'banger-test/1' && s.headers.authorization === undefined)).toBe(true);
    const accept = reg.seen.find((s) => s.url.includes('/manifests/'))!.headers.accept!;
    for (const t of [MT.ociIndex, MT.ociManifest, MT.dockerList, MT.dockerManifest]) expect(accept).toContain(t);
  });

  it('an unknown tag is not_found naming it', async () => {
    const e = await rejection(client('team/none:v9').resolve());
    expect(e.code).toBe('not_found');
    expect(e.message).toContain(`${reg.host}/team/none:v9 was not found`);
    expect(e.message).toContain('MANIFEST_UNKNOWN');
  });
});

describe('RegistryClient: authentication', () => {
  it('does the bearer token flow once and reuses the token', async () => {
    reg.auth = { kind: 'bearer', tokenField: 'access_token' };
    const img = reg.addImage('team/app', 'v1', layers);
    const c = client('team/app:v1');
    const r = await c.resolve();
    for (const l of r.layers) await c.fetchBlob(l, new BlobStore(join(dir, 'blobs')));
    const tokens = reg.seen.filter((s) => s.url.startsWith('/token'));
    expect(tokens).toHaveLength(1);
    const q = new URL(tokens[0]!.url, reg.origin).searchParams;
    expect(q.get('scope')).toBe('repository:team/app:pull');
    expect(q.get('service')).toBe('fake registry');
    expect(tokens[0]!.headers.authorization).toBeUndefined(); // anonymous: no credentials
    expect(reg.count((s) => s.headers.authorization === `Bearer ${reg.token}`)).toBe(2 + img.layers.length); // manifest, config, layers
  });

  it('sends Basic credentials to the token service, and says when they are refused', async () => {
    reg.auth = { kind: 'bearer', user: 'me', pass: 'secret' };
    reg.addImage('team/app', 'v1', layers);
    await client('team/app:v1', { credentials: { username: 'me', password: 'secret', source: 'test' } }).resolve();
    expect(reg.seen.find((s) => s.url.startsWith('/token'))!.headers.authorization).toBe(`Basic ${Buffer.from('me:secret').toString('base64')}`);
    const e = await rejection(client('team/app:v1', { credentials: { username: 'me', password: 'wrong', source: '/x/config.json' } }).resolve());
    expect(e.message).toContain(`registry ${reg.host} refused the credentials of "me" from /x/config.json`);
  });

  it('a registry that requires credentials we lack gives a coded error saying where they go', async () => {
    reg.auth = { kind: 'bearer', user: 'me', pass: 'secret' };
    reg.addImage('team/app', 'v1', layers);
    const e = await rejection(client('team/app:v1', { auth: { configPath: join(dir, 'config.json') } }).resolve());
    expect(e.code).toBe('operation_failed');
    expect(e.message).toBe(`registry ${reg.host} requires authentication to pull team/app (HTTP 401; or the repository does not exist)`);
    expect(e.hint).toContain(`docker login ${reg.host}`);
    expect(e.hint).toContain(join(dir, 'config.json'));
  });

  it('the hint names an unsupported credential helper when that is why there are no credentials', async () => {
    reg.auth = { kind: 'basic', user: 'me', pass: 'secret' };
    reg.addImage('team/app', 'v1', layers);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ credsStore: 'pass' }));
    const e = await rejection(client('team/app:v1', { auth: credentialsFor(reg.host, { path: join(dir, 'config.json') }) }).resolve());
    expect(e.message).toMatch(/requires authentication/);
    expect(e.hint).toContain('docker-credential-pass');
  });

  it('uses Basic auth from a Docker config file', async () => {
    reg.auth = { kind: 'basic', user: 'me', pass: 's3:cret' };
    const img = reg.addImage('team/app', 'v1', layers);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths: { [`http://${reg.host}`]: { auth: Buffer.from('me:s3:cret').toString('base64') } } }));
    const c = client('team/app:v1', { auth: credentialsFor(reg.host, { path: join(dir, 'config.json') }) });
    expect((await c.resolve()).manifestDigest).toBe(img.manifest.digest);
    expect(reg.seen[0]!.headers.authorization).toBeUndefined(); // anonymous first
    expect(reg.seen.at(-1)!.headers.authorization).toBe(`Basic ${Buffer.from('me:s3:cret').toString('base64')}`);
  });

  it('says when Basic credentials are refused', async () => {
    reg.auth = { kind: 'basic', user: 'me', pass: 'right' };
    reg.addImage('team/app', 'v1', layers);
    const e = await rejection(client('team/app:v1', { credentials: { username: 'me', password: 'wrong', source: '/x/config.json' } }).resolve());
    expect(e.message).toBe(`registry ${reg.host} refused the credentials of "me" from /x/config.json`);
    expect(e.hint).toContain(`docker login ${reg.host}`);
  });

  it('says when a token obtained with accepted credentials does not allow the pull', async () => {
    reg.auth = { kind: 'bearer', user: 'me', pass: 'secret' };
    reg.addImage('team/app', 'v1', layers);
    reg.hook = (req, res) => {
      if (!req.url?.startsWith('/v2/') || req.headers.authorization === undefined) return false;
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${reg.origin}/token",error="insufficient_scope"` });
      res.end();
      return true;
    };
    const e = await rejection(client('team/app:v1', { credentials: { username: 'me', password: 'secret', source: '/x/config.json' } }).resolve());
    expect(e.message).toContain(`registry ${reg.host} denied "me" access to team/app`);
    expect(reg.count((s) => s.url.startsWith('/token'))).toBe(1);
  });
});

describe('RegistryClient: manifests', () => {
  function addIndex(mediaType = MT.ociIndex) {
    const amd = reg.addImage('team/multi', undefined, layers, 'amd64');
    const arm = reg.addImage('team/multi', undefined, [Buffer.from('arm layer')], 'arm64');
    const entry = (m: { digest: string; size: number }, architecture: string, variant?: string) => ({
      mediaType: MT.ociManifest,
      ...m,
      platform: { os: 'linux', architecture, ...(variant ? { variant } : {}) },
    });
    const index = reg.addManifest('team/multi', 'latest', { schemaVersion: 2, mediaType, manifests: [entry(arm.manifest, 'arm64', 'v8'), entry(amd.manifest, 'amd64')] }, mediaType);
    return { amd, arm, index };
  }

  it('resolves an index to linux/amd64', async () => {
    const { amd, index } = addIndex(MT.dockerList);
    const r = await client('team/multi').resolve();
    expect(r.indexDigest).toBe(index.digest);
    expect(r.manifestDigest).toBe(amd.manifest.digest);
    expect(r.config.architecture).toBe('amd64');
    expect(reg.count((s) => s.url.endsWith(`/manifests/${amd.manifest.digest}`))).toBe(1);
  });

  it('resolves another platform when asked', async () => {
    const { arm } = addIndex();
    const r = await client('team/multi', { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } }).resolve();
    expect(r.manifestDigest).toBe(arm.manifest.digest);
  });

  it('names the platforms there are when the one asked for is missing', async () => {
    addIndex();
    const e = await rejection(client('team/multi', { platform: { os: 'linux', architecture: 'riscv64' } }).resolve());
    expect(e.code).toBe('not_found');
    expect(e.message).toContain('has no image for linux/riscv64 (it has: "linux/arm64/v8", "linux/amd64")');
  });

  it('refuses a manifest whose bytes do not match the digest asked for', async () => {
    const img = reg.addImage('team/app', 'v1', layers);
    const other = reg.addManifest('team/app', undefined, { schemaVersion: 2, mediaType: MT.ociManifest, config: img.config, layers: img.layers.slice(0, 1) }, MT.ociManifest);
    // The registry serves the other manifest under the first one's digest.
    reg.manifests.set(`team/app@${img.manifest.digest}`, reg.manifests.get(`team/app@${other.digest}`)!);
    const e = await rejection(client(`team/app@${img.manifest.digest}`).resolve());
    expect(e.code).toBe('operation_failed');
    expect(e.message).toContain(`whose sha256 is ${other.digest}, not ${img.manifest.digest}`);
  });

  it('refuses a manifest that contradicts its Docker-Content-Digest header', async () => {
    reg.addImage('team/app', 'v1', layers);
    reg.hook = (req, res) => {
      if (!req.url?.includes('/manifests/')) return false;
      const body = reg.manifests.get('team/app:v1')!.body;
      res.writeHead(200, { 'content-type': MT.ociManifest, 'docker-content-digest': sha('something else') });
      res.end(body);
      return true;
    };
    expect((await rejection(client('team/app:v1').resolve())).message).toMatch(/its Docker-Content-Digest header/);
  });

  it('refuses an index entry whose manifest does not match', async () => {
    const { amd } = addIndex();
    reg.manifests.set(`team/multi@${amd.manifest.digest}`, { body: Buffer.from('{"schemaVersion":2}'), mediaType: MT.ociManifest });
    expect((await rejection(client('team/multi').resolve())).message).toContain(`not ${amd.manifest.digest}`);
  });

  it('refuses a config that does not match its digest', async () => {
    const img = reg.addImage('team/app', 'v1', layers);
    reg.blobs.set(img.config.digest, Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }).padEnd(img.config.size)));
    expect((await rejection(client('team/app:v1').resolve())).message).toContain(`blob ${img.config.digest} does not match`);
  });

  it('refuses schema 1', async () => {
    reg.addManifest('team/old', 'v1', { schemaVersion: 1, name: 'team/old', tag: 'v1', fsLayers: [] }, 'application/vnd.docker.distribution.manifest.v1+prettyjws');
    expect((await rejection(client('team/old:v1').resolve())).message).toMatch(/schema 1 image/);
  });
});
