/**
 * `banger image import FILE` (issue 11): reads an image from an OCI image
 * layout or a `docker save` archive, given as a directory or a tar file
 * (plain, gzip or zstd), into the blob cache, for the pipeline to apply as a
 * pulled image's layers.
 *
 * - A tar is unpacked once into the scratch dir (archive-unpack.ts: only the
 *   names an image archive uses), then read as a directory.
 * - OCI layout (`oci-layout`, `index.json`, `blobs/sha256/…`; skopeo's
 *   `oci:`/`oci-archive:`, and Docker ≥ 25's `docker save`, which also
 *   writes a manifest.json: index.json wins). index.json's entries for the
 *   platform (an entry may be a nested index, resolved with
 *   `selectPlatform`, one level); of several images, the one whose
 *   `org.opencontainers.image.ref.name` is `latest`, else a refusal listing
 *   their names. Manifest and config are read from blobs whose size and
 *   sha256 are checked, then `checkManifest`/`checkConfig` as for a pull.
 * - Legacy `docker save` (Docker ≤ 24; also skopeo's and podman's
 *   `docker-archive:`): manifest.json `[{Config, RepoTags, Layers}]`; exactly
 *   one image. Layers are uncompressed tars whose sha256 must be the
 *   config's `rootfs.diff_ids`, in order: that is what verifies them (and
 *   they are cached under that digest, media type `…layer.v1.tar`). A config
 *   named `HEX.json` must hash to HEX.
 *
 * Every layer is copied into the BlobStore with `BlobStore.fetch` (size and
 * sha256 verified there; a mismatch keeps nothing), see archive-files.ts
 * for how the archive's files are read (inside its directory only).
 * Malformed files are `bad_request` naming the file, digest mismatches
 * `operation_failed`, missing files `not_found`.
 */
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { BangerError } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';
import { formatSize } from '../../model/sizes.js';
import {
  archiveName,
  badArchive,
  blobPath,
  copyBlob,
  hasFile,
  parseJson,
  readSmall,
  readSmallBlob,
  sha256,
  type ArchiveDir,
} from './archive-files.js';
import { unpackArchive } from './archive-unpack.js';
import type { BlobStore } from './blob-store.js';
import {
  checkConfig,
  checkManifest,
  DEFAULT_PLATFORM,
  formatPlatform,
  ImageConfigSchema,
  IndexSchema,
  ManifestSchema,
  MAX_LAYERS,
  MEDIA,
  selectPlatform,
  type Descriptor,
  type ImageConfig,
  type Platform,
} from './manifest.js';

export interface ArchiveLayer {
  digest: string;
  mediaType: string;
  size: number;
}

export interface ArchiveImage {
  /** What the archive calls the image: its RepoTag or `org.opencontainers.image.ref.name`, else undefined. */
  name?: string;
  /** `docker-save` also for Docker ≥ 25's archives, which are read through their OCI layout. */
  format: 'oci-layout' | 'docker-save';
  /** OCI layouts: the chosen manifest's digest. */
  manifestDigest?: string;
  configDigest: string;
  /** The config's bytes, verified (for the caller to store). */
  configBytes: Buffer;
  config: ImageConfig;
  /** In order, base first; every one is in the BlobStore, verified. */
  layers: ArchiveLayer[];
}

export interface ImportOptions {
  blobs: BlobStore;
  /** A directory a tar is unpacked under (in a directory of its own, removed before returning). */
  scratchDir: string;
  /** Default linux/amd64. */
  platform?: Platform;
  signal?: AbortSignal;
  /** One line per step and per layer. */
  onProgress?: (message: string) => void;
}

/** The media type of a docker save layer: an uncompressed tar. */
const DOCKER_LAYER = 'application/vnd.oci.image.layer.v1.tar';
const REF_NAME = 'org.opencontainers.image.ref.name';
const MANIFEST_TYPES = new Set<string>([MEDIA.ociManifest, MEDIA.dockerManifest]);
const INDEX_TYPES = new Set<string>([MEDIA.ociIndex, MEDIA.dockerList]);
const NOT_AN_ARCHIVE_HINT = 'give an OCI image layout or a docker save archive (a directory, or a tar file: plain, gzip or zstd); make one with `docker save IMAGE -o FILE` or `skopeo copy docker://IMAGE oci-archive:FILE`';

const LayoutSchema = z.object({ imageLayoutVersion: z.string().max(32) });
const DockerManifestSchema = z
  .array(
    z.object({
      Config: z.string().max(4096),
      RepoTags: z.array(z.string().max(4096)).max(1024).nullish(),
      Layers: z.array(z.string().max(4096)).max(MAX_LAYERS),
    }),
  )
  .max(1024);

/** Reads the image archive at `path` (a directory or a tar file) into `opts.blobs`. */
export async function readImageArchive(path: string, opts: ImportOptions): Promise<ArchiveImage> {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new BangerError('not_found', `${path} does not exist`, NOT_AN_ARCHIVE_HINT);
    throw new BangerError('bad_request', `${path} cannot be read: ${(e as Error).message}`, 'check the path and its permissions');
  }
  if (st.isDirectory()) return readDir({ root: path, where: path }, opts);
  if (!st.isFile()) throw new BangerError('bad_request', `${path} is neither a directory nor a regular file`, NOT_AN_ARCHIVE_HINT);
  mkdirSync(opts.scratchDir, { recursive: true, mode: 0o700 });
  const dir = mkdtempSync(join(opts.scratchDir, 'archive-'));
  try {
    opts.onProgress?.(`unpacking ${path}`);
    const u = await unpackArchive(path, dir, opts.signal);
    const skipped = u.unsafe > 0 ? `; skipped ${u.unsafe} entries with unsafe names` : '';
    opts.onProgress?.(`${path}: ${u.compression === 'none' ? 'a tar' : `a ${u.compression} tar`}, ${u.kept} file(s) kept (${formatSize(u.bytes)})${skipped}`);
    return await readDir({ root: dir, where: path }, opts);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function readDir(a: ArchiveDir, opts: ImportOptions): Promise<ArchiveImage> {
  if (hasFile(a, 'index.json')) return readOciLayout(a, opts);
  if (hasFile(a, 'manifest.json')) return readDockerSave(a, opts);
  throw new BangerError('bad_request', `${a.where} is not an OCI image layout or a docker save archive: it has neither index.json nor manifest.json`, NOT_AN_ARCHIVE_HINT);
}

function checkAbort(a: ArchiveDir, signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new BangerError('interrupted', `the import of ${a.where} was cancelled`, 'run it again: layers already copied are kept in the cache');
}

function boundedName(name: string | undefined): string | undefined {
  return name !== undefined && name.length > 0 && name.length <= 256 ? name : undefined;
}

/** The index.json entry to import: the platform's, of several the one named `latest`. */
function chooseEntry(a: ArchiveDir, entries: Descriptor[], platform: Platform): Descriptor {
  const usable = entries.filter((d) => d.annotations?.['vnd.docker.reference.type'] === undefined && (MANIFEST_TYPES.has(d.mediaType) || INDEX_TYPES.has(d.mediaType)));
  if (usable.length === 0) throw badArchive(a, 'index.json lists no image manifest or index');
  const fits = usable.filter(
    (d) => !d.platform || (d.platform.os === platform.os && d.platform.architecture === platform.architecture && (platform.variant === undefined || d.platform.variant === platform.variant)),
  );
  if (fits.length === 0) {
    const have = [...new Set(usable.map((d) => formatPlatform(d.platform!)))];
    throw new BangerError(
      'not_found',
      `${a.where} has no image for ${formatPlatform(platform)} (it has: ${have.slice(0, 20).map((p) => quoteInput(p, 40)).join(', ')})`,
      'pick one of those with --platform, or another archive',
      { field: 'platform' },
    );
  }
  if (fits.length === 1) return fits[0]!;
  const latest = fits.filter((d) => d.annotations?.[REF_NAME] === 'latest');
  if (latest.length === 1) return latest[0]!;
  const names = fits.slice(0, 20).map((d) => quoteInput(d.annotations?.[REF_NAME] ?? d.digest, 80));
  throw new BangerError(
    'bad_request',
    `${a.where} holds ${fits.length} images for ${formatPlatform(platform)} (${names.join(', ')}${fits.length > 20 ? ', …' : ''}) and none of them alone is named "latest"`,
    'banger imports one image: make an archive of that one (`skopeo copy oci:DIR:TAG oci-archive:FILE`, `docker save IMAGE:TAG -o FILE`)',
  );
}

async function readOciLayout(a: ArchiveDir, opts: ImportOptions): Promise<ArchiveImage> {
  const platform = opts.platform ?? DEFAULT_PLATFORM;
  if (!hasFile(a, 'oci-layout')) throw badArchive(a, 'it has index.json but no oci-layout file, so it is not an OCI image layout');
  const layout = parseJson(a, await readSmall(a, 'oci-layout', 'oci-layout'), LayoutSchema, 'oci-layout');
  if (!/^1\.\d+\.\d+$/.test(layout.imageLayoutVersion)) {
    throw badArchive(a, `oci-layout says imageLayoutVersion ${quoteInput(layout.imageLayoutVersion, 32)}; banger reads version 1 layouts`);
  }
  const index = parseJson(a, await readSmall(a, 'index.json', 'index.json'), IndexSchema, 'index.json');
  const entry = chooseEntry(a, index.manifests, platform);
  let desc = entry;
  if (INDEX_TYPES.has(entry.mediaType)) {
    const what = `image index ${entry.digest}`;
    const nested = parseJson(a, await readSmallBlob(a, entry, 'image index'), IndexSchema, what);
    desc = selectPlatform(nested, platform, `${a.where} (${what})`);
  }
  if (!MANIFEST_TYPES.has(desc.mediaType)) throw badArchive(a, `${desc.digest} has media type ${quoteInput(desc.mediaType, 100)}, not an image manifest`);
  const where = `${a.where} (manifest ${desc.digest})`;
  const manifest = parseJson(a, await readSmallBlob(a, desc, 'manifest'), ManifestSchema, `manifest ${desc.digest}`);
  if (manifest.mediaType !== undefined && !MANIFEST_TYPES.has(manifest.mediaType)) {
    throw badArchive(a, `manifest ${desc.digest} has media type ${quoteInput(manifest.mediaType, 100)}, not an image manifest`);
  }
  checkManifest(manifest, where);
  checkAbort(a, opts.signal);
  const configBytes = await readSmallBlob(a, manifest.config, 'config');
  const config = readConfig(a, configBytes, `config ${manifest.config.digest}`, manifest.layers.length, platform);
  const docker = hasFile(a, 'manifest.json');
  const total = manifest.layers.reduce((n, l) => n + l.size, 0);
  opts.onProgress?.(`${docker ? 'docker save archive (OCI layout)' : 'OCI image layout'}: manifest ${desc.digest}, ${manifest.layers.length} layer(s), ${formatSize(total)}`);
  const layers: ArchiveLayer[] = [];
  for (const [i, l] of manifest.layers.entries()) {
    const what = `layer ${i + 1}/${manifest.layers.length} ${l.digest}`;
    await copyLayer(a, blobPath(l.digest), l.digest, what, 'digest', l.size, opts);
    layers.push({ digest: l.digest, mediaType: l.mediaType, size: l.size });
  }
  const name = boundedName(docker ? await dockerTag(a, manifest.config.digest) : undefined) ?? boundedName(entry.annotations?.[REF_NAME]);
  return {
    ...(name !== undefined ? { name } : {}),
    format: docker ? 'docker-save' : 'oci-layout',
    manifestDigest: desc.digest,
    configDigest: manifest.config.digest,
    configBytes,
    config,
    layers,
  };
}

/** The config, with one diff_id per layer and for the platform (checkConfig). */
function readConfig(a: ArchiveDir, data: Buffer, what: string, layerCount: number, platform: Platform): ImageConfig {
  const config = parseJson(a, data, ImageConfigSchema, what);
  if (config.rootfs.diff_ids.length !== layerCount) throw badArchive(a, `${what} lists ${config.rootfs.diff_ids.length} diff_ids for ${layerCount} layer(s)`);
  checkConfig(config, platform, layerCount, `${a.where} (${what})`);
  return config;
}

async function copyLayer(a: ArchiveDir, rel: string, digest: string, what: string, against: 'digest' | 'diff_id', size: number | undefined, opts: ImportOptions): Promise<number> {
  checkAbort(a, opts.signal);
  const started = Date.now();
  const r = await copyBlob(a, rel, digest, opts.blobs, { what, against, size, signal: opts.signal });
  const label = what.replace(/sha256:([0-9a-f]{12})[0-9a-f]{52}/, '$1');
  if (r.copied === 0) opts.onProgress?.(`${label}: in the cache (${formatSize(r.size)})`);
  else opts.onProgress?.(`${label}: copied ${formatSize(r.copied)} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return r.size;
}

/** Docker ≥ 25: the RepoTag manifest.json gives the image whose config is `configDigest` (only for its name: problems are ignored). */
async function dockerTag(a: ArchiveDir, configDigest: string): Promise<string | undefined> {
  try {
    const list = parseJson(a, await readSmall(a, 'manifest.json', 'manifest.json'), DockerManifestSchema, 'manifest.json');
    return list.find((m) => archiveName(m.Config) === blobPath(configDigest))?.RepoTags?.[0];
  } catch {
    return undefined;
  }
}

async function readDockerSave(a: ArchiveDir, opts: ImportOptions): Promise<ArchiveImage> {
  const platform = opts.platform ?? DEFAULT_PLATFORM;
  const list = parseJson(a, await readSmall(a, 'manifest.json', 'manifest.json'), DockerManifestSchema, 'manifest.json');
  if (list.length === 0) throw badArchive(a, 'manifest.json lists no image');
  if (list.length > 1) {
    const tags = list.slice(0, 20).map((m) => (m.RepoTags?.length ? m.RepoTags.slice(0, 4).map((t) => quoteInput(t, 80)).join(' ') : '(untagged)'));
    throw new BangerError(
      'bad_request',
      `${a.where} holds ${list.length} images (${tags.join(', ')}${list.length > 20 ? ', …' : ''}); banger imports one`,
      'save that one alone: `docker save IMAGE:TAG -o FILE`',
    );
  }
  const m = list[0]!;
  const path = (raw: string, field: string): string => {
    const rel = archiveName(raw);
    if (rel === undefined) throw badArchive(a, `manifest.json's ${field} ${quoteInput(raw, 120)} is not a relative path inside the archive (no "..", at most 256 characters)`);
    return rel;
  };
  const configRel = path(m.Config, 'Config');
  const layerRels = m.Layers.map((l, i) => path(l, `Layers[${i}]`));
  if (layerRels.length === 0) throw badArchive(a, 'manifest.json lists an image with no layers');
  const configBytes = await readSmall(a, configRel, 'the image config');
  const configDigest = sha256(configBytes);
  const named = /(?:^|\/)([0-9a-f]{64})(?:\.json)?$/.exec(configRel);
  if (named && `sha256:${named[1]}` !== configDigest) {
    throw new BangerError('operation_failed', `${a.where}: the image config ${quoteInput(configRel, 120)} does not match the digest in its name (its bytes hash to ${configDigest})`, `the archive is damaged or was changed after it was made: make it again with \`docker save IMAGE -o FILE\``);
  }
  const config = readConfig(a, configBytes, `image config ${quoteInput(configRel, 120)}`, layerRels.length, platform);
  const tags = m.RepoTags?.length ? ` (${m.RepoTags.slice(0, 4).map((t) => quoteInput(t, 80)).join(' ')})` : '';
  opts.onProgress?.(`docker save archive${tags}: config ${configDigest}, ${layerRels.length} layer(s)`);
  const layers: ArchiveLayer[] = [];
  for (const [i, rel] of layerRels.entries()) {
    const diffId = config.rootfs.diff_ids[i]!;
    const what = `layer ${i + 1}/${layerRels.length} ${diffId}`;
    const size = await copyLayer(a, rel, diffId, what, 'diff_id', undefined, opts);
    layers.push({ digest: diffId, mediaType: DOCKER_LAYER, size });
  }
  const name = boundedName(m.RepoTags?.[0]);
  return { ...(name !== undefined ? { name } : {}), format: 'docker-save', configDigest, configBytes, config, layers };
}
