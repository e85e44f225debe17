import { describe, it, expect } from 'vitest';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../store/store.js';
import { resolveLayout } from '../paths/paths.js';
import { DEFAULT_CONFIG } from '../config/config.js';
import { silentLogger } from '../log/log.js';
import { createRunner } from '../system/runner.js';
import { BangerError } from '../errors/errors.js';
import { ImageService, recipeOf, type ImageServiceDeps } from './image-service.js';
import type { VmRecord } from '../model/types.js';
import type { PullOptions } from '../images/pull.js';

/** A fake build that writes the three files after a delay and counts its calls. */
function setup() {
  const root = mkdtempSync(join(tmpdir(), 'imgsvc-'));
  const layout = resolveLayout({ BANGER_STATE_DIR: join(root, 'state'), BANGER_CACHE_DIR: join(root, 'cache'), BANGER_RUNTIME_DIR: join(root, 'run'), BANGER_CONFIG_DIR: join(root, 'cfg') });
  mkdirSync(layout.stateDir, { recursive: true });
  const store = Store.open(layout.dbPath);
  let builds = 0;
  const pulls: PullOptions[] = [];
  let pullFails: Error | undefined;
  let pullGate: Promise<void> = Promise.resolve();
  const pullImage: ImageServiceDeps['pullImage'] = async (_deps, opts) => {
    pulls.push(opts);
    if (pullFails) throw pullFails;
    mkdirSync(opts.outDir, { recursive: true });
    for (const f of ['rootfs.ext4', 'vmlinuz', 'initrd.img']) writeFileSync(join(opts.outDir, f), 'pulled');
    writeFileSync(join(opts.outDir, 'image.json'), JSON.stringify({ oci: { layers: [`sha256:${'1'.repeat(64)}`] } }));
    await pullGate;
    const ref = `docker.io/library/debian:bookworm@sha256:${'b'.repeat(64)}`;
    return { kernelVersion: 'catalog' in opts.kernel ? opts.kernel.catalog.version : opts.kernel.kernelVersion, rootfsBytes: 2, packages: [], sourceKind: 'oci', sourceRef: ref, stats: { downloaded: 1, layers: 1, cachedLayers: 0 } };
  };
  const held: string[] = [];
  const svc = new ImageService({
    withKernel: async (name, _signal, fn) => {
      if (name === 'missing') throw new BangerError('not_found', 'the kernel catalog has no kernel missing');
      held.push(name);
      try {
        return await fn({ name, version: '6.12.8', arch: 'x86_64', sha256: { kernel: '0'.repeat(64), initrd: '1'.repeat(64) }, source: 'test', pulledAt: 'now', dir: join(root, 'k', name) });
      } finally {
        held.push(`-${name}`);
      }
    },
    pullImage,
    store,
    runner: createRunner(),
    layout,
    config: DEFAULT_CONFIG,
    log: silentLogger(),
    buildImage: async (_deps, opts) => {
      builds++;
      await new Promise((r) => setTimeout(r, 50));
      mkdirSync(opts.outDir, { recursive: true });
      for (const f of ['rootfs.ext4', 'vmlinuz', 'initrd.img']) writeFileSync(join(opts.outDir, f), 'x');
      return { kernelVersion: '6.1.0-test', rootfsBytes: 1, packages: ['git'], sourceRef: `${opts.recipe?.suite ?? '?'} (test)` };
    },
  });
  let seq = 0;
  const vmRow = (name: string): VmRecord => ({
    id: (++seq).toString(16).padStart(12, '0'), name, image: 'bookworm', vcpu: 1, memoryMib: 512, systemOverlayBytes: 1, diskBytes: 1, vmm: 'qemu', network: 'user',
    state: 'creating', ephemeral: false, nat: false, ip: null, kernel: null, lastError: null, createdAt: 'now', updatedAt: 'now',
  });
  return { root, svc, store, layout, vmRow, held, builds: () => builds, pulls, failPulls: (e?: Error) => (pullFails = e), gatePulls: (g: Promise<void>) => {
      pullGate = g;
    },
  };
}

describe('ImageService', () => {
  it('first use: ensure builds the default image even though the creating VM row already names it', async () => {
    const { svc, store, vmRow, builds } = setup();
    store.insertVm(vmRow('first'));
    const img = await svc.ensure('bookworm');
    expect(img.kernelVersion).toBe('6.1.0-test');
    expect(builds()).toBe(1);
  });

  it('parallel creates that both need the image build it once', async () => {
    const { svc, builds } = setup();
    const progress: string[] = [];
    await Promise.all([svc.ensure('bookworm', { onProgress: (e) => progress.push(e.message) }), svc.ensure('bookworm')]);
    expect(builds()).toBe(1);
    expect(progress.some((m) => m.includes('building it'))).toBe(true);
  });

  it('adopts an image directory copied in with its manifest (no build), and ignores one without', async () => {
    const { svc, layout, builds } = setup();
    const dir = join(layout.imagesDir, 'bookworm');
    mkdirSync(dir, { recursive: true });
    for (const f of ['rootfs.ext4', 'vmlinuz', 'initrd.img']) writeFileSync(join(dir, f), 'x');
    expect(svc.isComplete('bookworm')).toBe(false); // no manifest: not adopted
    writeFileSync(join(dir, 'image.json'), JSON.stringify({ name: 'bookworm', suite: 'bookworm', mirror: 'http://m', kernelVersion: '6.1.0-x', rootfsBytes: 5, packages: ['git'], builtAt: 't0' }));
    const img = await svc.ensure('bookworm');
    expect(img).toMatchObject({ name: 'bookworm', kernelVersion: '6.1.0-x', rootfsBytes: 5, packages: ['git'], createdAt: 't0' });
    expect(img.source).toMatch(/adopted from/);
    expect(builds()).toBe(0);
  });

  it('image show and image list adopt a copied-in image directory too (not only vm create and build)', () => {
    const { svc, layout, builds } = setup();
    const dir = join(layout.imagesDir, 'bookworm');
    mkdirSync(dir, { recursive: true });
    for (const f of ['rootfs.ext4', 'vmlinuz', 'initrd.img']) writeFileSync(join(dir, f), 'x');
    writeFileSync(join(dir, 'image.json'), JSON.stringify({ name: 'bookworm', suite: 'bookworm', mirror: 'http://m', kernelVersion: '6.1.0-x', rootfsBytes: 5, packages: ['git'], builtAt: 't0' }));
    expect(svc.show('bookworm').kernelVersion).toBe('6.1.0-x');
    const other = join(layout.imagesDir, 'copied');
    mkdirSync(other, { recursive: true });
    for (const f of ['rootfs.ext4', 'vmlinuz', 'initrd.img']) writeFileSync(join(other, f), 'x');
    writeFileSync(join(other, 'image.json'), JSON.stringify({ name: 'copied', kernelVersion: 'k', rootfsBytes: 1, packages: [], builtAt: 't1' }));
    mkdirSync(join(layout.imagesDir, 'Not_A_Name'), { recursive: true });
    expect(svc.list().map((i) => i.name)).toEqual(['bookworm', 'copied']);
    expect(builds()).toBe(0);
  });

  it('ensure of an unknown non-default image is not_found and builds nothing', async () => {
    const { svc, builds } = setup();
    await expect(svc.ensure('nope')).rejects.toMatchObject({ code: 'not_found' });
    expect(builds()).toBe(0);
  });

  it('an explicit rebuild or delete of an image in use is refused', async () => {
    const { svc, store, vmRow } = setup();
    await svc.build('bookworm');
    await expect(svc.build('bookworm')).rejects.toMatchObject({ code: 'already_exists' });
    store.insertVm(vmRow('user'));
    const e = (await svc.build('bookworm', { force: true }).catch((x: unknown) => x)) as BangerError;
    expect(e.code).toBe('conflict');
    await expect(svc.delete('bookworm')).rejects.toMatchObject({ code: 'conflict' });
    store.deleteVm(store.findVmByName('user')!.id);
    await svc.delete('bookworm');
    expect(svc.list()).toEqual([]);
  });
});

describe('ImageService: names and paths from outside', () => {
  it('delete of ../victim is bad_request and the directory outside the state dir survives', async () => {
    const { root, svc, layout } = setup();
    // imagePaths(layout, '../victim').dir used to be <state>/victim; '../../victim' is <root>/victim (outside the state dir)
    const inside = join(layout.stateDir, 'victim');
    const outside = join(root, 'victim');
    for (const d of [inside, outside]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'keep'), 'precious');
    }
    for (const name of ['../victim', '../../victim', '../../../..', '..', '.', '', 'a/../../victim', '/etc', 'x'.repeat(100_000)]) {
      const e = (await svc.delete(name).catch((x: unknown) => x)) as BangerError;
      expect(e, name.slice(0, 20)).toBeInstanceOf(BangerError);
      expect(e.code).toBe('bad_request');
      expect(e.message.length).toBeLessThan(200); // a huge name is never echoed whole
    }
    expect(readFileSync(join(inside, 'keep'), 'utf8')).toBe('precious');
    expect(readFileSync(join(outside, 'keep'), 'utf8')).toBe('precious');
    for (const op of [() => svc.show('../victim'), () => svc.isComplete('../victim')]) {
      expect(op).toThrow(expect.objectContaining({ code: 'bad_request' }));
    }
  });

  it('a symlinked image directory is removed as a link: its target survives', async () => {
    const { root, svc, layout } = setup();
    const target = join(root, 'elsewhere');
    mkdirSync(target);
    writeFileSync(join(target, 'keep'), 'precious');
    mkdirSync(layout.imagesDir, { recursive: true });
    symlinkSync(target, join(layout.imagesDir, 'linked'));
    await svc.delete('linked');
    expect(existsSync(join(layout.imagesDir, 'linked'))).toBe(false);
    expect(readFileSync(join(target, 'keep'), 'utf8')).toBe('precious');
  });

  it('a copied-in image whose manifest fails its schema is not adopted', async () => {
    const { svc, layout, store } = setup();
    const dir = join(layout.imagesDir, 'bookworm');
    mkdirSync(dir, { recursive: true });
    for (const f of ['rootfs.ext4', 'vmlinuz', 'initrd.img']) writeFileSync(join(dir, f), 'x');
    for (const m of [
      { name: 'bookworm', kernelVersion: '6.1', rootfsBytes: 5, packages: 'git' },
      { name: 'bookworm', kernelVersion: 'x'.repeat(10_000), rootfsBytes: 5 },
      { name: 'bookworm', kernelVersion: '6.1', rootfsBytes: -1 },
      null,
    ]) {
      writeFileSync(join(dir, 'image.json'), JSON.stringify(m));
      expect(svc.isComplete('bookworm')).toBe(false);
      expect(store.hasImageRow('bookworm')).toBe(false);
    }
  });

  it('an image used by an invalid VM row is not deleted', async () => {
    const { svc, store, vmRow } = setup();
    await svc.build('bookworm');
    store.insertVm(vmRow('user'));
    store.db.prepare("UPDATE vms SET vcpu = 'many'").run();
    const e = (await svc.delete('bookworm').catch((x: unknown) => x)) as BangerError;
    expect(e.code).toBe('conflict');
    expect(e.message).toMatch(/invalid row \d+/);
    expect(svc.isComplete('bookworm')).toBe(true);
  });

  describe('pull', () => {
    it('names the image from the reference, builds the default image first for its kernel, and records the source', async () => {
      const { svc, pulls, builds, layout } = setup();
      const img = await svc.pull({ ref: 'debian:bookworm' });
      expect(builds()).toBe(1);
      expect(img).toMatchObject({ name: 'debian-bookworm', sourceKind: 'oci', kernelVersion: '6.1.0-test' });
      expect(img.sourceRef).toMatch(/^docker\.io\/library\/debian:bookworm@sha256:b{64}$/);
      expect(svc.show('debian-bookworm').sourceKind).toBe('oci');
      expect(pulls[0]).toMatchObject({ name: 'debian-bookworm', from: { insecure: false, ref: { repository: 'library/debian' } }, platform: { os: 'linux', architecture: 'amd64' }, blobsDir: layout.blobsDir });
      expect(pulls[0]!.kernel).toMatchObject({ dir: join(layout.imagesDir, 'bookworm') });
    });

    it('with a catalog kernel: held while the image is made, no default image built, and the record names it', async () => {
      const { svc, pulls, builds, held, store } = setup();
      const img = await svc.pull({ ref: 'alpine:3.20', kernel: 'generic-6.12' });
      expect(builds()).toBe(0);
      expect(pulls[0]!.kernel).toMatchObject({ catalog: { name: 'generic-6.12', version: '6.12.8' } });
      expect(img).toMatchObject({ name: 'alpine-3-20', kernel: 'generic-6.12', kernelVersion: '6.12.8' });
      expect(held).toEqual(['generic-6.12', '-generic-6.12']);
      expect(store.kernelUsers('generic-6.12')).toEqual(['image alpine-3-20']);
      await expect(svc.pull({ ref: 'alpine:3.19', kernel: 'missing' })).rejects.toMatchObject({ code: 'not_found' });
      await expect(svc.pull({ ref: 'alpine:3.19', kernel: 'Bad/Name' })).rejects.toMatchObject({ code: 'bad_request', field: 'kernel' });
      expect(pulls).toHaveLength(1);
      expect(store.findImage('alpine-3-19')).toBeUndefined();
    });

    it('image import: the archive goes to the same pipeline; the default name is the file name without extensions', async () => {
      const { svc, pulls } = setup();
      const img = await svc.pull({ ref: '/tmp/x/App.Tar.GZ', archive: '/tmp/x/App.Tar.GZ' });
      expect(img.name).toBe('app');
      expect(pulls[0]!.from).toEqual({ archive: '/tmp/x/App.Tar.GZ' });
      await expect(svc.pull({ ref: '/tmp/x/-.tar', archive: '/tmp/x/-.tar' })).rejects.toMatchObject({ code: 'bad_request', field: 'name' });
      await expect(svc.pull({ ref: '/tmp/minimal.tar', archive: '/tmp/minimal.tar' })).rejects.toMatchObject({ code: 'conflict' });
    });

    it('refuses a bad reference, a bad platform and the default image\'s name before any work', async () => {
      const { svc, pulls, builds } = setup();
      await expect(svc.pull({ ref: 'Debian:../x' })).rejects.toMatchObject({ code: 'bad_request' });
      await expect(svc.pull({ ref: 'debian', platform: 'linux' })).rejects.toBeInstanceOf(BangerError);
      await expect(svc.pull({ ref: 'debian', name: 'bookworm' })).rejects.toMatchObject({ code: 'conflict', field: 'name' });
      await expect(svc.pull({ ref: 'debian', name: '../x' })).rejects.toMatchObject({ code: 'bad_request' });
      expect(pulls).toHaveLength(0);
      expect(builds()).toBe(0);
    });

    it('an existing image needs force; one in use is never replaced', async () => {
      const { svc, store, vmRow, pulls } = setup();
      await svc.pull({ ref: 'debian:bookworm', name: 'deb' });
      await expect(svc.pull({ ref: 'debian:bookworm', name: 'deb' })).rejects.toMatchObject({ code: 'already_exists' });
      await svc.pull({ ref: 'debian:bookworm', name: 'deb', force: true });
      expect(pulls).toHaveLength(2);
      store.insertVm({ ...vmRow('user'), image: 'deb' });
      await expect(svc.pull({ ref: 'debian:bookworm', name: 'deb', force: true })).rejects.toMatchObject({ code: 'conflict' });
      expect(pulls).toHaveLength(2);
    });

    it('a failed pull leaves no row, and a forced one that fails keeps the image it would have replaced', async () => {
      const { svc, store, failPulls, layout } = setup();
      failPulls(new BangerError('operation_failed', 'registry said no'));
      await expect(svc.pull({ ref: 'debian:bookworm' })).rejects.toThrow(/registry said no/);
      expect(store.findImage('debian-bookworm')).toBeUndefined();
      failPulls(undefined);
      await svc.pull({ ref: 'debian:bookworm' });
      failPulls(new BangerError('operation_failed', 'cut off'));
      await expect(svc.pull({ ref: 'debian:bookworm', force: true })).rejects.toThrow(/cut off/);
      expect(store.findImage('debian-bookworm')?.sourceKind).toBe('oci');
      expect(readFileSync(join(layout.imagesDir, 'debian-bookworm', 'rootfs.ext4'), 'utf8')).toBe('pulled');
    });

    it('image prune drops the blobs no pulled image names, and waits for no running pull', async () => {
      const { svc, layout, gatePulls } = setup();
      await svc.pull({ ref: 'debian:bookworm' });
      const dir = join(layout.blobsDir, 'sha256');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, '1'.repeat(64)), 'kept');
      writeFileSync(join(dir, '2'.repeat(64)), 'unreferenced');
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      gatePulls(gate);
      const running = svc.pull({ ref: 'debian:trixie' });
      await new Promise((r) => setTimeout(r, 100));
      expect(() => svc.pruneBlobs()).toThrow(expect.objectContaining({ code: 'conflict' }));
      open();
      await running;
      expect(svc.pruneBlobs()).toEqual({ removed: 1, bytes: 'unreferenced'.length, kept: 1 });
      expect(existsSync(join(dir, '1'.repeat(64)))).toBe(true);
      expect(existsSync(join(dir, '2'.repeat(64)))).toBe(false);
    });
  });
});

describe('image build --from', () => {
  it('is refused without packages, with --suite or --minimal, from itself, or from an image that does not exist', async () => {
    expect(() => recipeOf({ from: 'x', suite: 'trixie' })).toThrow(expect.objectContaining({ code: 'bad_request', field: 'suite' }));
    expect(() => recipeOf({ from: 'x', minimal: true })).toThrow(expect.objectContaining({ field: 'minimal' }));
    const { svc } = setup();
    svc.setInstaller(async () => undefined);
    await expect(svc.build('mine', { from: 'bookworm' })).rejects.toMatchObject({ code: 'bad_request', field: 'packages' });
    await expect(svc.build('mine', { from: 'mine', recipe: recipeOf({ packages: ['jq'] }) })).rejects.toMatchObject({ field: 'from' });
    await expect(svc.build('mine', { from: 'nope', recipe: recipeOf({ packages: ['jq'] }) })).rejects.toMatchObject({ code: 'not_found' });
  });
});
