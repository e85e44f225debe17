/**
 * Downloads for releases, the kernel catalog and image bundles: http(s) only,
 * every body bounded (a server that sends more is cut off), a deadline on
 * the whole request, and a file download hashed as it is written. What comes
 * back is unverified: callers check it with verify.ts before using it.
 */
import { createWriteStream, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { KeyObject } from 'node:crypto';
import { BangerError } from '../errors/errors.js';
import { MAX_SIGNATURE_BYTES, verifyBlobSignature } from './verify.js';

export interface FetchOptions {
  /** What is fetched, for messages ("the release manifest"). */
  what: string;
  maxBytes: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT_MS = 60_000;

async function open(url: URL, o: FetchOptions): Promise<Response> {
  const signals = [AbortSignal.timeout(o.timeoutMs ?? DEFAULT_TIMEOUT_MS), ...(o.signal ? [o.signal] : [])];
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow', signal: AbortSignal.any(signals) });
  } catch (e) {
    const why = (e as Error).name === 'TimeoutError' ? 'timed out' : ((e as { cause?: Error }).cause?.message ?? (e as Error).message);
    throw new BangerError('unavailable', `${o.what}: cannot fetch ${url.href}: ${why}`.slice(0, 600), 'check the URL and the network');
  }
  if (res.status === 404) {
    await res.body?.cancel();
    throw new BangerError('not_found', `${o.what}: ${url.href} does not exist (404)`.slice(0, 600));
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new BangerError('operation_failed', `${o.what}: ${url.href} answered ${res.status}`.slice(0, 600), 'check the URL; try again later');
  }
  const length = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(length) && length > o.maxBytes) {
    await res.body?.cancel();
    throw new BangerError('operation_failed', `${o.what}: ${url.href} is ${length} bytes, more than the ${o.maxBytes} allowed`.slice(0, 600), 'this is not what banger expects there');
  }
  return res;
}

function tooBig(url: URL, o: FetchOptions): BangerError {
  return new BangerError('operation_failed', `${o.what}: ${url.href} sent more than the ${o.maxBytes} bytes allowed`.slice(0, 600), 'this is not what banger expects there');
}

/** The body's chunks; more than `maxBytes` in all cancels it and throws. */
async function* boundedBody(res: Response, url: URL, o: FetchOptions): AsyncGenerator<Uint8Array> {
  if (!res.body) return;
  let size = 0;
  for await (const chunk of res.body) {
    size += chunk.length;
    if (size > o.maxBytes) {
      await res.body.cancel().catch(() => undefined);
      throw tooBig(url, o);
    }
    yield chunk;
  }
}

/** The body of `url`, at most `maxBytes`. */
export async function fetchBytes(url: URL, o: FetchOptions): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of boundedBody(await open(url, o), url, o)) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

/**
 * Writes the body of `url` to `path` (created, never followed through a
 * link: flag wx) and returns its sha256 and size. On any failure the file is
 * removed (an existing file is never touched: that is an error).
 */
export async function downloadFile(url: URL, path: string, o: FetchOptions & { onBytes?: (n: number) => void }): Promise<{ sha256: string; bytes: number }> {
  const res = await open(url, o);
  const out = createWriteStream(path, { flags: 'wx', mode: 0o644 });
  const hash = createHash('sha256');
  let size = 0;
  let opened = false;
  try {
    await once(out, 'open');
    opened = true;
    for await (const chunk of boundedBody(res, url, o)) {
      size += chunk.length;
      hash.update(chunk);
      if (!out.write(chunk)) await once(out, 'drain');
      o.onBytes?.(size);
    }
    out.end();
    await once(out, 'finish');
    return { sha256: hash.digest('hex'), bytes: size };
  } catch (e) {
    out.destroy();
    if (opened) rmSync(path, { force: true }); // only what this call created
    if (e instanceof BangerError) throw e;
    throw new BangerError('unavailable', `${o.what}: downloading ${url.href} failed: ${(e as Error).message}`.slice(0, 600), 'check the network and try again');
  }
}

/**
 * The body of `url` (a manifest, a catalog) once its signature, fetched from
 * `url` + `.sig` beside it, verifies over those exact bytes with `key`.
 */
export async function fetchSigned(url: URL, key: KeyObject, o: FetchOptions): Promise<Buffer> {
  const bytes = await fetchBytes(url, o);
  const sig = await fetchBytes(new URL(`${url.pathname.split('/').pop()}.sig`, url), { ...o, what: `the signature of ${o.what}`, maxBytes: MAX_SIGNATURE_BYTES });
  verifyBlobSignature(url.href, bytes, sig, key);
  return bytes;
}
