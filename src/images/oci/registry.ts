/**
 * The OCI distribution client of `banger image pull` (issue 11): resolves a
 * reference to one platform's image (manifest, config, layer descriptors),
 * every byte verified against its digest, and fetches blobs into the
 * content-addressed BlobStore (resuming a cut-off download).
 *
 * Requests (src/images/oci/http.ts): https, or plain HTTP only to a loopback
 * registry or with `insecure`; timeouts; redirects (≤ 5) that never carry
 * credentials to another origin; bounded bodies. Authentication
 * (src/images/oci/auth.ts): anonymous first, then the Bearer token flow or
 * Basic on a 401; the token is cached for the client's life. Manifests
 * (src/images/oci/manifest.ts): OCI and Docker schema 2, indexes resolved
 * to the platform, schema 1 refused.
 *
 * One client serves one repository; `close()` releases its connections.
 */
import { createHash } from 'node:crypto';
import { BangerError } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';
import { VERSION } from '../../version.js';
import { DOCKER_HUB, DOCKER_HUB_API, formatImageRef, type ImageRef } from '../oci-ref.js';
import { Authenticator } from './auth.js';
import { checkDescriptor, type BlobResponse, type BlobStore, type Progress } from './blob-store.js';
import type { CredentialLookup, Credentials } from './docker-config.js';
import { Transport, discard, header, readBounded, type Response, type Timeouts } from './http.js';
import {
  DEFAULT_PLATFORM,
  DIGEST_RE,
  MANIFEST_ACCEPT,
  MAX_MANIFEST_BYTES,
  checkConfig,
  checkManifest,
  parseImageConfig,
  parseManifest,
  selectPlatform,
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  type ParsedManifest,
  type Platform,
} from './manifest.js';

export interface RegistryClientOptions {
  /** Plain HTTP to a registry that is not on loopback (`--insecure`). */
  insecure?: boolean;
  /** Credentials and the notes of their lookup (`credentialsFor`), for the auth hints. */
  auth?: CredentialLookup;
  /** Credentials given directly (win over `auth.credentials`). */
  credentials?: Credentials;
  /** Default linux/amd64. */
  platform?: Platform;
  signal?: AbortSignal;
  userAgent?: string;
  timeouts?: Partial<Timeouts>;
}

export interface ResolvedImage {
  ref: ImageRef;
  platform: Platform;
  /** Digest of the platform's image manifest. */
  manifestDigest: string;
  manifestMediaType: string;
  /** Digest of the index or manifest list the reference named, when it named one. */
  indexDigest?: string;
  manifest: ImageManifest;
  configDigest: string;
  /** The config's bytes, verified (for the caller to store). */
  configBytes: Buffer;
  config: ImageConfig;
  layers: Descriptor[];
}

const MAX_ERROR_BODY = 64 * 1024;

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export class RegistryClient {
  private readonly t: Transport;
  private readonly auth: Authenticator;
  private readonly platform: Platform;
  private readonly signal: AbortSignal | undefined;
  /** `registry/repository`, for messages. */
  private readonly repo: string;

  constructor(
    readonly ref: ImageRef,
    opts: RegistryClientOptions = {},
  ) {
    const host = ref.registry === DOCKER_HUB ? DOCKER_HUB_API : ref.registry;
    this.signal = opts.signal;
    this.t = new Transport({ host, insecure: opts.insecure ?? false, userAgent: opts.userAgent ?? `banger/${VERSION}`, signal: opts.signal, timeouts: opts.timeouts });
    this.auth = new Authenticator({
      transport: this.t,
      registry: ref.registry,
      repository: ref.repository,
      credentials: opts.credentials ?? opts.auth?.credentials,
      note: opts.auth?.note,
      configPath: opts.auth?.configPath,
    });
    this.platform = opts.platform ?? DEFAULT_PLATFORM;
    this.repo = `${ref.registry}/${ref.repository}`;
  }

  /** The manifest, config and layers of the reference for the client's platform, all verified. */
  async resolve(): Promise<ResolvedImage> {
    const where = formatImageRef(this.ref);
    const first = await this.fetchManifest(this.ref.digest ?? this.ref.tag ?? 'latest', this.ref.digest, where);
    let indexDigest: string | undefined;
    let chosen = first;
    if (first.parsed.kind === 'index') {
      indexDigest = first.digest;
      const d = selectPlatform(first.parsed.index, this.platform, where);
      chosen = await this.fetchManifest(d.digest, d.digest, `${this.repo}@${d.digest}`, d.size);
      if (chosen.parsed.kind !== 'manifest') {
        throw new BangerError('operation_failed', `${where}: the index entry ${d.digest} is itself an index`, 'banger follows one level of index: check the image');
      }
    }
    const parsed = chosen.parsed as Extract<ParsedManifest, { kind: 'manifest' }>;
    const manifest = parsed.manifest;
    checkManifest(manifest, where);
    const configBytes = await this.fetchSmallBlob(manifest.config, `the config of ${where}`);
    const config = parseImageConfig(configBytes, where);
    checkConfig(config, this.platform, manifest.layers.length, where);
    return {
      ref: this.ref,
      platform: this.platform,
      manifestDigest: chosen.digest,
      manifestMediaType: parsed.mediaType,
      ...(indexDigest !== undefined ? { indexDigest } : {}),
      manifest,
      configDigest: manifest.config.digest,
      configBytes,
      config,
      layers: manifest.layers,
    };
  }

  /**
   * The blob in `store`, downloaded (or resumed) when missing and verified
   * before it gets its final name. `downloaded` is 0 when it was cached.
   */
  async fetchBlob(desc: { digest: string; size: number }, store: BlobStore, onProgress?: Progress): Promise<{ path: string; downloaded: number }> {
    checkDescriptor(desc);
    const what = `blob ${desc.digest} of ${this.repo}`;
    return store.fetch(desc, (offset) => this.openBlob(desc.digest, offset, what), { onProgress, signal: this.signal });
  }

  async close(): Promise<void> {
    await this.t.close();
  }

  /** A GET with the current authorization; one 401 is answered (token flow / Basic) and the request retried. */
  private async get(url: string, headers: Record<string, string>, what: string): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const res = await this.t.get(url, { ...headers, ...this.auth.headers() }, what);
      if (res.statusCode !== 401 && res.statusCode !== 403) return res;
      await discard(res);
      if (res.statusCode === 403) throw this.auth.denied(403);
      if (attempt > 0) throw this.auth.deniedAfterRetry();
      await this.auth.onUnauthorized(res, what);
    }
  }

  private url(kind: 'manifests' | 'blobs', reference: string): string {
    return `${this.t.base}/v2/${this.ref.repository}/${kind}/${reference}`;
  }

  private async fetchManifest(reference: string, expect: string | undefined, where: string, expectSize?: number): Promise<{ digest: string; parsed: ParsedManifest }> {
    const what = `the manifest of ${where}`;
    const res = await this.get(this.url('manifests', reference), { accept: MANIFEST_ACCEPT }, what);
    if (res.statusCode !== 200) {
      throw await this.statusError(res, what, `${where} was not found on registry ${this.ref.registry}`, 'check the repository name and the tag (or digest)');
    }
    const body = await readBounded(this.t, res, MAX_MANIFEST_BYTES, what);
    const digest = sha256(body);
    const announced = header(res, 'docker-content-digest');
    const mismatch = (claimed: string, by: string) =>
      new BangerError(
        'operation_failed',
        `${what}: the registry sent a manifest whose sha256 is ${digest}, not ${claimed} (${by})`,
        'the registry served corrupt or substituted data; nothing was kept: retry, and report it to the registry operator if it persists',
      );
    if (expect !== undefined && digest !== expect) throw mismatch(expect, 'the digest asked for');
    if (announced !== undefined && DIGEST_RE.test(announced) && announced !== digest) throw mismatch(announced, 'its Docker-Content-Digest header');
    if (expectSize !== undefined && body.length !== expectSize) {
      throw new BangerError('operation_failed', `${what}: the manifest is ${body.length} bytes, its index says ${expectSize}`, 'the image index is inconsistent: report it to the image publisher');
    }
    return { digest, parsed: parseManifest(body, header(res, 'content-type'), where) };
  }

  /** A blob read into memory (a config), verified; at most 4 MiB. */
  private async fetchSmallBlob(desc: Descriptor, what: string): Promise<Buffer> {
    checkDescriptor(desc);
    const r = await this.openBlob(desc.digest, 0, what);
    const body = await readBounded(this.t, r.res, Math.min(desc.size, MAX_MANIFEST_BYTES), what);
    if (body.length !== desc.size || sha256(body) !== desc.digest) {
      throw new BangerError('operation_failed', `${what}: blob ${desc.digest} does not match its digest or size`, 'the registry served corrupt data: retry, and report it to the registry operator if it persists');
    }
    return body;
  }

  /** GET a blob from `offset`; a reply that ignores or garbles the Range is turned into a whole-blob reply. */
  private async openBlob(digest: string, offset: number, what: string): Promise<BlobResponse & { res: Response }> {
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const res = await this.get(this.url('blobs', digest), headers, what);
    let start = 0;
    if (res.statusCode === 206 && offset > 0) {
      const m = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header(res, 'content-range') ?? '');
      if (!m || Number(m[1]) !== offset) {
        await discard(res);
        return this.openBlob(digest, 0, what);
      }
      start = offset;
    } else if (res.statusCode === 416 && offset > 0) {
      await discard(res);
      return this.openBlob(digest, 0, what);
    } else if (res.statusCode !== 200) {
      throw await this.statusError(res, what, `blob ${digest} was not found in ${this.repo}`, 'the image refers to a blob its registry does not have: report it to the image publisher');
    }
    const len = Number(header(res, 'content-length'));
    return {
      start,
      length: Number.isSafeInteger(len) && len >= 0 ? len : undefined,
      body: res.body as AsyncIterable<Uint8Array>,
      res,
      cancel: () => res.body.destroy(),
      failure: (e: unknown) => this.t.failure(e, what),
    };
  }

  /** The error for an unexpected status, with the registry's own error code and message when it sent them. */
  private async statusError(res: Response, what: string, notFound: string, notFoundHint: string): Promise<BangerError> {
    let detail = '';
    try {
      const json = JSON.parse((await readBounded(this.t, res, MAX_ERROR_BODY, what)).toString('utf8')) as { errors?: { code?: unknown; message?: unknown }[] };
      const e = json.errors?.[0];
      if (e && (typeof e.code === 'string' || typeof e.message === 'string')) {
        detail = `: ${[e.code, e.message].filter((x) => typeof x === 'string').map((x) => quoteInput(x as string, 120)).join(' ')}`;
      }
    } catch {
      await discard(res);
    }
    const s = res.statusCode;
    if (s === 404) return new BangerError('not_found', `${notFound}${detail}`, notFoundHint);
    if (s === 429) {
      return new BangerError('unavailable', `${what}: registry ${this.ref.registry} is rate-limiting this host (HTTP 429)${detail}`, 'wait and retry; Docker Hub allows more pulls to logged-in users (`docker login`)');
    }
    if (s >= 500) return new BangerError('unavailable', `${what}: registry ${this.ref.registry} answered HTTP ${s}${detail}`, 'the registry has a problem: retry later');
    if (s >= 300 && s < 400) return new BangerError('operation_failed', `${what}: registry ${this.ref.registry} redirected more than 5 times (HTTP ${s})`, 'the registry or its storage is misconfigured');
    return new BangerError('operation_failed', `${what}: registry ${this.ref.registry} answered HTTP ${s}${detail}`, 'check the reference; if it is right, the registry refused the request');
  }
}
