/**
 * readImageArchive on the archives it reads: OCI layouts (directory, tar,
 * multi-platform, several tags) and `docker save` archives (legacy and
 * Docker ≥ 25 style; directory, tar, gzip, zstd), built by
 * test/support/oci-layout.ts. Hostile and broken archives are in
 * archive-hostile.test.ts.
 */
import { describe, it, expect, beforeAll, afterAll, beforeEach, afterEach } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerSaveArchive, run, writeOciLayout, MT } from '../../../test/support/oci-layout.js';
import { BangerError } from '../../errors/errors.js';
import { readImageArchive, type ImportOptions } from './archive.js';
import { BlobStore } from './blob-store.js';

/** Two layer trees shared by every test (made once). */
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
  writeFileSync(join(app, 'app', 'hello'), 'hello\n');
});
afterAll(() => rmSync(trees, { recursive: true, force: true }));

let dir: string;
let store: BlobStore;
let scratch: string;
let opts: ImportOptions;
let progress: string[];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-archive-'));
  store = new BlobStore(join(dir, 'cache'));
  scratch = join(dir, 'scratch');
  mkdirSync(scratch);
  progress = [];
  opts = { blobs: store, scratchDir: scratch, onProgress: (m) => progress.push(m) };
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

/** `tar -C src -cf out .` (names `./index.json`, …), as GNU tar makes it. */
async function tarOf(src: string, out: string): Promise<string> {
  await run('tar', ['-C', src, '-cf', out, '.']);
  return out;
}

function expectCached(digests: string[]): void {
  for (const d of digests) expect(readdirSync(join(dir, 'cache', 'sha256'))).toContain(d.slice(7));
}

describe('readImageArchive: OCI image layouts', () => {
  it('reads a layout directory: manifest, config, layers into the cache, its ref name', async () => {
    const img = await writeOciLayout(join(dir, 'layout'), { layers: [base, app] });
    const r = await readImageArchive(join(dir, 'layout'), opts);
    expect(r).toMatchObject({ name: 'latest', format: 'oci-layout', manifestDigest: img.manifestDigest, configDigest: img.configDigest });
    expect(r.layers).toEqual(img.layers.map((l) => ({ digest: l.digest, mediaType: MT.ociLayerGzip, size: l.size })));
    expect(r.config.rootfs.diff_ids).toEqual(img.layers.map((l) => l.diffId));
    expect(r.config.architecture).toBe('amd64');
    expect(JSON.parse(r.configBytes.toString()).rootfs.diff_ids).toHaveLength(2);
    for (const l of img.layers) expect(store.has(l.digest, l.size)).toBe(true);
    expect(progress.some((m) => m.includes(`manifest ${img.manifestDigest}`))).toBe(true);
    expect(progress.filter((m) => / copied /.test(m))).toHaveLength(2);
    // A second import copies nothing.
    progress.length = 0;
    await readImageArchive(join(dir, 'layout'), opts);
    expect(progress.filter((m) => /in the cache/.test(m))).toHaveLength(2);
  });

  it('reads the same layout as a tar file (`./` names) and leaves nothing in the scratch dir', async () => {
    const img = await writeOciLayout(join(dir, 'layout'), { layers: [base, app], compression: 'zstd' });
    const r = await readImageArchive(await tarOf(join(dir, 'layout'), join(dir, 'image.tar')), opts);
    expect(r).toMatchObject({ format: 'oci-layout', manifestDigest: img.manifestDigest, configDigest: img.configDigest });
    expect(r.layers.map((l) => [l.digest, l.mediaType])).toEqual(img.layers.map((l) => [l.digest, MT.ociLayerZstd]));
    expectCached(img.layers.map((l) => l.digest));
    expect(readdirSync(scratch)).toEqual([]);
  });

  it('picks linux/amd64 from a multi-platform index, another platform when asked, and lists them when absent', async () => {
    const img = await writeOciLayout(join(dir, 'layout'), { layers: [base], extraPlatforms: [{ architecture: 'arm64', variant: 'v8' }] });
    const r = await readImageArchive(join(dir, 'layout'), opts);
    expect(r.manifestDigest).toBe(img.manifestDigest);
    expect(r.config.architecture).toBe('amd64');
    const arm = await readImageArchive(join(dir, 'layout'), { ...opts, platform: { os: 'linux', architecture: 'arm64' } });
    expect(arm.manifestDigest).not.toBe(img.manifestDigest);
    expect(arm.config.architecture).toBe('arm64');
    const e = await rejection(readImageArchive(join(dir, 'layout'), { ...opts, platform: { os: 'linux', architecture: 's390x' } }));
    expect(e.code).toBe('not_found');
    expect(e.message).toMatch(/no image for linux\/s390x.*linux\/amd64.*linux\/arm64\/v8/);
  });

  it('of several images takes the one named latest, and refuses to guess without one', async () => {
    const layout = join(dir, 'layout');
    await writeOciLayout(layout, { layers: [base], tag: 'one' });
    await writeOciLayout(layout, { layers: [base, app], tag: 'two' });
    const e = await rejection(readImageArchive(layout, opts));
    expect(e.code).toBe('bad_request');
    expect(e.message).toMatch(/holds 2 images .*"one", "two"/);
    const latest = await writeOciLayout(layout, { layers: [app], tag: 'latest' });
    const r = await readImageArchive(layout, opts);
    expect(r).toMatchObject({ name: 'latest', manifestDigest: latest.manifestDigest });
  });
});

describe('readImageArchive: docker save', () => {
  const repoTags = ['banger-test/app:v1'];

  it.each(['dir', 'tar', 'gzip', 'zstd'] as const)('reads a legacy (Docker ≤ 24) archive: %s', async (form) => {
    const out = join(dir, 'saved');
    const saved = await dockerSaveArchive(out, { layers: [base, app], repoTags, directory: form === 'dir' });
    let path = saved.path;
    if (form === 'gzip' || form === 'zstd') {
      path = `${out}.${form}`;
      await run(form, ['-c', saved.path], path);
    }
    const r = await readImageArchive(path, opts);
    expect(r).toMatchObject({ name: 'banger-test/app:v1', format: 'docker-save', configDigest: saved.configDigest });
    expect(r.manifestDigest).toBeUndefined();
    expect(r.layers.map((l) => [l.digest, l.mediaType])).toEqual(saved.diffIds.map((d) => [d, 'application/vnd.oci.image.layer.v1.tar']));
    for (const l of r.layers) expect(store.has(l.digest, l.size)).toBe(true);
    if (form !== 'dir') expect(progress[1]).toMatch(form === 'tar' ? /: a tar, / : new RegExp(`: a ${form} tar, `));
  });

  it('reads a Docker ≥ 25 archive through its OCI layout, named by its RepoTag', async () => {
    const saved = await dockerSaveArchive(join(dir, 'saved.tar'), { layers: [base, app], repoTags, style: 'oci' });
    const r = await readImageArchive(saved.path, opts);
    expect(r).toMatchObject({ name: 'banger-test/app:v1', format: 'docker-save', configDigest: saved.configDigest });
    expect(r.manifestDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    // Uncompressed layers: the blob is the tar, so its digest is the diff_id.
    expect(r.layers.map((l) => [l.digest, l.mediaType])).toEqual(saved.diffIds.map((d) => [d, MT.ociLayer]));
    expectCached(saved.diffIds);
  });

  it('reads a layer.tar that links to an earlier copy inside the archive (docker save of a repeated layer)', async () => {
    const saved = await dockerSaveArchive(join(dir, 'saved'), { layers: [base, base], repoTags, directory: true });
    const manifest = JSON.parse(readFileSync(join(saved.path, 'manifest.json'), 'utf8'));
    const [first, second] = manifest[0].Layers as string[];
    rmSync(join(saved.path, second!));
    await run('ln', ['-s', `../${first}`, join(saved.path, second!)]);
    const r = await readImageArchive(await tarOf(saved.path, join(dir, 'saved.tar')), opts);
    expect(r.layers.map((l) => l.digest)).toEqual(saved.diffIds);
    expect(saved.diffIds[0]).toBe(saved.diffIds[1]);
  });

  it.skipIf(!existsSync('/usr/bin/skopeo'))("reads skopeo's docker-archive: and oci-archive: (`HEX.tar` layers, links, a ref name)", async () => {
    const img = await writeOciLayout(join(dir, 'layout'), { layers: [base, app] });
    await run('skopeo', ['copy', '--quiet', img.skopeoRef, `docker-archive:${join(dir, 'd.tar')}:banger-test/app:v1`]);
    await run('skopeo', ['copy', '--quiet', img.skopeoRef, `oci-archive:${join(dir, 'o.tar')}:v1`]);
    const d = await readImageArchive(join(dir, 'd.tar'), opts);
    expect(d).toMatchObject({ name: 'docker.io/banger-test/app:v1', format: 'docker-save' });
    expect(d.layers.map((l) => l.digest)).toEqual(img.layers.map((l) => l.diffId));
    const o = await readImageArchive(join(dir, 'o.tar'), opts);
    expect(o).toMatchObject({ name: 'v1', format: 'oci-layout', manifestDigest: img.manifestDigest });
  });
});
