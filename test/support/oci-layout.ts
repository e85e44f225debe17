/**
 * Test images on disk: OCI image layouts (`oci-layout`, `index.json`,
 * `blobs/sha256/…`) and `docker save` archives, built from directories or
 * prepared tar files with the system's tools, and pushed to a registry with
 * skopeo.
 *
 * - A directory layer is made by GNU tar: `tar -c --numeric-owner --xattrs
 *   --xattrs-include='*' --format=posix --sort=name
 *   --pax-option=delete=atime,delete=ctime -C DIR .` (names `./etc/…` with a
 *   `./` root entry, as mmdebstrap's tars have; `names: 'bare'` gives
 *   `etc/…` with no root entry, as `docker build` layers have). POSIX (pax)
 *   format is what `--xattrs` needs (file capabilities ride in
 *   `SCHILY.xattr.security.capability`); dropping atime/ctime keeps the tar
 *   a function of the tree. A directory's own mode and owner go into the
 *   layer with `./`: callers make their staging roots 0755 root:root.
 * - A prepared tar is taken as is (it must be uncompressed).
 * - Compression: `gzip -n` (no name or time stamp: the same tar gives the
 *   same blob) or `zstd -3`, or none. diff_ids are sha256 of the
 *   uncompressed tar; config has `architecture: amd64`, `os: linux`; OCI
 *   media types throughout (`--format v2s2` at push time converts to Docker's).
 * - Several images may share a layout directory: each is an entry in
 *   index.json named by `org.opencontainers.image.ref.name` (its tag).
 *
 * node:child_process is used here for tar, gzip, zstd and skopeo only.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants, createReadStream, existsSync, copyFileSync, mkdirSync, openSync, closeSync, readFileSync, readSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { RegistryAuth } from './registry.js';

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

export type Compression = 'gzip' | 'zstd' | 'none';

export interface LayerInput {
  /** A directory (tarred with GNU tar, see the file comment) or a prepared, uncompressed tar file. */
  path: string;
  /** Overrides the image's compression for this layer. */
  compression?: Compression;
  /** Directories only: `'dot'` (`./etc/…` plus a `./` root entry; the default) or `'bare'` (`etc/…`). */
  names?: 'dot' | 'bare';
  /** Directories only: store every entry as 0:0 (`--owner=0 --group=0`), for callers that are not root. */
  rootOwned?: boolean;
  /** The history entry's `created_by`. */
  comment?: string;
}

export interface Platform {
  architecture: string;
  os?: string;
  variant?: string;
}

export interface ImageSpec {
  /** Bottom layer first. A string is a directory or tar path with the defaults. */
  layers: Array<string | LayerInput>;
  /** Default `'gzip'`. */
  compression?: Compression;
  /** The ref name in index.json (`oci:DIR:TAG`); default `'latest'`. */
  tag?: string;
  /** The image config's `config` (default: PATH in Env and `Cmd: ["/bin/sh"]`). */
  config?: { Env?: string[]; Cmd?: string[]; Entrypoint?: string[]; WorkingDir?: string; User?: string; Labels?: Record<string, string> };
  /** Default `{ architecture: 'amd64', os: 'linux' }`. */
  platform?: Platform;
  /**
   * Also list these platforms: the tag then names an image index holding
   * this image plus, per extra platform, the same layers under a config
   * naming that platform (not runnable there; for testing that a puller
   * picks linux/amd64 from an index). Push it with `pushLayout` (it passes `--all`).
   */
  extraPlatforms?: Platform[];
  /** The config's `created` (fixed by default, so a rebuild gives the same digests). */
  created?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; variant?: string };
}

export interface BuiltLayer extends Descriptor {
  /** sha256 of the uncompressed tar (the config's diff_id). */
  diffId: string;
  compression: Compression;
  /** Size of the uncompressed tar. */
  tarSize: number;
}

export interface OciImage {
  layoutDir: string;
  tag: string;
  /** What the tag names in index.json: the manifest, or the index with `extraPlatforms`. */
  digest: string;
  mediaType: string;
  /** The linux/amd64 (or `platform`) manifest. */
  manifestDigest: string;
  manifestSize: number;
  configDigest: string;
  layers: BuiltLayer[];
  /** The layout's path for skopeo: `oci:DIR:TAG`. */
  skopeoRef: string;
}

const DEFAULT_CREATED = '2024-01-01T00:00:00Z';
const DEFAULT_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'];

/** Writes (or adds to) the OCI image layout `layoutDir` with one image; returns its digests. */
export async function writeOciLayout(layoutDir: string, spec: ImageSpec): Promise<OciImage> {
  const dir = resolve(layoutDir);
  const tag = spec.tag ?? 'latest';
  if (!/^[\w][\w.-]{0,127}$/.test(tag)) throw new Error(`not a valid tag: ${tag}`);
  mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));

  const layers: BuiltLayer[] = [];
  for (const l of spec.layers) layers.push(await addLayer(dir, typeof l === 'string' ? { path: l } : l, spec.compression ?? 'gzip'));
  const platform = { architecture: spec.platform?.architecture ?? 'amd64', os: spec.platform?.os ?? 'linux', variant: spec.platform?.variant };
  const history = spec.layers.map((l, i) => ({ created: spec.created ?? DEFAULT_CREATED, created_by: (typeof l === 'string' ? undefined : l.comment) ?? `banger test layer ${i + 1}` }));

  const manifestFor = (p: Platform) => {
    const config = imageConfig(spec, p, layers, history);
    const configDesc = writeBlob(dir, Buffer.from(JSON.stringify(config)), MT.ociConfig);
    const manifest = {
      schemaVersion: 2,
      mediaType: MT.ociManifest,
      config: configDesc,
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    };
    return { configDesc, manifestDesc: writeBlob(dir, Buffer.from(JSON.stringify(manifest)), MT.ociManifest) };
  };
  const main = manifestFor(platform);
  let top: Descriptor = main.manifestDesc;
  if (spec.extraPlatforms?.length) {
    const entries = [{ ...main.manifestDesc, platform: cleanPlatform(platform) }];
    for (const p of spec.extraPlatforms) entries.push({ ...manifestFor(p).manifestDesc, platform: cleanPlatform(p) });
    top = writeBlob(dir, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests: entries })), MT.ociIndex);
  }

  // index.json: this tag replaces any earlier entry of the same name.
  const indexPath = join(dir, 'index.json');
  const refKey = 'org.opencontainers.image.ref.name';
  let manifests: Descriptor[] = [];
  if (existsSync(indexPath)) {
    const old = JSON.parse(readFileSync(indexPath, 'utf8')) as { manifests?: Descriptor[] };
    manifests = (old.manifests ?? []).filter((m) => m.annotations?.[refKey] !== tag);
  }
  manifests.push({ ...top, annotations: { [refKey]: tag } });
  writeFileSync(indexPath, JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests }, null, 2));

  return {
    layoutDir: dir,
    tag,
    digest: top.digest,
    mediaType: top.mediaType,
    manifestDigest: main.manifestDesc.digest,
    manifestSize: main.manifestDesc.size,
    configDigest: main.configDesc.digest,
    layers,
    skopeoRef: `oci:${dir}:${tag}`,
  };
}

export interface DockerSaveSpec extends Omit<ImageSpec, 'compression' | 'tag' | 'extraPlatforms'> {
  /** `RepoTags` in manifest.json, e.g. `['banger-test/links:v1']`. */
  repoTags: string[];
  /**
   * `'legacy'` (Docker ≤ 24: `ID/layer.tar`, `ID/json`, `ID/VERSION`, `HEX.json`, `repositories`)
   * or `'oci'` (Docker ≥ 25: an OCI layout with uncompressed layers plus manifest.json and `repositories`). Default legacy.
   */
  style?: 'legacy' | 'oci';
  /** Leave the result as a directory at `out` instead of a tar file. */
  directory?: boolean;
}

/** Writes a `docker save` archive (tar file, or directory with `directory: true`) of one image; layers are uncompressed, as docker writes them. */
export async function dockerSaveArchive(out: string, spec: DockerSaveSpec): Promise<{ path: string; configDigest: string; diffIds: string[] }> {
  const target = resolve(out);
  const staging = spec.directory ? target : `${target}.staging-${randomBytes(4).toString('hex')}`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true, mode: 0o755 });
  try {
    const repositories: Record<string, Record<string, string>> = {};
    const lastId = (id: string) => {
      for (const rt of spec.repoTags) {
        const i = rt.lastIndexOf(':');
        const [repo, tag] = i > rt.lastIndexOf('/') ? [rt.slice(0, i), rt.slice(i + 1)] : [rt, 'latest'];
        (repositories[repo] ??= {})[tag] = id;
      }
    };
    let result: { configDigest: string; diffIds: string[] };
    if (spec.style === 'oci') {
      const img = await writeOciLayout(staging, { ...spec, compression: 'none', tag: 'latest' });
      const hex = (d: string) => `blobs/sha256/${d.slice('sha256:'.length)}`;
      writeFileSync(join(staging, 'manifest.json'), JSON.stringify([{ Config: hex(img.configDigest), RepoTags: spec.repoTags, Layers: img.layers.map((l) => hex(l.digest)) }]));
      lastId(img.layers.at(-1)!.diffId.slice('sha256:'.length));
      // docker's index.json names the image by its repo tag.
      const index = JSON.parse(readFileSync(join(staging, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
      for (const m of index.manifests) m.annotations = { 'io.containerd.image.name': `docker.io/${spec.repoTags[0] ?? 'library/image:latest'}`, 'org.opencontainers.image.ref.name': 'latest' };
      writeFileSync(join(staging, 'index.json'), JSON.stringify(index));
      result = { configDigest: img.configDigest, diffIds: img.layers.map((l) => l.diffId) };
    } else {
      const layerIds: string[] = [];
      const layers: BuiltLayer[] = [];
      let parent = '';
      for (const [i, l] of spec.layers.entries()) {
        const input = typeof l === 'string' ? { path: l } : l;
        const tmpDir = join(staging, `.layer-${i}`);
        mkdirSync(tmpDir);
        const built = await addLayer(tmpDir, { ...input, compression: 'none' }, 'none');
        layers.push(built);
        // v1 IDs only have to be unique and stable: a hash of the chain.
        const id = sha256Hex(Buffer.from(`${parent} ${built.diffId}`));
        mkdirSync(join(staging, id));
        renameSync(join(tmpDir, 'blobs', 'sha256', built.digest.slice('sha256:'.length)), join(staging, id, 'layer.tar'));
        rmSync(tmpDir, { recursive: true });
        writeFileSync(join(staging, id, 'VERSION'), '1.0');
        writeFileSync(join(staging, id, 'json'), JSON.stringify({ id, ...(parent ? { parent } : {}), created: spec.created ?? DEFAULT_CREATED, os: 'linux' }));
        layerIds.push(id);
        parent = id;
      }
      const history = spec.layers.map((l, i) => ({ created: spec.created ?? DEFAULT_CREATED, created_by: (typeof l === 'string' ? undefined : l.comment) ?? `banger test layer ${i + 1}` }));
      const configBuf = Buffer.from(JSON.stringify(imageConfig(spec, spec.platform ?? { architecture: 'amd64' }, layers, history)));
      const configHex = sha256Hex(configBuf);
      writeFileSync(join(staging, `${configHex}.json`), configBuf);
      writeFileSync(join(staging, 'manifest.json'), JSON.stringify([{ Config: `${configHex}.json`, RepoTags: spec.repoTags, Layers: layerIds.map((id) => `${id}/layer.tar`) }]));
      lastId(parent);
      result = { configDigest: `sha256:${configHex}`, diffIds: layers.map((l) => l.diffId) };
    }
    writeFileSync(join(staging, 'repositories'), JSON.stringify(repositories));
    if (!spec.directory) {
      // Top-level names without `./`, as docker's archives have.
      const entries = readdirSync(staging).sort();
      await run('tar', ['-cf', `${target}.tmp`, '--numeric-owner', '--owner=0', '--group=0', '--sort=name', '-C', staging, '--', ...entries]);
      renameSync(`${target}.tmp`, target);
    }
    return { path: target, ...result };
  } finally {
    if (!spec.directory) rmSync(staging, { recursive: true, force: true });
  }
}

export interface PushOptions {
  /** `--dest-creds USER:PASSWORD`. */
  creds?: RegistryAuth;
  /** `--format`: keep the layout's OCI manifest (default) or convert to Docker schema 2 (`v2s2`; gzip layers only). */
  format?: 'oci' | 'v2s2';
  /** The layout's tag to push (default: the destination's tag). */
  sourceTag?: string;
}

/**
 * `skopeo copy --dest-tls-verify=false oci:DIR:TAG docker://REGISTRY/REPO:TAG`
 * (with `--all` when the tag names an index). Returns the digest of what was
 * pushed (skopeo's `--digestfile`). It equals the layout's for gzip and zstd
 * layers (kept as they are); it differs with `format: 'v2s2'` (manifest
 * converted) and for `compression: 'none'` layers, which skopeo 1.9.3 gzips
 * on the way to a registry (checked: `tar` becomes `tar+gzip`).
 */
export async function pushLayout(layoutDir: string, registryUrl: string, repoTag: string, opts: PushOptions = {}): Promise<string> {
  const m = /^([a-z0-9]+(?:[._/-][a-z0-9]+)*):([\w][\w.-]{0,127})$/.exec(repoTag);
  if (!m) throw new Error(`expected REPO:TAG, got ${repoTag}`);
  const sourceTag = opts.sourceTag ?? m[2]!;
  const dir = resolve(layoutDir);
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const entry = index.manifests.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === sourceTag);
  if (!entry) throw new Error(`${dir} has no image tagged ${sourceTag}`);
  const digestFile = join(dir, `.pushed-${randomBytes(4).toString('hex')}`);
  const args = ['copy', '--quiet', '--dest-tls-verify=false', '--digestfile', digestFile];
  if (entry.mediaType === MT.ociIndex) args.push('--all');
  if (opts.format) args.push('--format', opts.format);
  if (opts.creds) args.push('--dest-creds', `${opts.creds.username}:${opts.creds.password}`);
  args.push(`oci:${dir}:${sourceTag}`, `docker://${registryUrl}/${repoTag}`);
  try {
    await run('skopeo', args);
    return readFileSync(digestFile, 'utf8').trim();
  } finally {
    rmSync(digestFile, { force: true });
  }
}

/**
 * Tars `dir` into `out` with GNU tar (flags in the file comment). Exported
 * for tests that want a layer tar without a layout.
 */
export async function tarDirectory(dir: string, out: string, opts: { names?: 'dot' | 'bare'; rootOwned?: boolean } = {}): Promise<void> {
  const args = ['-c', '-f', out, '--numeric-owner', '--xattrs', '--xattrs-include=*', '--format=posix', '--pax-option=delete=atime,delete=ctime', '--sort=name'];
  if (opts.rootOwned) args.push('--owner=0', '--group=0');
  if ((opts.names ?? 'dot') === 'dot') args.push('-C', dir, '.');
  else {
    const top = readdirSync(dir).sort();
    // An empty bare layer is an empty archive (GNU tar refuses `-c` with no names).
    if (!top.length) {
      writeFileSync(out, Buffer.alloc(10240));
      return;
    }
    args.push('-C', dir, '--', ...top);
  }
  await run('tar', args);
}

/** Blobs already compressed in this process, by input file identity: a base rootfs shared by several test images is compressed once. */
const blobMemo = new Map<string, { file: string; layer: BuiltLayer }>();

async function addLayer(layoutDir: string, input: LayerInput, defaultCompression: Compression): Promise<BuiltLayer> {
  const compression = input.compression ?? defaultCompression;
  const blobs = join(layoutDir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const st = statSync(input.path);
  const memoKey = st.isFile() ? `${realpathSync(input.path)}\0${st.size}\0${st.mtimeMs}\0${compression}` : undefined;
  const memo = memoKey ? blobMemo.get(memoKey) : undefined;
  if (memo && existsSync(memo.file)) {
    const dest = join(blobs, memo.layer.digest.slice('sha256:'.length));
    if (!existsSync(dest)) copyBlob(memo.file, dest);
    return memo.layer;
  }

  const tmp = join(blobs, `.tmp-${randomBytes(6).toString('hex')}`);
  let tarPath: string;
  if (st.isDirectory()) {
    tarPath = `${tmp}.tar`;
    await tarDirectory(input.path, tarPath, input);
  } else if (st.isFile()) {
    tarPath = input.path;
    const magic = headBytes(tarPath, 4);
    if ((magic[0] === 0x1f && magic[1] === 0x8b) || magic.readUInt32LE(0) === 0xfd2fb528) throw new Error(`${tarPath} is compressed: give an uncompressed tar`);
  } else throw new Error(`${input.path}: neither a directory nor a file`);

  try {
    const diffId = `sha256:${await sha256File(tarPath)}`;
    const tarSize = statSync(tarPath).size;
    const blobTmp = `${tmp}.blob`;
    if (compression === 'none') copyBlob(tarPath, blobTmp);
    else if (compression === 'gzip') await run('gzip', ['-n', '-6', '-c', '--', tarPath], blobTmp);
    else await run('zstd', ['-q', '-3', '-c', '--no-progress', '--', tarPath], blobTmp);
    const hex = await sha256File(blobTmp);
    const dest = join(blobs, hex);
    renameSync(blobTmp, dest);
    const layer: BuiltLayer = {
      mediaType: compression === 'gzip' ? MT.ociLayerGzip : compression === 'zstd' ? MT.ociLayerZstd : MT.ociLayer,
      digest: `sha256:${hex}`,
      size: statSync(dest).size,
      diffId,
      compression,
      tarSize,
    };
    if (memoKey) blobMemo.set(memoKey, { file: dest, layer });
    return layer;
  } finally {
    if (st.isDirectory()) rmSync(tarPath, { force: true });
  }
}

function imageConfig(spec: Omit<ImageSpec, 'compression'>, p: Platform, layers: BuiltLayer[], history: Array<{ created: string; created_by: string }>): object {
  return {
    created: spec.created ?? DEFAULT_CREATED,
    architecture: p.architecture,
    os: p.os ?? 'linux',
    ...(p.variant ? { variant: p.variant } : {}),
    config: { Env: DEFAULT_ENV, Cmd: ['/bin/sh'], ...spec.config },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history,
  };
}

function cleanPlatform(p: Platform): { architecture: string; os: string; variant?: string } {
  return { architecture: p.architecture, os: p.os ?? 'linux', ...(p.variant ? { variant: p.variant } : {}) };
}

function writeBlob(layoutDir: string, data: Buffer, mediaType: string): Descriptor {
  const hex = sha256Hex(data);
  writeFileSync(join(layoutDir, 'blobs', 'sha256', hex), data);
  return { mediaType, digest: `sha256:${hex}`, size: data.length };
}

function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** sha256 (hex) of a file, streamed. */
export function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (c) => h.update(c))
      .on('error', rej)
      .on('end', () => res(h.digest('hex')));
  });
}

function headBytes(path: string, n: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(n);
    readSync(fd, b, 0, n, 0);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** A copy (a reflink where the filesystem has them), never a hard link: a test that corrupts one blob must not corrupt the caller's tar or another layout. */
function copyBlob(from: string, to: string): void {
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(from, to, constants.COPYFILE_FICLONE);
}

/** Runs a tool; rejects with its stderr on failure. `stdoutFile` receives its stdout. */
export function run(cmd: string, args: string[], stdoutFile?: string): Promise<void> {
  return new Promise((res, rej) => {
    const fd = stdoutFile ? openSync(stdoutFile, 'w') : undefined;
    const child = spawn(cmd, args, { stdio: ['ignore', fd ?? 'ignore', 'pipe'] });
    if (fd !== undefined) closeSync(fd);
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
    child.on('error', rej);
    child.on('close', (code, signal) => {
      if (code === 0) res();
      else rej(new Error(`${cmd} ${args.join(' ')} → ${code ?? signal}: ${stderr.trim()}`));
    });
  });
}
