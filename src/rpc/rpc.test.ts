import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { startRpcServer, type Handlers, type RpcServer } from './server.js';
import { RpcClient } from './client.js';
import { LineReader } from '../system/line-reader.js';
import { BangerError } from '../errors/errors.js';
import { PROTOCOL_VERSION } from './methods.js';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

function handlers(over: Partial<Handlers> = {}): Handlers {
  const notUsed = async () => {
    throw new BangerError('internal', 'not used');
  };
  return {
    'rpc.hello': async () => ({ protocol: PROTOCOL_VERSION, version: 'test', pid: process.pid }),
    'daemon.status': notUsed,
    'daemon.stop': notUsed,
    'vm.create': notUsed,
    'vm.list': async () => [],
    'vm.show': async (p) => {
      throw new BangerError('not_found', `no VM named ${p.name}`, 'list VMs');
    },
    'vm.delete': notUsed,
    'vm.ssh_target': notUsed,
    'image.build': async (_p, ctx) => {
      ctx.progress({ stage: 'a', message: 'one' });
      ctx.progress({ stage: 'b', message: 'two' });
      return { name: 'x', source: 's', sourceKind: 'debian', sourceRef: 'bookworm', kernelVersion: 'k', kernel: null, rootfsBytes: 1, packages: [], createdAt: 'now' };
    },
    'image.list': async () => {
      throw new Error('boom');
    },
    'image.show': notUsed,
    'image.delete': notUsed,
    ...over,
  } as Handlers;
}

let server: RpcServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function setup(h = handlers()) {
  const dir = mkdtempSync(join(tmpdir(), 'rpc-'));
  const socketPath = join(dir, 's.sock');
  const cap = capture();
  server = await startRpcServer({ socketPath, handlers: h, log: cap.log, version: 'test' });
  return { socketPath, ...cap };
}

/** Raw line-level exchange, bypassing the typed client. */
async function raw(socketPath: string, lines: string[]): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve) => {
    const s = connect(socketPath);
    const out: Array<Record<string, unknown>> = [];
    const sp = new LineReader({
      maxLine: 1 << 20,
      onOverflow: () => undefined,
      onLine: (l) => {
        out.push(JSON.parse(l.toString('utf8')) as Record<string, unknown>);
        if (out.length === lines.length) {
          s.destroy();
          resolve(out);
        }
      },
    });
    s.on('data', (c: Buffer) => sp.push(c));
    s.on('connect', () => {
      for (const l of lines) s.write(l + '\n');
    });
  });
}

describe('RPC', () => {
  it('creates the socket with mode 0600', async () => {
    const { socketPath } = await setup();
    expect(statSync(socketPath).mode & 0o777).toBe(0o600);
  });

  it('round-trips a call and streams progress before the result', async () => {
    const { socketPath } = await setup();
    const c = await RpcClient.connect(socketPath, 'test');
    const seen: string[] = [];
    const img = await c.call('image.build', {}, (ev) => seen.push(ev.message));
    expect(img.name).toBe('x');
    expect(seen).toEqual(['one', 'two']);
    c.close();
  });

  it('coded errors carry code, hint and an opId that is in the log line', async () => {
    const { socketPath, lines } = await setup();
    const c = await RpcClient.connect(socketPath, 'test');
    const err = (await c.call('vm.show', { name: 'nope' }).catch((e: unknown) => e)) as BangerError;
    expect(err.code).toBe('not_found');
    expect(err.hint).toBe('list VMs');
    expect(err.opId).toMatch(/^op-[0-9a-f]{8}$/);
    expect(lines.some((l) => l.opId === err.opId && l.code === 'not_found')).toBe(true);
    c.close();
  });

  it('an uncoded handler error becomes internal, with the stack only in the log', async () => {
    const { socketPath, lines } = await setup();
    const c = await RpcClient.connect(socketPath, 'test');
    const err = (await c.call('image.list', {}).catch((e: unknown) => e)) as BangerError;
    expect(err.code).toBe('internal');
    expect(err.message).toContain('boom');
    expect(lines.find((l) => l.opId === err.opId)?.stack).toContain('boom');
    c.close();
  });

  it('validates params at the boundary', async () => {
    const { socketPath } = await setup();
    const c = await RpcClient.connect(socketPath, 'test');
    const bad = (await c.call('vm.create', { name: 'Bad_Name' }).catch((e: unknown) => e)) as BangerError;
    expect(bad.code).toBe('bad_request');
    expect(bad.message).toContain('name');
    expect(bad.field).toBe('name');
    const extra = (await c.call('vm.list', { nope: 1 } as never).catch((e: unknown) => e)) as BangerError;
    expect(extra.code).toBe('bad_request');
    const vcpu = (await c.call('vm.create', { vcpu: 1.5 }).catch((e: unknown) => e)) as BangerError;
    expect(vcpu.code).toBe('bad_request');
    expect(vcpu.field).toBe('vcpu'); // the field as data: only the CLI names the flag
    expect(vcpu.message).not.toMatch(/--|vm\.create/);
    c.close();
  });

  it('refuses a protocol mismatch with bad_version and a hint', async () => {
    const { socketPath } = await setup();
    const [r] = await raw(socketPath, [JSON.stringify({ id: 1, method: 'rpc.hello', params: { protocol: PROTOCOL_VERSION + 1, client: 'old' } })]);
    expect((r!.error as { code: string }).code).toBe('bad_version');
    expect((r!.error as { hint: string }).hint).toContain('banger daemon stop');
  });

  it('requires hello first, rejects unknown methods and bad JSON', async () => {
    const { socketPath } = await setup();
    const out = await raw(socketPath, [
      JSON.stringify({ id: 1, method: 'vm.list', params: {} }),
      '{not json',
      JSON.stringify({ id: 2, method: 'rpc.hello', params: { protocol: PROTOCOL_VERSION, client: 't' } }),
      JSON.stringify({ id: 3, method: 'vm.explode', params: {} }),
    ]);
    const byId = (id: number) => out.find((m) => m.id === id)!;
    expect((byId(1).error as { code: string }).code).toBe('bad_version');
    expect(out.some((m) => m.id === -1 && (m.error as { code: string }).code === 'bad_request')).toBe(true);
    expect(byId(2).result).toBeTruthy();
    expect((byId(3).error as { code: string }).code).toBe('unknown_method');
  });

  it('tells handlers when the connection closes', async () => {
    let closed!: () => void;
    const wasClosed = new Promise<void>((r) => (closed = r));
    const { socketPath } = await setup(
      handlers({
        'vm.list': async (_p, ctx) => {
          ctx.connection.onClose(closed);
          return [];
        },
      }),
    );
    const c = await RpcClient.connect(socketPath, 'test');
    await c.call('vm.list', {});
    c.close();
    await wasClosed;
  });
});

describe('RPC streamed results', () => {
  it('a 20 MiB result streams as bounded chunks and arrives whole (it used to be one line that crashed the client past ~12 MiB)', async () => {
    const { createHash, randomBytes } = await import('node:crypto');
    const payload = randomBytes(20 * 1024 * 1024);
    const { socketPath } = await setup(
      handlers({
        'vm.workspace.export': async (_p, ctx) => {
          for (let off = 0; off < payload.length; off += 3 * 1024 * 1024) await ctx.sendChunk(payload.subarray(off, off + 3 * 1024 * 1024));
          return { bytes: payload.length, baseCommit: null };
        },
      }),
    );
    const c = await RpcClient.connect(socketPath, 'test');
    const got: Buffer[] = [];
    let biggest = 0;
    const r = await c.call('vm.workspace.export', { name: 'box' }, {
      onChunk: (b) => {
        biggest = Math.max(biggest, b.length);
        got.push(b);
      },
    });
    const all = Buffer.concat(got);
    expect(r.bytes).toBe(payload.length);
    expect(createHash('sha256').update(all).digest('hex')).toBe(createHash('sha256').update(payload).digest('hex'));
    expect(biggest).toBeLessThanOrEqual(512 * 1024);
    c.close();
  });

  it('a server message past the client limit fails the call with a coded error instead of throwing in a socket handler', async () => {
    const { socketPath } = await setup(
      handlers({
        'vm.list': async () => [{ name: 'x'.repeat(17 * 1024 * 1024) }] as never,
      }),
    );
    const c = await RpcClient.connect(socketPath, 'test');
    const err = (await c.call('vm.list', {}).catch((e: unknown) => e)) as BangerError;
    expect(err).toBeInstanceOf(BangerError);
    expect(err.code).toBe('operation_failed');
    expect(err.message).toMatch(/longer than/);
  });
});

describe('RPC log amplification', () => {
  it('a huge name or method is never echoed whole into the log or the error', async () => {
    const { socketPath, lines } = await setup();
    const c = await RpcClient.connect(socketPath, 'test');
    const huge = 'x'.repeat(500_000);
    const e1 = (await c.call('vm.show', { name: huge }).catch((e: unknown) => e)) as BangerError;
    const e2 = (await c.call(huge as 'vm.list', {}).catch((e: unknown) => e)) as BangerError;
    expect(e1.code).toBe('bad_request');
    expect(e2.code).toBe('bad_request'); // the envelope bounds a method name's length
    expect(e1.message.length + e2.message.length).toBeLessThan(2000);
    for (const l of lines) expect(JSON.stringify(l).length).toBeLessThan(4096);
    c.close();
  });
});

describe('RpcClient.connect against a daemon of another protocol', () => {
  it('rejects with bad_version and closes its socket (an open socket kept `banger daemon stop` hanging)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rpc-'));
    const socketPath = join(dir, 's.sock');
    const { createServer } = await import('node:net');
    let closed!: () => void;
    const peerClosed = new Promise<void>((r) => (closed = r));
    const srv = createServer((sock) => {
      sock.on('data', () => {
        sock.write(`${JSON.stringify({ id: 1, error: { code: 'bad_version', message: 'protocol mismatch', hint: 'stop it' } })}\n`);
      });
      sock.on('close', () => closed());
    });
    await new Promise<void>((r) => srv.listen(socketPath, r));
    try {
      const err = await RpcClient.connect(socketPath, 'test').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect((err as BangerError).code).toBe('bad_version');
      await expect(Promise.race([peerClosed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('still open'), 2000))])).resolves.toBe('closed');
    } finally {
      srv.close();
    }
  });
});
