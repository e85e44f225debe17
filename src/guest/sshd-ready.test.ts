import { describe, it, expect, afterEach } from 'vitest';
import type { Server, Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { GUEST_DONE_FILE, SSH_HOST_KEY } from '../images/guest-files.js';
import { GuestAgent } from './agent.js';
import { listensOn, parsePublicKey, waitForSshd } from './sshd-ready.js';
import { serveAgentChannel } from '../../test/support/fake-qga.js';

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const LISTEN_22 = '   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0';
const ESTABLISHED_22 = '   1: 0F02000A:0016 0202000A:A0B4 01 00000000:00000000 02:000A7D6F 00000000     0        0 1240 4 0000000000000000 20 4 1 10 -1';
const LISTEN_6 = '   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 100 0 0 10 0';
const KEY = 'AAAAC3NzaC1lZDI1NTE5AAAAIF5oI44ZWbG9v+093kmhWplEwisDjxnqlbsepEg2dspq';

describe('listensOn', () => {
  it('finds a LISTEN socket on the port, in tcp and tcp6 tables', () => {
    expect(listensOn(`${HEADER}\n${LISTEN_22}\n`, 22)).toBe(true);
    expect(listensOn(`${HEADER}\n${LISTEN_6}\n`, 22)).toBe(true);
  });
  it('ignores other states, other ports, the header and garbage', () => {
    expect(listensOn(`${HEADER}\n${ESTABLISHED_22}\n`, 22)).toBe(false);
    expect(listensOn(`${HEADER}\n${LISTEN_22}\n`, 2222)).toBe(false);
    expect(listensOn(`${LISTEN_22}\n`, 22)).toBe(false); // the first line is the header
    expect(listensOn(`${HEADER}\n0: nonsense:0016 x 0A\n`, 22)).toBe(false);
    expect(listensOn('', 22)).toBe(false);
  });
});

describe('parsePublicKey', () => {
  it('takes TYPE and BASE64 of one line', () => {
    expect(parsePublicKey(`ssh-ed25519 ${KEY} root@box\n`)).toEqual({ keyType: 'ssh-ed25519', keyBase64: KEY });
    expect(parsePublicKey(`ssh-ed25519 ${KEY}`)).toEqual({ keyType: 'ssh-ed25519', keyBase64: KEY });
  });
  it('refuses two keys, no key, or a malformed one', () => {
    expect(parsePublicKey(`ssh-ed25519 ${KEY}\nssh-ed25519 ${KEY}\n`)).toBeUndefined();
    expect(parsePublicKey('')).toBeUndefined();
    expect(parsePublicKey('ssh-ed25519')).toBeUndefined();
    expect(parsePublicKey(`ssh-ed25519 ${KEY}$(reboot)`)).toBeUndefined();
    expect(parsePublicKey(`Ssh-ed25519 ${KEY}`)).toBeUndefined();
  });
});

/** A fake agent whose files are `files` (missing: the agent's open error); counts what it was asked. */
interface FakeFiles {
  files: Map<string, Buffer>;
  /** Bytes returned per read, whatever was asked (a hostile agent may return more). */
  chunk?: number;
  opened: number;
  closed: number;
}

const dirs: string[] = [];
const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function fakeAgent(fs: FakeFiles): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'banger-sshd-'));
  dirs.push(dir);
  const path = join(dir, 'qga.sock');
  let nextHandle = 1000;
  const open = new Map<number, { data: Buffer; pos: number }>();
  const server = await serveAgentChannel(
    path,
    (cmd, r) => {
      const a = cmd.arguments ?? {};
      if (cmd.execute === 'guest-ping') r.ok({});
      else if (cmd.execute === 'guest-file-open') {
        const data = fs.files.get(String(a.path));
        if (!data) r.error(`failed to open file '${String(a.path)}': No such file or directory`);
        else {
          fs.opened++;
          open.set(++nextHandle, { data, pos: 0 });
          r.ok(nextHandle);
        }
      } else if (cmd.execute === 'guest-file-read') {
        const f = open.get(Number(a.handle))!;
        const part = f.data.subarray(f.pos, f.pos + (fs.chunk ?? Number(a.count)));
        f.pos += part.length;
        r.ok({ count: part.length, 'buf-b64': part.toString('base64'), eof: f.pos >= f.data.length });
      } else if (cmd.execute === 'guest-file-close') {
        fs.closed++;
        open.delete(Number(a.handle));
        r.ok({});
      } else r.error(`unknown command ${cmd.execute}`);
    },
    { sockets },
  );
  servers.push(server);
  return path;
}

function files(entries: Record<string, string>): FakeFiles {
  return { files: new Map(Object.entries(entries).map(([k, v]) => [k, Buffer.from(v)])), opened: 0, closed: 0 };
}

const deadline = (ms = 3000) => ({ deadlineMs: Date.now() + ms });

describe('GuestAgent.readFile', () => {
  it('reads a file in chunks and closes its handle', async () => {
    const big = 'x'.repeat(150 * 1024);
    const fs = files({ '/f': big });
    const agent = await GuestAgent.connect(await fakeAgent(fs));
    try {
      expect((await agent.readFile('/f', 1024 * 1024)).toString()).toBe(big);
      expect([fs.opened, fs.closed]).toEqual([1, 1]);
    } finally {
      agent.close();
    }
  });

  it('refuses a file over its bound, and a read that returns more than asked; the handle is closed either way', async () => {
    const fs = files({ '/f': 'y'.repeat(5000) });
    const agent = await GuestAgent.connect(await fakeAgent(fs));
    try {
      await expect(agent.readFile('/f', 4096)).rejects.toMatchObject({ code: 'operation_failed', message: expect.stringMatching(/larger than 4096 bytes/) });
      fs.chunk = 70 * 1024;
      fs.files.set('/g', Buffer.alloc(100 * 1024));
      await expect(agent.readFile('/g', 1024 * 1024)).rejects.toMatchObject({ message: expect.stringMatching(/for a read of/) });
      expect([fs.opened, fs.closed]).toEqual([2, 2]);
    } finally {
      agent.close();
    }
  });
});

describe('waitForSshd', () => {
  const ready = () => ({
    [GUEST_DONE_FILE]: '0\n',
    '/proc/net/tcp': `${HEADER}\n${LISTEN_22}\n`,
    '/proc/net/tcp6': `${HEADER}\n`,
    [`${SSH_HOST_KEY}.pub`]: `ssh-ed25519 ${KEY} root@box\n`,
  });

  it('answers with the host key once the guest unit succeeded and sshd listens', async () => {
    const r = await waitForSshd(await fakeAgent(files(ready())), deadline());
    expect(r).toEqual({ kind: 'listening', hostKey: { keyType: 'ssh-ed25519', keyBase64: KEY } });
  });

  it('waits for the guest unit, then for the listener', async () => {
    const fs = files({ '/proc/net/tcp': `${HEADER}\n`, '/proc/net/tcp6': `${HEADER}\n`, [`${SSH_HOST_KEY}.pub`]: `ssh-ed25519 ${KEY}\n` });
    const path = await fakeAgent(fs);
    const t0 = Date.now();
    setTimeout(() => fs.files.set(GUEST_DONE_FILE, Buffer.from('0\n')), 250);
    setTimeout(() => fs.files.set('/proc/net/tcp6', Buffer.from(`${HEADER}\n${LISTEN_6}\n`)), 500);
    const r = await waitForSshd(path, deadline());
    expect(r.kind).toBe('listening');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450);
  });

  it('is unsure when the guest unit failed, or the host key is missing or malformed (the caller waits for SSH)', async () => {
    expect(await waitForSshd(await fakeAgent(files({ ...ready(), [GUEST_DONE_FILE]: '1\n' })), deadline())).toMatchObject({ kind: 'unsure', reason: expect.stringMatching(/status 1/) });
    const noKey: Record<string, string> = ready();
    delete noKey[`${SSH_HOST_KEY}.pub`];
    expect(await waitForSshd(await fakeAgent(files(noKey)), deadline())).toMatchObject({ kind: 'unsure', reason: expect.stringMatching(/missing or not a public key/) });
    expect(await waitForSshd(await fakeAgent(files({ ...ready(), [`${SSH_HOST_KEY}.pub`]: `ssh-ed25519 ${KEY}\nssh-rsa ${KEY}\n` })), deadline())).toMatchObject({ kind: 'unsure' });
  });

  it('is unsure when the agent sends a table beyond the bound (hostile guest)', async () => {
    const r = await waitForSshd(await fakeAgent(files({ ...ready(), '/proc/net/tcp': `${HEADER}\n${'x'.repeat(1024 * 1024)}\n` })), deadline());
    expect(r).toMatchObject({ kind: 'unsure', reason: expect.stringMatching(/larger than/) });
  });

  it('times out when sshd never listens, and stops at once when aborted', async () => {
    const fs = files({ ...ready(), '/proc/net/tcp': `${HEADER}\n` });
    const path = await fakeAgent(fs);
    await expect(waitForSshd(path, deadline(400))).rejects.toMatchObject({ code: 'timeout', message: expect.stringMatching(/did not start listening/) });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 150);
    const e = await waitForSshd(path, { ...deadline(5000), signal: ac.signal }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BangerError);
    expect((e as BangerError).code).toBe('interrupted');
  });
});
