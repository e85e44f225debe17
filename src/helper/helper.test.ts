/**
 * The root helper against the real kernel: ip and iptables inside a
 * throwaway network namespace (so the host's own links and rules are never
 * touched), over the real socket protocol. Needs root and `ip netns`.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../system/runner.js';
import { silentLogger } from '../log/log.js';
import { parseSubnet } from '../model/net.js';
import { serveTable, type RpcServer } from '../rpc/server.js';
import { isBangerError } from '../errors/errors.js';
import { HostNet } from './host-net.js';
import { HELPER_PROTOCOL, helperHandlers, helperOps } from './ops.js';
import { connectHelper, type HelperClient } from './client.js';
import type { Resolver } from './resolver.js';
import { HELPER_USAGE, parseHelperArgs } from './args.js';

const runner = createRunner();
const isRoot = process.getuid?.() === 0;
const ns = `bgrtest-${process.pid}`;
const OWNER = 4242;
const SUBNET = parseSubnet('10.213.7.0/24');
let dir: string;
let server: RpcServer | undefined;
let client: HelperClient;
let canRun = isRoot;

const fakeResolver: Resolver = {
  route: async (b, ip, port) => ({ routed: false, detail: `${b} ${ip}:${port}` }),
  unroute: async () => ({ unrouted: false, detail: 'none' }),
};

async function inNs(...cmd: string[]): Promise<string> {
  return (await runner.run(['ip', 'netns', 'exec', ns, ...cmd])).stdout;
}

/** Links and both iptables tables: what a refused request must not change. */
async function snapshot(): Promise<string> {
  return (await inNs('ip', '-o', 'link', 'show')).replace(/\s+/g, ' ') + (await inNs('iptables-save')).replace(/^#.*$/gm, '');
}

beforeAll(async () => {
  if (!isRoot) return;
  const made = await runner.run(['ip', 'netns', 'add', ns], { allowFailure: true });
  if (made.code !== 0) {
    canRun = false;
    return;
  }
  dir = mkdtempSync(join(tmpdir(), 'banger-helper-'));
  writeFileSync(join(dir, 'tun'), '', { mode: 0o600 });
  const net = new HostNet(runner, { bridge: 'bgr0', subnet: SUBNET, ownerUid: OWNER, netns: ns, tunDevice: join(dir, 'tun'), forwardRecord: record() });
  server = await serveTable({
    socketPath: join(dir, 'helper.sock'),
    table: helperOps,
    handlers: helperHandlers(net, fakeResolver, 'test'),
    log: silentLogger(),
    version: 'test',
    protocol: HELPER_PROTOCOL,
    helloMethod: 'helper.hello',
    owner: { uid: OWNER, gid: OWNER },
  });
  client = await connectHelper(join(dir, 'helper.sock'));
});

afterAll(async () => {
  client?.close();
  await server?.close();
  if (canRun) await runner.run(['ip', 'netns', 'del', ns], { allowFailure: true });
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const record = () => join(dir, 'ip_forward.saved');
const forwarding = async () => (await inNs('sysctl', '-n', 'net.ipv4.ip_forward')).trim();
const setForwarding = (v: 0 | 1) => inNs('sysctl', '-q', '-w', `net.ipv4.ip_forward=${v}`);

async function refused(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isBangerError(e)).toBe(true);
  return isBangerError(e) ? { code: e.code, message: e.message } : { code: '', message: '' };
}

describe.skipIf(!isRoot)('root helper (real ip/iptables in a netns)', () => {
  it('its socket belongs to the owner uid, mode 0600', () => {
    if (!canRun) return;
    const st = statSync(join(dir, 'helper.sock'));
    expect(st.uid).toBe(OWNER);
    expect(st.mode & 0o777).toBe(0o600);
  });

  it('bridge.ensure makes the bridge with its gateway and the base chains, idempotently', async () => {
    if (!canRun) return;
    expect((await client.call('bridge.ensure', {})).created).toBe(true);
    const again = await client.call('bridge.ensure', {});
    expect(again).toEqual({ bridge: 'bgr0', gateway: '10.213.7.1', created: false });
    expect(await inNs('ip', '-4', '-o', 'addr', 'show', 'dev', 'bgr0')).toContain('10.213.7.1/24');
    // QEMU (the owner user) can open the tun device: restored to the distro default 0666
    expect(statSync(join(dir, 'tun')).mode & 0o777).toBe(0o666);
    const rules = await inNs('iptables', '-S');
    expect(rules.match(/-A FORWARD -i bgr0 -j BANGER-FWD-bgr0/g)).toHaveLength(1);
    expect(rules).toContain('-A BANGER-FWD-bgr0 -i bgr0 ! -o bgr0 -j DROP');
  });

  it('tap.create makes a tap owned by the daemon user on the bridge; a leftover is reclaimed', async () => {
    if (!canRun) return;
    expect(await client.call('tap.create', { tap: 'bgr0t3' })).toEqual({ tap: 'bgr0t3', created: true });
    expect(await inNs('ip', 'tuntap', 'show')).toContain(`bgr0t3: tap persist user ${OWNER}`);
    expect(await inNs('ip', '-o', 'link', 'show', 'dev', 'bgr0t3')).toContain('master bgr0');
    expect((await client.call('tap.create', { tap: 'bgr0t3' })).created).toBe(false);
    // a tap left by a crashed run with another owner is replaced
    await inNs('ip', 'tuntap', 'add', 'dev', 'bgr0t4', 'mode', 'tap', 'user', '1');
    expect((await client.call('tap.create', { tap: 'bgr0t4' })).created).toBe(true);
    expect(await inNs('ip', 'tuntap', 'show')).toContain(`bgr0t4: tap persist user ${OWNER}`);
    expect((await client.call('state', {})).taps.sort()).toEqual(['bgr0t3', 'bgr0t4']);
  });

  it('nat.add installs MASQUERADE for the /32 and a forward accept, once; nat.remove takes them away', async () => {
    if (!canRun) return;
    expect(await client.call('nat.add', { guestIp: '10.213.7.5' })).toEqual({ added: 2 });
    expect(await client.call('nat.add', { guestIp: '10.213.7.5' })).toEqual({ added: 0 });
    const nat = await inNs('iptables', '-t', 'nat', '-S', 'BANGER-NAT-bgr0');
    expect(nat.match(/-A BANGER-NAT-bgr0 -s 10\.213\.7\.5\/32 ! -d 10\.213\.7\.0\/24 -j MASQUERADE/g)).toHaveLength(1);
    const fwd = await inNs('iptables', '-S', 'BANGER-FWD-bgr0');
    // the accept comes before the final drop
    expect(fwd.indexOf('-s 10.213.7.5/32')).toBeLessThan(fwd.indexOf('-j DROP'));
    expect((await client.call('state', {})).natIps).toEqual(['10.213.7.5']);
    expect(await client.call('nat.remove', { guestIp: '10.213.7.5' })).toEqual({ removed: 2 });
    expect(await client.call('nat.remove', { guestIp: '10.213.7.5' })).toEqual({ removed: 0 });
    expect((await client.call('state', {})).natIps).toEqual([]);
  });

  it('ip_forward: turned on for the first NAT guest and put back when the last one goes; left on when it was on before', async () => {
    if (!canRun) return;
    await setForwarding(0);
    await client.call('nat.add', { guestIp: '10.213.7.5' });
    expect(await forwarding()).toBe('1');
    expect(readFileSync(record(), 'utf8')).toBe('0\n');
    await client.call('nat.add', { guestIp: '10.213.7.6' });
    await client.call('nat.remove', { guestIp: '10.213.7.5' });
    expect(await forwarding()).toBe('1'); // .6 still needs it
    await client.call('nat.remove', { guestIp: '10.213.7.6' });
    expect(await forwarding()).toBe('0');
    expect(existsSync(record())).toBe(false);
    // it was on before banger: nothing recorded, nothing put back
    await setForwarding(1);
    await client.call('nat.add', { guestIp: '10.213.7.5' });
    await client.call('nat.remove', { guestIp: '10.213.7.5' });
    expect(await forwarding()).toBe('1');
    expect(existsSync(record())).toBe(false);
    await setForwarding(0);
  });

  it('ip_forward: the record survives a helper restart, and another bridge with NAT guests keeps forwarding on', async () => {
    if (!canRun) return;
    await client.call('nat.add', { guestIp: '10.213.7.5' });
    // a restarted helper (a new HostNet, same record) still puts it back
    const restarted = new HostNet(runner, { bridge: 'bgr0', subnet: SUBNET, ownerUid: OWNER, netns: ns, forwardRecord: record() });
    expect(await restarted.removeNat('10.213.7.5')).toBe(2);
    expect(await forwarding()).toBe('0');
    // a second helper's bridge in the same namespace
    const other = new HostNet(runner, { bridge: 'bgr1', subnet: parseSubnet('10.213.8.0/24'), ownerUid: OWNER, netns: ns, forwardRecord: record() });
    try {
      await other.addNat('10.213.8.5');
      await client.call('nat.add', { guestIp: '10.213.7.5' });
      await other.removeNat('10.213.8.5');
      expect(await forwarding()).toBe('1'); // bgr0's guest still needs it
      await client.call('nat.remove', { guestIp: '10.213.7.5' });
      expect(await forwarding()).toBe('0');
    } finally {
      await other.removeBridge();
    }
  });

  it("resolver.route sends guests' gateway:53 to the daemon's port, once, replacing an earlier port", async () => {
    if (!canRun) return;
    await client.call('resolver.route', { port: 5300 });
    await client.call('resolver.route', { port: 5301 });
    const rules = (await inNs('iptables', '-t', 'nat', '-S', 'BANGER-DNS-bgr0')).split('\n').filter((l) => l.includes('REDIRECT'));
    expect(rules).toEqual(['-A BANGER-DNS-bgr0 -d 10.213.7.1/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 5301']);
    expect(await inNs('iptables', '-t', 'nat', '-S', 'PREROUTING')).toContain('-A PREROUTING -i bgr0 -j BANGER-DNS-bgr0');
  });

  it('refuses an unknown op, a foreign interface, an address outside the subnet, and extra fields, changing nothing', async () => {
    if (!canRun) return;
    const before = await snapshot();
    const raw = client as unknown as { call(m: string, p: unknown): Promise<unknown> };
    expect((await refused(raw.call('exec', { cmd: 'id' }))).code).toBe('unknown_method');
    expect((await refused(client.call('tap.create', { tap: 'eth0' }))).message).toMatch(/not a banger tap name/);
    expect((await refused(client.call('tap.remove', { tap: 'bgr0t1; rm -rf /' }))).code).toBe('bad_request');
    expect((await refused(client.call('tap.create', { tap: 'bgr1t1' }))).code).toBe('bad_request');
    expect((await refused(client.call('nat.add', { guestIp: '8.8.8.8' }))).message).toMatch(/not a guest address/);
    expect((await refused(client.call('nat.add', { guestIp: '10.213.7.1' }))).code).toBe('bad_request'); // the gateway
    expect((await refused(client.call('nat.add', { guestIp: '10.213.7.255' }))).code).toBe('bad_request'); // broadcast
    expect((await refused(raw.call('nat.add', { guestIp: '10.213.7.9', table: 'filter' }))).code).toBe('bad_request');
    expect(await snapshot()).toBe(before);
  });

  it('bridge.remove takes the bridge, its taps and the chains away, and puts ip_forward back', async () => {
    if (!canRun) return;
    await setForwarding(0);
    await client.call('nat.add', { guestIp: '10.213.7.6' });
    expect(await forwarding()).toBe('1');
    expect(await client.call('bridge.remove', {})).toEqual({ removed: true });
    expect(await forwarding()).toBe('0');
    expect(existsSync(record())).toBe(false);
    expect(await inNs('ip', '-o', 'link', 'show')).not.toMatch(/bgr0/);
    expect(await inNs('iptables-save')).not.toMatch(/BANGER/);
    expect(await client.call('bridge.remove', {})).toEqual({ removed: false });
  });
});

describe('banger-helper command line', () => {
  it('--help and --version answer (main prints them and exits 0, before the root check)', () => {
    expect(parseHelperArgs(['--help'])).toEqual({ kind: 'help' });
    expect(parseHelperArgs(['-h'])).toEqual({ kind: 'help' });
    expect(parseHelperArgs(['--version'])).toEqual({ kind: 'version' });
    expect(parseHelperArgs(['--owner-uid', '1000', '--help'])).toEqual({ kind: 'help' });
    expect(HELPER_USAGE).toMatch(/^usage: banger-helper --owner-uid UID/);
    for (const o of ['--owner-uid', '--socket', '--subnet', '--bridge', '--log', '--netns', '--help', '--version']) expect(HELPER_USAGE).toContain(o);
  });

  it('parses the options; an unknown one is a bad_request pointing at --help', () => {
    const a = parseHelperArgs(['--owner-uid', '1000', '--bridge', 'bgr2']);
    expect(a).toEqual({ kind: 'run', values: expect.objectContaining({ 'owner-uid': '1000', bridge: 'bgr2', socket: '/run/banger/helper.sock' }) });
    let err: unknown;
    try {
      parseHelperArgs(['--bogus']);
    } catch (e) {
      err = e;
    }
    expect(isBangerError(err) && err.code === 'bad_request' && /--help/.test(err.hint ?? '')).toBe(true);
  });
});
