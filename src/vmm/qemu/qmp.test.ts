import { describe, it, expect, afterEach, beforeEach } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { z } from 'zod';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createRunner } from '../../system/runner.js';
import { isSameProcess, killProcess, readStartTime, waitForExit } from '../../system/proc.js';
import { BangerError, ERROR_CODES } from '../../errors/errors.js';
import { QMP_MAX_LINE_BYTES, QmpClient, QmpCommandError, type QmpEvent } from './qmp.js';
import { prng, watchCrashes } from '../../../test/support/hostile.js';

function onPath(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}

const tmpDirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'banger-qmp-'));
  tmpDirs.push(d);
  return d;
}

afterEach(() => {
  for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

// ---- against a scripted fake QMP server --------------------------------

interface Fake {
  server: Server;
  path: string;
  /** every command the client sent */
  received: Array<Record<string, unknown>>;
  sockets: Socket[];
}

/** A fake QMP endpoint: `respond` decides what to write back for each command. */
function fakeQmp(respond: (cmd: Record<string, unknown>, sock: Socket) => void): Promise<Fake> {
  const path = join(tmp(), 'qmp.sock');
  const fake: Fake = { server: createServer(), path, received: [], sockets: [] };
  fake.server.on('connection', (sock) => {
    fake.sockets.push(sock);
    sock.write('{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}\r\n');
    let buf = '';
    sock.on('data', (c) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        fake.received.push(cmd);
        if (cmd.execute === 'qmp_capabilities') sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\r\n');
        else respond(cmd, sock);
      }
    });
    sock.on('error', () => undefined);
  });
  return new Promise((resolve) => fake.server.listen(path, () => resolve(fake)));
}

function closeFake(f: Fake): Promise<void> {
  for (const s of f.sockets) s.destroy();
  return new Promise((r) => f.server.close(() => r()));
}

describe('QmpClient (fake server)', () => {
  it('negotiates capabilities, matches replies by id across interleaved events', async () => {
    const fake = await fakeQmp((cmd, sock) => {
      // an event before the reply, and one in the same write as the reply
      sock.write('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}\r\n');
      sock.write(
        JSON.stringify({ event: 'NIC_RX_FILTER_CHANGED', data: { name: 'net0' } }) +
          '\r\n' +
          JSON.stringify({ return: { status: 'running', running: true }, id: cmd.id }) +
          '\r\n',
      );
    });
    const client = await QmpClient.connect(fake.path);
    try {
      expect(client.greeting.version?.qemu?.major).toBe(7);
      expect(fake.received[0]).toMatchObject({ execute: 'qmp_capabilities' });
      const events: QmpEvent[] = [];
      client.onEvent((e) => events.push(e));
      const st = await client.queryStatus();
      expect(st).toEqual({ status: 'running', running: true });
      expect(events.map((e) => e.event)).toEqual(['RESUME', 'NIC_RX_FILTER_CHANGED']);
      expect(events[1]!.data).toEqual({ name: 'net0' });
    } finally {
      client.close();
      await closeFake(fake);
    }
  });

  it('answers out of order are delivered to the right command', async () => {
    const held: Array<Record<string, unknown>> = [];
    const fake = await fakeQmp((cmd, sock) => {
      held.push(cmd);
      if (held.length === 2) {
        // reply to the second command first
        for (const c of [held[1]!, held[0]!]) sock.write(JSON.stringify({ return: { name: c.execute }, id: c.id }) + '\n');
      }
    });
    const client = await QmpClient.connect(fake.path);
    try {
      const named = { result: z.object({ name: z.string() }) };
      const [a, b] = await Promise.all([client.execute('query-a', undefined, named), client.execute('query-b', undefined, named)]);
      expect(a.name).toBe('query-a');
      expect(b.name).toBe('query-b');
    } finally {
      client.close();
      await closeFake(fake);
    }
  });

  it('turns QMP errors into coded errors', async () => {
    const fake = await fakeQmp((cmd, sock) =>
      sock.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: `The command ${String(cmd.execute)} has not been found` }, id: cmd.id }) + '\n'),
    );
    const client = await QmpClient.connect(fake.path);
    try {
      const err = await client.execute('nope').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(QmpCommandError);
      expect((err as QmpCommandError).code).toBe('operation_failed');
      expect((err as QmpCommandError).errorClass).toBe('CommandNotFound');
    } finally {
      client.close();
      await closeFake(fake);
    }
  });

  it('times out a silent command and drops its late reply', async () => {
    let late: (() => void) | undefined;
    const fake = await fakeQmp((cmd, sock) => {
      if (cmd.execute === 'slow') late = () => sock.write(JSON.stringify({ return: 'late', id: cmd.id }) + '\n');
      else sock.write(JSON.stringify({ return: 'fast', id: cmd.id }) + '\n');
    });
    const client = await QmpClient.connect(fake.path);
    try {
      const t0 = Date.now();
      const err = await client.execute('slow', undefined, { timeoutMs: 200 }).catch((e: unknown) => e);
      expect((err as BangerError).code).toBe('timeout');
      expect(Date.now() - t0).toBeLessThan(2000);
      late!();
      expect(await client.execute('quick')).toBe('fast');
    } finally {
      client.close();
      await closeFake(fake);
    }
  });

  it('rejects pending commands when the connection drops; quit treats a close as success', async () => {
    const fake = await fakeQmp((cmd, sock) => {
      if (cmd.execute === 'quit') sock.destroy();
      // everything else: never answered
    });
    const client = await QmpClient.connect(fake.path);
    const pending = client.execute('hang', undefined, { timeoutMs: 5000 }).catch((e: unknown) => e);
    await client.quit();
    expect(client.closed).toBe(true);
    expect(((await pending) as BangerError).code).toBe('unavailable');
    await expect(client.execute('after')).rejects.toMatchObject({ code: 'unavailable' });
    await closeFake(fake);
  });

  it('retries until the socket appears, and gives a coded error when it never does', async () => {
    const path = join(tmp(), 'late.sock');
    const t0 = Date.now();
    const err = await QmpClient.connect(path, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect((err as BangerError).code).toBe('unavailable');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);

    const server = createServer((sock) => {
      sock.write('{"QMP": {"capabilities": []}}\n');
      sock.on('data', (c) => {
        const cmd = JSON.parse(c.toString().trim()) as { id: string };
        sock.write(JSON.stringify({ return: {}, id: cmd.id }) + '\n');
      });
    });
    setTimeout(() => server.listen(path), 150);
    const client = await QmpClient.connect(path, { timeoutMs: 3000 });
    client.close();
    await new Promise((r) => server.close(r));
  });
});

// ---- against a real QEMU ------------------------------------------------

const haveQemu = onPath('qemu-system-x86_64');

describe.skipIf(!haveQemu)('QmpClient (real QEMU, paused, no kernel)', () => {
  const runner = createRunner();
  let proc: { pid: number; start: string | null } | undefined;

  afterEach(async () => {
    if (proc?.start && isSameProcess(proc.pid, proc.start)) {
      killProcess(proc.pid, proc.start, 'SIGKILL');
      await waitForExit(proc.pid, proc.start, 5000);
    }
    proc = undefined;
  });

  it('query-status, interleaved events, errors, quit', async () => {
    const dir = tmp();
    const sock = join(dir, 'qmp.sock');
    const pid = runner.spawnDetached(
      ['qemu-system-x86_64', '-M', 'microvm', '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-S', '-qmp', `unix:${sock},server=on,wait=off`],
      { logPath: join(dir, 'qemu.log') },
    );
    proc = { pid, start: readStartTime(pid) };
    expect(proc.start).not.toBeNull();

    const client = await QmpClient.connect(sock, { timeoutMs: 10_000 });
    try {
      expect(client.greeting.version?.qemu?.major).toBeGreaterThanOrEqual(7);
      const st = await client.queryStatus();
      expect(st.running).toBe(false);
      // QEMU 7.2 reports a machine started with -S as "prelaunch"; after a stop it is "paused"
      expect(['prelaunch', 'paused']).toContain(st.status);

      const events: string[] = [];
      client.onEvent((e) => events.push(e.event));
      const resumed = client.waitForEvent('RESUME', 5000);
      await client.execute('cont');
      await resumed;
      expect((await client.queryStatus()).running).toBe(true);
      await client.execute('stop');
      expect(await client.queryStatus()).toMatchObject({ status: 'paused', running: false });
      expect(events).toContain('STOP');

      const err = await client.execute('no-such-command').catch((e: unknown) => e);
      expect((err as QmpCommandError).errorClass).toBe('CommandNotFound');

      const shutdown = client.waitForEvent('SHUTDOWN', 5000);
      await client.quit();
      expect((await shutdown).data).toMatchObject({ guest: false });
      expect(await waitForExit(pid, proc.start!, 5000)).toBe(true);
    } finally {
      client.close();
    }
  });
});

// ---- against a hostile QMP peer -------------------------------------------



const qline = (v: unknown) => JSON.stringify(v) + '\r\n';
const RUNNING = { status: 'running', running: true };

/** A raw QMP peer: `greet` writes the greeting, `respond` answers each parsed command (its input is ours: trusted). */
async function rawQmp(greet: (s: Socket) => void, respond: (cmd: Record<string, unknown>, s: Socket, conn: number) => void): Promise<Fake> {
  const path = join(tmp(), 'qmp.sock');
  const fake: Fake = { server: createServer(), path, received: [], sockets: [] };
  fake.server.on('connection', (sock) => {
    const conn = fake.sockets.push(sock) - 1;
    sock.on('error', () => undefined);
    greet(sock);
    let buf = '';
    sock.on('data', (c) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const cmd = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        fake.received.push(cmd);
        if (cmd.execute === 'qmp_capabilities') sock.write(qline({ return: {}, id: cmd.id }));
        else respond(cmd, sock, conn);
      }
    });
  });
  await new Promise<void>((r) => fake.server.listen(path, () => r()));
  return fake;
}

const GOOD_GREETING = (s: Socket) => s.write(qline({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'fake' }, capabilities: [] } }));

interface QmpCase {
  name: string;
  write: (cmd: Record<string, unknown>, s: Socket) => void;
  code: string;
  message: RegExp;
  closes: boolean;
}

const QMP_CASES: QmpCase[] = [
  ...['null', '[]', '42', '"x"'].map(
    (raw): QmpCase => ({ name: `the line ${raw}`, write: (_c, s) => s.write(raw + '\r\n'), code: 'operation_failed', message: /not a JSON object/, closes: true }),
  ),
  { name: 'a line that is not JSON', write: (_c, s) => s.write('{"return": \r\n'), code: 'operation_failed', message: /not JSON/, closes: true },
  {
    name: '{"return": "wrong type"} for query-status',
    write: (c, s) => s.write(qline({ return: 'wrong type', id: c.id })),
    code: 'operation_failed',
    message: /QEMU sent a malformed QMP reply to query-status/,
    closes: false,
  },
  {
    name: 'query-status with "running" of the wrong type',
    write: (c, s) => s.write(qline({ return: { status: 'running', running: 'yes' }, id: c.id })),
    code: 'operation_failed',
    message: /malformed QMP reply to query-status: running/,
    closes: false,
  },
  { name: '{"error": null}', write: (c, s) => s.write(qline({ error: null, id: c.id })), code: 'operation_failed', message: /"error" is not \{class, desc\}/, closes: false },
  // not ours: ignored, the command times out
  { name: '{"id": {}}', write: (_c, s) => s.write(qline({ id: {}, return: RUNNING })), code: 'timeout', message: /no answer/, closes: false },
  { name: 'an event of the wrong shape', write: (_c, s) => s.write(qline({ event: 5, data: 'x' })), code: 'timeout', message: /no answer/, closes: false },
  {
    name: 'a line over the limit',
    write: (_c, s) => s.write(Buffer.alloc(QMP_MAX_LINE_BYTES + 1, 0x20)),
    code: 'operation_failed',
    message: /longer than 1048576 bytes/,
    closes: true,
  },
  {
    name: 'deep nesting',
    write: (c, s) => s.write(`{"return": ${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}, "id": ${JSON.stringify(c.id)}}\r\n`),
    code: 'operation_failed',
    message: /nested deeper than/,
    closes: true,
  },
  {
    name: 'a 0xFF byte outside a string',
    write: (c, s) => s.write(Buffer.concat([Buffer.from('{"return": '), Buffer.from([0xff]), Buffer.from(`{}, "id": ${JSON.stringify(c.id)}}\r\n`)])),
    code: 'operation_failed',
    message: /not JSON/,
    closes: true,
  },
  { name: 'a partial line, then close', write: (_c, s) => s.end('{"return": {"status": "runn'), code: 'unavailable', message: /closed/, closes: true },
];

describe('QmpClient against a hostile peer (fake server)', () => {
  let watch: ReturnType<typeof watchCrashes>;
  beforeEach(() => {
    watch = watchCrashes();
  });
  afterEach(() => {
    watch.stop();
    expect(watch.crashes).toEqual([]);
  });

  /** A fresh connection to the same socket works (the fake behaves from its second connection on). */
  async function freshConnectionWorks(fake: Fake): Promise<void> {
    const client = await QmpClient.connect(fake.path);
    try {
      expect(await client.queryStatus()).toEqual(RUNNING);
    } finally {
      client.close();
    }
  }

  for (const c of QMP_CASES) {
    it(`${c.name}: that command fails with a coded error, nothing crashes`, async () => {
      const fake = await rawQmp(GOOD_GREETING, (cmd, s, conn) => {
        if (conn === 0 && cmd.execute === 'query-status') c.write(cmd, s);
        else s.write(qline({ return: cmd.execute === 'query-status' ? RUNNING : {}, id: cmd.id }));
      });
      try {
        const client = await QmpClient.connect(fake.path, { commandTimeoutMs: 300 });
        const serverClosed = new Promise<void>((r) => fake.sockets[0]!.once('close', () => r()));
        try {
          const err = await client.queryStatus().catch((e: unknown) => e);
          expect(err).toBeInstanceOf(BangerError);
          expect((err as BangerError).code).toBe(c.code);
          expect((err as BangerError).message).toMatch(c.message);
          expect(client.closed).toBe(c.closes);
          if (c.closes) await serverClosed;
          else await client.systemPowerdown(); // the same connection still works
        } finally {
          client.close();
        }
        await freshConnectionWorks(fake);
      } finally {
        await closeFake(fake);
      }
    });
  }

  it('a bad greeting fails connect with a coded error', async () => {
    const greetings: Array<{ write: (s: Socket) => void; code: string }> = [
      { write: (s) => s.write('null\r\n'), code: 'operation_failed' },
      { write: (s) => s.write('[]\r\n'), code: 'operation_failed' },
      { write: (s) => s.write(qline({ QMP: 5 })), code: 'operation_failed' },
      { write: (s) => s.write(qline({ QMP: { version: { qemu: { major: '7' } } } })), code: 'operation_failed' },
      { write: (s) => s.write(qline({ return: {} })), code: 'operation_failed' },
      { write: (s) => s.write('['.repeat(100_000) + '\r\n'), code: 'operation_failed' },
      { write: (s) => s.write(Buffer.alloc(QMP_MAX_LINE_BYTES + 10, 0x7b)), code: 'operation_failed' },
      { write: (s) => s.end('{"QMP": {"vers'), code: 'unavailable' },
    ];
    for (const g of greetings) {
      const fake = await rawQmp(g.write, () => undefined);
      try {
        const err = await QmpClient.connect(fake.path, { timeoutMs: 2000 }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(BangerError);
        expect((err as BangerError).code).toBe(g.code);
        expect((err as BangerError).message.length).toBeLessThan(600);
      } finally {
        await closeFake(fake);
      }
    }
  });

  it('a flood of events (some malformed) does not get in the way of a reply', async () => {
    const fake = await rawQmp(GOOD_GREETING, (cmd, s) => {
      const flood: string[] = [];
      for (let i = 0; i < 20_000; i++) {
        flood.push(qline({ event: 'NIC_RX_FILTER_CHANGED', data: { name: `n${i}` }, timestamp: { seconds: i, microseconds: 0 } }));
        if (i % 100 === 0) flood.push(qline({ event: 'BAD', data: null }), qline({ event: ['x'] }), qline({ return: RUNNING, id: 'not-ours' }));
      }
      s.write(flood.join(''));
      s.write(qline({ return: RUNNING, id: cmd.id }));
    });
    try {
      const client = await QmpClient.connect(fake.path);
      try {
        const names = new Set<unknown>();
        let events = 0;
        client.onEvent((e) => {
          names.add(e.event);
          events++;
        });
        expect(await client.queryStatus()).toEqual(RUNNING);
        expect(events).toBe(20_000); // the malformed ones were dropped
        expect([...names]).toEqual(['NIC_RX_FILTER_CHANGED']);
      } finally {
        client.close();
      }
    } finally {
      await closeFake(fake);
    }
  });

  it('fuzz: a few hundred random frames never crash the client or hand it a wrong type', async () => {
    const rand = prng(0x9e37);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const keys = ['return', 'error', 'id', 'event', 'data', 'timestamp', 'class', 'desc', 'status', 'running', 'QMP', '__proto__'];
    const value = (depth: number): unknown => {
      const r = rand();
      if (depth > 3 || r < 0.35) return pick([null, true, false, 0, -1, 1.5, 'x', '', 'running', '\u0000', 'é😀', 'a'.repeat(300)]);
      if (r < 0.55) return Array.from({ length: Math.floor(rand() * 4) }, () => value(depth + 1));
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rand() * 4); i > 0; i--) o[pick(keys)] = value(depth + 1);
      return o;
    };
    const MAX = 64 * 1024;
    const frame = (cmd: Record<string, unknown>): Buffer => {
      const own = (body: Record<string, unknown>) => Buffer.from(qline({ ...body, id: cmd.id }));
      switch (Math.floor(rand() * 10)) {
        case 0:
          return Buffer.from(qline(value(0)));
        case 1:
          return own({ return: value(1) });
        case 2:
          return own({ error: value(1) });
        case 3:
          return Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => pick([0xff, 0x0a, 0x7b, 0x22, 0x00, Math.floor(rand() * 256)])));
        case 4:
          return Buffer.from('{"a":'.repeat(1 + Math.floor(rand() * 5000)) + '\n');
        case 5:
          return Buffer.alloc(MAX + Math.floor(rand() * 100), 0x20);
        case 6:
          return Buffer.from(Array.from({ length: 50 }, () => qline({ event: pick(['STOP', 5, null]), data: value(1) })).join(''));
        case 7:
          return Buffer.from(qline({ return: value(1) })); // id-less: goes to the oldest command
        case 8:
          return own({ return: { ...RUNNING, [pick(keys)]: value(1) } });
        default:
          return Buffer.from(qline({ return: value(1), id: pick([cmd.id, 'other', 1, null, {}]) }));
      }
    };
    let frames = 0;
    const fake = await rawQmp(GOOD_GREETING, (cmd, s) => {
      frames++;
      if (rand() < 0.05) return void s.end(frame(cmd).subarray(0, 10));
      s.write(frame(cmd));
      if (rand() < 0.85) s.write(qline({ return: RUNNING, id: cmd.id }));
    });
    try {
      const t0 = Date.now();
      let client: QmpClient | undefined;
      let connections = 0;
      const outcomes = { ok: 0, coded: 0 };
      while (frames < 300) {
        if (!client || client.closed) {
          client?.close();
          client = await QmpClient.connect(fake.path, { commandTimeoutMs: 100, maxLineBytes: MAX });
          connections++;
        }
        try {
          const st = await client.queryStatus();
          // whatever QEMU sent, the result has exactly the promised types
          expect(typeof st.status).toBe('string');
          expect(typeof st.running).toBe('boolean');
          outcomes.ok++;
        } catch (e) {
          expect(e).toBeInstanceOf(BangerError);
          expect(ERROR_CODES).toContain((e as BangerError).code);
          outcomes.coded++;
        }
      }
      client?.close();
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(outcomes.ok).toBeGreaterThan(10);
      expect(outcomes.coded).toBeGreaterThan(10);
      expect(connections).toBeGreaterThan(5);
    } finally {
      await closeFake(fake);
    }
    // a well-behaved peer on a fresh connection still answers
    const good = await rawQmp(GOOD_GREETING, (cmd, s) => s.write(qline({ return: RUNNING, id: cmd.id })));
    try {
      await freshConnectionWorks(good);
    } finally {
      await closeFake(good);
    }
  });
});
