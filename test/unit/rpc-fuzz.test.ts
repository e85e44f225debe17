/**
 * A bounded RPC fuzz run against the daemon's real server, handlers and
 * services (real SQLite, real state dir) and against the root helper's real
 * server and ops (real ip/iptables in a throwaway netns): thousands of
 * hostile frames over many connections. Afterwards each server is alive,
 * answers a valid request, and nothing was created: no row, no file, no
 * child process, no link, no rule. `npm run fuzz` runs the same frames
 * against the real processes for as long as you like.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveLayout } from '../../src/paths/paths.js';
import { DEFAULT_CONFIG } from '../../src/config/config.js';
import { Store } from '../../src/store/store.js';
import { createRunner } from '../../src/system/runner.js';
import { silentLogger } from '../../src/log/log.js';
import { composeServices } from '../../src/daemon/compose.js';
import { makeHandlers } from '../../src/daemon/handlers.js';
import { serveTable, startRpcServer, type RpcServer } from '../../src/rpc/server.js';
import { RpcClient } from '../../src/rpc/client.js';
import { MAX_REQUEST_BYTES } from '../../src/rpc/framing.js';
import { PROTOCOL_VERSION } from '../../src/rpc/methods.js';
import { ByteBudget } from '../../src/system/line-reader.js';
import { parseSubnet } from '../../src/model/net.js';
import { HostNet } from '../../src/helper/host-net.js';
import { HELPER_PROTOCOL, helperHandlers, helperOps } from '../../src/helper/ops.js';
import { connectHelper } from '../../src/helper/client.js';
import { z } from 'zod';
import { object } from '../../src/rpc/shape.js';
import { fuzz, holdPartialLines } from '../fuzz/frames.js';
import { filesUnder, liveChildren, netnsCensus, watchCrashes } from '../support/hostile.js';

/** The census's files: everything under the run's root but the log files. */
const files = (dir: string) => filesUnder(dir, /\.log(\.\d)?$/);
const children = () => liveChildren(process.pid);

const runner = createRunner();

describe('RPC fuzz: the daemon', () => {
  let root: string;
  let server: RpcServer;
  let store: Store;
  let socketPath: string;
  let watch: ReturnType<typeof watchCrashes>;

  beforeAll(async () => {
    watch = watchCrashes();
    root = mkdtempSync(join(tmpdir(), 'banger-fuzz-'));
    const layout = resolveLayout({
      HOME: root,
      BANGER_STATE_DIR: join(root, 'state'),
      BANGER_RUNTIME_DIR: join(root, 'run'),
      BANGER_CONFIG_DIR: join(root, 'config'),
      BANGER_CACHE_DIR: join(root, 'cache'),
    });
    for (const d of [layout.stateDir, layout.runtimeDir, layout.imagesDir, layout.vmsDir, layout.vmSocketsDir, layout.sshDir]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
    }
    // A victim outside the state dir that path tricks would reach.
    writeFileSync(join(root, 'victim'), 'precious\n');
    store = Store.open(layout.dbPath);
    const config = { ...DEFAULT_CONFIG, helperSocket: join(root, 'no-helper.sock'), network: 'user' as const };
    const services = composeServices({ store, runner, layout, config, log: silentLogger() });
    socketPath = layout.socketPath;
    server = await startRpcServer({
      socketPath,
      handlers: makeHandlers(services, { layout, startedAt: Date.now(), requestStop: () => undefined }),
      log: silentLogger(),
      version: 'fuzz',
    });
  });

  afterAll(async () => {
    watch.stop();
    await server?.close();
    store?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('survives 3000 hostile frames over many connections, answers afterwards, creates nothing', async () => {
    const before = { files: files(root), children: children() };
    const started = Date.now();
    const stats = await fuzz({
      socketPath,
      table: 'daemon',
      frames: 3000,
      seed: 9,
      concurrency: 16,
      maxFrame: MAX_REQUEST_BYTES,
      hello: { id: 0, method: 'rpc.hello', params: { protocol: PROTOCOL_VERSION, client: 'fuzz' } },
    });
    expect(stats.frames).toBe(3000);
    expect(stats.connectFailures).toBe(0);
    expect(Object.keys(stats.byKind).length).toBeGreaterThanOrEqual(8);
    expect(Date.now() - started).toBeLessThan(60_000);
    // Alive and answering.
    const c = await RpcClient.connect(socketPath, 'after-fuzz');
    expect(await c.call('vm.list', {})).toEqual([]);
    expect(await c.call('image.list', {})).toEqual([]);
    c.close();
    expect(watch.crashes).toEqual([]);
    // Nothing created, nothing removed.
    expect(store.listVms()).toEqual([]);
    expect(files(root)).toEqual(before.files);
    expect(children()).toEqual(before.children);
    expect(readFileSync(join(root, 'victim'), 'utf8')).toBe('precious\n');
  }, 90_000);

  it('a null line, a non-object and a huge name each cost one request, not the connection', async () => {
    const c = await RpcClient.connect(socketPath, 't');
    const sock = (c as unknown as { socket: import('node:net').Socket }).socket;
    sock.write('null\n42\n[]\n');
    const err = await c.call('vm.show', { name: 'x'.repeat(200_000) }).catch((e: unknown) => e as Error);
    expect(String((err as Error).message).length).toBeLessThan(1000);
    expect(await c.call('vm.list', {})).toEqual([]);
    c.close();
  });
});

describe('RPC framing bounds', () => {
  it('an oversized request costs its connection; other clients keep being served', async () => {
    const root = mkdtempSync(join(tmpdir(), 'banger-frame-'));
    const socketPath = join(root, 's.sock');
    const server = await startRpcServer({
      socketPath,
      handlers: { 'rpc.hello': async () => ({ protocol: PROTOCOL_VERSION, version: 't', pid: 1 }), 'vm.list': async () => [] } as never,
      log: silentLogger(),
      version: 't',
    });
    try {
      const other = await RpcClient.connect(socketPath, 'other');
      const { opened, dropped } = await holdPartialLines(socketPath, 1, MAX_REQUEST_BYTES + 10);
      expect(opened).toBe(1);
      expect(dropped).toBe(1);
      const t0 = Date.now();
      expect(await other.call('vm.list', {})).toEqual([]);
      expect(Date.now() - t0).toBeLessThan(1000);
      other.close();
    } finally {
      await server.close();
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('many connections holding partial lines hit the process budget, not unbounded memory', async () => {
    const root = mkdtempSync(join(tmpdir(), 'banger-frame-'));
    const socketPath = join(root, 's.sock');
    const budget = new ByteBudget(4 * 1024 * 1024);
    const server = await serveTable({
      socketPath,
      table: { 'rpc.hello': { params: z.object({ protocol: z.number(), client: z.string() }), result: object({}) } },
      handlers: { 'rpc.hello': async () => ({}) },
      log: silentLogger(),
      version: 't',
      protocol: 1,
      helloMethod: 'rpc.hello',
      budget,
    });
    try {
      // 8 × 900 KiB = 7.2 MiB of unfinished lines against a 4 MiB budget.
      const { opened, dropped } = await holdPartialLines(socketPath, 8, 900 * 1024);
      expect(opened).toBe(8);
      expect(dropped).toBeGreaterThanOrEqual(3);
      expect(budget.used).toBeLessThanOrEqual(4 * 1024 * 1024);
      await new Promise((r) => setTimeout(r, 100));
      expect(budget.used).toBe(0);
    } finally {
      await server.close();
      rmSync(root, { recursive: true, force: true });
    }
  });
});

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('RPC fuzz: the root helper (real ip/iptables in a netns)', () => {
  const ns = `bgrfuzz-${process.pid}`;
  let dir: string;
  let server: RpcServer | undefined;
  let canRun = true;

  const census = () => netnsCensus(runner, ns);

  beforeAll(async () => {
    if ((await runner.run(['ip', 'netns', 'add', ns], { allowFailure: true })).code !== 0) {
      canRun = false;
      return;
    }
    dir = mkdtempSync(join(tmpdir(), 'banger-helper-fuzz-'));
    writeFileSync(join(dir, 'tun'), '', { mode: 0o600 });
    const net = new HostNet(runner, { bridge: 'bgr0', subnet: parseSubnet('10.213.9.0/24'), ownerUid: 4242, netns: ns, tunDevice: join(dir, 'tun') });
    server = await serveTable({
      socketPath: join(dir, 'helper.sock'),
      table: helperOps,
      handlers: helperHandlers(net, { route: async () => ({ routed: false, detail: '' }), unroute: async () => ({ unrouted: false, detail: '' }) }, 'fuzz'),
      log: silentLogger(),
      version: 'fuzz',
      protocol: HELPER_PROTOCOL,
      helloMethod: 'helper.hello',
    });
  });

  afterAll(async () => {
    await server?.close();
    await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('survives 2000 hostile frames, answers afterwards, and changed no link, rule or sysctl', async () => {
    if (!canRun) throw new Error('ip netns add failed: the helper fuzz could not run (root with ip netns is needed)');
    const before = await census();
    const stats = await fuzz({
      socketPath: join(dir, 'helper.sock'),
      table: 'helper',
      frames: 2000,
      seed: 11,
      concurrency: 8,
      maxFrame: MAX_REQUEST_BYTES,
      hello: { id: 0, method: 'helper.hello', params: { protocol: HELPER_PROTOCOL, client: 'fuzz' } },
    });
    expect(stats.connectFailures).toBe(0);
    const c = await connectHelper(join(dir, 'helper.sock'));
    expect((await c.call('state', {})).bridgeUp).toBe(false);
    c.close();
    expect(await census()).toBe(before);
  }, 90_000);
});
