/**
 * The result schemas: every method's real shape passes, a wrong type or a
 * missing field is refused, unknown keys are dropped; and end to end, a peer
 * that answers with a malformed result fails that one call with a coded
 * error while the connection stays usable.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { silentLogger } from '../log/log.js';
import type { ImageRecord, SnapshotInfo, VmView, WorkspaceRecord } from '../model/types.js';
import { HELPER_PROTOCOL, helperOps, type HelperOps } from '../helper/ops.js';
import { LineReader } from '../system/line-reader.js';
import { resultsOf, RpcClient, TableClient } from './client.js';
import { methods, PROTOCOL_VERSION, type MethodName, type ResultOf, type VmSshTarget } from './methods.js';
import { MAX_ITEMS, schemaOf } from './results.js';
import { number, object, string, type Infer, type Shape } from './shape.js';
import { serveTable, startRpcServer, type Handlers, type HandlersFor, type RpcServer } from './server.js';

// ---- samples: what the daemon really sends (shapes as src/daemon builds them) ----

const workspace: WorkspaceRecord = {
  hostPath: '/home/me/src/app',
  guestPath: '/root/repo',
  includeUntracked: false,
  tree: 'a'.repeat(40),
  commit: 'b'.repeat(40),
  head: 'c'.repeat(40),
  branch: 'main',
  files: 120,
  bytes: 345_678,
  mode: 'archive',
  preparedAt: '2025-01-02T03:04:05.000Z',
};

const vm: VmView = {
  id: '0123456789ab',
  name: 'brisk-otter-1a2b',
  image: 'bookworm',
  vcpu: 2,
  memoryMib: 1024,
  systemOverlayBytes: 4 * 1024 ** 3,
  diskBytes: 8 * 1024 ** 3,
  vmm: 'qemu',
  network: 'user',
  state: 'running',
  ephemeral: false,
  nat: true,
  ip: null,
  kernel: null,
  lastError: null,
  createdAt: '2025-01-02T03:04:05.000Z',
  updatedAt: '2025-01-02T03:04:06.000Z',
  runtime: { vmm: 'qemu', pid: 4242, accel: 'kvm', sshHost: '127.0.0.1', sshPort: 40022, startedAt: '2025-01-02T03:04:06.000Z' },
  workspace,
};

const stoppedVm: VmView = { ...vm, state: 'stopped', ip: '10.213.7.9', network: 'bridge', lastError: 'boot failed', runtime: null, workspace: null };

const ssh: VmSshTarget = {
  name: vm.name,
  host: '127.0.0.1',
  port: 40022,
  user: 'root',
  privateKeyPath: '/home/me/.local/state/banger/ssh/id_ed25519',
  knownHostsPath: '/home/me/.local/state/banger/ssh/known_hosts',
  hostKeyAlias: `${vm.name}.vm`,
};

const image: ImageRecord = {
  name: 'bookworm',
  source: 'mmdebstrap bookworm (http://deb.debian.org/debian)',
  sourceKind: 'debian',
  sourceRef: 'bookworm http://deb.debian.org/debian',
  kernelVersion: '6.1.0-28-amd64',
  kernel: null,
  rootfsBytes: 1_234_567_890,
  packages: ['openssh-server', 'git'],
  createdAt: '2025-01-02T03:04:05.000Z',
};

const snapshot: SnapshotInfo = {
  key: 'qemu-kvm-2c-1024m',
  vmm: 'qemu',
  accel: 'kvm',
  vcpu: 2,
  memoryMib: 1024,
  bytes: 300_000_000,
  createdAt: '2025-01-02T03:04:05.000Z',
  buildMs: 8123,
  current: true,
};

/** One valid result per method: the mapped type makes a missing method (or a wrong sample) a compile error. */
const samples: { [M in MethodName]: ResultOf<M> } = {
  'rpc.hello': { protocol: PROTOCOL_VERSION, version: '0.1.0', pid: 123 },
  'daemon.status': {
    pid: 123,
    version: '0.1.0',
    protocol: PROTOCOL_VERSION,
    socket: '/run/user/1000/banger/bangerd.sock',
    stateDir: '/home/me/.local/state/banger',
    logFile: '/home/me/.local/state/banger/bangerd.log',
    uptimeSeconds: 42,
    vms: 1,
  },
  'daemon.stop': { stopping: true },
  'vm.create': { vm, ssh, bootMs: 900, clonedFrom: 'qemu-kvm-2c-1024m' },
  'vm.start': { vm, ssh, bootMs: 0 },
  'vm.stop': { vm: stoppedVm, report: { asked: 'agent', synced: true, ended: 'exited', ms: 1200 } },
  'vm.restart': { vm, ssh, bootMs: 3000 },
  'vm.kill': stoppedVm,
  'vm.prune': { removed: ['old-one'], skipped: [], candidates: ['old-one', 'other'] },
  'vm.set': stoppedVm,
  'vm.list': [vm, stoppedVm],
  'vm.show': vm,
  'vm.delete': { deleted: vm.name },
  'vm.logs': { data: 'Linux version 6.1.0\n[ OK ] Started ssh.service\n', offset: 47, size: 47 },
  'vm.stats': {
    name: vm.name,
    cpuPercent: 3.5,
    vcpu: 2,
    memory: { totalBytes: 1_000_000_000, availableBytes: 800_000_000, usedBytes: 200_000_000 },
    hostRssBytes: 300_000_000,
    filesystems: [
      { mount: '/', sizeBytes: 4_000_000_000, usedBytes: 1_000_000_000 },
      { mount: '/root', sizeBytes: 8_000_000_000, usedBytes: 10_000 },
    ],
    disks: [
      { name: 'root', path: '/home/me/.local/state/banger/vms/0123456789ab/root.qcow2', allocatedBytes: 5_185_536, virtualBytes: 4_294_967_296 },
      { name: 'work', path: '/home/me/.local/state/banger/vms/0123456789ab/work.ext4', allocatedBytes: 1_000_000, virtualBytes: 8_589_934_592 },
    ],
  },
  'vm.ports': [
    { proto: 'tcp', address: '0.0.0.0', port: 22, process: 'sshd', hostEndpoint: '127.0.0.1:40022' },
    { proto: 'udp', address: '127.0.0.53%lo', port: 53, process: null, hostEndpoint: null },
  ],
  'vm.workspace.prepare': { name: vm.name, workspace, sentBytes: 100_000, sentFiles: 120, skipped: ['vendor/sub'], ms: 1500 },
  'vm.workspace.export': { bytes: 2048, baseCommit: null },
  'vm.workspace.status': { workspace, changed: true, reason: '/home/me/src/app changed since it was prepared at 2025-01-02T03:04:05.000Z' },
  'vm.ssh_target': ssh,
  'network.show': {
    mode: 'bridge',
    why: 'config network = "bridge"',
    bridge: 'banger0',
    subnet: '10.213.7.0/24',
    gateway: '10.213.7.1',
    dns: '10.213.7.1:5353',
    resolver: 'systemd-resolved sends *.vm on banger0 to 10.213.7.1:5353',
    helperSocket: '/run/banger-helper/helper.sock',
  },
  'image.build': image,
  'image.pull': { ...image, name: 'alpine', sourceKind: 'oci', source: 'docker.io/library/alpine:3.20', sourceRef: 'docker.io/library/alpine@sha256:' + 'e'.repeat(64), packages: [] },
  'image.import': { ...image, name: 'imported', sourceKind: 'bundle', sourceRef: 'sha256:' + 'a'.repeat(64) },
  'image.prune': { removed: 3, bytes: 123_456, kept: 7 },
  'image.list': [image],
  'vm.commit': { ...image, name: 'from-vm', sourceKind: 'vm', sourceRef: vm.name },
  'image.show': {
    ...image,
    snapshots: [snapshot, { ...snapshot, key: 'qemu-tcg-1c-512m', accel: 'tcg', current: false, reason: 'the image was rebuilt' }],
  },
  'image.snapshot': snapshot,
  'image.delete': { deleted: 'bookworm' },
  'image.export': { name: 'bookworm', path: '/home/me/bookworm.bundle', digest: 'sha256:' + 'f'.repeat(64), bytes: 123_456_789, signed: true },
  'kernel.list': [{ name: 'generic-6.12', version: '6.12.8', arch: 'x86_64', sha256: { kernel: 'a'.repeat(64), initrd: 'b'.repeat(64), modules: 'c'.repeat(64) }, source: 'https://k.example/catalog.json', pulledAt: '2025-01-02T03:04:05.000Z', dir: '/home/me/.local/state/banger/kernels/generic-6.12', usedBy: ['image alpine', 'VM box'] }],
  'kernel.show': { name: 'generic-6.12', version: '6.12.8', arch: 'x86_64', sha256: { kernel: 'a'.repeat(64), initrd: 'b'.repeat(64) }, source: 'https://k.example/catalog.json', pulledAt: '2025-01-02T03:04:05.000Z', dir: '/home/me/.local/state/banger/kernels/generic-6.12', usedBy: [] },
  'kernel.pull': { name: 'generic-6.12', version: '6.12.8', arch: 'x86_64', sha256: { kernel: 'a'.repeat(64), initrd: 'b'.repeat(64) }, source: 'https://k.example/catalog.json', pulledAt: '2025-01-02T03:04:05.000Z', dir: '/home/me/.local/state/banger/kernels/generic-6.12', usedBy: [] },
  'kernel.delete': { deleted: 'generic-6.12' },
  'kernel.catalog': [{ name: 'generic-6.12', version: '6.12.8', arch: 'x86_64', description: 'a generic kernel', files: [{ role: 'kernel', url: 'generic-6.12/vmlinuz', sha256: 'a'.repeat(64), size: 14_000_000 }, { role: 'initrd', url: 'generic-6.12/initrd.img', sha256: 'b'.repeat(64), size: 5_000_000 }] }],
};

/** Result keys that may be left out. */
const optionalKeys: Partial<Record<MethodName, string[]>> = { 'vm.create': ['clonedFrom'], 'image.snapshot': ['reason'], 'kernel.catalog': ['description'] };

const helperSamples: { [M in keyof HelperOps]: Infer<HelperOps[M]['result']> } = {
  'helper.hello': { protocol: HELPER_PROTOCOL, version: '0.1.0', bridge: 'banger0', subnet: '10.213.7.0/24', gateway: '10.213.7.1', ownerUid: 1000 },
  'bridge.ensure': { bridge: 'banger0', gateway: '10.213.7.1', created: true },
  'bridge.remove': { removed: false },
  'tap.create': { tap: 'banger0-t9', created: true },
  'tap.remove': { removed: true },
  'nat.add': { added: 2 },
  'nat.remove': { removed: 0 },
  'resolver.route': { routed: false, detail: 'systemd-resolved is not running' },
  'resolver.unroute': { unrouted: true, detail: "reverted resolved's settings for banger0" },
  'state': { bridgeUp: true, taps: ['banger0-t9'], natIps: ['10.213.7.9'] },
};

// ---- mutations -----------------------------------------------------------------

/** A JSON value of another type than `v` (null stays invalid for non-nullable fields too: 42 for null). */
function wrongType(v: unknown): unknown {
  if (typeof v === 'string') return 42;
  if (typeof v === 'number') return 'forty-two';
  if (typeof v === 'boolean') return 'true';
  if (v === null) return 42;
  if (Array.isArray(v)) return 'not a list';
  return 'not an object';
}

/** The object whose keys are mutated: the result, or its first item for a list. */
function target(sample: unknown): { obj: Record<string, unknown>; at: (o: Record<string, unknown>) => unknown; prefix: string } {
  if (Array.isArray(sample)) {
    return { obj: sample[0] as Record<string, unknown>, at: (o) => [o, ...sample.slice(1)], prefix: '0.' };
  }
  return { obj: sample as Record<string, unknown>, at: (o) => o, prefix: '' };
}

function checkTable(table: Record<string, { result: Shape<unknown> }>, sampleOf: Record<string, unknown>, optional: Record<string, string[] | undefined>) {
  const names = Object.keys(table);

  it('has a sample for every method', () => {
    expect(Object.keys(sampleOf).sort()).toEqual([...names].sort());
  });

  it.each(names)('%s: the sample passes, and comes back equal', (m) => {
    const r = table[m]!.result.safeParse(sampleOf[m]);
    expect(r.error?.issues, m).toBeUndefined();
    expect(r.data).toEqual(sampleOf[m]);
  });

  it.each(names)('%s: each field of the wrong type is refused, naming the field', (m) => {
    const { obj, at, prefix } = target(sampleOf[m]);
    const keys = Object.keys(obj);
    expect(keys.length, m).toBeGreaterThan(0);
    for (const k of keys) {
      const r = table[m]!.result.safeParse(at({ ...obj, [k]: wrongType(obj[k]) }));
      expect(r.success, `${m} ${k}`).toBe(false);
      expect(r.error!.issues[0]!.path.map(String).join('.'), `${m} ${k}`).toBe(`${prefix}${k}`);
    }
  });

  it.each(names)('%s: each required field missing is refused; optional ones may be left out', (m) => {
    const { obj, at } = target(sampleOf[m]);
    for (const k of Object.keys(obj)) {
      const rest = { ...obj };
      delete rest[k];
      const ok = table[m]!.result.safeParse(at(rest)).success;
      expect(ok, `${m} without ${k}`).toBe(optional[m]?.includes(k) ?? false);
    }
  });

  it.each(names)('%s: a result of the wrong kind (null, a string, a list for an object) is refused', (m) => {
    const schema = table[m]!.result;
    expect(schema.safeParse(null).success).toBe(false);
    expect(schema.safeParse('x').success).toBe(false);
    expect(schema.safeParse(Array.isArray(sampleOf[m]) ? {} : []).success).toBe(false);
  });

  it.each(names)('%s: an unknown key is accepted and dropped', (m) => {
    const { obj, at } = target(sampleOf[m]);
    const r = table[m]!.result.safeParse(at({ ...obj, addedByANewerPeer: { x: 1 } }));
    expect(r.success, m).toBe(true);
    expect(JSON.stringify(r.data)).not.toContain('addedByANewerPeer');
    expect(r.data).toEqual(sampleOf[m]);
  });
}

describe('methods.ts results', () => {
  checkTable(methods, samples, optionalKeys);

  it('nested objects are checked too, by path, and unknown nested keys dropped', () => {
    const show = methods['vm.show'].result;
    const bad = show.safeParse({ ...vm, runtime: { ...vm.runtime, sshPort: 70_000 } });
    expect(bad.error!.issues[0]!.path).toEqual(['runtime', 'sshPort']);
    const badWs = methods['vm.list'].result.safeParse([vm, { ...vm, workspace: { ...workspace, tree: 'not-a-sha' } }]);
    expect(badWs.error!.issues[0]!.path).toEqual([1, 'workspace', 'tree']);
    const extra = show.parse({ ...vm, runtime: { ...vm.runtime, cgroup: '/x' }, workspace: { ...workspace, dirty: true } });
    expect(extra).toEqual(vm);
  });

  it('nullable fields take null; non-nullable ones do not', () => {
    expect(methods['vm.show'].result.safeParse({ ...vm, runtime: null, workspace: null }).success).toBe(true);
    expect(methods['vm.create'].result.safeParse({ ...samples['vm.create'], ssh: null, clonedFrom: null }).success).toBe(true);
    expect(methods['vm.show'].result.safeParse({ ...vm, name: null }).success).toBe(false);
    expect(methods['vm.workspace.status'].result.safeParse({ workspace: null, changed: null, reason: null }).success).toBe(true);
  });

  it('numbers: whole where they count, finite, in range', () => {
    const show = methods['vm.show'].result;
    expect(show.safeParse({ ...vm, vcpu: 1.5 }).success).toBe(false);
    expect(show.safeParse({ ...vm, diskBytes: -1 }).success).toBe(false);
    expect(show.safeParse({ ...vm, memoryMib: Infinity }).success).toBe(false);
    expect(show.safeParse({ ...vm, memoryMib: NaN }).success).toBe(false);
    expect(show.safeParse({ ...vm, diskBytes: 2 ** 60 }).success).toBe(false); // not a safe integer
    expect(methods['vm.stats'].result.safeParse({ ...samples['vm.stats'], cpuPercent: 12.3 }).success).toBe(true);
  });

  it('enums and literals take only their values', () => {
    expect(methods['vm.show'].result.safeParse({ ...vm, state: 'exploded' }).success).toBe(false);
    expect(methods['daemon.stop'].result.safeParse({ stopping: false }).success).toBe(false);
    expect(methods['vm.stop'].result.safeParse({ ...samples['vm.stop'], report: { ...samples['vm.stop'].report, ended: 'maybe' } }).success).toBe(false);
  });

  it('strings and lists are bounded; names use the one grammar', () => {
    const show = methods['vm.show'].result;
    expect(show.safeParse({ ...vm, name: 'x'.repeat(64) }).success).toBe(false);
    expect(show.safeParse({ ...vm, name: '../etc' }).success).toBe(false);
    expect(show.safeParse({ ...vm, lastError: 'e'.repeat(64 * 1024 + 1) }).success).toBe(false);
    expect(methods['vm.ssh_target'].result.safeParse({ ...ssh, privateKeyPath: '/'.repeat(4097) }).success).toBe(false);
    expect(methods['vm.prune'].result.safeParse({ removed: Array<string>(MAX_ITEMS + 1).fill('a'), skipped: [], candidates: [] }).success).toBe(false);
    expect(methods['vm.prune'].result.safeParse({ removed: Array<string>(MAX_ITEMS).fill('a'), skipped: [], candidates: [] }).success).toBe(true);
  });

  it('no issue message echoes a huge string', () => {
    const r = methods['vm.show'].result.safeParse({ ...vm, name: 'x'.repeat(100_000) });
    expect(JSON.stringify(r.error!.issues).length).toBeLessThan(2000);
  });
});

describe("the helper's results", () => {
  checkTable(helperOps, helperSamples, {});
});

describe('schemaOf ties a shape to its interface at compile time', () => {
  it('accepts a shape whose output is exactly the type', () => {
    const s = schemaOf<{ a: string; b?: number; c: string | null }>()(object({ a: string(), b: number().optional(), c: string().nullable() }));
    expect(s.parse({ a: 'x', c: null, d: 1 })).toEqual({ a: 'x', c: null });
  });

  it('refuses drift in either direction (checked by tsc in npm run lint)', () => {
    // @ts-expect-error the shape lacks an optional key of the type
    schemaOf<{ a: string; b?: number }>()(object({ a: string() }));
    // @ts-expect-error the shape has a key the type lacks
    schemaOf<{ a: string }>()(object({ a: string(), b: string() }));
    // @ts-expect-error a field of another type
    schemaOf<{ a: string }>()(object({ a: number() }));
    // @ts-expect-error nullable where the type is not
    schemaOf<{ a: string }>()(object({ a: string().nullable() }));
    // @ts-expect-error optional where the type requires the key
    schemaOf<{ a: string }>()(object({ a: string().optional() }));
    expect(true).toBe(true);
  });
});

// ---- end to end: a real socket -----------------------------------------------------

let server: RpcServer | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await server?.close();
  server = undefined;
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function socketPath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'rpc-results-'));
  dirs.push(dir);
  return join(dir, 's.sock');
}

async function daemonAnswering(over: Partial<Handlers>): Promise<string> {
  const path = socketPath();
  const handlers = {
    'rpc.hello': async () => ({ protocol: PROTOCOL_VERSION, version: 'test', pid: process.pid }),
    'vm.list': async () => samples['vm.list'],
    ...over,
  } as Handlers;
  server = await startRpcServer({ socketPath: path, handlers, log: silentLogger(), version: 'test' });
  return path;
}

const rejection = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as BangerError,
  );

describe('RpcClient: a malformed result', () => {
  it('fails that call with operation_failed naming the method and field; the connection serves the next call', async () => {
    const path = await daemonAnswering({
      'vm.show': async () => ({ ...vm, runtime: { ...vm.runtime, pid: 'not a pid' } }) as never,
      'image.list': async () => 'not a list' as never,
    });
    const c = await RpcClient.connect(path, 'test');
    try {
      const err = await rejection(c.call('vm.show', { name: vm.name }));
      expect(err).toBeInstanceOf(BangerError);
      expect(err.code).toBe('operation_failed');
      expect(err.message).toContain('vm.show');
      expect(err.message).toContain('runtime.pid');
      expect(err.hint).toContain('different versions');
      expect(err.hint).toContain('banger daemon status');
      const whole = await rejection(c.call('image.list', {}));
      expect(whole.code).toBe('operation_failed');
      expect(whole.message).toContain('image.list');
      // the same connection, the next request
      expect(await c.call('vm.list', {})).toEqual(samples['vm.list']);
    } finally {
      c.close();
    }
  });

  it('a missing field is named too', async () => {
    const { report: _report, ...noReport } = samples['vm.stop'];
    const path = await daemonAnswering({ 'vm.stop': async () => noReport as never });
    const c = await RpcClient.connect(path, 'test');
    try {
      const err = await rejection(c.call('vm.stop', { name: vm.name }));
      expect(err.code).toBe('operation_failed');
      expect(err.message).toMatch(/vm\.stop.*report/);
    } finally {
      c.close();
    }
  });

  it('an unknown key is dropped, the rest arrives', async () => {
    const path = await daemonAnswering({ 'vm.show': async () => ({ ...vm, fromTheFuture: [1, 2, 3] }) as never });
    const c = await RpcClient.connect(path, 'test');
    try {
      const got = await c.call('vm.show', { name: vm.name });
      expect(got).toEqual(vm);
      expect('fromTheFuture' in got).toBe(false);
    } finally {
      c.close();
    }
  });

  it('a huge bad string is never echoed into the message', async () => {
    const path = await daemonAnswering({ 'vm.show': async () => ({ ...vm, name: 'x'.repeat(1_000_000) }) as never });
    const c = await RpcClient.connect(path, 'test');
    try {
      const err = await rejection(c.call('vm.show', { name: vm.name }));
      expect(err.code).toBe('operation_failed');
      expect(err.message).toContain('name');
      expect(err.message.length).toBeLessThan(600);
    } finally {
      c.close();
    }
  });

  it('a malformed hello answer fails the connect with the coded error, and the socket is closed', async () => {
    const path = socketPath();
    let closed!: () => void;
    const peerClosed = new Promise<void>((r) => (closed = r));
    const srv = createServer((sock) => {
      const reader = new LineReader({
        maxLine: 1 << 20,
        onOverflow: () => undefined,
        onLine: (l) => {
          const req = JSON.parse(l.toString('utf8')) as { id: number };
          sock.write(`${JSON.stringify({ id: req.id, result: { protocol: String(PROTOCOL_VERSION), version: 'x', pid: 1 } })}\n`);
        },
      });
      sock.on('data', (c: Buffer) => reader.push(c));
      sock.on('close', () => closed());
    });
    await new Promise<void>((r) => srv.listen(path, r));
    try {
      const err = await rejection(RpcClient.connect(path, 'test'));
      expect(err.code).toBe('operation_failed');
      expect(err.message).toContain('rpc.hello');
      expect(err.message).toContain('protocol');
      await expect(Promise.race([peerClosed.then(() => 'closed'), new Promise((r) => setTimeout(() => r('still open'), 2000))])).resolves.toBe('closed');
    } finally {
      srv.close();
    }
  });
});

describe("the helper's client: a malformed result", () => {
  it('fails that call with operation_failed naming the op; the connection serves the next call', async () => {
    const path = socketPath();
    const notUsed = async (): Promise<never> => {
      throw new BangerError('internal', 'not used');
    };
    const handlers: HandlersFor<HelperOps> = {
      'helper.hello': async () => helperSamples['helper.hello'],
      'bridge.ensure': notUsed,
      'bridge.remove': notUsed,
      'tap.create': notUsed,
      'tap.remove': notUsed,
      'nat.add': async () => ({ added: -1 }),
      'nat.remove': notUsed,
      'resolver.route': notUsed,
      'resolver.unroute': notUsed,
      'state': async () => ({ bridgeUp: 'yes' }) as never,
    };
    server = await serveTable({ socketPath: path, table: helperOps, handlers, log: silentLogger(), version: 'test', protocol: HELPER_PROTOCOL, helloMethod: 'helper.hello' });
    const c = await TableClient.open(path, { results: resultsOf(helperOps), helloMethod: 'helper.hello', protocol: HELPER_PROTOCOL, client: 'test', peer: 'root helper' });
    try {
      expect(c.hello).toEqual(helperSamples['helper.hello']);
      const err = await rejection(c.call('state', {}));
      expect(err.code).toBe('operation_failed');
      expect(err.message).toBe('the root helper sent a malformed result for state: bridgeUp: expected a boolean, got string');
      expect(err.hint).toContain('different versions');
      const neg = await rejection(c.call('nat.add', { guestIp: '10.213.7.9' }));
      expect(neg.message).toContain('nat.add: added');
      expect((await rejection(c.call('tap.remove', { tap: 'x' }))).message).toBe('not used'); // the connection still answers
    } finally {
      c.close();
    }
  });
});
