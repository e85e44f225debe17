/**
 * sshExec / waitForSsh / sshCommandArgs against a REAL sshd started here
 * (own host keys, own AuthorizedKeysFile, loopback only), killed by pid.
 */
import { describe, it, expect, beforeAll, afterAll, vi } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRunner } from '../system/runner.js';
import { freeLoopbackPort } from '../system/ports.js';
import { shellJoin } from '../model/quote.js';
import { BangerError } from '../errors/errors.js';
import { ensureKeypair } from './keys.js';
import { removeHost, lookupHost } from './known-hosts.js';
import { sshCommandArgs, sshExec, waitForSsh, type SshTarget } from './ssh.js';

// Lets one test make the host verifier's read-only check miss a pin, as if
// another process pinned between key exchange and login.
const hidePins = vi.hoisted(() => ({ on: false }));
vi.mock('./known-hosts.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('./known-hosts.js')>();
  return {
    ...real,
    checkHost: (...args: Parameters<typeof real.checkHost>) => (hidePins.on ? 'unknown' : real.checkHost(...args)),
  };
});

const SSHD = '/usr/sbin/sshd';
const hasSshd = existsSync(SSHD);
if (!hasSshd) {
  console.warn(`[ssh.test] SKIPPED: ${SSHD} is missing (apt-get install -y openssh-server to run these tests)`);
}

const runner = createRunner();

interface Sshd {
  port: number;
  pid: number;
  config: string;
  log: string;
  hostPub: string; // base64 blob of its host key
}

function collector() {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(Buffer.from(c));
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString('utf8'), bytes: () => Buffer.concat(chunks).length };
}

async function waitForBanner(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port });
      s.setTimeout(1000);
      s.once('data', (d) => {
        s.destroy();
        resolve(d.toString().startsWith('SSH-2.0'));
      });
      s.once('error', () => resolve(false));
      s.once('timeout', () => {
        s.destroy();
        resolve(false);
      });
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`sshd on port ${port} did not come up`);
}

/** Pids of processes whose command line names this config (the listener and any session children). */
function pidsUsing(config: string): number[] {
  const pids: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
      if (cmd.includes(config)) pids.push(Number(d));
    } catch {
      // gone
    }
  }
  return pids;
}

async function stopSshd(s: Sshd): Promise<void> {
  for (const pid of new Set([s.pid, ...pidsUsing(s.config)])) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && pidsUsing(s.config).length > 0) await sleep(50);
  for (const pid of pidsUsing(s.config)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

describe.skipIf(!hasSshd)('ssh against a real sshd', () => {
  let serverDir: string; // sshd's files (no odd characters: sshd's own config is not our concern)
  let clientDir: string; // banger's files, in a path with a space and a % on purpose
  let key: { privateKeyPath: string; publicKey: string };
  let knownHosts: string;
  let a: Sshd;
  let b: Sshd;
  const started: Sshd[] = [];
  const user = userInfo().username;

  async function startSshd(name: string, port?: number): Promise<Sshd> {
    const hostKey = join(serverDir, `host_${name}`);
    if (!existsSync(hostKey)) {
      await runner.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', `test-${name}`, '-f', hostKey]);
    }
    const p = port ?? (await freeLoopbackPort());
    const config = join(serverDir, `sshd_${name}.conf`);
    const log = join(serverDir, `sshd_${name}.log`);
    writeFileSync(
      config,
      [
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${join(serverDir, 'authorized_keys')}`,
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'StrictModes no',
        'PidFile none',
        'UseDNS no',
        'PrintMotd no',
        'PrintLastLog no',
        'MaxStartups 100',
        'LogLevel VERBOSE',
        '',
      ].join('\n'),
    );
    await runner.run([SSHD, '-t', '-f', config]);
    const pid = runner.spawnDetached([SSHD, '-D', '-e', '-f', config, '-p', String(p)], { logPath: log });
    const s: Sshd = {
      port: p,
      pid,
      config,
      log,
      hostPub: readFileSync(`${hostKey}.pub`, 'utf8').split(' ')[1]!,
    };
    started.push(s);
    await waitForBanner(p);
    return s;
  }

  const target = (s: Sshd, alias = 'alpha.vm'): SshTarget => ({
    host: '127.0.0.1',
    port: s.port,
    user,
    privateKeyPath: key.privateKeyPath,
    knownHostsPath: knownHosts,
    hostKeyAlias: alias,
  });

  async function exec(t: SshTarget, command: string, stdin?: NodeJS.ReadableStream) {
    const out = collector();
    const err = collector();
    const r = await sshExec(t, command, { stdout: out.stream, stderr: err.stream, stdin });
    return { ...r, stdout: out.text(), stderr: err.text() };
  }

  beforeAll(async () => {
    if (process.getuid?.() === 0) mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    serverDir = mkdtempSync(join(tmpdir(), 'banger-sshd-'));
    clientDir = mkdtempSync(join(tmpdir(), 'banger client %d-'));
    key = await ensureKeypair(runner, join(clientDir, 'ssh', 'id_ed25519'));
    writeFileSync(join(serverDir, 'authorized_keys'), `${key.publicKey}\n`);
    knownHosts = join(clientDir, 'ssh', 'known_hosts');
    a = await startSshd('a');
    b = await startSshd('b');
  }, 60_000);

  afterAll(async () => {
    for (const s of started) await stopSshd(s);
    for (const s of started) expect(pidsUsing(s.config)).toEqual([]);
    if (serverDir) rmSync(serverDir, { recursive: true, force: true });
    if (clientDir) rmSync(clientDir, { recursive: true, force: true });
  }, 20_000);

  it('pins the host key on first connect, then matches it', async () => {
    expect(existsSync(knownHosts)).toBe(false);
    const r1 = await exec(target(a), 'echo first');
    expect(r1).toMatchObject({ exitCode: 0, stdout: 'first\n' });
    expect(readFileSync(knownHosts, 'utf8')).toBe(`alpha.vm ssh-ed25519 ${a.hostPub}\n`);
    const r2 = await exec(target(a), 'echo second');
    expect(r2).toMatchObject({ exitCode: 0, stdout: 'second\n' });
    expect(readFileSync(knownHosts, 'utf8')).toBe(`alpha.vm ssh-ed25519 ${a.hostPub}\n`);
  });

  it('refuses a changed host key before logging in: no command runs', async () => {
    await exec(target(a), 'true'); // make sure alpha.vm is pinned to A
    const marker = join(serverDir, 'marker-mismatch');
    const before = readFileSync(knownHosts, 'utf8');
    // B has another host key: to banger it is "alpha.vm" replaced or intercepted.
    const err = await exec(target(b), shellJoin(['touch', marker])).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BangerError);
    const e = err as BangerError;
    expect(e.code).toBe('host_key_mismatch');
    expect(e.message).toContain('VM alpha (alpha.vm)');
    expect(e.message).toMatch(/expected SHA256:\S+ \(ssh-ed25519\), but it presented SHA256:\S+/);
    expect(e.message).toMatch(/replaced/);
    expect(e.message).toMatch(/intercepting/);
    expect(e.hint).toContain('banger vm delete -f alpha');
    expect(e.hint).toContain(knownHosts);
    await sleep(300); // give a (wrongly) started command time to run
    expect(existsSync(marker)).toBe(false);
    expect(readFileSync(knownHosts, 'utf8')).toBe(before);
    // B's own log shows no login at all.
    expect(readFileSync(b.log, 'utf8')).not.toMatch(/Accepted publickey/);
  });

  it('a connection cut before the SSH handshake is tried again, up to 3 more times (nothing ran yet); a fourth cut fails', async () => {
    // A proxy in front of sshd A that drops the first `drops` connections at once, then forwards.
    const proxy = async (drops: number, reset = false) => {
      let seen = 0;
      const server = createServer((c) => {
        if (seen++ < drops) return void (reset ? c.resetAndDestroy() : c.destroy());
        const up = createConnection(a.port, '127.0.0.1');
        c.pipe(up).pipe(c);
        up.on('error', () => c.destroy());
        c.on('error', () => up.destroy());
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      return { server, port: (server.address() as { port: number }).port, seen: () => seen };
    };
    await exec(target(a), 'true'); // alpha.vm pinned to A
    const once = await proxy(1);
    try {
      const r = await exec({ ...target(a), port: once.port }, 'echo second-try');
      expect(r).toMatchObject({ exitCode: 0, stdout: 'second-try\n' });
      expect(once.seen()).toBe(2);
    } finally {
      once.server.close();
    }
    // A reset (RST: ECONNRESET on the client, as a bridge clone's guest once sent) is retried the same way.
    const reset = await proxy(1, true);
    try {
      const r = await exec({ ...target(a), port: reset.port }, 'echo after-reset');
      expect(r).toMatchObject({ exitCode: 0, stdout: 'after-reset\n' });
      expect(reset.seen()).toBe(2);
    } finally {
      reset.server.close();
    }
    const thrice = await proxy(3);
    try {
      expect(await exec({ ...target(a), port: thrice.port }, 'echo fourth-try')).toMatchObject({ exitCode: 0, stdout: 'fourth-try\n' });
      expect(thrice.seen()).toBe(4);
    } finally {
      thrice.server.close();
    }
    const twice = await proxy(4);
    try {
      const e = (await exec({ ...target(a), port: twice.port }, 'true').catch((x: unknown) => x)) as BangerError;
      expect(e).toBeInstanceOf(BangerError);
      expect(e.code).toBe('unavailable');
      expect(e.message).toMatch(/before the SSH handshake/);
      expect(twice.seen()).toBe(4);
    } finally {
      twice.server.close();
    }
  });

  it('passes exit codes through exactly, including signals as 128+n', async () => {
    expect((await exec(target(a), 'exit 0')).exitCode).toBe(0);
    expect((await exec(target(a), 'exit 42')).exitCode).toBe(42);
    expect((await exec(target(a), shellJoin(['sh', '-c', 'exit 42']))).exitCode).toBe(42);
    const killed = await exec(target(a), 'kill -KILL $$');
    expect(killed).toMatchObject({ exitCode: 137, signal: 'SIGKILL' });
  });

  const nasty = ['a b', "it's", 'say "hi"', '$HOME', 'line1\nline2', '', 'back\\slash', '*', '; exit 3', '`id`'];
  const expected = nasty.map((s) => `[${s}]\n`).join('');

  it('delivers arguments byte-identical via shellJoin', async () => {
    const r = await exec(target(a), shellJoin(['printf', '[%s]\\n', ...nasty]));
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(expected);
  });

  it('keeps stdout and stderr apart and streams large output', async () => {
    const r = await exec(target(a), 'echo out; echo err >&2; echo out2');
    expect(r).toMatchObject({ exitCode: 0, stdout: 'out\nout2\n', stderr: 'err\n' });
    const out = collector();
    const big = await sshExec(target(a), 'head -c 3000000 /dev/zero', { stdout: out.stream, stderr: collector().stream });
    expect(big.exitCode).toBe(0);
    expect(out.bytes()).toBe(3_000_000);
  });

  it('forwards stdin, and sends EOF when there is none', async () => {
    const r = await exec(target(a), 'cat; echo done', Readable.from([Buffer.from('hello\n'), Buffer.from('world\n')]));
    expect(r).toMatchObject({ exitCode: 0, stdout: 'hello\nworld\ndone\n' });
    const big = Buffer.alloc(1_000_000, 'x');
    const r2 = await exec(target(a), 'wc -c', Readable.from([big]));
    expect(r2.stdout.trim()).toBe('1000000');
    const r3 = await exec(target(a), 'cat; echo eof');
    expect(r3).toMatchObject({ exitCode: 0, stdout: 'eof\n' });
  });

  it('aborts a running command when the signal fires', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 300);
    const err = await sshExec(target(a), 'sleep 30', {
      stdout: collector().stream,
      stderr: collector().stream,
      signal: ac.signal,
    }).catch((e: unknown) => e);
    expect((err as BangerError).code).toBe('interrupted');
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('works with the OpenSSH client via sshCommandArgs and the same pinned file', async () => {
    await exec(target(a), 'true'); // pinned by banger (ssh2)
    const r = await runner.run(['ssh', ...sshCommandArgs(target(a), ['printf', '[%s]\\n', ...nasty])], {
      timeoutMs: 15_000,
    });
    expect(r.stdout).toBe(expected);
    const exit = await runner.run(['ssh', ...sshCommandArgs(target(a), ['sh', '-c', 'exit 42'])], {
      allowFailure: true,
      timeoutMs: 15_000,
    });
    expect(exit.code).toBe(42);
    // `--` keeps a command that starts with "-" from being read as an ssh option (`ssh -V` would print a version).
    const dash = await runner.run(['ssh', ...sshCommandArgs(target(a), ['-V'])], { allowFailure: true, timeoutMs: 15_000 });
    expect(dash.code).not.toBe(0);
    expect(dash.stderr).not.toContain('OpenSSH_');
  });

  it('OpenSSH refuses the changed key and an unpinned alias (StrictHostKeyChecking=yes)', async () => {
    await exec(target(a), 'true');
    const marker = join(serverDir, 'marker-openssh');
    const changed = await runner.run(['ssh', ...sshCommandArgs(target(b), ['touch', marker])], {
      allowFailure: true,
      timeoutMs: 15_000,
    });
    expect(changed.code).toBe(255);
    expect(existsSync(marker)).toBe(false);
    const unknown = await runner.run(['ssh', ...sshCommandArgs(target(a, 'never-pinned.vm'), ['touch', marker])], {
      allowFailure: true,
      timeoutMs: 15_000,
    });
    expect(unknown.code).toBe(255);
    expect(existsSync(marker)).toBe(false);
    expect(lookupHost(knownHosts, 'never-pinned.vm')).toEqual([]);
  });

  it('removeHost drops the pin and the next connect re-pins the new key', async () => {
    await exec(target(a), 'true');
    expect(removeHost(knownHosts, 'alpha.vm')).toBe(1);
    expect(lookupHost(knownHosts, 'alpha.vm')).toEqual([]);
    const r = await exec(target(b), 'echo replaced');
    expect(r.stdout).toBe('replaced\n');
    expect(lookupHost(knownHosts, 'alpha.vm')).toEqual([{ keyType: 'ssh-ed25519', keyBase64: b.hostPub }]);
    // and OpenSSH agrees with the new pin
    const o = await runner.run(['ssh', ...sshCommandArgs(target(b), ['echo', 'ok'])], { timeoutMs: 15_000 });
    expect(o.stdout).toBe('ok\n');
    // back to A for the other tests
    removeHost(knownHosts, 'alpha.vm');
    await exec(target(a), 'true');
  });

  it('pins each alias separately, also when connections race', async () => {
    const aliases = ['race-1.vm', 'race-2.vm', 'race-3.vm'];
    const results = await Promise.all(
      aliases.flatMap((al) => [exec(target(a, al), 'echo x'), exec(target(a, al), 'echo x')]),
    );
    for (const r of results) expect(r.stdout).toBe('x\n');
    for (const al of aliases) expect(lookupHost(knownHosts, al)).toEqual([{ keyType: 'ssh-ed25519', keyBase64: a.hostPub }]);
  });

  it('a pin that appears between key exchange and login still refuses before authentication', async () => {
    await exec(target(a), 'true'); // alpha.vm pinned to A
    const marker = join(serverDir, 'marker-late-pin');
    const logBefore = readFileSync(b.log, 'utf8').length;
    hidePins.on = true;
    try {
      const err = await exec(target(b), shellJoin(['touch', marker])).catch((e: unknown) => e);
      expect((err as BangerError).code).toBe('host_key_mismatch');
    } finally {
      hidePins.on = false;
    }
    await sleep(300);
    expect(existsSync(marker)).toBe(false);
    expect(readFileSync(b.log, 'utf8').slice(logBefore)).not.toMatch(/Accepted publickey/);
    expect(lookupHost(knownHosts, 'alpha.vm')).toEqual([{ keyType: 'ssh-ed25519', keyBase64: a.hostPub }]);
  });

  it('two different keys racing for the same fresh alias: one pins, the other is refused before login', async () => {
    for (let round = 0; round < 5; round++) {
      const alias = `contest-${round}.vm`;
      const markA = join(serverDir, `contest-a-${round}`);
      const markB = join(serverDir, `contest-b-${round}`);
      const [ra, rb] = await Promise.allSettled([
        exec(target(a, alias), shellJoin(['touch', markA])),
        exec(target(b, alias), shellJoin(['touch', markB])),
      ]);
      const won = [ra, rb].filter((r) => r.status === 'fulfilled');
      const lost = [ra, rb].filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(1);
      expect((lost[0]!.reason as BangerError).code).toBe('host_key_mismatch');
      const winnerKey = ra.status === 'fulfilled' ? a.hostPub : b.hostPub;
      expect(lookupHost(knownHosts, alias)).toEqual([{ keyType: 'ssh-ed25519', keyBase64: winnerKey }]);
      await sleep(100);
      expect(existsSync(markA)).toBe(ra.status === 'fulfilled');
      expect(existsSync(markB)).toBe(rb.status === 'fulfilled');
    }
  });

  it('waitForSsh returns once sshd answers, retrying until it is up', async () => {
    await waitForSsh(target(a), { deadlineMs: 10_000 });
    const port = await freeLoopbackPort();
    const t0 = Date.now();
    const waiting = waitForSsh({ ...target(a, 'late.vm'), port }, { deadlineMs: 20_000, intervalMs: 100 }).then(() => Date.now());
    await sleep(800);
    await startSshd('late', port); // its own host key, pinned under late.vm
    const doneAt = await waiting;
    expect(doneAt - t0).toBeGreaterThanOrEqual(800);
    expect(lookupHost(knownHosts, 'late.vm')).toHaveLength(1);
  }, 30_000);

  it('waitForSsh times out naming host:port and what it last saw', async () => {
    const port = await freeLoopbackPort();
    const t0 = Date.now();
    const err = await waitForSsh({ ...target(a), port }, { deadlineMs: 1500, intervalMs: 100 }).catch((e: unknown) => e);
    expect((err as BangerError).code).toBe('timeout');
    expect((err as BangerError).message).toContain(`127.0.0.1:${port}`);
    expect((err as BangerError).message).toContain('ECONNREFUSED');
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('waitForSsh fails at once on a host key mismatch', async () => {
    await exec(target(a), 'true');
    const t0 = Date.now();
    const err = await waitForSsh(target(b), { deadlineMs: 15_000 }).catch((e: unknown) => e);
    expect((err as BangerError).code).toBe('host_key_mismatch');
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('waitForSsh stops when aborted', async () => {
    const port = await freeLoopbackPort();
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const err = await waitForSsh({ ...target(a), port }, { deadlineMs: 15_000, signal: ac.signal }).catch(
      (e: unknown) => e,
    );
    expect((err as BangerError).code).toBe('interrupted');
  });
});

describe('sshCommandArgs', () => {
  const t: SshTarget = {
    host: '10.0.0.2',
    port: 2222,
    user: 'root',
    privateKeyPath: '/state/ssh/id_ed25519',
    knownHostsPath: '/state/ssh/known_hosts',
    hostKeyAlias: 'box.vm',
  };

  it('builds a strict, pinned OpenSSH argv', () => {
    expect(sshCommandArgs(t)).toEqual([
      '-i',
      '/state/ssh/id_ed25519',
      '-p',
      '2222',
      '-o',
      'HostKeyAlias=box.vm',
      '-o',
      'UserKnownHostsFile=/state/ssh/known_hosts',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'CheckHostIP=no',
      '-o',
      'UpdateHostKeys=no',
      '-o',
      'LogLevel=ERROR',
      '--',
      'root@10.0.0.2',
    ]);
  });

  it('sends the remote command as ONE shell-quoted argument', () => {
    const args = sshCommandArgs(t, ['sh', '-c', 'exit 42']);
    expect(args.slice(-2)).toEqual(['root@10.0.0.2', "sh -c 'exit 42'"]);
  });

  it('escapes paths for ssh (% tokens, spaces) and refuses ${', () => {
    // ssh stats a -i path as given but later expands %-tokens in it, so such a key goes as -o IdentityFile
    const args = sshCommandArgs({ ...t, privateKeyPath: '/a b/%k', knownHostsPath: '/a b/100%/kh' });
    expect(args.slice(0, 2)).toEqual(['-o', 'IdentityFile="/a b/%%k"']);
    expect(args).toContain('UserKnownHostsFile="/a b/100%%/kh"');
    expect(sshCommandArgs({ ...t, privateKeyPath: '/a b/k' }).slice(0, 2)).toEqual(['-i', '/a b/k']);
    expect(() => sshCommandArgs({ ...t, knownHostsPath: '/x/${HOME}/kh' })).toThrow(BangerError);
    expect(() => sshCommandArgs({ ...t, hostKeyAlias: 'Bad Alias' })).toThrow(BangerError);
  });
});
