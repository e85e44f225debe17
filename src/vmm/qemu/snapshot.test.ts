/**
 * Saving and loading a VM's state (src/vmm/qemu/snapshot.ts) against a fake
 * QEMU: a QMP peer on a unix socket that, like QEMU, connects to the
 * migration socket to send a state (migrate) or listens on it to receive
 * one (migrate-incoming). No QEMU runs.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../../errors/errors.js';
import { SnapshotUnusable } from '../driver.js';
import { QmpClient } from './qmp.js';
import { announceDiskSizes, loadState, maxStateBytes, saveState } from './snapshot.js';

const MIB = 1024 * 1024;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'banger-snap-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

interface Cmd {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

interface Reply {
  ok: (ret?: unknown) => void;
  error: (cls: string, desc: string) => void;
}

/** A fake QEMU's QMP socket: greeting, capabilities, then `respond` for every other command. */
async function fakeQemu(dir: string, respond: (cmd: Cmd, reply: Reply) => void): Promise<{ path: string; received: Cmd[]; client: QmpClient }> {
  const path = join(dir, 'qmp.sock');
  const received: Cmd[] = [];
  const sockets: Socket[] = [];
  const server = createServer((sock) => {
    sockets.push(sock);
    sock.on('error', () => undefined);
    sock.write('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": []}}\r\n');
    let buf = '';
    sock.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as Cmd;
        buf = buf.slice(nl + 1);
        const write = (v: unknown) => void (!sock.destroyed && sock.write(JSON.stringify(v) + '\r\n'));
        if (cmd.execute === 'qmp_capabilities') {
          write({ return: {}, id: cmd.id });
          continue;
        }
        received.push(cmd);
        respond(cmd, { ok: (ret = {}) => write({ return: ret, id: cmd.id }), error: (cls, desc) => write({ error: { class: cls, desc }, id: cmd.id }) });
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  const client = await QmpClient.connect(path);
  cleanups.push(() => client.close());
  return { path, received, client };
}

const unixPath = (cmd: Cmd) => {
  const uri = String(cmd.arguments?.uri);
  expect(uri.startsWith('unix:')).toBe(true);
  return uri.slice('unix:'.length);
};

/**
 * A QEMU that saves: on `migrate` it connects to the URI's socket and sends
 * `payload`; query-migrate says 'active' until the stream ended, then `final`.
 */
function savingQemu(dir: string, payload: Buffer, final: { status: string; 'error-desc'?: string } = { status: 'completed' }) {
  let status: Record<string, unknown> = {};
  return fakeQemu(dir, (cmd, reply) => {
    switch (cmd.execute) {
      case 'stop':
        return reply.ok();
      case 'migrate': {
        status = { status: 'active' };
        const c = createConnection(unixPath(cmd));
        c.on('error', () => undefined);
        c.on('connect', () => {
          // in chunks, as a stream
          for (let off = 0; off < payload.length; off += 256 * 1024) c.write(payload.subarray(off, off + 256 * 1024));
          c.end();
        });
        c.on('close', () => (status = final));
        return reply.ok();
      }
      case 'query-migrate':
        return reply.ok(status);
      default:
        return reply.error('CommandNotFound', `fake: no ${cmd.execute}`);
    }
  });
}

describe('saveState', () => {
  it('stops the VM, writes the bytes QEMU sends, renames into place, and returns their size and sha256', async () => {
    const dir = tmp();
    const payload = randomBytes(3 * MIB + 123);
    const q = await savingQemu(dir, payload);
    const socket = join(dir, 'migrate.sock');
    writeFileSync(socket, 'stale'); // a leftover of an earlier run: replaced by the listening socket
    const file = join(dir, 'state');
    const saved = await saveState(q.client, socket, file, { maxBytes: 8 * MIB, timeoutMs: 10_000 });
    expect(saved).toEqual({ file, bytes: payload.length, sha256: sha256(payload) });
    expect(readFileSync(file).equals(payload)).toBe(true); // (toEqual on MiBs of Buffer is very slow)
    expect(q.received.map((c) => c.execute).slice(0, 2)).toEqual(['stop', 'migrate']);
    expect(q.received[1]!.arguments).toEqual({ uri: `unix:${socket}` });
    expect(q.received.map((c) => c.execute)).toContain('query-migrate');
    // Only the state file is left: no temp file, no socket.
    expect(readdirSync(dir).sort()).toEqual(['qmp.sock', 'state']);
  });

  it("a 'failed' migration is an error naming QEMU's reason; no file, no temp file", async () => {
    const dir = tmp();
    const q = await savingQemu(dir, randomBytes(64 * 1024), { status: 'failed', 'error-desc': 'Unable to write to socket: Broken pipe' });
    const file = join(dir, 'state');
    const err = await saveState(q.client, join(dir, 'migrate.sock'), file, { maxBytes: 8 * MIB, timeoutMs: 10_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect((err as BangerError).message).toMatch(/could not save the VM's state: Unable to write to socket: Broken pipe/);
    expect(readdirSync(dir)).toEqual(['qmp.sock']);
  });

  it("a 'cancelled' migration is an error too", async () => {
    const dir = tmp();
    const q = await savingQemu(dir, randomBytes(1024), { status: 'cancelled' });
    await expect(saveState(q.client, join(dir, 'migrate.sock'), join(dir, 'state'), { maxBytes: MIB, timeoutMs: 10_000 })).rejects.toThrow(/cancelled/);
    expect(readdirSync(dir)).toEqual(['qmp.sock']);
  });

  it('a stream over maxBytes is refused; an older file at the path is left as it was', async () => {
    const dir = tmp();
    const q = await savingQemu(dir, randomBytes(3 * MIB));
    const file = join(dir, 'state');
    writeFileSync(file, 'the previous state');
    const err = await saveState(q.client, join(dir, 'migrate.sock'), file, { maxBytes: MIB, timeoutMs: 10_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BangerError);
    expect((err as BangerError).message).toMatch(/passed 1048576 bytes/);
    expect(readFileSync(file, 'utf8')).toBe('the previous state');
    expect(readdirSync(dir).sort()).toEqual(['qmp.sock', 'state']);
  });

  it('a migration that never completes times out; no temp file', async () => {
    const dir = tmp();
    const q = await fakeQemu(dir, (cmd, reply) => reply.ok(cmd.execute === 'query-migrate' ? { status: 'active' } : {}));
    const t0 = Date.now();
    const err = await saveState(q.client, join(dir, 'migrate.sock'), join(dir, 'state'), { maxBytes: MIB, timeoutMs: 300 }).catch((e: unknown) => e);
    expect((err as BangerError).code).toBe('timeout');
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(readdirSync(dir)).toEqual(['qmp.sock']);
  });

  it("QEMU refusing to stop: an error before anything is listened on; no temp file", async () => {
    const dir = tmp();
    const q = await fakeQemu(dir, (_cmd, reply) => reply.error('GenericError', 'fake: no'));
    await expect(saveState(q.client, join(dir, 'migrate.sock'), join(dir, 'state'), { maxBytes: MIB, timeoutMs: 1000 })).rejects.toThrow(/fake: no/);
    expect(q.received.map((c) => c.execute)).toEqual(['stop']);
    expect(readdirSync(dir)).toEqual(['qmp.sock']);
  });
});

/**
 * A QEMU started with `-incoming defer`: on migrate-incoming it listens on
 * the URI's socket and reads the state; query-status says 'inmigrate' until
 * the stream ended, then `loaded` ('paused' for a template saved paused).
 */
function loadingQemu(dir: string, opts: { loaded?: string; closeAfterBytes?: number; inmigrateReplies?: number } = {}) {
  const chunks: Buffer[] = [];
  let ended = false;
  let servers: Server[] = [];
  cleanups.push(() => servers.forEach((s) => s.close()));
  let inmigrate = opts.inmigrateReplies ?? 0;
  const q = fakeQemu(dir, (cmd, reply) => {
    switch (cmd.execute) {
      case 'migrate-incoming': {
        const server = createServer((sock) => {
          let got = 0;
          sock.on('error', () => undefined);
          sock.on('data', (c: Buffer) => {
            chunks.push(c);
            got += c.length;
            if (opts.closeAfterBytes !== undefined && got >= opts.closeAfterBytes) sock.destroy();
          });
          sock.on('end', () => (ended = true));
        });
        servers = [...servers, server];
        server.listen(unixPath(cmd), () => reply.ok());
        return;
      }
      case 'query-status': {
        const status = ended && inmigrate-- <= 0 ? (opts.loaded ?? 'paused') : 'inmigrate';
        return reply.ok({ status, running: false });
      }
      default:
        return reply.error('CommandNotFound', `fake: no ${cmd.execute}`);
    }
  });
  return { q, received: () => Buffer.concat(chunks), ended: () => ended };
}

function stateFile(dir: string, bytes = 2 * MIB + 7) {
  const data = randomBytes(bytes);
  const file = join(dir, 'state');
  writeFileSync(file, data);
  return { data, file, state: { file, bytes: data.length, sha256: sha256(data) } };
}

const LOAD = { maxBytes: 16 * MIB, timeoutMs: 10_000, isAlive: () => true };

async function unusable(p: Promise<unknown>, message: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(SnapshotUnusable);
  expect((e as SnapshotUnusable).message).toMatch(message);
}

describe('loadState', () => {
  it('streams the file to QEMU and resolves once QEMU says paused', async () => {
    const dir = tmp();
    const { data, state } = stateFile(dir);
    const fake = loadingQemu(dir, { inmigrateReplies: 3 });
    const q = await fake.q;
    const socket = join(dir, 'migrate.sock');
    await loadState(q.client, socket, state, LOAD);
    expect(fake.received().equals(data)).toBe(true);
    expect(fake.ended()).toBe(true);
    const cmds = q.received.map((c) => c.execute);
    expect(cmds[0]).toBe('migrate-incoming');
    expect(q.received[0]!.arguments).toEqual({ uri: `unix:${socket}` });
    // polled until it left inmigrate
    expect(cmds.filter((c) => c === 'query-status').length).toBeGreaterThanOrEqual(4);
    expect(existsSync(socket)).toBe(false);
  });

  it("'prelaunch' counts as loaded too", async () => {
    const dir = tmp();
    const { state } = stateFile(dir, 1000);
    const q = await loadingQemu(dir, { loaded: 'prelaunch' }).q;
    await loadState(q.client, join(dir, 'migrate.sock'), state, LOAD);
  });

  it('a size that is not the recorded one: SnapshotUnusable before QEMU is asked anything', async () => {
    const dir = tmp();
    const { state } = stateFile(dir, 1000);
    const q = await loadingQemu(dir).q;
    await unusable(loadState(q.client, join(dir, 'migrate.sock'), { ...state, bytes: 999 }, LOAD), /has 1000 bytes, not the 999/);
    await unusable(loadState(q.client, join(dir, 'migrate.sock'), state, { ...LOAD, maxBytes: 999 }), /has 1000 bytes/);
    expect(q.received).toEqual([]);
  });

  it('a sha256 that is not the recorded one: SnapshotUnusable, and QEMU is never found loaded', async () => {
    const dir = tmp();
    const { state } = stateFile(dir);
    const q = await loadingQemu(dir).q;
    await unusable(loadState(q.client, join(dir, 'migrate.sock'), { ...state, sha256: sha256(Buffer.from('other')) }, LOAD), /does not match its sha256/);
    expect(q.received.map((c) => c.execute)).toEqual(['migrate-incoming']);
    expect(existsSync(join(dir, 'migrate.sock'))).toBe(false);
  });

  it('QEMU exiting while it loads (isAlive false): SnapshotUnusable', async () => {
    const dir = tmp();
    const { state } = stateFile(dir, 4096);
    const q = await loadingQemu(dir, { inmigrateReplies: 1_000_000 }).q;
    let alive = 3;
    await unusable(loadState(q.client, join(dir, 'migrate.sock'), state, { ...LOAD, isAlive: () => alive-- > 0 }), /exited/);
  });

  it('QEMU in any other state after the load: SnapshotUnusable', async () => {
    const dir = tmp();
    const { state } = stateFile(dir, 4096);
    const q = await loadingQemu(dir, { loaded: 'internal-error' }).q;
    await unusable(loadState(q.client, join(dir, 'migrate.sock'), state, LOAD), /QEMU is internal-error after loading/);
  });

  it('QEMU that stops reading the state: SnapshotUnusable', async () => {
    const dir = tmp();
    const { state } = stateFile(dir, 16 * MIB);
    const q = await loadingQemu(dir, { closeAfterBytes: 1 }).q;
    await unusable(loadState(q.client, join(dir, 'migrate.sock'), state, { ...LOAD, maxBytes: 32 * MIB }), /stopped reading/);
  });

  it('QEMU that never listens: SnapshotUnusable within the deadline', async () => {
    const dir = tmp();
    const { state } = stateFile(dir, 4096);
    const q = await fakeQemu(dir, (_c, reply) => reply.ok());
    const t0 = Date.now();
    await unusable(loadState(q.client, join(dir, 'migrate.sock'), state, { ...LOAD, timeoutMs: 300 }), /did not take the snapshot's state/);
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('a state file that cannot be opened: SnapshotUnusable', async () => {
    const dir = tmp();
    const q = await loadingQemu(dir).q;
    await unusable(loadState(q.client, join(dir, 'migrate.sock'), { file: join(dir, 'missing'), bytes: 1, sha256: 'x' }, LOAD), /cannot be read/);
  });

  it("the fd variant reads the caller's descriptor with positions and leaves it open", async () => {
    const dir = tmp();
    const { data, file, state } = stateFile(dir);
    const fd = openSync(file, 'r');
    cleanups.push(() => closeSync(fd));
    rmSync(file); // only the descriptor reaches the file now
    const fake = loadingQemu(dir);
    const q = await fake.q;
    await loadState(q.client, join(dir, 'migrate.sock'), { ...state, fd }, LOAD);
    expect(fake.received().equals(data)).toBe(true);
    // still open, its offset not moved: a read from the current offset starts at byte 0
    expect(fstatSync(fd).size).toBe(data.length);
    const head = Buffer.alloc(64);
    expect(readSync(fd, head, 0, 64, null)).toBe(64);
    expect(head).toEqual(data.subarray(0, 64));
  });

  it('the fd variant leaves the descriptor open when the state is refused', async () => {
    const dir = tmp();
    const { file, state } = stateFile(dir, 4096);
    const fd = openSync(file, 'r');
    cleanups.push(() => closeSync(fd));
    const q = await loadingQemu(dir).q;
    await unusable(loadState(q.client, join(dir, 'migrate.sock'), { ...state, fd, sha256: '0'.repeat(64) }, LOAD), /sha256/);
    expect(fstatSync(fd).size).toBe(4096);
  });
});

describe('announceDiskSizes', () => {
  it("resizes each disk to the size QEMU has for it (the guest's config-change interrupt)", async () => {
    const dir = tmp();
    const q = await fakeQemu(dir, (cmd, reply) => {
      if (cmd.execute === 'query-block') {
        return reply.ok([
          { device: 'root', inserted: { image: { 'virtual-size': 4 * 1024 * MIB } } },
          { device: 'config', inserted: { image: { 'virtual-size': MIB } } },
          { device: 'work', inserted: { image: { 'virtual-size': 64 * MIB } } },
        ]);
      }
      return reply.ok();
    });
    await announceDiskSizes(q.client, ['root', 'work']);
    expect(q.received.filter((c) => c.execute === 'block_resize').map((c) => c.arguments)).toEqual([
      { device: 'root', size: 4 * 1024 * MIB },
      { device: 'work', size: 64 * MIB },
    ]);
    await expect(announceDiskSizes(q.client, ['nope'])).rejects.toThrow(/QEMU has no disk nope/);
  });

  it('the bound on a saved state is the guest RAM plus slack', () => {
    expect(maxStateBytes(1024)).toBeGreaterThan(1024 * MIB);
    expect(maxStateBytes(1024)).toBeLessThan(2048 * MIB);
    expect(maxStateBytes(2048) - maxStateBytes(1024)).toBe(1024 * MIB);
  });
});
