/**
 * Test support (not product code): a fake OCI registry on node:http,
 * listening on 127.0.0.1:0, for the registry client's tests. It serves
 * manifests and blobs (with Range), optionally behind a Bearer token
 * service or Basic auth, logs every request, and lets a test take over any
 * request with a hook (corrupt bytes, redirects, hostile headers, stalls).
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Auth = { kind: 'bearer'; user?: string; pass?: string; tokenField?: 'token' | 'access_token' } | { kind: 'basic'; user: string; pass: string };

export interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
}

export type Hook = (req: IncomingMessage, res: ServerResponse) => boolean;

export const sha = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export const MT = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
};

export class FakeRegistry {
  readonly seen: Seen[] = [];
  readonly manifests = new Map<string, { body: Buffer; mediaType: string }>();
  readonly blobs = new Map<string, Buffer>();
  /** Tried first; returns true when it answered the request. */
  hook: Hook | undefined;
  auth: Auth | undefined;
  readonly token = `tok-${Math.random().toString(36).slice(2)}`;
  private server: Server | undefined;
  port = 0;

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }
  get origin(): string {
    return `http://${this.host}`;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  addBlob(data: Buffer | string): { digest: string; size: number } {
    const b = Buffer.from(data);
    const digest = sha(b);
    this.blobs.set(digest, b);
    return { digest, size: b.length };
  }

  /** Stores a manifest under its digest and, when given, a tag; returns its digest and size. */
  addManifest(repo: string, tag: string | undefined, doc: object, mediaType: string): { digest: string; size: number } {
    const body = Buffer.from(JSON.stringify(doc));
    const digest = sha(body);
    this.manifests.set(`${repo}@${digest}`, { body, mediaType });
    if (tag !== undefined) this.manifests.set(`${repo}:${tag}`, { body, mediaType });
    return { digest, size: body.length };
  }

  /** An image of `layers` for a platform; returns its manifest's and blobs' descriptors. */
  addImage(repo: string, tag: string | undefined, layers: Buffer[], arch = 'amd64') {
    const ls = layers.map((l) => ({ mediaType: MT.layerGzip, ...this.addBlob(l) }));
    const config = { architecture: arch, os: 'linux', rootfs: { type: 'layers', diff_ids: ls.map((l) => l.digest) }, config: { Cmd: ['/bin/sh'], Env: null } };
    const cfg = { mediaType: MT.ociConfig, ...this.addBlob(JSON.stringify(config)) };
    const manifest = this.addManifest(repo, tag, { schemaVersion: 2, mediaType: MT.ociManifest, config: cfg, layers: ls }, MT.ociManifest);
    return { manifest, config: cfg, layers: ls };
  }

  count(pred: (s: Seen) => boolean): number {
    return this.seen.filter(pred).length;
  }

  private authorized(req: IncomingMessage): boolean {
    const a = this.auth;
    if (!a) return true;
    const h = req.headers.authorization ?? '';
    if (a.kind === 'bearer') return h === `Bearer ${this.token}`;
    return h === `Basic ${Buffer.from(`${a.user}:${a.pass}`).toString('base64')}`;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    if (this.hook?.(req, res)) return;
    const url = new URL(req.url ?? '/', this.origin);
    if (url.pathname === '/token') return this.tokenEndpoint(req, res);
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url.pathname);
    if (!this.authorized(req)) {
      const a = this.auth!;
      const challenge =
        a.kind === 'bearer'
          ? `Bearer realm="${this.origin}/token",service="fake registry",scope="repository:${m?.[1] ?? ''}:pull"`
          : 'Basic realm="fake"';
      res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
      return;
    }
    if (!m) return this.notFound(res);
    const [, repo, kind, ref] = m;
    if (kind === 'manifests') {
      const entry = this.manifests.get(ref!.startsWith('sha256:') ? `${repo}@${ref}` : `${repo}:${ref}`);
      if (!entry) return this.notFound(res, 'MANIFEST_UNKNOWN');
      res.writeHead(200, { 'content-type': entry.mediaType, 'docker-content-digest': sha(entry.body), 'content-length': entry.body.length });
      res.end(entry.body);
      return;
    }
    const blob = this.blobs.get(ref!);
    if (!blob) return this.notFound(res, 'BLOB_UNKNOWN');
    serveBytes(req, res, blob);
  }

  private tokenEndpoint(req: IncomingMessage, res: ServerResponse): void {
    const a = this.auth;
    if (a?.kind === 'bearer' && a.user !== undefined) {
      if (req.headers.authorization !== `Basic ${Buffer.from(`${a.user}:${a.pass}`).toString('base64')}`) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end('{"details":"incorrect username or password"}');
        return;
      }
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ [a?.kind === 'bearer' ? (a.tokenField ?? 'token') : 'token']: this.token, expires_in: 300 }));
  }

  private notFound(res: ServerResponse, code = 'NOT_FOUND'): void {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ errors: [{ code, message: 'not here' }] }));
  }
}

/** Serves `data`, honouring `Range: bytes=N-` with a 206. */
export function serveBytes(req: IncomingMessage, res: ServerResponse, data: Buffer): void {
  const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
  if (m && Number(m[1]) < data.length) {
    const start = Number(m[1]);
    res.writeHead(206, { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}`, 'content-length': data.length - start });
    res.end(data.subarray(start));
    return;
  }
  res.writeHead(200, { 'content-length': data.length, 'content-type': 'application/octet-stream' });
  res.end(data);
}
