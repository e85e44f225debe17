import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../../errors/errors.js';
import { readStartTime } from '../../system/proc.js';
import { parseImageRef } from '../oci-ref.js';
import { BlobStore } from './blob-store.js';
import { FakeRegistry, serveBytes } from './fake-registry.test-support.js';
import { Transport } from './http.js';
import { RegistryClient, type RegistryClientOptions } from './registry.js';

let reg: FakeRegistry;
let other: FakeRegistry;
let dir: string;
let store: BlobStore;
const clients: { close(): Promise<void> }[] = [];
beforeEach(async () => {
  reg = await new FakeRegistry().start();
  other = await new FakeRegistry().start();
  dir = mkdtempSync(join(tmpdir(), 'banger-blobs-http-'));
  store = new BlobStore(join(dir, 'blobs'));
});
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all([reg.close(), other.close()]);
  rmSync(dir, { recursive: true, force: true });
});

function client(opts: RegistryClientOptions = {}): RegistryClient {
  const c = new RegistryClient(parseImageRef(`${reg.host}/team/app:v1`), opts);
  clients.push(c);
  return c;
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

const cached = () => {
  try {
    return readdirSync(join(dir, 'blobs', 'sha256'));
  } catch {
    return [];
  }
};
const isBlob = (url: string | undefined) => url?.includes('/blobs/') ?? false;
const OWN = `${process.pid}-${readStartTime(process.pid)}`;

describe('blob transfers', () => {
  it('refuses a blob whose bytes are corrupt and leaves nothing in the cache', async () => {
    const desc = reg.addBlob(randomBytes(100_000));
    reg.blobs.set(desc.digest, randomBytes(100_000));
    const e = await rejection(client().fetchBlob(desc, store));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toContain(desc.digest);
    expect(e.hint).toMatch(/registry served corrupt data/);
    expect(cached()).toEqual([]);
  });

  it('refuses a blob longer than its descriptor as soon as it overflows (no Content-Length)', async () => {
    const desc = reg.addBlob(randomBytes(1000));
    let written = 0;
    reg.hook = (req, res) => {
      if (!isBlob(req.url)) return false;
      res.writeHead(200); // chunked: the length is not announced
      const pump = () => {
        while (!res.destroyed && written < 4096) {
          written++;
          if (!res.write(randomBytes(16 * 1024))) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
      return true;
    };
    const e = await rejection(client().fetchBlob(desc, store));
    expect(e.message).toMatch(/more than the 1000 bytes/);
    expect(written).toBeLessThan(4096); // 64 MiB were on offer
    expect(cached()).toEqual([]);
  });

  it('refuses a Content-Length over the descriptor before reading the body', async () => {
    const desc = reg.addBlob(randomBytes(1000));
    reg.hook = (req, res) => {
      if (!isBlob(req.url)) return false;
      res.writeHead(200, { 'content-length': 10 * 1024 ** 3 });
      res.write(randomBytes(1000));
      return true;
    };
    expect((await rejection(client().fetchBlob(desc, store))).message).toMatch(/announces 10737418240 bytes/);
    expect(cached()).toEqual([]);
  });

  it('resumes a partial with a Range request and verifies the whole', async () => {
    const data = randomBytes(300_000);
    const desc = reg.addBlob(data);
    store.ensureDir();
    writeFileSync(join(dir, 'blobs', 'sha256', `${desc.digest.slice(7)}.${OWN}.partial`), data.subarray(0, 123_456));
    const r = await client().fetchBlob(desc, store);
    expect(reg.seen.filter((s) => isBlob(s.url)).map((s) => s.headers.range)).toEqual(['bytes=123456-']);
    expect(r.downloaded).toBe(300_000 - 123_456);
    expect(readFileSync(r.path).equals(data)).toBe(true);
    expect(cached()).toEqual([desc.digest.slice(7)]);
  });

  it('starts over cleanly when a Range request gets a 200', async () => {
    const data = randomBytes(300_000);
    const desc = reg.addBlob(data);
    store.ensureDir();
    writeFileSync(join(dir, 'blobs', 'sha256', `${desc.digest.slice(7)}.${OWN}.partial`), data.subarray(0, 100_000));
    reg.hook = (req, res) => {
      if (!isBlob(req.url)) return false;
      res.writeHead(200, { 'content-length': data.length });
      res.end(data);
      return true;
    };
    const r = await client().fetchBlob(desc, store);
    expect(reg.seen.find((s) => isBlob(s.url))!.headers.range).toBe('bytes=100000-');
    expect(r.downloaded).toBe(data.length);
    expect(readFileSync(r.path).equals(data)).toBe(true);
  });

  it('an abort mid-download is interrupted, keeps the partial, and the next pull resumes it', async () => {
    const data = randomBytes(1024 * 1024);
    const desc = reg.addBlob(data);
    reg.hook = (req, res) => {
      if (!isBlob(req.url) || req.headers.range) return false;
      res.writeHead(200, { 'content-length': data.length });
      res.write(data.subarray(0, 256 * 1024)); // then stalls
      return true;
    };
    const ac = new AbortController();
    const e = await rejection(client({ signal: ac.signal }).fetchBlob(desc, store, (done) => done > 0 && ac.abort()));
    expect(e.code).toBe('interrupted');
    const [partial] = cached();
    expect(partial).toBe(`${desc.digest.slice(7)}.${OWN}.partial`);
    const kept = statSync(join(dir, 'blobs', 'sha256', partial!)).size;
    expect(kept).toBeGreaterThan(0);
    const r = await client().fetchBlob(desc, store);
    expect(reg.seen.filter((s) => isBlob(s.url)).at(-1)!.headers.range).toBe(`bytes=${kept}-`);
    expect(readFileSync(r.path).equals(data)).toBe(true);
  });

  it('a 404 blob is not_found naming the digest and the repository', async () => {
    const e = await rejection(client().fetchBlob({ digest: `sha256:${'0'.repeat(64)}`, size: 1 }, store));
    expect(e.code).toBe('not_found');
    expect(e.message).toContain(`blob sha256:${'0'.repeat(64)} was not found in ${reg.host}/team/app`);
    expect(cached()).toEqual([]); // no empty partial left behind
  });
});

describe('redirects', () => {
  it('follows a redirect to another origin without the registry token, keeping it on same-origin hops', async () => {
    reg.auth = { kind: 'bearer' };
    const data = randomBytes(50_000);
    const desc = reg.addBlob(data);
    other.addBlob(data);
    reg.hook = (req, res) => {
      if (!isBlob(req.url) || req.headers.authorization !== `Bearer ${reg.token}`) return false;
      const location = req.url!.startsWith('/v2/') ? `/hop${req.url}` : `${other.origin}${req.url!.slice(4)}`;
      res.writeHead(307, { location });
      res.end();
      return true;
    };
    other.hook = (req, res) => {
      serveBytes(req, res, data);
      return true;
    };
    const r = await client().fetchBlob(desc, store);
    expect(readFileSync(r.path).equals(data)).toBe(true);
    expect(reg.seen.filter((s) => isBlob(s.url)).map((s) => [s.url.split('/')[1], s.headers.authorization])).toEqual([
      ['v2', undefined],
      ['v2', `Bearer ${reg.token}`],
      ['hop', `Bearer ${reg.token}`],
    ]);
    expect(other.seen).toHaveLength(1);
    expect(other.seen[0]!.headers.authorization).toBeUndefined();
    expect(other.seen[0]!.headers.cookie).toBeUndefined();
  });

  it('gives up after 5 redirects', async () => {
    const desc = reg.addBlob('x');
    let n = 0;
    reg.hook = (req, res) => {
      if (!isBlob(req.url)) return false;
      res.writeHead(302, { location: `${req.url!.split('?')[0]}?n=${++n}` });
      res.end();
      return true;
    };
    expect((await rejection(client().fetchBlob(desc, store))).message).toMatch(/redirected more than 5 times/);
    expect(n).toBe(6);
  });

  it('refuses a redirect to plain HTTP on a host that is not loopback, without connecting', async () => {
    const desc = reg.addBlob('x');
    reg.hook = (req, res) => {
      if (!isBlob(req.url)) return false;
      res.writeHead(307, { location: 'http://blobs.example.com/data' });
      res.end();
      return true;
    };
    const e = await rejection(client().fetchBlob(desc, store));
    expect(e.message).toMatch(/refusing plain HTTP to "blobs\.example\.com"/);
    expect(e.hint).toMatch(/--insecure/);
  });
});

describe('transport limits', () => {
  it('uses https for a registry that is not loopback, and never opens plain HTTP to one without insecure', async () => {
    const t = new Transport({ host: 'registry.example:5000', insecure: false, userAgent: 't' });
    const ti = new Transport({ host: 'registry.example:5000', insecure: true, userAgent: 't' });
    clients.push(t, ti);
    expect(t.base).toBe('https://registry.example:5000');
    expect(ti.base).toBe('http://registry.example:5000');
    expect(new Transport({ host: '[::1]:5000', insecure: false, userAgent: 't' }).base).toBe('http://[::1]:5000');
    expect((await rejection(t.get('http://192.0.2.1:5000/v2/', {}, 'probe'))).message).toMatch(/refusing plain HTTP to "192\.0\.2\.1"/);
  });

  it('bounds response headers', async () => {
    reg.hook = (_req, res) => {
      res.writeHead(200, { 'x-junk': 'a'.repeat(64 * 1024) });
      res.end('{}');
      return true;
    };
    expect((await rejection(client().resolve())).message).toMatch(/response headers larger than 32768 bytes/);
  });

  it('bounds a manifest body, announced or not', async () => {
    for (const announce of [true, false]) {
      reg.hook = (_req, res) => {
        res.writeHead(200, announce ? { 'content-length': 5 * 1024 * 1024 } : {});
        res.end(Buffer.alloc(5 * 1024 * 1024, 32));
        return true;
      };
      expect((await rejection(client().resolve())).message).toMatch(/the manifest of .* more than 4194304 bytes/);
    }
  });

  it('bounds a token response', async () => {
    reg.auth = { kind: 'bearer' };
    reg.addImage('team/app', 'v1', [Buffer.from('l')]);
    reg.hook = (req, res) => {
      if (!req.url?.startsWith('/token')) return false;
      res.writeHead(200);
      res.end(`{"token":"${'a'.repeat(2 * 1024 * 1024)}"}`);
      return true;
    };
    expect((await rejection(client().resolve())).message).toMatch(/the token for .* more than 1048576 bytes/);
  });

  it('times out a registry that does not answer', async () => {
    reg.hook = () => true; // never answers
    const e = await rejection(client({ timeouts: { headersMs: 300 } }).resolve());
    expect(e.code).toBe('timeout');
    expect(e.message).toContain(`${reg.host} did not answer`);
  });

  it('a registry that is not listening is unavailable', async () => {
    const port = reg.port;
    await reg.close();
    const e = await rejection(client().resolve());
    expect(e.code).toBe('unavailable');
    expect(e.message).toContain(`127.0.0.1:${port}`);
  });
});
