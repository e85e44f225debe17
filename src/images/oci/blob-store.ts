/**
 * The content-addressed blob cache of `banger image pull` (issue 11):
 * `<dir>/sha256/<hex>` holds verified blobs (layers, configs) shared by every
 * image; the directories are 0700, files 0600, opened without following links.
 *
 * A download streams into `<hex>.<pid>-<starttime>.partial`, hashing as it
 * goes, refuses the first byte past the descriptor's size, and only after
 * size and sha256 both match is the file fsynced and renamed to its final
 * name: a final file exists only with verified content. A mismatch deletes
 * the partial. A cut-off download (network error, abort) keeps its partial;
 * the next fetch rehashes it and asks for the rest with a Range request
 * (a 200 answer starts over).
 *
 * Concurrency. In one process, an in-flight map keyed by the final path
 * makes a second fetch of the same blob wait for the first (getting its
 * progress) and then use the final file; if the first fails, the waiter
 * downloads it itself. Across processes, the partial's name carries its
 * writer's pid and start time, so two processes never write one file: a
 * partial whose writer is gone (checked against /proc) is adopted by rename
 * (atomic: of two adopters one wins, the other starts its own), and two
 * live writers each verify their own copy before the rename, which replaces
 * a final file with identical bytes. No lock file can go stale.
 *
 * Cache policy: a final file whose size matches is used without rehashing
 * (it was verified before it got its name, in a directory only we can
 * write); `verify()` rehashes when a caller wants to. Prune must not run
 * during a pull of another process (the daemon serialises them); in this
 * process it skips blobs being fetched.
 */
import { createHash, type Hash } from 'node:crypto';
import { chmodSync, constants, lstatSync, mkdirSync, readdirSync, renameSync, unlinkSync } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';
import { isSameProcess, readStartTime } from '../../system/proc.js';
import { DIGEST_RE, MAX_BLOB_BYTES } from './manifest.js';

export type Progress = (done: number, total: number) => void;

/** What a BlobSource returns: the body of a blob request. */
export interface BlobResponse {
  /** Offset of the body's first byte: the offset asked for (a 206) or 0 (a full body). */
  start: number;
  /** Bytes announced (Content-Length), when they are. */
  length?: number | undefined;
  body: AsyncIterable<Uint8Array>;
  /** Stops the transfer. */
  cancel(): void;
  /** A read error of the body as a BangerError (timeouts, aborts, resets). */
  failure(e: unknown): BangerError;
}
/** Opens the blob from `offset` (0: the whole blob). */
export type BlobSource = (offset: number) => Promise<BlobResponse>;

export interface FetchOptions {
  onProgress?: Progress | undefined;
  signal?: AbortSignal | undefined;
}

const PROGRESS_MS = 200;
const READ_CHUNK = 1024 * 1024;
const FINAL = /^[0-9a-f]{64}$/;
const PARTIAL = /^([0-9a-f]{64})\.(\d+)-(\d+)\.partial$/;
const OWNER = `${process.pid}-${readStartTime(process.pid) ?? '0'}`;

interface InFlight {
  promise: Promise<{ path: string; downloaded: number }>;
  listeners: Set<Progress>;
}
/** Per process: final path → the download writing it. */
const inflight = new Map<string, InFlight>();

/** Throws unless `d` is `sha256:<64 hex>` and `size` a bounded byte count; returns the hex. */
export function checkDescriptor(d: { digest: string; size: number }): string {
  if (typeof d.digest !== 'string' || !DIGEST_RE.test(d.digest)) {
    throw new BangerError('operation_failed', `blob digest ${quoteInput(String(d.digest), 80)} is not sha256: followed by 64 lowercase hex digits`, 'the image manifest is malformed: report it to the image publisher');
  }
  if (!Number.isSafeInteger(d.size) || d.size < 0 || d.size > MAX_BLOB_BYTES) {
    throw new BangerError('operation_failed', `blob ${d.digest} announces ${d.size} bytes (max ${MAX_BLOB_BYTES})`, 'the image manifest is malformed or hostile: report it to the image publisher');
  }
  return d.digest.slice('sha256:'.length);
}

function interrupted(digest: string, cause?: unknown): BangerError {
  return new BangerError('interrupted', `download of blob ${digest} was interrupted`, 'run the pull again: the part already downloaded is kept and resumes', { cause });
}

function corrupt(digest: string, why: string): BangerError {
  return new BangerError('operation_failed', `blob ${digest}: ${why}`, 'the registry served corrupt data; nothing was kept: retry, and report it to the registry operator if it persists');
}

async function hashFile(fh: FileHandle, length: number, hash: Hash, signal?: AbortSignal): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, Math.max(length, 1)));
  for (let pos = 0; pos < length; ) {
    if (signal?.aborted) throw signal.reason;
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

/** Resolves with `p`, or rejects as interrupted when `signal` fires first (p keeps running). */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined, digest: string): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(interrupted(digest));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(interrupted(digest));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

export class BlobStore {
  private readonly blobs: string;

  constructor(readonly dir: string) {
    this.blobs = join(dir, 'sha256');
  }

  /** Creates `<dir>` and `<dir>/sha256` (0700); refuses either when it is a link or not a directory. */
  ensureDir(): void {
    for (const d of [this.dir, this.blobs]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      const st = lstatSync(d);
      if (!st.isDirectory()) {
        throw new BangerError('operation_failed', `blob cache ${d} is not a directory (a link or a file)`, `move ${d} out of the way; banger recreates it`);
      }
      if ((st.mode & 0o077) !== 0) chmodSync(d, 0o700);
    }
  }

  /** The final path of a blob; throws for a digest that is not `sha256:<64 hex>`. */
  path(digest: string): string {
    return join(this.blobs, checkDescriptor({ digest, size: 0 }));
  }

  /** Whether the blob is cached: a regular file of that size (not rehashed, see the module comment). */
  has(digest: string, size: number): boolean {
    try {
      const st = lstatSync(this.path(digest));
      return st.isFile() && st.size === size;
    } catch {
      return false;
    }
  }

  /** Rehashes a cached blob; a file that does not match is deleted. */
  async verify(digest: string, size: number): Promise<boolean> {
    if (!this.has(digest, size)) return false;
    const path = this.path(digest);
    const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    const hash = createHash('sha256');
    try {
      await hashFile(fh, size, hash);
    } finally {
      await fh.close();
    }
    if (`sha256:${hash.digest('hex')}` === digest) return true;
    await unlink(path).catch(() => undefined);
    return false;
  }

  /**
   * Drops final blobs whose digest is not in `keep` (nor being fetched by this
   * process) and partials nobody is writing. Other names are left alone.
   */
  prune(keep: Set<string>): { removed: number; bytes: number } {
    let removed = 0;
    let bytes = 0;
    let names: string[];
    try {
      names = readdirSync(this.blobs);
    } catch {
      return { removed, bytes };
    }
    for (const name of names) {
      const path = join(this.blobs, name);
      const partial = PARTIAL.exec(name);
      if (FINAL.test(name)) {
        if (keep.has(`sha256:${name}`) || inflight.has(path)) continue;
      } else if (partial) {
        const owner = `${partial[2]}-${partial[3]}`;
        const live = owner === OWNER ? inflight.has(join(this.blobs, partial[1]!)) : isSameProcess(Number(partial[2]), partial[3]!);
        if (live) continue;
      } else continue;
      try {
        const st = lstatSync(path);
        if (!st.isFile()) continue;
        unlinkSync(path);
        removed++;
        bytes += st.size;
      } catch {
        /* gone already */
      }
    }
    return { removed, bytes };
  }

  /**
   * The blob in the cache, downloading it from `source` when missing.
   * `downloaded` is the bytes this call transferred (0 when cached or when
   * another fetch in this process brought it).
   */
  async fetch(desc: { digest: string; size: number }, source: BlobSource, opts: FetchOptions = {}): Promise<{ path: string; downloaded: number }> {
    checkDescriptor(desc);
    const path = this.path(desc.digest);
    for (;;) {
      if (this.has(desc.digest, desc.size)) return { path, downloaded: 0 };
      const running = inflight.get(path);
      if (!running) break;
      if (opts.onProgress) running.listeners.add(opts.onProgress);
      try {
        await abortable(running.promise, opts.signal, desc.digest);
      } catch (e) {
        if (opts.signal?.aborted) throw e;
        // The other fetch failed on its own terms (its abort, a network error): try ourselves.
      } finally {
        if (opts.onProgress) running.listeners.delete(opts.onProgress);
      }
    }
    this.ensureDir();
    const listeners = new Set<Progress>(opts.onProgress ? [opts.onProgress] : []);
    // The entry leaves the map before anyone awaiting its promise resumes, so a waiter never sees a finished entry.
    const entry = { listeners } as InFlight;
    entry.promise = this.download(desc, path, source, listeners, opts.signal).finally(() => {
      if (inflight.get(path) === entry) inflight.delete(path);
    });
    inflight.set(path, entry);
    return entry.promise;
  }

  /** This process's partial for the blob: ours from an earlier attempt, or one adopted from a writer that is gone. */
  private claimPartial(hex: string): string {
    const mine = join(this.blobs, `${hex}.${OWNER}.partial`);
    try {
      lstatSync(mine);
      return mine;
    } catch {
      /* none of ours */
    }
    for (const name of readdirSync(this.blobs)) {
      const m = PARTIAL.exec(name);
      if (!m || m[1] !== hex || `${m[2]}-${m[3]}` === OWNER || isSameProcess(Number(m[2]), m[3]!)) continue;
      try {
        renameSync(join(this.blobs, name), mine);
        return mine;
      } catch {
        /* another process adopted it first */
      }
    }
    return mine;
  }

  private async download(desc: { digest: string; size: number }, final: string, source: BlobSource, listeners: Set<Progress>, signal?: AbortSignal): Promise<{ path: string; downloaded: number }> {
    const { digest, size } = desc;
    const partial = this.claimPartial(checkDescriptor(desc));
    const fh = await open(partial, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    let keep = true;
    let last = 0;
    const emit = (done: number, force = false) => {
      const now = Date.now();
      if (!force && now - last < PROGRESS_MS) return;
      last = now;
      for (const l of listeners) {
        try {
          l(done, size);
        } catch {
          /* a progress listener never fails a download */
        }
      }
    };
    try {
      let hash = createHash('sha256');
      let done = (await fh.stat()).size;
      if (done > size) {
        await fh.truncate(0);
        done = 0;
      }
      await hashFile(fh, done, hash, signal);
      let downloaded = 0;
      if (done < size) {
        const res = await source(done);
        if (res.start !== done) {
          if (res.start !== 0) throw new BangerError('internal', `blob ${digest}: a response starting at byte ${res.start} for a request from ${done}`, 'this is a bug in banger: report it');
          await fh.truncate(0);
          hash = createHash('sha256');
          done = 0;
        }
        if (res.length !== undefined && done + res.length > size) {
          res.cancel();
          keep = false;
          throw corrupt(digest, `the registry announces ${done + res.length} bytes, more than the ${size} its descriptor says`);
        }
        try {
          for await (const chunk of res.body) {
            if (done + chunk.length > size) {
              res.cancel();
              keep = false;
              throw corrupt(digest, `the registry sent more than the ${size} bytes its descriptor says`);
            }
            await fh.write(chunk, 0, chunk.length, done);
            hash.update(chunk);
            done += chunk.length;
            downloaded += chunk.length;
            emit(done);
            if (signal?.aborted) {
              res.cancel();
              throw interrupted(digest);
            }
          }
        } catch (e) {
          if (e instanceof BangerError) throw e;
          throw signal?.aborted ? interrupted(digest, e) : res.failure(e);
        }
        if (done < size) {
          throw new BangerError('operation_failed', `blob ${digest}: the registry sent only ${done} of ${size} bytes`, 'run the pull again: it resumes from there');
        }
      }
      if (`sha256:${hash.digest('hex')}` !== digest) {
        keep = false;
        throw corrupt(digest, `the ${size} bytes received do not have that sha256`);
      }
      await fh.sync();
      await fh.close();
      await rename(partial, final);
      const dir = await open(this.blobs, constants.O_RDONLY | constants.O_DIRECTORY);
      await dir.sync().finally(() => dir.close());
      emit(size, true);
      return { path: final, downloaded };
    } catch (e) {
      const left = await fh.stat().then((st) => st.size, () => -1);
      await fh.close().catch(() => undefined);
      // An empty partial (the request itself failed) is not worth keeping.
      if (!keep || left === 0) await unlink(partial).catch(() => undefined);
      if (e instanceof BangerError) throw e;
      if (signal?.aborted) throw interrupted(digest, e);
      throw new BangerError('operation_failed', `blob ${digest}: writing ${partial} failed: ${(e as Error).message}`, 'check the free space and permissions of the cache directory', { cause: e });
    }
  }
}
