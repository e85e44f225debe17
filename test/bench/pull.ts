/**
 * npm run bench -- --pull [--pairs N]: how fast banger's registry client
 * downloads an image's blobs from a local registry, against
 * `skopeo copy docker://… dir:…` of the same image from the same registry,
 * alternately in one run (issue 11). A benchmark, not a test: it never fails
 * on time (it fails only when a side does not get every blob).
 *
 * Setup (not timed; everything lives in one temp dir, removed at the end with
 * the registry stopped, pass or fail):
 * - a real registry (test/support/registry.ts: docker-registry on loopback,
 *   filesystem storage in the temp dir);
 * - a synthetic image (test/support/oci-layout.ts `writeOciLayout`, pushed
 *   with `pushLayout`): LAYERS below, gzip -6, OCI media types. Each file is
 *   half random bytes (incompressible, like the compressed and binary files
 *   of real images) and half hex text (gzip takes it to ~3/5), so a layer
 *   blob is about 4/5 of its tar: ~116 MiB of blobs in five layers, from a ~62 MiB
 *   "base" down to a few KiB, the shape of a small distribution image plus a
 *   few layers on top. Synthetic rather than mmdebstrap minbase: it needs no
 *   network or mirror, takes seconds instead of 20–50 s, and the pull does
 *   not look inside the blobs (neither side decompresses), so only the
 *   blob sizes and their count matter.
 *
 * What is timed, per sample (both destinations start as empty directories,
 * emptied again after each sample; untimed):
 * - banger: `new RegistryClient(parseImageRef(ref), {})`, then from before
 *   `resolve()` (manifest + config, verified) through `ensureDir()` and
 *   `fetchBlob(layer, new BlobStore(dir))` for each layer in order, to the
 *   last blob verified (sha256 + size), fsynced and renamed into the cache —
 *   what `image pull`'s source-oci.ts does before applying layers: one layer
 *   at a time, plain HTTP (loopback). `close()` comes after the clock stops.
 * - skopeo: the whole `skopeo copy --quiet --src-tls-verify=false
 *   docker://127.0.0.1:PORT/bench/pull:latest dir:DIR` process, spawn to
 *   exit: process start, the https attempt that falls back to http, manifest,
 *   config and layers. skopeo 1.9.3 (containers/image 5.23) to `dir:` also
 *   goes one layer at a time (that destination does not take concurrent
 *   blobs; strace shows each `dir-put-blob*` file opened after the previous
 *   one is renamed), checks each blob's digest as it reads it, fsyncs each
 *   blob before its rename, and records each in its blob-info cache (a BoltDB
 *   under /var/lib/containers/cache, fdatasynced); `dir:` keeps blobs as
 *   they are (no decompression).
 * One warm-up of each side comes first, not counted: it brings the
 * registry's blob files into the page cache for both.
 *
 * Printed: bytes of layer blobs (what both transfer, besides a manifest and a
 * config of a few hundred bytes), each pair, each side's min/median/max
 * seconds and MiB/s, and the per-pair ratio banger/skopeo (< 1: banger faster).
 */
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatSize } from '../../src/model/sizes.js';
import { parseImageRef } from '../../src/images/oci-ref.js';
import { BlobStore } from '../../src/images/oci/blob-store.js';
import { RegistryClient } from '../../src/images/oci/registry.js';
import { pushLayout, run, writeOciLayout, type OciImage } from '../support/oci-layout.js';
import { startRegistry, type Registry } from '../support/registry.js';
import { alternatePairs, median, spread } from './stages.js';

const MiB = 1024 * 1024;
/** File content per layer, bottom first (a gzip blob is ~4/5 of it). */
const LAYERS = [78 * MiB, 40 * MiB, 20 * MiB, 8 * MiB, 4096];
/** File sizes cycled through within a layer (the last file takes what is left). */
const FILE_SIZES = [512 * 1024, 64 * 1024, 2 * MiB, 8 * 1024, 1 * MiB, 256 * 1024];
const REPO_TAG = 'bench/pull:latest';

/** Fills `dir` with `bytes` of files, each half random bytes, half hex text. */
function fillLayerDir(dir: string, bytes: number): void {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  let left = bytes;
  for (let i = 0; left > 0; i++) {
    const size = Math.min(left, FILE_SIZES[i % FILE_SIZES.length]!);
    const raw = Math.ceil(size / 2);
    const hex = randomBytes(Math.ceil((size - raw) / 2)).toString('hex').slice(0, size - raw);
    const sub = join(dir, `d${Math.floor(i / 16)}`);
    mkdirSync(sub, { recursive: true, mode: 0o755 });
    writeFileSync(join(sub, `f${i}.bin`), Buffer.concat([randomBytes(raw), Buffer.from(hex)]));
    left -= size;
  }
}

async function buildImage(root: string): Promise<OciImage> {
  const layers = LAYERS.map((bytes, i) => {
    const dir = join(root, `layer-${i}`);
    fillLayerDir(dir, bytes);
    return { path: dir, names: 'bare' as const, rootOwned: true, comment: `bench layer ${i + 1}` };
  });
  try {
    return await writeOciLayout(join(root, 'layout'), { layers, compression: 'gzip', tag: 'latest' });
  } finally {
    for (const l of layers) rmSync(l.path, { recursive: true, force: true });
  }
}

/** Throws unless every layer is in `dir` under its name with its size (untimed check after a sample). */
function checkBlobs(image: OciImage, pathOf: (hex: string) => string, side: string): void {
  for (const l of image.layers) {
    const p = pathOf(l.digest.slice('sha256:'.length));
    let size: number | undefined;
    try {
      size = statSync(p).size;
    } catch {
      size = undefined;
    }
    if (size !== l.size) throw new Error(`${side}: ${p} is ${size === undefined ? 'missing' : `${size} bytes`}, expected ${l.size}`);
  }
}

function emptyDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { mode: 0o700 });
}

export async function pullBench(opts: { pairs: number }): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'bench-pull-'));
  let registry: Registry | undefined;
  try {
    console.log('bench: pull — banger\'s registry client against skopeo copy, same image, same local registry');
    let t = performance.now();
    const image = await buildImage(root);
    const bytes = image.layers.reduce((n, l) => n + l.size, 0);
    console.log(
      `bench: synthetic image, ${image.layers.length} gzip layers (${image.layers.map((l) => formatSize(l.size)).join(', ')}), ` +
        `${bytes} bytes of layer blobs (${formatSize(bytes)}; tars ${formatSize(image.layers.reduce((n, l) => n + l.tarSize, 0))}); built in ${((performance.now() - t) / 1000).toFixed(1)} s, not timed`,
    );
    registry = await startRegistry({ dir: join(root, 'registry') });
    t = performance.now();
    await pushLayout(image.layoutDir, registry.url, REPO_TAG);
    rmSync(image.layoutDir, { recursive: true, force: true });
    const ref = `${registry.url}/${REPO_TAG}`;
    console.log(`bench: registry docker-registry at ${registry.url} (plain HTTP, storage under ${root}); pushed ${ref} in ${((performance.now() - t) / 1000).toFixed(1)} s, not timed`);

    const bangerDir = join(root, 'banger-blobs');
    const skopeoDir = join(root, 'skopeo-dir');
    emptyDir(bangerDir);
    emptyDir(skopeoDir);

    const timeBanger = async (): Promise<number> => {
      const store = new BlobStore(bangerDir);
      const client = new RegistryClient(parseImageRef(ref), {});
      let ms: number;
      let downloaded = 0;
      try {
        const t0 = performance.now();
        const img = await client.resolve();
        store.ensureDir();
        for (const layer of img.layers) downloaded += (await client.fetchBlob(layer, store)).downloaded;
        ms = performance.now() - t0;
      } finally {
        await client.close();
      }
      if (downloaded !== bytes) throw new Error(`banger: downloaded ${downloaded} bytes, expected ${bytes} (was the cache not empty?)`);
      checkBlobs(image, (hex) => store.path(`sha256:${hex}`), 'banger');
      emptyDir(bangerDir);
      return ms;
    };

    const timeSkopeo = async (): Promise<number> => {
      const t0 = performance.now();
      await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `dir:${skopeoDir}`]);
      const ms = performance.now() - t0;
      checkBlobs(image, (hex) => join(skopeoDir, hex), 'skopeo');
      emptyDir(skopeoDir);
      return ms;
    };

    console.log('bench: warm-up, one of each (registry blobs into the page cache; not counted)…');
    await timeBanger();
    await timeSkopeo();

    const { a: b, b: s, ratios } = await alternatePairs(opts.pairs, { label: 'banger', run: timeBanger }, { label: 'skopeo', run: timeSkopeo });
    const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    const rate = (xs: number[]) => spread(xs.map((ms) => bytes / MiB / (ms / 1000)), (r) => `${r.toFixed(0)} MiB/s`);
    console.log(`banger (RegistryClient resolve + fetchBlob × ${image.layers.length} into an empty BlobStore, one layer at a time):`);
    console.log(`  time ${spread(b, sec)} over ${opts.pairs}`);
    console.log(`  rate ${rate(b)}`);
    console.log(`skopeo (whole \`skopeo copy docker://… dir:…\` process, one layer at a time):`);
    console.log(`  time ${spread(s, sec)} over ${opts.pairs}`);
    console.log(`  rate ${rate(s)}`);
    console.log(`per-pair ratio banger/skopeo: ${spread(ratios, (r) => r.toFixed(2))}`);
    console.log(`ratio banger/skopeo (time; < 1: banger faster): ${median(ratios).toFixed(2)} over ${bytes} bytes of layers`);
  } finally {
    await registry?.stop();
    rmSync(root, { recursive: true, force: true });
  }
}
