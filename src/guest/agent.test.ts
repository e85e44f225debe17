import { describe, it, expect, afterEach } from 'vitest';
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { createRunner } from '../system/runner.js';
import { isSameProcess, killProcess, readStartTime, waitForExit } from '../system/proc.js';
import { AgentCommandError, GuestAgent, connectAgent, waitForAgent } from './agent.js';

const tmpDirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'banger-qga-'));
  tmpDirs.push(d);
  return d;
}

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

type Cmd = { execute: string; arguments?: Record<string, unknown>; id?: string };

/**
 * A scripted stand-in for the agent's end of the channel. `onConnect` may
 * write stale bytes first; `respond` answers each command after the sync.
 */
function fakeAgent(opts: { onConnect?: (s: Socket) => void; respond: (cmd: Cmd, s: Socket) => void }): Promise<string> {
  const path = join(tmp(), 'qga.sock');
  const server = createServer((sock) => {
    sockets.push(sock);
    sock.on('error', () => undefined);
    opts.onConnect?.(sock);
    let buf = Buffer.alloc(0);
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      for (;;) {
        const ff = buf.indexOf(0xff);
        const nl = buf.indexOf(0x0a);
        if (ff >= 0 && (nl < 0 || ff < nl)) {
          // what qemu-ga does with the 0xFF: a parse error reply, parser reset
          sock.write('{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}\n');
          buf = buf.subarray(ff + 1);
          continue;
        }
        if (nl < 0) break;
        const cmd = JSON.parse(buf.subarray(0, nl).toString()) as Cmd;
        buf = buf.subarray(nl + 1);
        if (cmd.execute === 'guest-sync-delimited') {
          sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: cmd.arguments!.id }) + '\n')]));
        } else {
          opts.respond(cmd, sock);
        }
      }
    });
  });
  servers.push(server);
  return new Promise((resolve) => server.listen(path, () => resolve(path)));
}

const reply = (s: Socket, cmd: Cmd, value: unknown) => s.write(JSON.stringify({ return: value, id: cmd.id }) + '\n');

describe('GuestAgent (fake channel)', () => {
  it('skips stale replies, garbage and other clients\' syncs until its own sync id', async () => {
    const path = await fakeAgent({
      onConnect: (s) => {
        // left over from a previous client: a reply, half a reply, a stale sync answer
        s.write('{"return": {"pid": 5}, "id": "b0-1"}\n{"return": {"ex');
        s.write(Buffer.concat([Buffer.from([0xff]), Buffer.from('{"return": 424242}\n'), Buffer.from('garbage\n')]));
      },
      respond: (cmd, s) => reply(s, cmd, cmd.execute === 'guest-ping' ? {} : { echoed: cmd.execute }),
    });
    const agent = await GuestAgent.connect(path);
    try {
      await agent.ping();
      expect(await agent.execute('guest-info')).toEqual({ echoed: 'guest-info' });
    } finally {
      agent.close();
    }
  });

  it('a sync that never comes times out with a coded error', async () => {
    const path = join(tmp(), 'mute.sock');
    const server = createServer((s) => {
      sockets.push(s);
      s.on('error', () => undefined);
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(path, r));
    const t0 = Date.now();
    const err = await GuestAgent.connect(path, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect((err as BangerError).code).toBe('timeout');
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('drops a late reply to a timed-out command', async () => {
    let late: (() => void) | undefined;
    const path = await fakeAgent({
      respond: (cmd, s) => {
        if (cmd.execute === 'guest-slow') late = () => reply(s, cmd, 'late');
        else reply(s, cmd, 'fresh');
      },
    });
    const agent = await GuestAgent.connect(path);
    try {
      const err = await agent.execute('guest-slow', undefined, { timeoutMs: 100 }).catch((e: unknown) => e);
      expect((err as BangerError).code).toBe('timeout');
      late!();
      expect(await agent.execute('guest-info')).toBe('fresh');
    } finally {
      agent.close();
    }
  });

  it('exec polls exec-status and decodes output', async () => {
    let polls = 0;
    const path = await fakeAgent({
      respond: (cmd, s) => {
        if (cmd.execute === 'guest-exec') {
          expect(cmd.arguments).toMatchObject({ path: '/bin/x', arg: ['a b', "c'd"], 'capture-output': true, 'input-data': Buffer.from('in').toString('base64') });
          reply(s, cmd, { pid: 77 });
        } else if (cmd.execute === 'guest-exec-status') {
          polls++;
          if (polls < 3) reply(s, cmd, { exited: false });
          else
            reply(s, cmd, {
              exited: true,
              exitcode: 2,
              'out-data': Buffer.from('héllo\n').toString('base64'),
              'err-data': Buffer.from('oops\n').toString('base64'),
              'out-truncated': false,
            });
        }
      },
    });
    const agent = await GuestAgent.connect(path);
    try {
      const r = await agent.exec('/bin/x', ['a b', "c'd"], { input: 'in' });
      expect(r).toEqual({ exitCode: 2, signal: null, stdout: 'héllo\n', stderr: 'oops\n', stdoutTruncated: false, stderrTruncated: false });
      expect(polls).toBe(3);
    } finally {
      agent.close();
    }
  });

  it('exec gives up at its timeout', async () => {
    const path = await fakeAgent({
      respond: (cmd, s) => reply(s, cmd, cmd.execute === 'guest-exec' ? { pid: 1 } : { exited: false }),
    });
    const agent = await GuestAgent.connect(path);
    try {
      const err = await agent.exec('/bin/sleep', ['100'], { timeoutMs: 300 }).catch((e: unknown) => e);
      expect((err as BangerError).code).toBe('timeout');
      expect((err as BangerError).message).toContain('still running');
    } finally {
      agent.close();
    }
  });

  it('shutdown: a closed channel is success, silence is "no-reply", an error is thrown', async () => {
    const closing = await fakeAgent({ respond: (_cmd, s) => s.destroy() });
    const a = await GuestAgent.connect(closing);
    expect(await a.shutdown('powerdown')).toBe('closed');
    expect(a.closed).toBe(true);

    const silent = await fakeAgent({ respond: () => undefined });
    const b = await GuestAgent.connect(silent);
    expect(await b.shutdown('powerdown', 200)).toBe('no-reply');
    b.close();

    const failing = await fakeAgent({
      respond: (cmd, s) => s.write(JSON.stringify({ error: { class: 'GenericError', desc: 'child process has failed to shutdown' }, id: cmd.id }) + '\n'),
    });
    const c = await GuestAgent.connect(failing);
    const err = await c.shutdown().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentCommandError);
    expect((err as AgentCommandError).message).toContain('failed to shutdown');
    c.close();
  });

  it('sync runs /bin/sync and insists on exit 0', async () => {
    const seen: string[] = [];
    const path = await fakeAgent({
      respond: (cmd, s) => {
        if (cmd.execute === 'guest-exec') {
          seen.push(String(cmd.arguments!.path));
          reply(s, cmd, { pid: 9 });
        } else reply(s, cmd, { exited: true, exitcode: seen.length === 1 ? 0 : 1 });
      },
    });
    const agent = await GuestAgent.connect(path);
    try {
      await agent.sync();
      expect(seen).toEqual(['/bin/sync']);
      await expect(agent.sync()).rejects.toMatchObject({ code: 'operation_failed' });
    } finally {
      agent.close();
    }
  });

  it('waitForAgent retries until the socket appears and the agent answers', async () => {
    const dir = tmp();
    const path = join(dir, 'late.sock');
    // nothing there yet: bounded, coded
    const t0 = Date.now();
    const err = await waitForAgent(path, Date.now() + 400).catch((e: unknown) => e);
    expect((err as BangerError).code).toBe('timeout');
    expect(Date.now() - t0).toBeLessThan(2000);

    // a socket that accepts but stays mute first (agent not started), then a real answer
    let connections = 0;
    const server = createServer((sock) => {
      sockets.push(sock);
      sock.on('error', () => undefined);
      connections++;
      if (connections < 2) return; // mute
      sock.on('data', (c: Buffer) => {
        for (const line of c.toString('latin1').split('\n')) {
          const json = line.replace(/^\xff/, '');
          if (!json.trim()) continue;
          const cmd = JSON.parse(json) as Cmd;
          if (cmd.execute === 'guest-sync-delimited') sock.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(JSON.stringify({ return: cmd.arguments!.id }) + '\n')]));
          else reply(sock, cmd, {});
        }
      });
    });
    servers.push(server);
    setTimeout(() => server.listen(path), 200);
    await waitForAgent(path, Date.now() + 10_000);
    expect(connections).toBeGreaterThanOrEqual(2);
  }, 20_000);

  it('waitForAgent stops when aborted', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const err = await waitForAgent(join(tmp(), 'never.sock'), Date.now() + 10_000, ac.signal).catch((e: unknown) => e);
    expect((err as BangerError).code).toBe('interrupted');
  });
});

// ---- against the real qemu-guest-agent ---------------------------------

function findQemuGa(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin', '/sbin'];
  for (const d of dirs) {
    const p = join(d, 'qemu-ga');
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

const qemuGa = findQemuGa();
const skipReason = qemuGa ? undefined : 'qemu-ga is not installed (apt-get install qemu-guest-agent)';

describe('GuestAgent (real qemu-ga on this host)', () => {
  const runner = createRunner();
  let ga: { pid: number; start: string | null } | undefined;

  afterEach(async () => {
    if (ga?.start && isSameProcess(ga.pid, ga.start)) {
      killProcess(ga.pid, ga.start, 'SIGKILL');
      await waitForExit(ga.pid, ga.start, 5000);
    }
    ga = undefined;
  });

  function startAgent(): string {
    const dir = tmp();
    const sock = join(dir, 'qga.sock');
    const pid = runner.spawnDetached(
      [
        qemuGa!,
        '-m', 'unix-listen',
        '-p', sock,
        '-f', join(dir, 'qga.pid'),
        '-t', dir,
        // it runs on the HOST here: make sure nothing can power it off or freeze it
        '-b', 'guest-shutdown,guest-suspend-disk,guest-suspend-ram,guest-suspend-hybrid,guest-set-time,guest-fsfreeze-freeze,guest-fsfreeze-freeze-list,guest-set-user-password,guest-set-vcpus,guest-set-memory-blocks',
      ],
      { logPath: join(dir, 'qga.log') },
    );
    ga = { pid, start: readStartTime(pid) };
    return sock;
  }

  it('ping, exec with exit codes and output, sync', async (ctx) => {
    if (skipReason) {
      console.warn(`skipping the real guest-agent test: ${skipReason}`);
      ctx.skip(skipReason);
    }
    const sock = startAgent();
    await waitForAgent(sock, Date.now() + 15_000);

    const agent = await connectAgent(sock, { deadlineMs: Date.now() + 10_000 });
    try {
      await agent.ping();

      const hi = await agent.exec('/bin/echo', ['hi'], { captureOutput: true });
      expect(hi).toMatchObject({ exitCode: 0, signal: null, stdout: 'hi\n', stderr: '' });

      const three = await agent.exec('/bin/sh', ['-c', 'exit 3']);
      expect(three.exitCode).toBe(3);

      const quoting = await agent.exec('/bin/sh', ['-c', 'printf "%s|" "$@"; echo oops >&2', 'sh', 'a b', "it's", '$HOME']);
      expect(quoting.stdout).toBe("a b|it's|$HOME|");
      expect(quoting.stderr).toBe('oops\n');

      const stdin = await agent.exec('/bin/cat', [], { input: 'from stdin\n' });
      expect(stdin.stdout).toBe('from stdin\n');

      const killed = await agent.exec('/bin/sh', ['-c', 'kill -9 $$']);
      expect(killed).toMatchObject({ exitCode: null, signal: 9 });

      const missing = await agent.exec('/no/such/binary').catch((e: unknown) => e);
      expect(missing).toBeInstanceOf(AgentCommandError);

      const disabled = await agent.execute('guest-set-time').catch((e: unknown) => e);
      expect((disabled as AgentCommandError).errorClass).toBe('CommandNotFound');

      await agent.sync();
    } finally {
      agent.close();
    }
  });

  it('a new client syncs after one that left half a request behind', async (ctx) => {
    if (skipReason) ctx.skip(skipReason);
    const sock = startAgent();
    await waitForAgent(sock, Date.now() + 15_000);
    // a rude client: half a command and a full one whose reply it never reads
    await new Promise<void>((resolve, reject) => {
      const s = createConnection(sock, () => {
        s.write('{"execute":"guest-exec","arguments":{"path":"/bin/true"}}\n{"execute":"guest-pi');
        setTimeout(() => {
          s.destroy();
          resolve();
        }, 100);
      });
      s.on('error', reject);
    });
    const agent = await connectAgent(sock, { deadlineMs: Date.now() + 10_000 });
    try {
      const r = await agent.exec('/bin/echo', ['still fine']);
      expect(r.stdout).toBe('still fine\n');
    } finally {
      agent.close();
    }
  });
});
