import { describe, it, expect, afterEach, beforeEach } from 'vitest';
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { BangerError, ERROR_CODES } from '../errors/errors.js';
import { createRunner } from '../system/runner.js';
import { isSameProcess, killProcess, readStartTime, waitForExit } from '../system/proc.js';
import { AGENT_MAX_LINE_BYTES, AgentCommandError, GuestAgent, connectAgent, waitForAgent } from './agent.js';
import { prng, watchCrashes } from '../../test/support/hostile.js';
import { serveAgentChannel, type AgentCmd } from '../../test/support/fake-qga.js';

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

type Cmd = AgentCmd;

/**
 * A scripted stand-in for the agent's end of the channel. `onConnect` may
 * write stale bytes first; `respond` answers each command after the sync.
 */
async function fakeAgent(opts: { onConnect?: (s: Socket) => void; respond: (cmd: Cmd, s: Socket) => void }): Promise<string> {
  const path = join(tmp(), 'qga.sock');
  servers.push(await serveAgentChannel(path, (cmd, r) => opts.respond(cmd, r.sock), { ...(opts.onConnect ? { onConnect: opts.onConnect } : {}), parseErrorOnDelimiter: true, sockets }));
  return path;
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

// ---- against a hostile guest ---------------------------------------------



/** What a well-behaved agent answers to the commands exec and ping use. */
function goodReply(cmd: Cmd): unknown {
  if (cmd.execute === 'guest-exec') return { pid: 7 };
  if (cmd.execute === 'guest-exec-status') return { exited: true, exitcode: 0, 'out-data': Buffer.from('ok\n').toString('base64') };
  return {};
}

/**
 * A fake agent whose FIRST connection is hostile (`hostile` decides what it
 * writes for each command; returning false means "then answer properly")
 * and whose later connections behave. `serverSockets` lets a test see the
 * hostile connection being closed from the agent's side.
 */
async function hostileAgent(hostile: (cmd: Cmd, s: Socket) => boolean | void): Promise<{ path: string; first: () => Socket | undefined }> {
  let first: Socket | undefined;
  const path = await fakeAgent({
    onConnect: (s) => {
      first ??= s;
    },
    respond: (cmd, s) => {
      if (s === first && hostile(cmd, s) !== false) return;
      reply(s, cmd, goodReply(cmd));
    },
  });
  return { path, first: () => first };
}

const line = (v: unknown) => JSON.stringify(v) + '\n';

interface HostileCase {
  name: string;
  /** The command the guest lies about. */
  on: 'guest-exec' | 'guest-exec-status';
  write: (cmd: Cmd, s: Socket) => void;
  code: string;
  message: RegExp;
  /** The client drops the connection. */
  closes: boolean;
}

const HOSTILE_CASES: HostileCase[] = [
  ...['null', '[]', '42', '"x"', 'true'].map(
    (raw): HostileCase => ({ name: `the line ${raw}`, on: 'guest-exec', write: (_c, s) => s.write(raw + '\n'), code: 'operation_failed', message: /not a JSON object/, closes: true }),
  ),
  { name: 'a line that is not JSON', on: 'guest-exec', write: (_c, s) => s.write('{"return": {"pid": 1}, "id": \n'), code: 'operation_failed', message: /not JSON/, closes: true },
  {
    name: '{"return": "wrong type"} for guest-exec',
    on: 'guest-exec',
    write: (c, s) => s.write(line({ return: 'wrong type', id: c.id })),
    code: 'operation_failed',
    message: /the guest agent sent a malformed reply to guest-exec/,
    closes: false,
  },
  {
    name: 'a pid that is not a positive integer',
    on: 'guest-exec',
    write: (c, s) => s.write(line({ return: { pid: -1.5 }, id: c.id })),
    code: 'operation_failed',
    message: /malformed reply to guest-exec: pid/,
    closes: false,
  },
  {
    name: 'guest-exec-status with fields of the wrong type',
    on: 'guest-exec-status',
    write: (c, s) => s.write(line({ return: { exited: true, exitcode: '0', 'out-data': 5 }, id: c.id })),
    code: 'operation_failed',
    message: /malformed reply to guest-exec-status/,
    closes: false,
  },
  {
    name: 'guest-exec-status with "exited" missing',
    on: 'guest-exec-status',
    write: (c, s) => s.write(line({ return: { exitcode: 0 }, id: c.id })),
    code: 'operation_failed',
    message: /malformed reply to guest-exec-status: exited/,
    closes: false,
  },
  { name: '{"error": null}', on: 'guest-exec', write: (c, s) => s.write(line({ error: null, id: c.id })), code: 'operation_failed', message: /"error" is not \{class, desc\}/, closes: false },
  {
    name: 'an error whose class and desc are not strings',
    on: 'guest-exec',
    write: (c, s) => s.write(line({ error: { class: {}, desc: [1] }, id: c.id })),
    code: 'operation_failed',
    message: /malformed reply/,
    closes: false,
  },
  { name: 'a reply with neither return nor error', on: 'guest-exec', write: (c, s) => s.write(line({ id: c.id })), code: 'operation_failed', message: /neither/, closes: false },
  // ignored (not an answer of ours): the command times out, the connection stays
  { name: '{"id": {}}', on: 'guest-exec', write: (_c, s) => s.write(line({ id: {}, return: { pid: 1 } })), code: 'timeout', message: /no answer/, closes: false },
  { name: 'an id-less reply', on: 'guest-exec', write: (_c, s) => s.write(line({ return: { pid: 1 } })), code: 'timeout', message: /no answer/, closes: false },
  {
    name: 'a line over the limit (no newline yet)',
    on: 'guest-exec-status',
    write: (_c, s) => s.write(Buffer.alloc(AGENT_MAX_LINE_BYTES + 1, 0x61)),
    code: 'operation_failed',
    message: /longer than 4194304 bytes/,
    closes: true,
  },
  {
    name: 'deep nesting',
    on: 'guest-exec',
    write: (c, s) => s.write(`{"return": ${'['.repeat(200_000)}${']'.repeat(200_000)}, "id": ${JSON.stringify(c.id)}}\n`),
    code: 'operation_failed',
    message: /nested deeper than/,
    closes: true,
  },
  {
    name: 'a 0xFF inside a reply',
    on: 'guest-exec',
    write: (c, s) => s.write(Buffer.concat([Buffer.from('{"return": {"pid":'), Buffer.from([0xff]), Buffer.from(` 7}, "id": ${JSON.stringify(c.id)}}\n`)])),
    code: 'operation_failed',
    message: /not JSON/,
    closes: true,
  },
  {
    name: 'a partial line, then the channel closes',
    on: 'guest-exec-status',
    write: (_c, s) => s.end('{"return": {"exited": tr'),
    code: 'unavailable',
    message: /closed/,
    closes: true,
  },
];

describe('GuestAgent against a hostile guest (fake channel)', () => {
  let watch: ReturnType<typeof watchCrashes>;
  beforeEach(() => {
    watch = watchCrashes();
  });
  afterEach(() => {
    watch.stop();
    expect(watch.crashes).toEqual([]);
  });

  /** After the hostile connection: a fresh one to the same socket works. */
  async function freshConnectionWorks(path: string): Promise<void> {
    const agent = await GuestAgent.connect(path);
    try {
      await agent.ping();
      expect(await agent.exec('/bin/x')).toMatchObject({ exitCode: 0, stdout: 'ok\n' });
    } finally {
      agent.close();
    }
  }

  for (const c of HOSTILE_CASES) {
    it(`${c.name}: that request fails with a coded error, nothing crashes`, async () => {
      const fake = await hostileAgent((cmd, s) => {
        if (cmd.execute !== c.on) return false;
        c.write(cmd, s);
      });
      const agent = await GuestAgent.connect(fake.path, { commandTimeoutMs: 300 });
      const serverClosed = new Promise<void>((r) => fake.first()!.once('close', () => r()));
      try {
        const err = await agent.exec('/bin/x', [], { timeoutMs: 5000 }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(BangerError);
        expect((err as BangerError).code).toBe(c.code);
        expect((err as BangerError).message).toMatch(c.message);
        expect((err as BangerError).message.length).toBeLessThan(600);
        expect(agent.closed).toBe(c.closes);
        if (c.closes) await serverClosed; // the guest's end sees the drop too
        else await agent.ping(); // the same connection still serves the next request
      } finally {
        agent.close();
      }
      await freshConnectionWorks(fake.path);
    });
  }

  it('a guest error with a huge desc becomes a clipped AgentCommandError', async () => {
    const fake = await hostileAgent((cmd, s) => {
      if (cmd.execute !== 'guest-exec') return false;
      s.write(line({ error: { class: 'GenericError', desc: 'spam '.repeat(200_000) }, id: cmd.id }));
    });
    const agent = await GuestAgent.connect(fake.path);
    try {
      const err = await agent.exec('/bin/x').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AgentCommandError);
      expect((err as AgentCommandError).message.length).toBeLessThan(400);
    } finally {
      agent.close();
    }
  });

  it('a failed sync in the guest clips its stderr', async () => {
    const fake = await hostileAgent((cmd, s) => {
      if (cmd.execute !== 'guest-exec-status') return false;
      reply(s, cmd, { exited: true, exitcode: 1, 'err-data': Buffer.from('e'.repeat(100_000)).toString('base64') });
    });
    const agent = await GuestAgent.connect(fake.path);
    try {
      const err = (await agent.sync().catch((e: unknown) => e)) as BangerError;
      expect(err.code).toBe('operation_failed');
      expect(err.message.length).toBeLessThan(400);
    } finally {
      agent.close();
    }
  });

  it('0xFF bytes between replies and a flood of stray lines are ignored', async () => {
    const fake = await hostileAgent((cmd, s) => {
      const stray: string[] = [];
      for (let i = 0; i < 5000; i++) stray.push(line({ return: { pid: i }, id: `someone-else-${i}` }), line({ error: { class: 'GenericError', desc: 'parse error' } }));
      s.write(stray.join(''));
      s.write(Buffer.from([0xff, 0xff]));
      s.write(Buffer.concat([Buffer.from('{"half": '), Buffer.from([0xff]), Buffer.from(line({ return: goodReply(cmd), id: cmd.id }))]));
    });
    const agent = await GuestAgent.connect(fake.path);
    try {
      expect(await agent.exec('/bin/x')).toMatchObject({ exitCode: 0, stdout: 'ok\n' });
      expect(agent.closed).toBe(false);
    } finally {
      agent.close();
    }
  });

  it('garbage as the sync reply: connect fails with a coded error, nothing crashes', async () => {
    const answers: Array<Buffer | string> = [
      Buffer.from([0xff, ...Buffer.from('null\n')]),
      Buffer.from([0xff, ...Buffer.from('[]\n')]),
      Buffer.from([0xff, ...Buffer.from('{"return": "x"}\n')]),
      Buffer.from([0xff, ...Buffer.from('{"return": {"id": 1}}\n')]),
      Buffer.from([0xff, ...Buffer.from('[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n')]),
      '{"return": 1}\n',
    ];
    for (const a of answers) {
      const path = join(tmp(), 'bad-sync.sock');
      const server = createServer((s) => {
        sockets.push(s);
        s.on('error', () => undefined);
        s.on('data', () => s.write(a));
      });
      servers.push(server);
      await new Promise<void>((r) => server.listen(path, r));
      const err = await GuestAgent.connect(path, { timeoutMs: 200 }).catch((e: unknown) => e);
      expect((err as BangerError).code).toBe('timeout');
    }
  });

  it('fuzz: a few hundred random frames from the guest never crash the client or hand it a wrong type', async () => {
    const rand = prng(0xba11);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const keys = ['return', 'error', 'id', 'class', 'desc', 'pid', 'exited', 'exitcode', 'signal', 'out-data', 'err-data', 'out-truncated', '__proto__', 'constructor'];
    const value = (depth: number): unknown => {
      const r = rand();
      if (depth > 3 || r < 0.35) return pick([null, true, false, 0, -1, 1.5, 2 ** 53, 'x', '', '\u0000', 'é😀', 'a'.repeat(300)]);
      if (r < 0.55) return Array.from({ length: Math.floor(rand() * 4) }, () => value(depth + 1));
      const o: Record<string, unknown> = {};
      for (let i = Math.floor(rand() * 4); i > 0; i--) o[pick(keys)] = value(depth + 1);
      return o;
    };
    const MAX = 64 * 1024;
    const frame = (cmd: Cmd): Buffer => {
      const own = (body: Record<string, unknown>) => Buffer.from(line({ ...body, id: cmd.id }));
      switch (Math.floor(rand() * 10)) {
        case 0:
          return Buffer.from(line(value(0)));
        case 1:
          return own({ return: value(1) });
        case 2:
          return own({ error: value(1) });
        case 3:
          return Buffer.from(Array.from({ length: Math.floor(rand() * 64) }, () => pick([0xff, 0x0a, 0x7b, 0x22, 0x00, Math.floor(rand() * 256)])));
        case 4:
          return Buffer.from('['.repeat(1 + Math.floor(rand() * 5000)) + '\n');
        case 5:
          return Buffer.alloc(MAX + Math.floor(rand() * 100), 0x20);
        case 6: {
          const good = own({ return: goodReply(cmd) });
          const at = Math.floor(rand() * good.length);
          return Buffer.concat([good.subarray(0, at), Buffer.from([0xff]), good.subarray(at)]);
        }
        case 7:
          return Buffer.from(Array.from({ length: 50 }, () => line(value(0))).join(''));
        case 8:
          return own({ return: { ...(goodReply(cmd) as object), [pick(keys)]: value(1) } });
        default:
          return Buffer.from(line({ return: value(1), id: pick([cmd.id, 'other', 1, null, {}]) }));
      }
    };
    let frames = 0;
    const fake = await fakeAgent({
      respond: (cmd, s) => {
        frames++;
        if (rand() < 0.05) return void s.end(frame(cmd).subarray(0, 10)); // half a frame, then close
        s.write(frame(cmd));
        if (cmd.execute === 'guest-exec-status' || rand() < 0.85) reply(s, cmd, goodReply(cmd));
      },
    });
    const t0 = Date.now();
    let agent: GuestAgent | undefined;
    let connections = 0;
    const outcomes = { ok: 0, coded: 0 };
    while (frames < 300) {
      if (!agent || agent.closed) {
        agent?.close();
        agent = await GuestAgent.connect(fake, { commandTimeoutMs: 100, maxLineBytes: MAX });
        connections++;
      }
      try {
        if (rand() < 0.5) {
          await agent.ping();
        } else {
          const r = await agent.exec('/bin/x', [], { timeoutMs: 3000 });
          // whatever the guest sent, a result has exactly the promised types
          expect(r.exitCode === null || Number.isInteger(r.exitCode)).toBe(true);
          expect(r.signal === null || Number.isInteger(r.signal)).toBe(true);
          expect(typeof r.stdout).toBe('string');
          expect(typeof r.stderr).toBe('string');
          expect(typeof r.stdoutTruncated).toBe('boolean');
        }
        outcomes.ok++;
      } catch (e) {
        expect(e).toBeInstanceOf(BangerError);
        expect(ERROR_CODES).toContain((e as BangerError).code);
        outcomes.coded++;
      }
    }
    agent?.close();
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(outcomes.ok).toBeGreaterThan(10);
    expect(outcomes.coded).toBeGreaterThan(10);
    expect(connections).toBeGreaterThan(5);
    // and a well-behaved agent on a fresh connection still answers
    const good = await fakeAgent({ respond: (cmd, s) => reply(s, cmd, goodReply(cmd)) });
    await freshConnectionWorks(good);
  });
});
