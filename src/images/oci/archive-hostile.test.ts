/**
 * readImageArchive on hostile and broken archives: blobs and layers whose
 * bytes do not match their digests (nothing kept in the cache), paths out of
 * the archive in manifest.json, symlinks out of the archive's directory,
 * tar entries named out of the scratch dir or clashing with each other,
 * several images, and files that are not archives at all.
 */
import { describe, it, expect, beforeAll, afterAll, beforeEach, afterEach } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerSaveArchive, run, writeOciLayout } from '../../../test/support/oci-layout.js';
import { BangerError } from '../../errors/errors.js';
import { readImageArchive, type ImportOptions } from './archive.js';
import { BlobStore } from './blob-store.js';

let trees: string;
let base: string;
let app: string;
beforeAll(() => {
  trees = mkdtempSync(join(tmpdir(), 'banger-archive-trees-'));
  base = join(trees, 'base');
  app = join(trees, 'app');
  mkdirSync(join(base, 'etc'), { recursive: true, mode: 0o755 });
  writeFileSync(join(base, 'etc', 'os-release'), 'ID=debian\n');
  mkdirSync(join(app, 'app'), { recursive: true, mode: 0o755 });
  writeFileSync(join(app, 'app', 'hello'), 'hello\n'.repeat(1000));
});
afterAll(() => rmSync(trees, { recursive: true, force: true }));

let dir: string;
let opts: ImportOptions;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-archive-'));
  mkdirSync(join(dir, 'scratch'));
  opts = { blobs: new BlobStore(join(dir, 'cache')), scratchDir: join(dir, 'scratch') };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function rejection(p: Promise<unknown>): Promise<BangerError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(BangerError);
    return e as BangerError;
  }
  throw new Error('resolved');
}

/** Names in the cache dir (final blobs and partials). */
function cached(): string[] {
  try {
    return readdirSync(join(dir, 'cache', 'sha256'));
  } catch {
    return [];
  }
}

/** Flips one byte in the middle of a file (its size unchanged). */
function flip(path: string): void {
  const b = readFileSync(path);
  b[b.length >> 1] ^= 0xff;
  writeFileSync(path, b);
}

const legacy = (out = join(dir, 'saved')) => dockerSaveArchive(out, { layers: [base, app], repoTags: ['banger-test/app:v1'], directory: true });
const manifestOf = (saved: string) => JSON.parse(readFileSync(join(saved, 'manifest.json'), 'utf8')) as Array<{ Config: string; RepoTags: string[]; Layers: string[] }>;

describe('readImageArchive: content that does not match its digest', () => {
  it('refuses a layout whose layer blob was altered, naming the digest; nothing of it is cached', async () => {
    const img = await writeOciLayout(join(dir, 'layout'), { layers: [base, app] });
    const bad = img.layers[1]!.digest;
    flip(join(dir, 'layout', 'blobs', 'sha256', bad.slice(7)));
    const e = await rejection(readImageArchive(join(dir, 'layout'), opts));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toContain(`does not match its digest ${bad}`);
    expect(cached().filter((n) => n.startsWith(bad.slice(7)))).toEqual([]);
    expect(cached()).toContain(img.layers[0]!.digest.slice(7));
  });

  it('refuses a layout whose config blob was altered', async () => {
    const img = await writeOciLayout(join(dir, 'layout'), { layers: [base] });
    flip(join(dir, 'layout', 'blobs', 'sha256', img.configDigest.slice(7)));
    const e = await rejection(readImageArchive(join(dir, 'layout'), opts));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toContain(`config ${img.configDigest} does not match its digest`);
    expect(cached()).toEqual([]);
  });

  it('refuses a docker save layer.tar that does not match its diff_id (as a tar too); nothing of it is cached', async () => {
    const saved = await legacy();
    flip(join(saved.path, manifestOf(saved.path)[0]!.Layers[1]!));
    for (const path of [saved.path, join(dir, 'saved.tar')]) {
      if (path.endsWith('.tar')) await run('tar', ['-C', saved.path, '-cf', path, '.']);
      const e = await rejection(readImageArchive(path, opts));
      expect(e.code).toBe('operation_failed');
      expect(e.message).toMatch(new RegExp(`layer 2/2 .*layer\\.tar.* does not match its diff_id ${saved.diffIds[1]}`));
      expect(cached()).toEqual([saved.diffIds[0]!.slice(7)]);
    }
  });

  it('refuses a docker save config that does not match the digest in its name', async () => {
    const saved = await legacy();
    const config = join(saved.path, manifestOf(saved.path)[0]!.Config);
    writeFileSync(config, readFileSync(config, 'utf8').replace('"amd64"', '"amd64" '));
    const e = await rejection(readImageArchive(saved.path, opts));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toMatch(/does not match the digest in its name/);
  });
});

describe('readImageArchive: paths out of the archive', () => {
  it.each(['../../etc/passwd', '/etc/passwd', `${'a/'.repeat(130)}layer.tar`])('refuses manifest.json naming %s as a layer', async (bad) => {
    const saved = await legacy();
    const m = manifestOf(saved.path);
    m[0]!.Layers[0] = bad;
    writeFileSync(join(saved.path, 'manifest.json'), JSON.stringify(m));
    const e = await rejection(readImageArchive(saved.path, opts));
    expect(e.code).toBe('bad_request');
    expect(e.message).toMatch(/manifest\.json's Layers\[0\] .* is not a relative path inside the archive/);
  });

  it.each(['absolute', 'relative'])('does not follow a %s symlink out of the archive directory', async (kind) => {
    const saved = await legacy();
    const rel = manifestOf(saved.path)[0]!.Layers[0]!;
    // The real layer, outside: following the link would succeed.
    mkdirSync(join(dir, 'outside'));
    renameSync(join(saved.path, rel), join(dir, 'outside', 'layer.tar'));
    symlinkSync(kind === 'absolute' ? join(dir, 'outside', 'layer.tar') : '../../outside/layer.tar', join(saved.path, rel));
    const e = await rejection(readImageArchive(saved.path, opts));
    expect(e.code).toBe('not_found');
    expect(e.message).toMatch(/layer 1\/2 .* is missing/);
    expect(cached()).toEqual([]);
  });

  it('skips tar entries named out of the scratch dir (absolute, ..) and reads the rest', async () => {
    const img = await writeOciLayout(join(dir, 'layout'), { layers: [base] });
    const tar = join(dir, 'image.tar');
    await run('tar', ['-C', join(dir, 'layout'), '-cf', tar, '.']);
    const victim = join(dir, `victim-${randomBytes(4).toString('hex')}`);
    mkdirSync(join(dir, 'src'));
    writeFileSync(join(dir, 'src', 'escape.json'), '{}');
    // -P keeps the names as given (GNU tar would strip `/` and `../`); the scratch dir is <dir>/scratch/archive-XXXX/.
    for (const name of [`${victim}/index.json`, `${victim}/x/layer.tar`, '../escape.json', '../../victim.json', './../../victim.json', '../layer.tar', '../../x/layer.tar']) {
      await run('tar', ['-P', '-rf', tar, '-C', join(dir, 'src'), '--transform', `s,^.*$,${name},`, 'escape.json']);
    }
    await run('tar', ['-P', '-tf', tar], join(dir, 'listing'));
    expect(readFileSync(join(dir, 'listing'), 'utf8')).toContain('\n../../victim.json\n');
    const r = await readImageArchive(tar, opts);
    expect(r.manifestDigest).toBe(img.manifestDigest);
    expect(existsSync(victim)).toBe(false);
    expect(existsSync(join(dir, 'escape.json'))).toBe(false);
    expect(existsSync(join(dir, 'scratch', 'escape.json'))).toBe(false);
    expect(existsSync(join(dir, 'victim.json'))).toBe(false);
    expect(existsSync(join(dir, 'scratch', 'layer.tar'))).toBe(false);
    expect(existsSync(join(dir, 'x'))).toBe(false);
  });

  it('refuses a tar whose entry would be written under a symlink another entry made', async () => {
    const saved = await legacy();
    const tar = join(dir, 'saved.tar');
    await run('tar', ['-C', saved.path, '-cf', tar, '.']);
    mkdirSync(join(dir, 'target'));
    mkdirSync(join(dir, 'a'));
    symlinkSync(join(dir, 'target'), join(dir, 'a', 'evil.json'));
    await run('tar', ['-rf', tar, '-C', join(dir, 'a'), 'evil.json']);
    mkdirSync(join(dir, 'b', 'evil.json'), { recursive: true });
    writeFileSync(join(dir, 'b', 'evil.json', 'layer.tar'), 'owned');
    await run('tar', ['-rf', tar, '-C', join(dir, 'b'), 'evil.json/layer.tar']);
    const e = await rejection(readImageArchive(tar, opts));
    expect(e.code).toBe('bad_request');
    expect(e.message).toMatch(/"evil\.json\/layer\.tar" clashes with another entry/);
    expect(readdirSync(join(dir, 'target'))).toEqual([]);
  });
});

describe('readImageArchive: what it refuses to guess or read', () => {
  it('refuses two images in one manifest.json, listing their tags', async () => {
    const saved = await legacy();
    const m = manifestOf(saved.path);
    m.push({ ...m[0]!, RepoTags: ['banger-test/other:v2'] });
    writeFileSync(join(saved.path, 'manifest.json'), JSON.stringify(m));
    const e = await rejection(readImageArchive(saved.path, opts));
    expect(e.code).toBe('bad_request');
    expect(e.message).toMatch(/holds 2 images \("banger-test\/app:v1", "banger-test\/other:v2"\)/);
  });

  it('says clearly that a random file, an empty file, an empty directory or a missing path is not an archive', async () => {
    writeFileSync(join(dir, 'random'), randomBytes(10_000));
    writeFileSync(join(dir, 'empty'), '');
    mkdirSync(join(dir, 'emptydir'));
    for (const name of ['random', 'empty', 'emptydir']) {
      const e = await rejection(readImageArchive(join(dir, name), opts));
      expect(e.code).toBe('bad_request');
      expect(e.message).toContain(`${join(dir, name)} is not an OCI image layout or a docker save archive`);
      expect(e.hint).toContain('docker save IMAGE -o FILE');
    }
    const e = await rejection(readImageArchive(join(dir, 'nope'), opts));
    expect(e.code).toBe('not_found');
    expect(readdirSync(join(dir, 'scratch'))).toEqual([]);
  });

  it('refuses a layout whose index.json names a digest that is not sha256 before building a path from it', async () => {
    await writeOciLayout(join(dir, 'layout'), { layers: [base] });
    const index = JSON.parse(readFileSync(join(dir, 'layout', 'index.json'), 'utf8'));
    index.manifests[0].digest = 'sha256:../../../../etc/passwd';
    writeFileSync(join(dir, 'layout', 'index.json'), JSON.stringify(index));
    const e = await rejection(readImageArchive(join(dir, 'layout'), opts));
    expect(e.code).toBe('bad_request');
    expect(e.message).toMatch(/index\.json is not valid: "manifests\.0\.digest"/);
  });

  it('stops when the signal is aborted', async () => {
    await writeOciLayout(join(dir, 'layout'), { layers: [base] });
    const ac = new AbortController();
    ac.abort();
    const e = await rejection(readImageArchive(join(dir, 'layout'), { ...opts, signal: ac.signal }));
    expect(e.code).toBe('interrupted');
  });
});
