/**
 * Hostile RPC frames and a driver that throws them at a socket. Used by the
 * unit fuzz test (test/unit/rpc-fuzz.test.ts, a few thousand frames against
 * in-process servers) and by `npm run fuzz` (any number, against the real
 * bangerd and banger-helper processes).
 *
 * Every frame is garbage or a request that must be refused: none of them
 * may create, start, stop or delete anything (no valid vm.create, no
 * daemon.stop), so after a run the census must be exactly what it was.
 */
import { connect, type Socket } from 'node:net';

export { prng } from '../support/hostile.js';
import { prng } from '../support/hostile.js';
import { drainedOrClosed } from '../../src/system/streams.js';

export type FrameKind =
  | 'bad_json'
  | 'non_object'
  | 'wrong_types'
  | 'huge_string'
  | 'deep_nesting'
  | 'half_frame'
  | 'oversized'
  | 'refused_request'
  | 'binary';

export interface Frame {
  kind: FrameKind;
  /** The bytes to write. */
  data: Buffer;
  /** Close the connection right after writing (a half frame). */
  closeAfter?: boolean;
}

const KINDS: FrameKind[] = ['bad_json', 'non_object', 'wrong_types', 'huge_string', 'deep_nesting', 'half_frame', 'oversized', 'refused_request', 'binary'];

/**
 * Requests that reach the handlers and must each be refused (bad names,
 * path tricks, wrong types), for either table. `protocolHello` lets a
 * connection get past the hello so the methods themselves are exercised.
 */
function refusedRequests(table: 'daemon' | 'helper', rnd: () => number): unknown[] {
  const names = ['../victim', '../../../..', '/etc', 'a/b', '', ' ', 'UPPER', 'x'.repeat(64), '-lead', 'trail-', 'nul\u0000', 'dot.name', '..', '.', 'new\nline', '%2e%2e'];
  const name = names[Math.floor(rnd() * names.length)];
  if (table === 'helper') {
    // Right field names, hostile values: each must be refused by the op's own checks.
    return [
      { id: 1, method: 'tap.create', params: { tap: name } },
      { id: 2, method: 'tap.remove', params: { tap: 'eth0' } },
      { id: 3, method: 'tap.create', params: { tap: 'bgr0' } },
      { id: 4, method: 'nat.add', params: { guestIp: '8.8.8.8' } },
      { id: 5, method: 'nat.add', params: { guestIp: '10.213.0.1; rm -rf /' } },
      { id: 6, method: 'nat.remove', params: { guestIp: '0.0.0.0/0' } },
      { id: 7, method: 'resolver.route', params: { port: -1 } },
      { id: 8, method: 'bridge.ensure', params: { bridge: name } },
      { id: 9, method: 'shell.exec', params: { cmd: 'id' } },
      { id: 10, method: 'tap.create', params: 'not an object' },
    ];
  }
  const methods = ['vm.show', 'vm.delete', 'vm.stop', 'vm.start', 'vm.kill', 'vm.logs', 'vm.stats', 'vm.ports', 'vm.set', 'image.show', 'image.delete', 'image.build', 'vm.workspace.prepare', 'vm.workspace.export', 'vm.ssh_target'];
  const m = methods[Math.floor(rnd() * methods.length)];
  return [
    { id: 1, method: m, params: { name } },
    { id: 2, method: 'vm.create', params: { name, vcpu: 'many' } },
    { id: 3, method: 'vm.create', params: { vcpu: -1, memoryMib: 1e308, diskBytes: 'huge' } },
    { id: 4, method: 'vm.create', params: { image: name, start: 'yes' } },
    { id: 5, method: m, params: { name, extra: true } },
    { id: 6, method: 'vm.workspace.prepare', params: { name: 'x', path: '../../etc' } },
    { id: 7, method: 'vm.workspace.export', params: { name: 'x', baseCommit: '--output=/etc/passwd' } },
    { id: 8, method: 'vm.logs', params: { name: 'x', offset: -5 } },
    { id: 9, method: 'vm.prune', params: { names: [name], dryRun: 'no' } },
    { id: 10, method: 'vm.kill', params: { name: 'x', signal: 'STOP' } },
  ];
}

export function makeFrame(rnd: () => number, table: 'daemon' | 'helper', maxFrame: number): Frame {
  const kind = KINDS[Math.floor(rnd() * KINDS.length)]!;
  const line = (v: unknown) => Buffer.from(JSON.stringify(v) + '\n');
  switch (kind) {
    case 'bad_json': {
      const samples = ['{', '}', '{"id":1,"method":', 'nul', '{"id":1 "method":"x"}', "{'id':1}", '\u0000\u0001', '[1,2', '"unterminated', '{"a":1}}'];
      return { kind, data: Buffer.from(samples[Math.floor(rnd() * samples.length)]! + '\n') };
    }
    case 'non_object': {
      const samples: unknown[] = [null, 42, -0, 'x', [], [1, 2, 3], true, false, {}, 1e308];
      return { kind, data: line(samples[Math.floor(rnd() * samples.length)]) };
    }
    case 'wrong_types': {
      const samples: unknown[] = [
        { id: '1', method: 'vm.list' },
        { id: 1, method: 42 },
        { id: -1, method: 'vm.list' },
        { id: 1.5, method: 'vm.list' },
        { id: 1, method: null, params: null },
        { id: 1, method: ['vm.list'] },
        { id: 1, method: 'vm.list', params: [] },
        { id: 1, method: 'rpc.hello', params: { protocol: 'x', client: {} } },
        { id: 1, method: 'helper.hello', params: { protocol: null } },
        { id: Number.MAX_SAFE_INTEGER + 2, method: 'vm.list' },
        { id: 1, method: '__proto__', params: {} },
        { id: 1, method: 'constructor', params: {} },
        { id: 1, method: 'vm.list', params: { __proto__: { polluted: true } } },
      ];
      return { kind, data: line(samples[Math.floor(rnd() * samples.length)]) };
    }
    case 'huge_string': {
      const n = Math.floor(rnd() * Math.min(maxFrame - 64, 200_000));
      const s = 'A'.repeat(n);
      const variants: unknown[] = [
        { id: 1, method: s },
        { id: 1, method: 'vm.show', params: { name: s } },
        { id: 1, method: 'image.delete', params: { name: s } },
      ];
      return { kind, data: line(variants[Math.floor(rnd() * variants.length)]) };
    }
    case 'deep_nesting': {
      const depth = 1000 + Math.floor(rnd() * Math.min(maxFrame / 2 - 100, 100_000));
      return { kind, data: Buffer.from(`{"id":1,"method":"vm.list","params":${'['.repeat(depth)}${']'.repeat(depth)}}\n`) };
    }
    case 'half_frame':
      return { kind, data: Buffer.from('{"id":1,"method":"vm.li'), closeAfter: true };
    case 'oversized': {
      // Past the server's request limit, with no newline until the end.
      const n = maxFrame + 1 + Math.floor(rnd() * 1024);
      return { kind, data: Buffer.concat([Buffer.from('{"id":1,"method":"vm.list","params":{"x":"'), Buffer.alloc(n, 0x61), Buffer.from('"}}\n')]) };
    }
    case 'refused_request': {
      const reqs = refusedRequests(table, rnd);
      return { kind, data: line(reqs[Math.floor(rnd() * reqs.length)]) };
    }
    case 'binary': {
      const b = Buffer.alloc(1 + Math.floor(rnd() * 4096));
      for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256);
      return { kind, data: Buffer.concat([b, Buffer.from('\n')]) };
    }
  }
}

export interface FuzzOptions {
  socketPath: string;
  table: 'daemon' | 'helper';
  frames: number;
  seed: number;
  /** Connections open at once. */
  concurrency: number;
  /** The server's request limit (oversized frames go just past it). */
  maxFrame: number;
  /** A hello line to send first on about half the connections, so methods are reached. */
  hello: unknown;
  /** Frames per connection before it is closed and a new one opened. */
  framesPerConnection?: number;
}

export interface FuzzStats {
  frames: number;
  connections: number;
  byKind: Record<string, number>;
  /** Connections the peer closed on us (expected for oversized frames). */
  droppedByPeer: number;
  /** Connections that could not even connect (must be 0 while the server is alive). */
  connectFailures: number;
}

function openConn(path: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => resolve(s));
    s.once('error', () => resolve(undefined));
  });
}

/** Sends `frames` frames over many connections, `concurrency` at a time. */
export async function fuzz(o: FuzzOptions): Promise<FuzzStats> {
  const rnd = prng(o.seed);
  const stats: FuzzStats = { frames: 0, connections: 0, byKind: {}, droppedByPeer: 0, connectFailures: 0 };
  const perConn = o.framesPerConnection ?? 25;
  let left = o.frames;
  const worker = async () => {
    while (left > 0) {
      const n = Math.min(left, 1 + Math.floor(rnd() * perConn));
      left -= n; // claimed now (workers run side by side); what is not sent goes back below
      const s = await openConn(o.socketPath);
      if (!s) {
        stats.connectFailures++;
        left += n;
        if (stats.connectFailures > 100) break;
        continue;
      }
      stats.connections++;
      let closedByPeer = false;
      s.on('data', () => undefined);
      s.on('error', () => undefined);
      s.on('close', () => (closedByPeer = true));
      if (rnd() < 0.5) s.write(JSON.stringify(o.hello) + '\n');
      let i = 0;
      for (; i < n && !closedByPeer; i++) {
        const f = makeFrame(rnd, o.table, o.maxFrame);
        stats.frames++;
        stats.byKind[f.kind] = (stats.byKind[f.kind] ?? 0) + 1;
        // Written in a few pieces: frames split across chunks are the normal case.
        const cut = Math.floor(rnd() * f.data.length);
        await writeAll(s, f.data.subarray(0, cut));
        await writeAll(s, f.data.subarray(cut));
        if (f.closeAfter) {
          i++;
          break;
        }
      }
      left += n - i;
      await new Promise((r) => setTimeout(r, 5));
      if (closedByPeer) stats.droppedByPeer++;
      s.destroy();
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  return stats;
}

async function writeAll(s: Socket, data: Buffer): Promise<void> {
  if (s.destroyed || data.length === 0) return;
  if (!s.write(data)) await drainedOrClosed(s);
}

/**
 * Many connections each holding a big unfinished line at once: the
 * process-wide budget must refuse some of them rather than grow.
 */
export async function holdPartialLines(socketPath: string, connections: number, bytesEach: number): Promise<{ opened: number; dropped: number }> {
  const socks: Socket[] = [];
  let dropped = 0;
  for (let i = 0; i < connections; i++) {
    const s = await openConn(socketPath);
    if (!s) continue;
    s.on('error', () => undefined);
    s.on('data', () => undefined);
    s.on('close', () => dropped++);
    socks.push(s);
    await writeAll(s, Buffer.concat([Buffer.from('{"id":1,"method":"vm.list","params":{"x":"'), Buffer.alloc(bytesEach, 0x62)]));
  }
  await new Promise((r) => setTimeout(r, 200));
  const opened = socks.length;
  for (const s of socks) s.destroy();
  return { opened, dropped };
}
