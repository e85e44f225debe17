/**
 * The HTTP transport of the registry client (issue 11): one undici Agent per
 * client, with timeouts, a cap on response header size, undici's redirect
 * interceptor (at most 5 hops) and bounded body reads.
 *
 * Plain HTTP is impossible by construction except where allowed: the
 * Agent's connector refuses to open a non-TLS socket to any host that is not
 * a loopback address unless the client was made `insecure`. That covers the
 * registry itself, token realms and every redirect hop, whatever URL a peer
 * names. (An https registry redirecting a blob to http://elsewhere is thus
 * refused instead of silently downgraded.)
 *
 * Credentials and redirects: undici's redirect handler drops `Authorization`,
 * `Cookie` and `Proxy-Authorization` when a hop changes origin
 * (scheme://host:port) — node_modules/undici/lib/handler/redirect-handler.js,
 * `cleanRequestHeaders` — which is what keeps a registry's token away from
 * the storage host (S3, a CDN) it redirects blobs to; registry-blobs.test.ts pins
 * it with two local servers. Headers are passed as a plain object, the form
 * that function handles.
 */
import { Agent, buildConnector, interceptors, request, type Dispatcher } from 'undici';
import { BangerError } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';
import { isLoopbackRegistry } from '../oci-ref.js';

export interface Timeouts {
  /** TCP + TLS connect. */
  connectMs: number;
  /** From the request sent to the response headers. */
  headersMs: number;
  /** Longest silence while a body streams. */
  bodyMs: number;
}
export const DEFAULT_TIMEOUTS: Timeouts = { connectMs: 15_000, headersMs: 30_000, bodyMs: 60_000 };
/** Response headers larger than this fail the request (undici's default is node's 16 KiB). */
export const MAX_HEADER_BYTES = 32 * 1024;
export const MAX_REDIRECTS = 5;

export type Response = Dispatcher.ResponseData;

/** Whether a URL's hostname (`127.0.0.1`, `[::1]`, `localhost`) is a loopback address. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.startsWith('[') ? hostname : hostname.includes(':') ? `[${hostname}]` : hostname;
  return isLoopbackRegistry(h);
}

/** A response header's first value. */
export function header(res: Response, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

export interface TransportOptions {
  /** The API host[:port] (registry-1.docker.io for Docker Hub). */
  host: string;
  insecure: boolean;
  userAgent: string;
  signal?: AbortSignal | undefined;
  timeouts?: Partial<Timeouts> | undefined;
}

const RETRY_HINT = 'run the pull again: finished blobs are kept and a cut-off blob resumes';

export class Transport {
  /** `https://host` (or `http://host` for a loopback or insecure registry). */
  readonly base: string;
  /** Whether this registry may be spoken to in plain HTTP (loopback, or the client is insecure). */
  readonly plainHttp: boolean;
  readonly signal: AbortSignal | undefined;
  private readonly agent: Agent;
  private readonly dispatcher: Dispatcher;
  private readonly userAgent: string;
  private readonly timeouts: Timeouts;

  constructor(opts: TransportOptions) {
    this.plainHttp = opts.insecure || isLoopbackRegistry(opts.host);
    this.base = `${this.plainHttp ? 'http' : 'https'}://${opts.host}`;
    this.signal = opts.signal;
    this.userAgent = opts.userAgent;
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
    const tcp = buildConnector({ timeout: this.timeouts.connectMs });
    const insecure = opts.insecure;
    const connect: buildConnector.connector = (o, cb) => {
      if (o.protocol !== 'https:' && !insecure && !isLoopbackHost(o.hostname)) {
        cb(
          new BangerError(
            'operation_failed',
            `refusing plain HTTP to ${quoteInput(o.hostname, 100)} (only loopback registries are spoken to without TLS)`,
            'if you trust the network path to this registry, pull with --insecure',
          ),
          null,
        );
        return;
      }
      tcp(o, cb);
    };
    this.agent = new Agent({ connect, headersTimeout: this.timeouts.headersMs, bodyTimeout: this.timeouts.bodyMs, maxHeaderSize: MAX_HEADER_BYTES });
    this.dispatcher = this.agent.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTS }));
  }

  /** A GET; `what` names the request in errors ("the manifest of X"). Rejects only with BangerErrors. */
  async get(url: string, headers: Record<string, string>, what: string): Promise<Response> {
    this.throwIfAborted(what);
    try {
      return await request(url, {
        method: 'GET',
        headers: { 'user-agent': this.userAgent, ...headers },
        dispatcher: this.dispatcher,
        ...(this.signal ? { signal: this.signal } : {}),
      });
    } catch (e) {
      throw this.failure(e, what, url);
    }
  }

  throwIfAborted(what: string): void {
    if (this.signal?.aborted) throw this.failure(this.signal.reason, what);
  }

  /** Any error of a request or of reading its body, as a BangerError. */
  failure(e: unknown, what: string, url?: string): BangerError {
    if (this.signal?.aborted) return new BangerError('interrupted', `${what} was interrupted`, RETRY_HINT, { cause: e });
    if (e instanceof BangerError) return e;
    const where = url ? new URL(url).host : new URL(this.base).host;
    const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
    const code = err.code ?? '';
    const causeCode = err.cause?.code ?? '';
    const s = (ms: number) => `${Math.round(ms / 1000)} s`;
    switch (code) {
      case 'UND_ERR_CONNECT_TIMEOUT':
        return new BangerError('timeout', `${what}: connecting to ${where} timed out (${s(this.timeouts.connectMs)})`, 'check the registry host and your network');
      case 'UND_ERR_HEADERS_TIMEOUT':
        return new BangerError('timeout', `${what}: ${where} did not answer within ${s(this.timeouts.headersMs)}`, RETRY_HINT);
      case 'UND_ERR_BODY_TIMEOUT':
        return new BangerError('timeout', `${what}: ${where} stopped sending for ${s(this.timeouts.bodyMs)}`, RETRY_HINT);
      case 'UND_ERR_HEADERS_OVERFLOW':
        return new BangerError('operation_failed', `${what}: ${where} sent response headers larger than ${MAX_HEADER_BYTES} bytes`, 'this is not a registry banger can talk to: check the host');
      case 'UND_ERR_ABORTED':
        return new BangerError('interrupted', `${what} was interrupted`, RETRY_HINT, { cause: e });
    }
    if (e instanceof Error && e.cause instanceof BangerError) return e.cause;
    const net = /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|ECONNRESET|EPIPE|UND_ERR_SOCKET|UND_ERR_CLOSED)$/;
    if (net.test(code) || net.test(causeCode)) {
      return new BangerError('unavailable', `${what}: cannot reach ${where} (${code || causeCode})`, 'check the registry host, its port and your network, then retry', { cause: e });
    }
    if (/CERT|TLS|SSL|SELF_SIGNED/.test(code) || /CERT|TLS|SSL|SELF_SIGNED/.test(causeCode)) {
      return new BangerError(
        'operation_failed',
        `${what}: the TLS connection to ${where} failed (${code || causeCode})`,
        'the registry certificate is not trusted by this host: fix the certificate, or add its CA with NODE_EXTRA_CA_CERTS',
        { cause: e },
      );
    }
    return new BangerError('operation_failed', `${what}: request to ${where} failed: ${(err.message ?? String(e)).slice(0, 200)}`, RETRY_HINT, { cause: e });
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

/** Discards a body we do not read (a 401, an error page), bounded, so the connection can be reused. */
export async function discard(res: Response): Promise<void> {
  await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
}

/**
 * Reads a whole body of at most `limit` bytes. A Content-Length above the
 * limit fails before reading; a body that grows past it fails as soon as it
 * does (the socket is destroyed).
 */
export async function readBounded(t: Transport, res: Response, limit: number, what: string): Promise<Buffer> {
  const tooBig = () =>
    new BangerError('operation_failed', `${what}: the registry sent more than ${limit} bytes`, 'this is not a registry response banger accepts: check the reference and the registry');
  const declared = Number(header(res, 'content-length'));
  if (Number.isFinite(declared) && declared > limit) {
    res.body.destroy();
    throw tooBig();
  }
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > limit) {
        res.body.destroy();
        throw tooBig();
      }
      chunks.push(chunk);
    }
  } catch (e) {
    throw t.failure(e, what);
  }
  return Buffer.concat(chunks, n);
}
