import { describe, it, expect, afterEach } from 'vitest';
import { createServer, type Server, type Socket } from 'node:net';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createRunner } from '../../system/runner.js';
import { isSameProcess, killProcess, readStartTime, waitForExit } from '../../system/proc.js';
import { BangerError } from '../../errors/errors.js';
import { QmpClient, QmpCommandError, type QmpEvent } from './qmp.js';

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
      const [a, b] = await Promise.all([client.execute<{ name: string }>('query-a'), client.execute<{ name: string }>('query-b')]);
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
