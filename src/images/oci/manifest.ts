/**
 * OCI and Docker v2 manifests, indexes (manifest lists) and image configs,
 * as `banger image pull` reads them from a registry (issue 11): zod schemas,
 * the media types banger accepts, platform selection in an index, and the
 * checks a pulled image must pass before any layer is fetched.
 *
 * Everything here is peer input: digests must be `sha256:<64 hex>` (they
 * become file names in the blob cache), sizes are bounded, lists are
 * bounded, and messages quote peer strings only through `quoteInput`.
 * Docker schema 1 manifests, nested indexes, foreign / non-distributable
 * layers and non-image artifacts are refused with a message saying so.
 * No I/O.
 */
import { z } from 'zod';
import { BangerError } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

/** The Accept header of a manifest request: the four schema-2 kinds, never schema 1. */
export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(', ');

const SCHEMA1 = ['application/vnd.docker.distribution.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'application/json'];

/** Layer media types banger can apply, with their compression. */
export const LAYER_MEDIA_TYPES: Readonly<Record<string, LayerCompression>> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
};
export type LayerCompression = 'none' | 'gzip' | 'zstd';

const FOREIGN = /^application\/vnd\.(docker\.image\.rootfs\.foreign\.diff\.tar\.gzip|oci\.image\.layer\.nondistributable\.v1\.tar(\+gzip|\+zstd)?)$/;

/** Largest blob a descriptor may announce (a layer of a very large image is a few GiB). */
export const MAX_BLOB_BYTES = 16 * 1024 ** 3;
/** Largest manifest, index or image config read into memory. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
export const MAX_LAYERS = 512;
const MAX_INDEX_ENTRIES = 1024;

export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
export const DigestSchema = z.string().regex(DIGEST_RE, 'must be sha256: followed by 64 lowercase hex digits');

const shortString = z.string().max(256);

export const PlatformSchema = z.object({
  architecture: shortString,
  os: shortString,
  variant: shortString.optional(),
  'os.version': shortString.optional(),
});
export type Platform = { os: string; architecture: string; variant?: string };

export const DescriptorSchema = z.object({
  mediaType: shortString,
  digest: DigestSchema,
  size: z.number().int().nonnegative().max(MAX_BLOB_BYTES),
  urls: z.array(z.string().max(2048)).max(16).optional(),
  annotations: z.record(z.string().max(256), z.string().max(4096)).optional(),
  platform: PlatformSchema.optional(),
});
export type Descriptor = z.infer<typeof DescriptorSchema>;

export const IndexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: shortString.optional(),
  manifests: z.array(DescriptorSchema).max(MAX_INDEX_ENTRIES),
});
export type ImageIndex = z.infer<typeof IndexSchema>;

export const ManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: shortString.optional(),
  config: DescriptorSchema,
  layers: z.array(DescriptorSchema).min(1).max(MAX_LAYERS),
});
export type ImageManifest = z.infer<typeof ManifestSchema>;

const stringList = z.array(z.string().max(64 * 1024)).max(4096).nullish();
export const ImageConfigSchema = z.object({
  architecture: shortString,
  os: shortString,
  variant: shortString.optional(),
  rootfs: z.object({ type: z.literal('layers'), diff_ids: z.array(DigestSchema).max(MAX_LAYERS) }),
  config: z
    .object({
      Env: stringList,
      Cmd: stringList,
      Entrypoint: stringList,
      WorkingDir: z.string().max(4096).optional(),
      User: z.string().max(256).optional(),
    })
    .nullish(),
});
export type ImageConfig = z.infer<typeof ImageConfigSchema>;

export type ParsedManifest =
  | { kind: 'index'; mediaType: string; index: ImageIndex }
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest };

export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

const MALFORMED_HINT = 'the image is malformed or not a container image: check the reference, or report it to whoever publishes the image';

function malformed(where: string, what: string, why: string): BangerError {
  return new BangerError('operation_failed', `${where}: the ${what} the registry sent is not valid: ${why}`, MALFORMED_HINT);
}

function zodProblem(e: z.ZodError): string {
  const issue = e.issues[0];
  if (!issue) return 'it does not match the schema';
  const path = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
  return `${quoteInput(path, 80)}: ${issue.message.slice(0, 200)}`;
}

function parseJson(body: Buffer, where: string, what: string): unknown {
  if (body.length > MAX_MANIFEST_BYTES) throw malformed(where, what, `it is ${body.length} bytes (max ${MAX_MANIFEST_BYTES})`);
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (e) {
    throw malformed(where, what, `it is not JSON (${e instanceof Error ? e.message.slice(0, 120) : 'parse error'})`);
  }
}

/** `linux/amd64`, `linux/arm64/v8`: a platform flag's value. */
export function parsePlatform(text: string): Platform {
  const parts = text.split('/');
  const ok = /^[a-z0-9_.-]{1,32}$/;
  if (parts.length < 2 || parts.length > 3 || !parts.every((p) => ok.test(p))) {
    throw new BangerError('bad_request', `invalid platform ${quoteInput(text)}`, 'a platform looks like linux/amd64 or linux/arm64/v8', { field: 'platform' });
  }
  return { os: parts[0]!, architecture: parts[1]!, ...(parts[2] ? { variant: parts[2] } : {}) };
}

export function formatPlatform(p: { os: string; architecture: string; variant?: string | undefined }): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * Parses a manifest body. The body's own `mediaType` wins over the
 * Content-Type header (the digest covers the body, not the header); with
 * neither, the shape decides. Schema 1 is refused.
 */
export function parseManifest(body: Buffer, contentType: string | undefined, where: string): ParsedManifest {
  const json = parseJson(body, where, 'manifest');
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw malformed(where, 'manifest', 'it is not a JSON object');
  const obj = json as Record<string, unknown>;
  const header = contentType?.split(';')[0]?.trim().toLowerCase();
  const mediaType = typeof obj.mediaType === 'string' ? obj.mediaType : header;
  if (obj.schemaVersion === 1 || (mediaType !== undefined && SCHEMA1.includes(mediaType) && obj.schemaVersion !== 2)) {
    throw new BangerError(
      'operation_failed',
      `${where} is a Docker schema 1 image, which banger does not pull`,
      'schema 1 is deprecated: push the image again with a current Docker, buildah or skopeo (they write schema 2 / OCI manifests)',
    );
  }
  const isIndex = mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList || (mediaType === undefined && Array.isArray(obj.manifests));
  const isManifest = mediaType === MEDIA.ociManifest || mediaType === MEDIA.dockerManifest || (mediaType === undefined && 'config' in obj);
  if (isIndex) {
    const r = IndexSchema.safeParse(obj);
    if (!r.success) throw malformed(where, 'image index', zodProblem(r.error));
    return { kind: 'index', mediaType: mediaType ?? MEDIA.ociIndex, index: r.data };
  }
  if (isManifest) {
    const r = ManifestSchema.safeParse(obj);
    if (!r.success) throw malformed(where, 'manifest', zodProblem(r.error));
    return { kind: 'manifest', mediaType: mediaType ?? MEDIA.ociManifest, manifest: r.data };
  }
  throw malformed(where, 'manifest', `its media type ${quoteInput(mediaType ?? '(none)', 100)} is not an image manifest or index`);
}

/** Whether an index entry is an image for a platform (not an attestation or other artifact). */
function isImageEntry(d: Descriptor): boolean {
  if (d.annotations?.['vnd.docker.reference.type'] !== undefined) return false;
  return d.mediaType === MEDIA.ociManifest || d.mediaType === MEDIA.dockerManifest;
}

/**
 * The index entry for `want`: os and architecture must match; a requested
 * variant must match too, otherwise the first entry of that os/architecture
 * wins (what `docker pull` does for linux/amd64). Throws `not_found` listing
 * the platforms the index has.
 */
export function selectPlatform(index: ImageIndex, want: Platform, where: string): Descriptor {
  const images = index.manifests.filter(isImageEntry);
  const candidates = images.filter((d) => d.platform?.os === want.os && d.platform.architecture === want.architecture);
  const pick = want.variant !== undefined ? candidates.find((d) => d.platform?.variant === want.variant) : candidates[0];
  if (pick) return pick;
  if (index.manifests.some((d) => d.mediaType === MEDIA.ociIndex || d.mediaType === MEDIA.dockerList)) {
    throw malformed(where, 'image index', 'it nests another index, which banger does not follow');
  }
  const have = [...new Set(images.filter((d) => d.platform).map((d) => formatPlatform(d.platform!)))];
  const list = have.length > 0 ? have.slice(0, 20).map((p) => quoteInput(p, 40)).join(', ') : 'none';
  throw new BangerError(
    'not_found',
    `${where} has no image for ${formatPlatform(want)} (it has: ${list})`,
    have.length > 0 ? 'pick one of those with --platform, or another image' : 'the index lists no platform images: check the reference',
    { field: 'platform' },
  );
}

/** Compression of a layer, or a thrown BangerError for a layer banger cannot apply. */
export function layerCompression(d: Descriptor, where: string): LayerCompression {
  if (FOREIGN.test(d.mediaType) || (d.urls !== undefined && d.urls.length > 0)) {
    throw new BangerError(
      'operation_failed',
      `${where} has a foreign (non-distributable) layer ${d.digest}`,
      'such layers (Windows base layers) are not served by the registry: use a Linux image',
    );
  }
  const c = LAYER_MEDIA_TYPES[d.mediaType];
  if (c === undefined) {
    throw new BangerError(
      'operation_failed',
      `${where} has layer ${d.digest} of media type ${quoteInput(d.mediaType, 100)}, which banger cannot apply`,
      `banger applies ${Object.keys(LAYER_MEDIA_TYPES).join(', ')}`,
    );
  }
  return c;
}

/** Checks that a manifest is a container image banger can apply: its config's and layers' media types. */
export function checkManifest(m: ImageManifest, where: string): void {
  if (m.config.mediaType !== MEDIA.ociConfig && m.config.mediaType !== MEDIA.dockerConfig) {
    throw new BangerError(
      'operation_failed',
      `${where} is not a container image (its config is ${quoteInput(m.config.mediaType, 100)})`,
      'it may be an artifact (a Helm chart, a signature, ...): check the reference',
    );
  }
  if (m.config.size > MAX_MANIFEST_BYTES) throw malformed(where, 'manifest', `its config is ${m.config.size} bytes (max ${MAX_MANIFEST_BYTES})`);
  for (const l of m.layers) layerCompression(l, where);
}

export function parseImageConfig(body: Buffer, where: string): ImageConfig {
  const r = ImageConfigSchema.safeParse(parseJson(body, where, 'image config'));
  if (!r.success) throw malformed(where, 'image config', zodProblem(r.error));
  return r.data;
}

/** The config must be for the platform pulled and have one diff_id per layer. */
export function checkConfig(config: ImageConfig, platform: Platform, layerCount: number, where: string): void {
  const variantClash = platform.variant !== undefined && config.variant !== undefined && config.variant !== platform.variant;
  if (config.os !== platform.os || config.architecture !== platform.architecture || variantClash) {
    const got = formatPlatform(config);
    throw new BangerError(
      'operation_failed',
      `${where} is an image for ${quoteInput(got, 60)}, not ${formatPlatform(platform)}`,
      `pull a reference built for ${formatPlatform(platform)} (or pass --platform ${quoteInput(got, 60)} if that is what you want)`,
    );
  }
  if (config.rootfs.diff_ids.length !== layerCount) {
    throw malformed(where, 'image config', `it lists ${config.rootfs.diff_ids.length} diff_ids for ${layerCount} layers`);
  }
}
