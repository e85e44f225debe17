/**
 * The kernel catalog against a real HTTP server on loopback: a pull checks
 * the catalog's signature and each file's sha256 (tampering refused, nothing
 * left under the name); parallel creates that need the same missing kernel
 * download it once; a kernel in use cannot be deleted.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../errors/errors.js';
import { silentLogger } from '../log/log.js';
import { makeKeyPair, signBlob } from '../release/sign.js';
import { parsePublicKey, sha256Hex } from '../release/verify.js';
import { KernelService } from './kernel-service.js';

const keys = makeKeyPair();
const key = parsePublicKey(keys.publicKeyPem, 'test');
const kernel = Buffer.alloc(200_000, 3);
const initrd = Buffer.alloc(50_000, 4);
const files = new Map<string, Buffer>();
const hits = new Map<string, number>();
let server: Server;
let base: string;
let root: string;

function entry(name: string, k = kernel, i = initrd) {
  return {
    name,
    version: '6.12.8',
    arch: 'x86_64',
    files: [
      { role: 'kernel', url: `${name}/vmlinuz`, sha256: sha256Hex(k), size: k.length },
      { role: 'initrd', url: `${name}/initrd.img`, sha256: sha256Hex(i), size: i.length },
    ],
  };
}

/** Publishes a catalog at /NAME/catalog.json (+ .sig); `tamper` changes the bytes after signing. */
function publish(dir: string, kernels: unknown[], tamper?: (s: string) => string) {
  const bytes = Buffer.from(JSON.stringify({ kernels }));
  files.set(`/${dir}/catalog.json.sig`, Buffer.from(signBlob(bytes, keys.privateKeyPem)));
  files.set(`/${dir}/catalog.json`, tamper ? Buffer.from(tamper(bytes.toString())) : bytes);
  return `${base}/${dir}/catalog.json`;
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'banger-kernels-'));
  server = createServer((req, res) => {
    const body = files.get(req.url ?? '');
    hits.set(req.url ?? '', (hits.get(req.url ?? '') ?? 0) + 1);
    if (!body) {
      res.writeHead(404);
      return res.end();
    }
    // slow enough that parallel pulls overlap
    setTimeout(() => res.end(body), 50);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  for (const dir of ['good', 'tampered-catalog', 'bad-kernel']) {
    files.set(`/${dir}/generic-6.12/vmlinuz`, kernel);
    files.set(`/${dir}/generic-6.12/initrd.img`, initrd);
  }
});
afterAll(() => {
  server.close();
  server.closeAllConnections();
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
function service(catalogUrl: string, usersOf: (name: string) => string[] = () => []) {
  const kernelsDir = join(root, `state-${++n}`, 'kernels');
  return { svc: new KernelService({ kernelsDir, catalogUrl, key: () => key, log: silentLogger(), usersOf }), kernelsDir };
}
const codeOf = (p: Promise<unknown>) => p.then(() => 'no error', (e: unknown) => (isBangerError(e) ? `${e.code}: ${e.message}` : String(e)));

describe('KernelService', () => {
  it('pulls a kernel whose files match the signed catalog; list and show find it', async () => {
    const { svc, kernelsDir } = service(publish('good', [entry('generic-6.12')]));
    const k = await svc.pull('generic-6.12');
    expect(k).toMatchObject({ name: 'generic-6.12', version: '6.12.8', sha256: { kernel: sha256Hex(kernel), initrd: sha256Hex(initrd) } });
    expect(readFileSync(join(kernelsDir, 'generic-6.12', 'vmlinuz')).equals(kernel)).toBe(true);
    expect(svc.list().map((x) => x.name)).toEqual(['generic-6.12']);
    expect(svc.show('generic-6.12').dir).toBe(join(kernelsDir, 'generic-6.12'));
    expect(await codeOf(svc.pull('generic-6.12'))).toMatch(/^already_exists/);
    expect((await svc.catalog()).map((e) => e.name)).toEqual(['generic-6.12']);
  });

  it('parallel ensures of a missing kernel download it once', async () => {
    const url = publish('good', [entry('generic-6.12')]);
    const { svc } = service(url);
    const before = hits.get('/good/generic-6.12/vmlinuz') ?? 0;
    const got = await Promise.all([svc.ensure('generic-6.12'), svc.ensure('generic-6.12'), svc.ensure('generic-6.12'), svc.ensure('generic-6.12')]);
    expect(new Set(got.map((k) => k.pulledAt)).size).toBe(1);
    expect((hits.get('/good/generic-6.12/vmlinuz') ?? 0) - before).toBe(1);
  });

  it('refuses a catalog changed after signing, and a kernel whose bytes are not the catalog\'s; nothing is left', async () => {
    const tampered = service(publish('tampered-catalog', [entry('generic-6.12')], (s) => s.replace('6.12.8', '6.12.9')));
    expect(await codeOf(tampered.svc.pull('generic-6.12'))).toContain('the signature does not verify');
    expect(existsSync(join(tampered.kernelsDir, 'generic-6.12'))).toBe(false);
    const other = Buffer.alloc(kernel.length, 9); // the catalog names other bytes than the server has
    const bad = service(publish('bad-kernel', [entry('generic-6.12', other)]));
    expect(await codeOf(bad.svc.pull('generic-6.12'))).toMatch(/^verification_failed: kernel generic-6.12 \(kernel\): sha256/);
    expect(readdirSync(bad.kernelsDir)).toEqual([]);
  });

  it('a kernel in use cannot be deleted; one unused can', async () => {
    const { svc, kernelsDir } = service(publish('good', [entry('generic-6.12')]), () => ['vm box']);
    expect((await svc.pull('generic-6.12')).usedBy).toEqual(['vm box']);
    expect(svc.list().map((k) => k.usedBy)).toEqual([['vm box']]);
    expect(await codeOf(svc.delete('generic-6.12'))).toBe('conflict: kernel generic-6.12 is used by vm box');
    const free = new KernelService({ kernelsDir, catalogUrl: '', key: () => key, log: silentLogger(), usersOf: () => [] });
    expect(await free.delete('generic-6.12')).toEqual({ deleted: 'generic-6.12' });
    expect(existsSync(join(kernelsDir, 'generic-6.12'))).toBe(false);
  });

  it('a kernel held by an image being made (using) is pulled once and cannot be deleted until that ends', async () => {
    const { svc } = service(publish('good', [entry('generic-6.12')]));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const making = svc.using('generic-6.12', undefined, async (k) => {
      await gate;
      return k.name;
    });
    // The delete waits for the name's lock, which the pull holds; the hold is taken before the lock is let go.
    expect(await codeOf(svc.delete('generic-6.12'))).toBe('conflict: kernel generic-6.12 is used by an image being made');
    release();
    expect(await making).toBe('generic-6.12');
    expect(await svc.delete('generic-6.12')).toEqual({ deleted: 'generic-6.12' });
  });

  it('an entry may list a modules archive: it is pulled and checked like the rest', async () => {
    const modules = Buffer.alloc(30_000, 5);
    const withModules = { ...entry('generic-6.12'), files: [...entry('generic-6.12').files, { role: 'modules', url: 'generic-6.12/modules.tar', sha256: sha256Hex(modules), size: modules.length }] };
    files.set('/mods/generic-6.12/vmlinuz', kernel);
    files.set('/mods/generic-6.12/initrd.img', initrd);
    files.set('/mods/generic-6.12/modules.tar', modules);
    const { svc, kernelsDir } = service(publish('mods', [withModules]));
    const k = await svc.pull('generic-6.12');
    expect(k.sha256.modules).toBe(sha256Hex(modules));
    expect(readFileSync(join(kernelsDir, 'generic-6.12', 'modules.tar')).equals(modules)).toBe(true);
    // A kernel.json that lists modules whose file is gone: treated as not pulled.
    rmSync(join(kernelsDir, 'generic-6.12', 'modules.tar'));
    expect(svc.list()).toEqual([]);
    // Two modules archives, or no initrd, is not a catalog entry.
    const twice = { ...withModules, files: [...withModules.files, withModules.files[2]] };
    expect(await codeOf(service(publish('mods2', [twice])).svc.catalog())).toMatch(/files/);
    const noInitrd = { ...withModules, files: [withModules.files[0], withModules.files[2]] };
    expect(await codeOf(service(publish('mods3', [noInitrd])).svc.catalog())).toMatch(/one kernel, one initrd/);
  });

  it('names: bad ones are refused before any path is built; unknown ones are not_found', async () => {
    const { svc } = service(publish('good', [entry('generic-6.12')]));
    for (const bad of ['../x', 'Generic', 'a..b', '', 'x'.repeat(70)]) expect(await codeOf(svc.pull(bad)), bad).toMatch(/^bad_request: invalid kernel name/);
    expect(await codeOf(svc.pull('generic-9.9'))).toMatch(/^not_found: the kernel catalog has no kernel generic-9.9/);
    expect(await codeOf(service('').svc.pull('generic-6.12'))).toMatch(/^not_found: no kernel catalog is configured/);
  });
});
