import { describe, it, expect, afterEach } from 'vitest';
import type { Server, Socket } from 'node:net';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { DEFAULT_CONFIG } from '../config/config.js';
import { silentLogger } from '../log/log.js';
import { resolveLayout, vmPaths, type Layout } from '../paths/paths.js';
import { readStartTime } from '../system/proc.js';
import type { RunResult, Runner } from '../system/runner.js';
import type { Store } from '../store/store.js';
import type { VmRuntime, VmView } from '../model/types.js';
import type { VmService } from './vm-service.js';
import { QemuDriver, type QemuHandle } from '../vmm/qemu/driver.js';
import { serveAgentChannel } from '../../test/support/fake-qga.js';
import {
  InspectService,
  LOG_CHUNK_BYTES,
  PORTS_COMMAND,
  STATS_COMMAND,
  completeUtf8Length,
  cpuPercent,
  hostEndpointFor,
  parseDf,
  parseMeminfo,
  parseSs,
  portForwards,
  readLogChunk,
  sortPorts,
  type PortForward,
} from './inspect-service.js';

const tmpDirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'banger-inspect-'));
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

// ---- realistic guest output (Debian bookworm, iproute2 6.1, coreutils 9.1) ----

/** `ss -Htulnp` prints compact columns: Netid State Recv-Q Send-Q Local Peer Process. */
const SS_OUTPUT = [
  'udp UNCONN 0      0      127.0.0.53%lo:53        0.0.0.0:*    users:(("systemd-resolve",pid=301,fd=13))',
  'udp UNCONN 0      0          0.0.0.0:68          0.0.0.0:*    users:(("dhclient",pid=290,fd=7))',
  'udp UNCONN 0      0   [fe80::5054:ff:fe12:3456]%eth0:546 [::]:* users:(("dhclient",pid=291,fd=5))',
  'tcp LISTEN 0      128    0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=381,fd=3))',
  'tcp LISTEN 0      4096   127.0.0.53%lo:53 0.0.0.0:* users:(("systemd-resolve",pid=301,fd=14))',
  'tcp LISTEN 0      128       [::]:22    [::]:* users:(("sshd",pid=381,fd=4))',
  'tcp LISTEN 0      511          *:8080       *:* users:(("node",pid=900,fd=20),("node",pid=901,fd=20),("npm exec",pid=880,fd=20))',
  'tcp LISTEN 0      4096         *:22         *:* users:(("systemd",pid=1,fd=50))',
  'tcp LISTEN 0      5      127.0.0.1:5432 0.0.0.0:*',
  'tcp LISTEN 0      5      [::1]:5432     [::]:*',
  '',
].join('\n');

const MEMINFO = `MemTotal:         995504 kB
MemFree:          871700 kB
MemAvailable:     827404 kB
Buffers:            3660 kB
Cached:            36748 kB
SwapTotal:             0 kB
Active(anon):        180 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
`;

/** `df -B1 -P / /root` with a work disk at /root. */
const DF_TWO = `Filesystem       1-blocks      Used  Available Capacity Mounted on
/dev/vda       4122705920 369401856 3736526848       9% /
/dev/vdc      10464022528  24576000 9886248960       1% /root
`;
/** Without a work disk, /root is on / and df repeats the line. */
const DF_ONE = `Filesystem       1-blocks      Used  Available Capacity Mounted on
/dev/vda       4122705920 369401856 3736526848       9% /
/dev/vda       4122705920 369401856 3736526848       9% /
`;

const SSH_FORWARD: PortForward[] = [{ proto: 'tcp', guestPort: 22, hostAddress: '127.0.0.1', hostPort: 42222 }];

describe('parseSs', () => {
  it('parses TCP and UDP listeners with every address form ss prints', () => {
    expect(parseSs(SS_OUTPUT)).toEqual([
      { proto: 'udp', address: '127.0.0.53%lo', port: 53, process: 'systemd-resolve' },
      { proto: 'udp', address: '0.0.0.0', port: 68, process: 'dhclient' },
      { proto: 'udp', address: 'fe80::5054:ff:fe12:3456%eth0', port: 546, process: 'dhclient' },
      { proto: 'tcp', address: '0.0.0.0', port: 22, process: 'sshd' },
      { proto: 'tcp', address: '127.0.0.53%lo', port: 53, process: 'systemd-resolve' },
      { proto: 'tcp', address: '::', port: 22, process: 'sshd' },
      { proto: 'tcp', address: '*', port: 8080, process: 'node,npm exec' },
      { proto: 'tcp', address: '*', port: 22, process: 'systemd' },
      { proto: 'tcp', address: '127.0.0.1', port: 5432, process: null },
      { proto: 'tcp', address: '::1', port: 5432, process: null },
    ]);
  });

  it('takes the exact output of the bookworm image', () => {
    const real =
      'tcp LISTEN 0      128    0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=381,fd=3))\n' +
      'tcp LISTEN 0      128       [::]:22    [::]:* users:(("sshd",pid=381,fd=4))\n';
    expect(parseSs(real)).toEqual([
      { proto: 'tcp', address: '0.0.0.0', port: 22, process: 'sshd' },
      { proto: 'tcp', address: '::', port: 22, process: 'sshd' },
    ]);
  });

  it('skips headers, blank lines, other socket kinds and garbage', () => {
    const text = [
      'Netid State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process',
      'u_str LISTEN 0 4096 /run/systemd/private 13361 * 0',
      'tcp LISTEN 0 128',
      'tcp LISTEN 0 128 0.0.0.0:notaport 0.0.0.0:*',
      'tcp LISTEN 0 128 0.0.0.0:99999 0.0.0.0:*',
      '   ',
    ].join('\n');
    expect(parseSs(text)).toEqual([]);
    expect(parseSs('')).toEqual([]);
  });
});

describe('hostEndpointFor (user networking: host 127.0.0.1:sshPort → guest tcp/22)', () => {
  const ep = (proto: 'tcp' | 'udp', address: string, port: number) => hostEndpointFor({ proto, address, port }, SSH_FORWARD);

  it('maps TCP 22 on an IPv4-reachable wildcard to the forwarded loopback port', () => {
    expect(ep('tcp', '0.0.0.0', 22)).toBe('127.0.0.1:42222');
    expect(ep('tcp', '*', 22)).toBe('127.0.0.1:42222');
    expect(ep('tcp', '0.0.0.0%eth0', 22)).toBe('127.0.0.1:42222');
  });

  it('gives null for everything the forward cannot reach', () => {
    expect(ep('tcp', '::', 22)).toBeNull(); // v6only: the forward connects over IPv4
    expect(ep('tcp', '127.0.0.1', 22)).toBeNull();
    expect(ep('tcp', '::1', 22)).toBeNull();
    expect(ep('tcp', '0.0.0.0%lo', 22)).toBeNull();
    expect(ep('udp', '0.0.0.0', 22)).toBeNull();
    expect(ep('tcp', '0.0.0.0', 2222)).toBeNull();
    expect(ep('tcp', '*', 8080)).toBeNull();
  });

  it('brackets an IPv6 host address', () => {
    expect(hostEndpointFor({ proto: 'tcp', address: '0.0.0.0', port: 22 }, [{ ...SSH_FORWARD[0]!, hostAddress: '::1' }])).toBe('[::1]:42222');
  });

  it('portForwards: user mode forwards SSH only; bridge mode has none in this release', () => {
    expect(portForwards({ network: 'user' }, { sshHost: '127.0.0.1', sshPort: 42222 })).toEqual(SSH_FORWARD);
    expect(portForwards({ network: 'bridge' }, { sshHost: '10.0.0.2', sshPort: 22 })).toEqual([]);
  });

  it('sortPorts: tcp first, then port, then address', () => {
    const sorted = sortPorts(parseSs(SS_OUTPUT)).map((p) => `${p.proto} ${p.address}:${p.port}`);
    expect(sorted).toEqual([
      'tcp *:22',
      'tcp 0.0.0.0:22',
      'tcp :::22',
      'tcp 127.0.0.53%lo:53',
      'tcp 127.0.0.1:5432',
      'tcp ::1:5432',
      'tcp *:8080',
      'udp 127.0.0.53%lo:53',
      'udp 0.0.0.0:68',
      'udp fe80::5054:ff:fe12:3456%eth0:546',
    ]);
  });
});

describe('stats parsers', () => {
  it('parseMeminfo: kB to bytes, used = total - available', () => {
    expect(parseMeminfo(MEMINFO)).toEqual({
      totalBytes: 995504 * 1024,
      availableBytes: 827404 * 1024,
      usedBytes: (995504 - 827404) * 1024,
    });
  });

  it('parseMeminfo: without MemAvailable, free + buffers + cached', () => {
    const old = 'MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 40 kB\n';
    expect(parseMeminfo(old)).toEqual({ totalBytes: 1000 * 1024, availableBytes: 150 * 1024, usedBytes: 850 * 1024 });
  });

  it('parseMeminfo: no MemTotal is a coded error', () => {
    expect(() => parseMeminfo('garbage\n')).toThrow(BangerError);
  });

  it('parseDf: one entry per mount point', () => {
    expect(parseDf(DF_TWO)).toEqual([
      { filesystem: '/dev/vda', mount: '/', sizeBytes: 4122705920, usedBytes: 369401856, availableBytes: 3736526848 },
      { filesystem: '/dev/vdc', mount: '/root', sizeBytes: 10464022528, usedBytes: 24576000, availableBytes: 9886248960 },
    ]);
    expect(parseDf(DF_ONE).map((f) => f.mount)).toEqual(['/']);
  });

  it('parseDf: file system names with spaces, "-" capacity, junk lines', () => {
    const text = 'Filesystem 1-blocks Used Available Capacity Mounted on\nmy fs 100 0 100 - /mnt/a b\ndf: /nope: No such file or directory\n';
    expect(parseDf(text)).toEqual([{ filesystem: 'my fs', mount: '/mnt/a b', sizeBytes: 100, usedBytes: 0, availableBytes: 100 }]);
    expect(parseDf('')).toEqual([]);
  });

  it('cpuPercent: ticks are 1/100 s; percent of one host CPU', () => {
    expect(cpuPercent(50, 500)).toBe(100); // a full CPU
    expect(cpuPercent(100, 500)).toBe(200); // two vCPUs busy
    expect(cpuPercent(1, 500)).toBe(2);
    expect(cpuPercent(1, 3000)).toBe(0.3);
    expect(cpuPercent(0, 500)).toBe(0);
    expect(cpuPercent(5, 0)).toBe(0);
  });
});

describe('console log reading', () => {
  it('completeUtf8Length cuts only an incomplete trailing sequence', () => {
    const euro = Buffer.from('€'); // e2 82 ac
    expect(completeUtf8Length(Buffer.from('abc'))).toBe(3);
    expect(completeUtf8Length(Buffer.concat([Buffer.from('a'), euro]))).toBe(4);
    expect(completeUtf8Length(Buffer.concat([Buffer.from('a'), euro.subarray(0, 2)]))).toBe(1);
    expect(completeUtf8Length(Buffer.concat([Buffer.from('a'), euro.subarray(0, 1)]))).toBe(1);
    expect(completeUtf8Length(Buffer.from([0x61, 0xf0, 0x9f, 0x98]))).toBe(1); // 3 of a 4-byte emoji
    expect(completeUtf8Length(Buffer.from([0x61, 0xff]))).toBe(2); // garbage is kept, never stalls
    expect(completeUtf8Length(Buffer.from([0x80, 0x80, 0x80, 0x80]))).toBe(4);
    expect(completeUtf8Length(Buffer.alloc(0))).toBe(0);
  });

  it('readLogChunk: a missing file is empty', async () => {
    expect(await readLogChunk(join(tmp(), 'console.log'), 5, { maxBytes: 10, holdPartialChar: false })).toEqual({ data: '', offset: 0, size: 0 });
  });

  it('readLogChunk: never splits a character across replies', async () => {
    const f = join(tmp(), 'console.log');
    writeFileSync(f, 'ab€cd');
    const a = await readLogChunk(f, 0, { maxBytes: 3, holdPartialChar: false });
    expect(a).toEqual({ data: 'ab', offset: 2, size: 7 });
    const b = await readLogChunk(f, a.offset, { maxBytes: 3, holdPartialChar: false });
    expect(b).toEqual({ data: '€', offset: 5, size: 7 });
    // at the end of a log that QEMU is still writing, a partial character waits
    writeFileSync(f, Buffer.concat([Buffer.from('x'), Buffer.from('€').subarray(0, 2)]));
    expect(await readLogChunk(f, 0, { maxBytes: 100, holdPartialChar: true })).toEqual({ data: 'x', offset: 1, size: 3 });
    // a stopped VM's log is final: the bytes come out (as U+FFFD)
    expect((await readLogChunk(f, 0, { maxBytes: 100, holdPartialChar: false })).offset).toBe(3);
  });
});

// ---- the service, with fake VMs, a fake runner and a fake guest agent ----

/** A qemu-guest-agent stand-in: answers ping, and runs `exec` for guest-exec. */
async function fakeAgent(dir: string, exec: (path: string, args: string[]) => { exitcode: number; out: string; err?: string } | 'hang'): Promise<{ path: string; calls: string[][] }> {
  const path = join(dir, 'qga.sock');
  const calls: string[][] = [];
  const results = new Map<number, { exitcode: number; out: string; err?: string }>();
  let nextPid = 100;
  const server = await serveAgentChannel(
    path,
    (cmd, reply) => {
      if (cmd.execute === 'guest-ping') {
        reply.ok({});
      } else if (cmd.execute === 'guest-exec') {
        const a = cmd.arguments as { path: string; arg: string[] };
        calls.push([a.path, ...a.arg]);
        const r = exec(a.path, a.arg);
        const pid = nextPid++;
        if (r !== 'hang') results.set(pid, r);
        reply.ok({ pid });
      } else if (cmd.execute === 'guest-exec-status') {
        const r = results.get((cmd.arguments as { pid: number }).pid);
        if (!r) reply.ok({ exited: false });
        else
          reply.ok({
            exited: true,
            exitcode: r.exitcode,
            'out-data': Buffer.from(r.out).toString('base64'),
            ...(r.err ? { 'err-data': Buffer.from(r.err).toString('base64') } : {}),
          });
      }
    },
    { sockets },
  );
  servers.push(server);
  return { path, calls };
}

function fakeRunner(calls: string[][]): Runner {
  return {
    async run(argv) {
      calls.push(argv);
      const stdout = JSON.stringify({ 'virtual-size': 4294967296, format: 'qcow2', 'actual-size': 5185536 });
      const r: RunResult = { argv, code: 0, signal: null, stdout, stderr: '', timedOut: false, durationMs: 1 };
      return r;
    },
    spawnDetached() {
      throw new Error('not used');
    },
    async runInteractive() {
      throw new Error('not used');
    },
  };
}

function setup(opts: { running?: boolean; qgaSocket?: string; agentBudgetMs?: number } = {}) {
  const root = tmp();
  const layout: Layout = resolveLayout({
    BANGER_STATE_DIR: join(root, 'state'),
    BANGER_CACHE_DIR: join(root, 'cache'),
    BANGER_RUNTIME_DIR: join(root, 'run'),
    BANGER_CONFIG_DIR: join(root, 'cfg'),
  });
  // "QEMU" is this test process: a live pid whose start time we know
  const handle: QemuHandle = {
    pid: process.pid,
    pidStartTime: readStartTime(process.pid)!,
    qmpSocket: join(root, 'qmp.sock'),
    qgaSocket: opts.qgaSocket ?? join(root, 'nothing-here.sock'),
  };
  const runtime: VmRuntime = { vmm: 'qemu', pid: process.pid, accel: 'tcg', sshHost: '127.0.0.1', sshPort: 42222, startedAt: 'now' };
  const runnerCalls: string[][] = [];
  const runner = fakeRunner(runnerCalls);
  // The real QEMU driver (its describeDisks runs qemu-img through the fake runner).
  const driver = new QemuDriver({ runner, log: silentLogger() });
  const view: VmView = {
    id: 'abc123abc123',
    name: 'box',
    image: 'bookworm',
    vcpu: 2,
    memoryMib: 1024,
    systemOverlayBytes: 1,
    diskBytes: 1,
    vmm: 'qemu',
    network: 'user',
    state: opts.running === false ? 'stopped' : 'running',
    ephemeral: false,
    nat: false,
    ip: null,
    kernel: null,
    lastError: null,
    createdAt: 'now',
    updatedAt: 'now',
    workspace: null,
    runtime: opts.running === false ? null : runtime,
  };
  const show = (name: string): VmView => {
    if (name !== 'box') throw new BangerError('not_found', `no VM named ${name}`);
    return view;
  };
  const vms = {
    show,
    booted: (name: string) => ({ vm: show(name), vmm: view.runtime ? { driver, handle } : null }),
  } as unknown as VmService;
  const svc = new InspectService({
    store: {} as Store,
    runner,
    layout,
    config: DEFAULT_CONFIG,
    log: silentLogger(),
    vms,
    cpuSampleMs: 50,
    ...(opts.agentBudgetMs !== undefined ? { agentBudgetMs: opts.agentBudgetMs } : {}),
  });
  const paths = vmPaths(layout, view.id);
  mkdirSync(paths.dir, { recursive: true });
  return { svc, paths, runnerCalls, root };
}

async function codeOf(p: Promise<unknown>): Promise<BangerError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(BangerError);
    return e as BangerError;
  }
  throw new Error('expected a rejection');
}

describe('InspectService.logs', () => {
  it('reads from an offset, continues, and reports the size', async () => {
    const { svc, paths } = setup();
    writeFileSync(paths.consoleLog, 'Linux version 6.1\n');
    const a = await svc.logs('box', 0);
    expect(a).toEqual({ data: 'Linux version 6.1\n', offset: 18, size: 18 });
    expect(await svc.logs('box', a.offset)).toEqual({ data: '', offset: 18, size: 18 });
    appendFileSync(paths.consoleLog, 'login: ');
    expect(await svc.logs('box', a.offset)).toEqual({ data: 'login: ', offset: 25, size: 25 });
    expect(await svc.logs('box', 6)).toEqual({ data: 'version 6.1\nlogin: ', offset: 25, size: 25 });
  });

  it('restarts from 0 when the log was truncated by a new boot', async () => {
    const { svc, paths } = setup();
    writeFileSync(paths.consoleLog, 'x'.repeat(1000));
    const old = await svc.logs('box', 0);
    expect(old.offset).toBe(1000);
    truncateSync(paths.consoleLog, 0);
    appendFileSync(paths.consoleLog, 'second boot\n');
    expect(await svc.logs('box', old.offset)).toEqual({ data: 'second boot\n', offset: 12, size: 12 });
  });

  it('caps one reply at LOG_CHUNK_BYTES', async () => {
    const { svc, paths } = setup();
    const total = LOG_CHUNK_BYTES + 4096;
    writeFileSync(paths.consoleLog, Buffer.alloc(total, 'a'));
    const a = await svc.logs('box', 0);
    expect(a.data.length).toBe(LOG_CHUNK_BYTES);
    expect(a).toMatchObject({ offset: LOG_CHUNK_BYTES, size: total });
    const b = await svc.logs('box', a.offset);
    expect(b).toMatchObject({ offset: total, size: total });
    expect(b.data.length).toBe(4096);
  });

  it('works for a stopped VM, and before the first boot wrote anything', async () => {
    const { svc, paths } = setup({ running: false });
    expect(await svc.logs('box', 0)).toEqual({ data: '', offset: 0, size: 0 });
    writeFileSync(paths.consoleLog, 'reboot: Power down\n');
    expect(await svc.logs('box', 0)).toMatchObject({ data: 'reboot: Power down\n', size: 19 });
  });

  it('an unknown VM is not_found', async () => {
    const { svc } = setup();
    expect((await codeOf(svc.logs('nope', 0))).code).toBe('not_found');
  });
});

describe('InspectService.stats / ports (fake guest agent)', () => {
  it('stats: memory, filesystems, host disks and CPU from one agent exec', async () => {
    const dir = tmp();
    const agent = await fakeAgent(dir, (path, args) =>
      path === '/bin/sh' && args[1]?.includes('meminfo') ? { exitcode: 0, out: MEMINFO + '@@banger-df@@\n' + DF_TWO } : { exitcode: 127, out: '' },
    );
    const { svc, paths, runnerCalls } = setup({ qgaSocket: agent.path });
    writeFileSync(paths.workDisk, Buffer.alloc(8192, 1));
    truncateSync(paths.workDisk, 1024 * 1024);
    const s = await svc.stats('box');
    expect(agent.calls).toEqual([[...STATS_COMMAND]]);
    expect(runnerCalls).toEqual([['qemu-img', 'info', '-U', '--output=json', paths.overlay]]);
    expect(s.name).toBe('box');
    expect(s.vcpu).toBe(2);
    expect(s.cpuPercent).toBeGreaterThanOrEqual(0);
    expect(s.memory).toEqual(parseMeminfo(MEMINFO));
    // The VMM process here is this test process: its VmRSS, in bytes.
    expect(s.hostRssBytes).toBeGreaterThan(1024 * 1024);
    expect(s.hostRssBytes % 1024).toBe(0);
    expect(s.filesystems).toEqual([
      { mount: '/', sizeBytes: 4122705920, usedBytes: 369401856 },
      { mount: '/root', sizeBytes: 10464022528, usedBytes: 24576000 },
    ]);
    expect(s.disks[0]).toEqual({ name: 'root', path: paths.overlay, allocatedBytes: 5185536, virtualBytes: 4294967296 });
    expect(s.disks[1]).toMatchObject({ name: 'work', path: paths.workDisk, virtualBytes: 1024 * 1024 });
    expect(s.disks[1]!.allocatedBytes).toBeGreaterThanOrEqual(8192);
    expect(s.disks[1]!.allocatedBytes).toBeLessThan(1024 * 1024);
  });

  it('stats: no work disk file, no work disk row; a failing df still gives memory', async () => {
    const dir = tmp();
    const agent = await fakeAgent(dir, () => ({ exitcode: 1, out: MEMINFO + '@@banger-df@@\n', err: 'df: /root: oops' }));
    const { svc } = setup({ qgaSocket: agent.path });
    const s = await svc.stats('box');
    expect(s.disks.map((d) => d.name)).toEqual(['root']);
    expect(s.filesystems).toEqual([]);
    expect(s.memory.totalBytes).toBe(995504 * 1024);
  });

  it('ports: parses ss and maps the SSH forward', async () => {
    const dir = tmp();
    const agent = await fakeAgent(dir, (path) => (path === '/bin/ss' ? { exitcode: 0, out: SS_OUTPUT } : { exitcode: 127, out: '' }));
    const { svc } = setup({ qgaSocket: agent.path });
    const ports = await svc.ports('box');
    expect(agent.calls).toEqual([[...PORTS_COMMAND]]);
    expect(ports).toHaveLength(10);
    expect(ports.slice(0, 3)).toEqual([
      { proto: 'tcp', address: '*', port: 22, process: 'systemd', hostEndpoint: '127.0.0.1:42222' },
      { proto: 'tcp', address: '0.0.0.0', port: 22, process: 'sshd', hostEndpoint: '127.0.0.1:42222' },
      { proto: 'tcp', address: '::', port: 22, process: 'sshd', hostEndpoint: null },
    ]);
    expect(ports.filter((p) => p.hostEndpoint !== null)).toHaveLength(2);
  });

  it('ports: ss failing in the guest is operation_failed with its stderr', async () => {
    const dir = tmp();
    const agent = await fakeAgent(dir, () => ({ exitcode: 1, out: '', err: 'Cannot open netlink socket' }));
    const { svc } = setup({ qgaSocket: agent.path });
    const e = await codeOf(svc.ports('box'));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toContain('Cannot open netlink socket');
  });

  it('a stopped VM is not_running with a start hint', async () => {
    const { svc } = setup({ running: false });
    for (const p of [svc.stats('box'), svc.ports('box')]) {
      const e = await codeOf(p);
      expect(e.code).toBe('not_running');
      expect(e.hint).toContain('banger vm start box');
    }
  });

  it('an unreachable agent is unavailable, within the budget', async () => {
    const { svc } = setup({ agentBudgetMs: 600 });
    const t0 = Date.now();
    const e = await codeOf(svc.ports('box'));
    expect(e.code).toBe('unavailable');
    expect(e.hint).toContain('guest agent did not answer');
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('a guest command that never finishes fails with timeout instead of hanging the RPC', async () => {
    const dir = tmp();
    const agent = await fakeAgent(dir, () => 'hang');
    const { svc } = setup({ qgaSocket: agent.path, agentBudgetMs: 800 });
    const t0 = Date.now();
    const e = await codeOf(svc.ports('box'));
    expect(e.code).toBe('timeout');
    expect(e.hint).toContain('guest agent did not answer');
    expect(Date.now() - t0).toBeLessThan(4000);
  });
});
