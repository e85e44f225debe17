/**
 * Release manifests (parsed like any peer's input) and bounded downloads
 * against a real HTTP server on loopback that misbehaves on purpose.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../errors/errors.js';
import { downloadFile, fetchBytes } from './fetch.js';
import { artifactUrl, compareVersions, httpUrl, parseManifest, versionManifestUrl } from './manifest.js';
import { sha256Hex } from './verify.js';

const codeOf = async (p: Promise<unknown> | (() => unknown)) => {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return isBangerError(e) ? `${e.code}: ${e.message}` : `uncoded: ${String(e)}`;
  }
  return 'no error';
};

const sha = 'a'.repeat(64);
const manifest = (m: unknown) => Buffer.from(JSON.stringify(m));

describe('parseManifest', () => {
  it('reads a good one', () => {
    const m = parseManifest(manifest({ version: '0.2.0', artifacts: [{ name: 'banger-0.2.0.tgz', url: 'banger-0.2.0.tgz', sha256: sha }] }), 'm');
    expect(m.version).toBe('0.2.0');
  });

  it('refuses what is not one, naming the field', async () => {
    const bad: Array<[unknown, string]> = [
      [{ version: 'v0.2.0', artifacts: [{ name: 'a', url: 'a', sha256: sha }] }, 'version'],
      [{ version: '0.2.0', artifacts: [] }, 'artifacts'],
      [{ version: '0.2.0', artifacts: [{ name: '../etc/passwd', url: 'a', sha256: sha }] }, 'artifacts.0.name'],
      [{ version: '0.2.0', artifacts: [{ name: '.hidden', url: 'a', sha256: sha }] }, 'artifacts.0.name'],
      [{ version: '0.2.0', artifacts: [{ name: 'a', url: 'a', sha256: 'A'.repeat(64) }] }, 'artifacts.0.sha256'],
      [{ version: '0.2.0', artifacts: [{ name: 'a', url: 'a', sha256: sha, extra: 1 }] }, 'artifacts.0'],
      [{ version: '0.2.0', artifacts: [{ name: 'a', url: 'a', sha256: sha }], evil: true }, 'manifest'],
      [{ version: '0.2.0', artifacts: [{ name: 'a', url: 'a', sha256: sha }, { name: 'a', url: 'b', sha256: sha }] }, 'listed twice'],
    ];
    for (const [m, field] of bad) expect(await codeOf(() => parseManifest(manifest(m), 'm.json'))).toContain(field);
    expect(await codeOf(() => parseManifest(Buffer.from('{'), 'm.json'))).toBe('operation_failed: m.json is not JSON');
    expect(await codeOf(() => parseManifest(Buffer.alloc(300 * 1024, 32), 'm.json'))).toContain('larger than');
  });

  it('resolves artifact urls against the manifest, http(s) only', async () => {
    const base = new URL('https://releases.example/banger/manifest.json');
    expect(artifactUrl({ name: 'a', url: '0.2.0/a.tgz', sha256: sha }, base).href).toBe('https://releases.example/banger/0.2.0/a.tgz');
    expect(artifactUrl({ name: 'a', url: 'http://other/a.tgz', sha256: sha }, base).href).toBe('http://other/a.tgz');
    expect(await codeOf(() => artifactUrl({ name: 'a', url: 'file:///etc/shadow', sha256: sha }, base))).toContain('file: URL, not http(s)');
    expect(await codeOf(() => httpUrl('https://u:p@x/', 'u'))).toContain('credentials');
    expect(versionManifestUrl(base, '1.2.3-rc.1').href).toBe('https://releases.example/banger/1.2.3-rc.1/manifest.json');
    expect(await codeOf(() => versionManifestUrl(base, '../../x'))).toContain('is not a version');
  });

  it('orders versions as semver does', () => {
    const sorted = ['0.1.0', '0.1.1', '0.2.0-alpha', '0.2.0-alpha.1', '0.2.0-alpha.beta', '0.2.0-beta.2', '0.2.0-beta.11', '0.2.0-rc.1', '0.2.0', '0.10.0', '1.0.0'];
    for (let i = 0; i < sorted.length; i++) {
      for (let j = 0; j < sorted.length; j++) expect(Math.sign(compareVersions(sorted[i]!, sorted[j]!)), `${sorted[i]} ${sorted[j]}`).toBe(Math.sign(i - j));
    }
  });
});

describe('fetch', () => {
  let server: Server;
  let base: string;
  let dir: string;
  const big = Buffer.alloc(2 * 1024 * 1024, 1);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'banger-fetch-'));
    server = createServer((req, res) => {
      const path = req.url ?? '/';
      if (path === '/ok') return res.end('hello');
      if (path === '/big') return res.end(big);
      if (path === '/liar') {
        // claims nothing, sends too much (chunked)
        res.write(big);
        return res.end(big);
      }
      if (path === '/declared') {
        res.writeHead(200, { 'content-length': String(50 * 1024 * 1024) });
        return res.end();
      }
      if (path === '/redirect') {
        res.writeHead(302, { location: '/ok' });
        return res.end();
      }
      if (path === '/slow') return void setTimeout(() => res.end('late'), 3000);
      if (path === '/boom') {
        res.writeHead(500);
        return res.end('no');
      }
      res.writeHead(404);
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const addr = server.address() as { port: number };
    base = `http://127.0.0.1:${addr.port}`;
  });
  afterAll(() => {
    server.close();
    server.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  });

  const u = (p: string) => new URL(p, base);

  it('fetches a body, following a redirect', async () => {
    expect((await fetchBytes(u('/ok'), { what: 't', maxBytes: 100 })).toString()).toBe('hello');
    expect((await fetchBytes(u('/redirect'), { what: 't', maxBytes: 100 })).toString()).toBe('hello');
  });

  it('a 404 is not_found, a 500 operation_failed, a closed port unavailable, a slow server a timeout', async () => {
    expect(await codeOf(fetchBytes(u('/nope'), { what: 'the manifest', maxBytes: 100 }))).toMatch(/^not_found: the manifest: http:\/\/127\.0\.0\.1:\d+\/nope does not exist/);
    expect(await codeOf(fetchBytes(u('/boom'), { what: 't', maxBytes: 100 }))).toContain('answered 500');
    expect(await codeOf(fetchBytes(new URL('http://127.0.0.1:1/'), { what: 't', maxBytes: 100 }))).toMatch(/^unavailable: /);
    expect(await codeOf(fetchBytes(u('/slow'), { what: 't', maxBytes: 100, timeoutMs: 300 }))).toContain('timed out');
  });

  it('refuses a body over the bound, declared or not', async () => {
    expect(await codeOf(fetchBytes(u('/declared'), { what: 't', maxBytes: 1024 }))).toContain('more than the 1024 allowed');
    expect(await codeOf(fetchBytes(u('/liar'), { what: 't', maxBytes: 3 * 1024 * 1024 }))).toContain('sent more than');
  });

  it('downloads to a file with its sha256; a failed download leaves no file; an existing file is never touched', async () => {
    const f = join(dir, 'big.bin');
    expect(await downloadFile(u('/big'), f, { what: 't', maxBytes: 4 * 1024 * 1024 })).toEqual({ sha256: sha256Hex(big), bytes: big.length });
    expect(readFileSync(f).equals(big)).toBe(true);
    expect(await codeOf(downloadFile(u('/ok'), f, { what: 't', maxBytes: 100 }))).toMatch(/^unavailable: .*EEXIST/);
    expect(readFileSync(f).equals(big)).toBe(true);
    const g = join(dir, 'liar.bin');
    expect(await codeOf(downloadFile(u('/liar'), g, { what: 't', maxBytes: 3 * 1024 * 1024 }))).toContain('sent more than');
    expect(existsSync(g)).toBe(false);
    writeFileSync(join(dir, 'keep'), 'x');
    expect(await codeOf(downloadFile(u('/nope'), join(dir, 'keep'), { what: 't', maxBytes: 100 }))).toMatch(/^not_found/);
    expect(readFileSync(join(dir, 'keep'), 'utf8')).toBe('x');
  });
});
