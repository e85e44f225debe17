import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../../errors/errors.js';
import { readStartTime } from '../../system/proc.js';
import { BlobStore, type BlobResponse, type BlobSource } from './blob-store.js';

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hexOf = (d: string) => d.slice(7);

let dir: string;
let store: BlobStore;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-blobs-'));
  store = new BlobStore(join(dir, 'blobs'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A source serving `data` in `chunk`-sized pieces, recording the offsets asked for. */
function source(data: Buffer, opts: { chunk?: number; ignoreRange?: boolean; announce?: number; gate?: Promise<void> } = {}) {
  const calls: number[] = [];
  let yielded = 0;
  const fn: BlobSource = async (offset) => {
    calls.push(offset);
    const start = opts.ignoreRange ? 0 : offset;
    const body = (async function* () {
      for (let i = start; i < data.length; i += opts.chunk ?? 4096) {
        if (i > start && opts.gate) await opts.gate;
        yielded++;
        yield data.subarray(i, Math.min(data.length, i + (opts.chunk ?? 4096)));
      }
    })();
    const r: BlobResponse = { start, length: opts.announce, body, cancel: () => void body.return(undefined), failure: (e) => new BangerError('operation_failed', String(e)) };
    return r;
  };
  return { fn, calls, yielded: () => yielded };
}

function files(): string[] {
  try {
    return readdirSync(join(dir, 'blobs', 'sha256')).sort();
  } catch {
    return [];
  }
}

async function rejection(p: Promise<unknown>): Promise<BangerError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(BangerError);
    return e as BangerError;
  }
  throw new Error('resolved');
}

const OWN = `${process.pid}-${readStartTime(process.pid)}`;

describe('BlobStore.fetch', () => {
  it('downloads, verifies and names a blob by its digest; private modes; progress ends at the total', async () => {
    const data = randomBytes(100_000);
    const desc = { digest: sha(data), size: data.length };
    const progress: [number, number][] = [];
    const s = source(data);
    const r = await store.fetch(desc, s.fn, { onProgress: (d, t) => progress.push([d, t]) });
    expect(r).toEqual({ path: join(dir, 'blobs', 'sha256', hexOf(desc.digest)), downloaded: data.length });
    expect(readFileSync(r.path).equals(data)).toBe(true);
    expect(statSync(r.path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'blobs')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'blobs', 'sha256')).mode & 0o777).toBe(0o700);
    expect(progress.at(-1)).toEqual([data.length, data.length]);
    expect(progress.length).toBeLessThan(5); // throttled: 25 chunks, ~200 ms apart at most
    expect(files()).toEqual([hexOf(desc.digest)]);
  });

  it('does not download a cached blob again', async () => {
    const data = randomBytes(1000);
    const desc = { digest: sha(data), size: data.length };
    const s = source(data);
    await store.fetch(desc, s.fn);
    expect((await store.fetch(desc, s.fn)).downloaded).toBe(0);
    expect(s.calls).toEqual([0]);
    expect(store.has(desc.digest, desc.size)).toBe(true);
    expect(store.has(desc.digest, desc.size + 1)).toBe(false);
  });

  it('refuses bytes that do not match the digest and keeps nothing', async () => {
    const data = randomBytes(10_000);
    const desc = { digest: sha(Buffer.from('other')), size: data.length };
    const e = await rejection(store.fetch(desc, source(data).fn));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toContain(desc.digest);
    expect(e.hint).toMatch(/corrupt/);
    expect(files()).toEqual([]);
  });

  it('refuses a body longer than the descriptor as soon as it overflows', async () => {
    const data = randomBytes(100 * 4096);
    const s = source(data);
    const e = await rejection(store.fetch({ digest: sha(data.subarray(0, 8192)), size: 8192 }, s.fn));
    expect(e.message).toMatch(/more than the 8192 bytes/);
    expect(s.yielded()).toBe(3);
    expect(files()).toEqual([]);
  });

  it('refuses an announced length over the descriptor before reading', async () => {
    const data = randomBytes(8192);
    const s = source(data, { announce: 1 << 30 });
    const e = await rejection(store.fetch({ digest: sha(data), size: data.length }, s.fn));
    expect(e.message).toMatch(/announces 1073741824 bytes/);
    expect(s.yielded()).toBe(0);
  });

  it('resumes from its partial with the offset, and the result verifies', async () => {
    const data = randomBytes(50_000);
    const desc = { digest: sha(data), size: data.length };
    store.ensureDir();
    writeFileSync(join(dir, 'blobs', 'sha256', `${hexOf(desc.digest)}.${OWN}.partial`), data.subarray(0, 20_000));
    const s = source(data);
    const r = await store.fetch(desc, s.fn);
    expect(s.calls).toEqual([20_000]);
    expect(r.downloaded).toBe(30_000);
    expect(readFileSync(r.path).equals(data)).toBe(true);
    expect(files()).toEqual([hexOf(desc.digest)]);
  });

  it('adopts the partial of a process that is gone', async () => {
    const data = randomBytes(50_000);
    const desc = { digest: sha(data), size: data.length };
    store.ensureDir();
    writeFileSync(join(dir, 'blobs', 'sha256', `${hexOf(desc.digest)}.999999999-1.partial`), data.subarray(0, 12_345));
    const s = source(data);
    await store.fetch(desc, s.fn);
    expect(s.calls).toEqual([12_345]);
    expect(files()).toEqual([hexOf(desc.digest)]);
  });

  it('starts over when a range request is answered with the whole blob', async () => {
    const data = randomBytes(50_000);
    const desc = { digest: sha(data), size: data.length };
    store.ensureDir();
    // A partial whose bytes are wrong: only a restart from 0 can verify.
    writeFileSync(join(dir, 'blobs', 'sha256', `${hexOf(desc.digest)}.${OWN}.partial`), randomBytes(20_000));
    const s = source(data, { ignoreRange: true });
    const r = await store.fetch(desc, s.fn);
    expect(s.calls).toEqual([20_000]);
    expect(r.downloaded).toBe(data.length);
    expect(readFileSync(r.path).equals(data)).toBe(true);
  });

  it('keeps the partial when interrupted, and resumes from it', async () => {
    const data = randomBytes(64 * 1024);
    const desc = { digest: sha(data), size: data.length };
    const ac = new AbortController();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const s = source(data, { chunk: 16 * 1024, gate });
    const p = store.fetch(desc, s.fn, { signal: ac.signal, onProgress: (done) => done > 0 && ac.abort() });
    const e = await rejection(p);
    release();
    expect(e.code).toBe('interrupted');
    expect(files()).toEqual([`${hexOf(desc.digest)}.${OWN}.partial`]);
    expect(statSync(join(dir, 'blobs', 'sha256', files()[0]!)).size).toBe(16 * 1024);
    const again = source(data);
    await store.fetch(desc, again.fn);
    expect(again.calls).toEqual([16 * 1024]);
  });

  it('shares one download between concurrent fetches of a blob', async () => {
    const data = randomBytes(200_000);
    const desc = { digest: sha(data), size: data.length };
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const s = source(data, { gate });
    const second: number[] = [];
    const a = store.fetch(desc, s.fn);
    const b = store.fetch(desc, s.fn, { onProgress: (d) => second.push(d) });
    setTimeout(release, 50);
    const [ra, rb] = await Promise.all([a, b]);
    expect(s.calls).toEqual([0]);
    expect(ra.downloaded).toBe(data.length);
    expect(rb).toEqual({ path: ra.path, downloaded: 0 });
    expect(second.at(-1)).toBe(data.length);
    expect(readFileSync(ra.path).equals(data)).toBe(true);
  });

  it('a waiter that is aborted stops waiting; the download it waited on goes on', async () => {
    const data = randomBytes(50_000);
    const desc = { digest: sha(data), size: data.length };
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const s = source(data, { gate });
    const a = store.fetch(desc, s.fn);
    const ac = new AbortController();
    const b = store.fetch(desc, s.fn, { signal: ac.signal });
    ac.abort();
    expect((await rejection(b)).code).toBe('interrupted');
    release();
    expect((await a).downloaded).toBe(data.length);
    expect(s.calls).toEqual([0]);
  });

  it('an empty blob needs no request', async () => {
    const s = source(Buffer.alloc(0));
    const r = await store.fetch({ digest: sha(Buffer.alloc(0)), size: 0 }, s.fn);
    expect(r.downloaded).toBe(0);
    expect(readFileSync(r.path).length).toBe(0);
    expect(s.calls).toEqual([]);
  });

  it('a waiter downloads itself when the first fetch fails', async () => {
    const data = randomBytes(10_000);
    const desc = { digest: sha(data), size: data.length };
    const bad = source(randomBytes(10_000));
    const good = source(data);
    const a = store.fetch(desc, bad.fn);
    const b = store.fetch(desc, good.fn);
    expect((await rejection(a)).code).toBe('operation_failed');
    expect((await b).downloaded).toBe(data.length);
  });

  it('refuses digests that are not sha256:<64 hex> before building a path, and hostile sizes', async () => {
    for (const d of ['sha256:../../etc/passwd', `sha512:${'a'.repeat(128)}`, `sha256:${'A'.repeat(64)}`]) {
      expect(() => store.path(d)).toThrow(BangerError);
    }
    const ok = `sha256:${'a'.repeat(64)}`;
    for (const size of [-1, 1.5, 17 * 1024 ** 3, Number.NaN]) {
      expect((await rejection(store.fetch({ digest: ok, size }, source(Buffer.alloc(0)).fn))).message).toMatch(/announces/);
    }
  });
});

describe('BlobStore maintenance', () => {
  it('verify() rehashes and drops a tampered blob', async () => {
    const data = randomBytes(1000);
    const desc = { digest: sha(data), size: data.length };
    const { path } = await store.fetch(desc, source(data).fn);
    expect(await store.verify(desc.digest, desc.size)).toBe(true);
    writeFileSync(path, randomBytes(1000));
    expect(store.has(desc.digest, desc.size)).toBe(true); // the cheap check trusts the name
    expect(await store.verify(desc.digest, desc.size)).toBe(false);
    expect(store.has(desc.digest, desc.size)).toBe(false);
  });

  it('prune drops unreferenced blobs and stale partials, and keeps the rest', async () => {
    const keep = randomBytes(100);
    const drop = randomBytes(300);
    await store.fetch({ digest: sha(keep), size: 100 }, source(keep).fn);
    await store.fetch({ digest: sha(drop), size: 300 }, source(drop).fn);
    const d = join(dir, 'blobs', 'sha256');
    const hex = 'b'.repeat(64);
    writeFileSync(join(d, `${hex}.999999999-1.partial`), Buffer.alloc(7)); // writer gone
    writeFileSync(join(d, `${hex}.${OWN}.partial`), Buffer.alloc(11)); // ours, not in flight
    const parent = `${process.ppid}-${readStartTime(process.ppid)}`;
    writeFileSync(join(d, `${hex}.${parent}.partial`), Buffer.alloc(13)); // a live writer
    writeFileSync(join(d, 'README'), 'not ours');
    expect(store.prune(new Set([sha(keep)]))).toEqual({ removed: 3, bytes: 300 + 7 + 11 });
    expect(files()).toEqual([hexOf(sha(keep)), `${hex}.${parent}.partial`, 'README'].sort());
  });

  it('refuses a cache directory that is a link', () => {
    mkdirSync(join(dir, 'elsewhere'));
    symlinkSync(join(dir, 'elsewhere'), join(dir, 'blobs'));
    expect(() => store.ensureDir()).toThrow(/is not a directory/);
  });
});
