/**
 * Files inside an image archive's directory, for `banger image import`
 * (archive.ts): an OCI image layout or a `docker save` archive, either the
 * directory the user gave or the one a tar was unpacked into.
 *
 * The archive is a peer. Names it gives (docker's manifest.json paths, tar
 * entry names) are checked by `archiveName` (relative, no `..`, at most 256
 * characters); blob paths are built only from digests already checked to be
 * `sha256:<64 hex>`. Every file is resolved inside the archive's directory
 * as a chroot would (tree.ts's `resolveInRoot`: a symlink to `/etc/passwd`
 * reads `<dir>/etc/passwd`, `..` stops at the top), opened with O_NOFOLLOW
 * and O_NONBLOCK, and must be a regular file. Metadata files are read into
 * memory only up to 4 MiB. Blobs go into the BlobStore through
 * `BlobStore.fetch`, so their size and sha256 are verified where a pulled
 * blob's are, and a blob that does not match leaves nothing in the cache.
 */
import { createHash } from 'node:crypto';
import { constants, lstatSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { z } from 'zod';
import { BangerError, messageOf } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';
import { formatSize } from '../../model/sizes.js';
import { resolveInRoot } from '../tree.js';
import type { BlobSource, BlobStore, Progress } from './blob-store.js';
import { MAX_MANIFEST_BYTES } from './manifest.js';

/** What to do about an archive banger cannot read. */
export const ARCHIVE_HINT = 'make it with `docker save IMAGE -o FILE` or `skopeo copy docker://IMAGE oci-archive:FILE`';
const DAMAGED_HINT = `the archive is damaged or was changed after it was made: ${ARCHIVE_HINT}`;
/** Longest name inside an archive banger follows. */
export const MAX_NAME = 256;
/** Largest metadata file (index.json, manifest.json, a config) read into memory. */
export const MAX_META_BYTES = MAX_MANIFEST_BYTES;
const READ_CHUNK = 1024 * 1024;

/** An archive's directory (`root`) and how messages name the archive (`where`: the path the user gave). */
export interface ArchiveDir {
  root: string;
  where: string;
}

/** `raw` as a relative name (`a/b`), or undefined when it is empty, absolute, has `..` or NUL, or is longer than 256 characters. */
export function archiveName(raw: string): string | undefined {
  if (raw.length === 0 || raw.length > MAX_NAME || raw.startsWith('/') || raw.includes('\0')) return undefined;
  const parts = raw.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.length === 0 || parts.includes('..')) return undefined;
  return parts.join('/');
}

/** The path of a blob in an OCI layout; `digest` must already be checked (schema or DIGEST_RE). */
export function blobPath(digest: string): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

export function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function badArchive(a: ArchiveDir, message: string, hint = ARCHIVE_HINT): BangerError {
  return new BangerError('bad_request', `${a.where}: ${message}`, hint);
}

function missing(a: ArchiveDir, rel: string, what: string): BangerError {
  return new BangerError('not_found', `${a.where}: ${what} (${quoteInput(rel, 120)}) is missing`, `the archive is incomplete: ${ARCHIVE_HINT}`);
}

/** Whether `rel` is a regular file inside the archive (links followed inside it). */
export function hasFile(a: ArchiveDir, rel: string): boolean {
  try {
    return lstatSync(resolveInRoot(a.root, rel, { followLast: true })).isFile();
  } catch {
    return false;
  }
}

/** `rel` opened for reading, or undefined when there is none; anything but a regular file is refused. */
async function openIn(a: ArchiveDir, rel: string, what: string): Promise<{ fh: FileHandle; size: number } | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(resolveInRoot(a.root, rel, { followLast: true }), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    if (e instanceof BangerError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new BangerError('operation_failed', `${a.where}: reading ${what} (${quoteInput(rel, 120)}) failed: ${messageOf(e)}`, 'check that the archive is readable');
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw badArchive(a, `${what} (${quoteInput(rel, 120)}) is not a regular file`);
  }
  return { fh, size: st.size };
}

/** A metadata file (at most 4 MiB) of the archive; a missing one is `not_found`. */
export async function readSmall(a: ArchiveDir, rel: string, what: string): Promise<Buffer> {
  const f = await openIn(a, rel, what);
  if (!f) throw missing(a, rel, what);
  try {
    if (f.size > MAX_META_BYTES) throw badArchive(a, `${what} (${quoteInput(rel, 120)}) is ${f.size} bytes (at most ${MAX_META_BYTES})`);
    const buf = Buffer.alloc(f.size);
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await f.fh.read(buf, off, buf.length - off, off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return buf.subarray(0, off);
  } finally {
    await f.fh.close();
  }
}

/** A small blob of an OCI layout (index, manifest, config), checked against its descriptor. */
export async function readSmallBlob(a: ArchiveDir, desc: { digest: string; size: number }, what: string): Promise<Buffer> {
  if (desc.size > MAX_META_BYTES) throw badArchive(a, `${what} ${desc.digest} is ${desc.size} bytes (at most ${MAX_META_BYTES})`);
  const data = await readSmall(a, blobPath(desc.digest), `${what} ${desc.digest}`);
  if (data.length !== desc.size) {
    throw new BangerError('operation_failed', `${a.where}: ${what} ${desc.digest} is ${data.length} bytes, not the ${desc.size} its descriptor says`, DAMAGED_HINT);
  }
  if (sha256(data) !== desc.digest) {
    throw new BangerError('operation_failed', `${a.where}: ${what} ${desc.digest} does not match its digest (its bytes hash to ${sha256(data)})`, DAMAGED_HINT);
  }
  return data;
}

/** JSON of a metadata file, checked by `schema`; a problem is a `bad_request` naming the file and the field. */
export function parseJson<T>(a: ArchiveDir, data: Buffer, schema: z.ZodType<T>, what: string): T {
  let json: unknown;
  try {
    json = JSON.parse(data.toString('utf8'));
  } catch (e) {
    throw badArchive(a, `${what} is not JSON (${messageOf(e).slice(0, 120)})`);
  }
  const r = schema.safeParse(json);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const field = issue && issue.path.length > 0 ? quoteInput(issue.path.join('.'), 80) : '(top level)';
  throw badArchive(a, `${what} is not valid: ${field}: ${(issue?.message ?? 'it does not match the schema').slice(0, 200)}`);
}

/** Reads `fh` from an offset, as a BlobStore source. */
function fileSource(fh: FileHandle, size: number, failure: (e: unknown) => BangerError): BlobSource {
  return async (offset) => {
    let cancelled = false;
    const body = async function* () {
      for (let pos = offset; pos < size && !cancelled; ) {
        const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, size - pos));
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) return;
        pos += bytesRead;
        yield buf.subarray(0, bytesRead);
      }
    };
    return { start: offset, length: size - offset, body: body(), cancel: () => void (cancelled = true), failure };
  };
}

export interface CopyOptions {
  /** `layer 2/3`: how messages name the blob. */
  what: string;
  /** What `digest` is to the archive: a layer's digest (OCI) or its diff_id (docker save). */
  against: 'digest' | 'diff_id';
  /** The size its descriptor says; undefined (docker save): the file's size. */
  size?: number;
  signal?: AbortSignal | undefined;
  onProgress?: Progress | undefined;
}

/**
 * Copies the archive's file `rel` into the BlobStore as `digest`, verified
 * there (size and sha256). A blob already in the cache is not read. Returns
 * the blob's size and the bytes copied (0 when it was cached).
 */
export async function copyBlob(a: ArchiveDir, rel: string, digest: string, store: BlobStore, opts: CopyOptions): Promise<{ size: number; copied: number }> {
  const named = `${opts.what} (${quoteInput(rel, 120)})`;
  const f = await openIn(a, rel, opts.what);
  if (!f) throw missing(a, rel, opts.what);
  try {
    if (opts.size !== undefined && f.size !== opts.size) {
      throw new BangerError('operation_failed', `${a.where}: ${named} is ${formatSize(f.size)} (${f.size} bytes), not the ${opts.size} bytes its descriptor says`, DAMAGED_HINT);
    }
    const failure = (e: unknown) => new BangerError('operation_failed', `${a.where}: reading ${named} failed: ${messageOf(e)}`, 'check that the archive is readable', { cause: e });
    const r = await store.fetch({ digest, size: f.size }, fileSource(f.fh, f.size, failure), { signal: opts.signal, onProgress: opts.onProgress });
    return { size: f.size, copied: r.downloaded };
  } catch (e) {
    if (!(e instanceof BangerError) || e.message.startsWith(`${a.where}: `)) throw e;
    if (e.code === 'interrupted') throw new BangerError('interrupted', `${a.where}: copying ${named} was interrupted`, 'run the import again: what was copied is kept and resumes', { cause: e });
    if (e.code !== 'operation_failed') throw e;
    // BlobStore's message for a sha256 mismatch (the partial is deleted): said here in the archive's terms.
    if (/do not have that sha256/.test(e.message)) {
      throw new BangerError('operation_failed', `${a.where}: ${named} does not match its ${opts.against} ${digest}; nothing of it was kept`, DAMAGED_HINT, { cause: e });
    }
    throw new BangerError('operation_failed', `${a.where}: ${named}: ${e.message}`, e.hint, { cause: e });
  } finally {
    await f.fh.close();
  }
}
