/**
 * The privileged networking the root helper does, as commands (`ip`,
 * `iptables`) through the one runner. Every operation is idempotent: it
 * checks before it adds (`iptables -C`, `ip link show`) and removing what is
 * not there is not an error. Inputs are validated by the caller (ops.ts)
 * against the helper's own config; nothing here takes a name or address
 * that config did not produce or allow.
 *
 * Firewall layout (iptables; chains of our own, named after the bridge BR):
 *   filter FORWARD   -i BR -j BANGER-FWD-BR ; -o BR -j BANGER-FWD-BR   (first)
 *   BANGER-FWD-BR    -o BR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
 *                    -i BR -s GUEST/32 ! -o BR -j ACCEPT          (one per --nat guest)
 *                    -i BR ! -o BR -j DROP                        (everyone else: no route off the host)
 *   nat POSTROUTING  -j BANGER-NAT-BR
 *   BANGER-NAT-BR    -s GUEST/32 ! -d SUBNET -j MASQUERADE         (one per --nat guest)
 *   nat PREROUTING   -i BR -j BANGER-DNS-BR
 *   BANGER-DNS-BR    -d GATEWAY -p udp --dport 53 -j REDIRECT --to-ports DNS_PORT
 *                    (guests ask the gateway on 53; the daemon, unprivileged, listens above 1024)
 *
 * IPv4 forwarding (host-wide, per network namespace): the first NAT guest
 * turns net.ipv4.ip_forward on when it was off, recording the old value in
 * FORWARD_RECORD (/run: it survives a helper restart, not a reboot, which
 * resets the sysctl anyway). When the last NAT guest goes (nat.remove) or the
 * bridge goes (bridge.remove), and no banger bridge in the namespace has a
 * NAT guest left, the recorded value is put back and the record removed. A
 * helper stop changes nothing: NAT guests keep their egress across restarts.
 * If forwarding was on before banger, there is no record and it stays on.
 */
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { gatewayOf, isTapName, type Subnet } from '../model/net.js';
import type { Runner } from '../system/runner.js';

/** banger's chains are per bridge, so two helpers (two bridges) never touch each other's rules. */
export const fwdChain = (bridge: string) => `BANGER-FWD-${bridge}`;
export const natChain = (bridge: string) => `BANGER-NAT-${bridge}`;
export const dnsChain = (bridge: string) => `BANGER-DNS-${bridge}`;

export interface HostNetConfig {
  bridge: string;
  subnet: Subnet;
  /** Who owns the taps (the daemon's user). */
  ownerUid: number;
  /** Tests: run every command inside this network namespace. */
  netns?: string;
  /** Tests: the tun device to make openable (default /dev/net/tun). */
  tunDevice?: string;
  /**
   * Where the ip_forward value from before banger is recorded (default
   * FORWARD_RECORD; with `netns` and no path, kept in memory only so a test
   * namespace never writes the host's record).
   */
  forwardRecord?: string;
}

export const FORWARD_RECORD = '/run/banger/ip_forward.saved';

export const TUN_DEVICE = '/dev/net/tun';

/**
 * QEMU, running as the owner user, opens /dev/net/tun to attach to its tap.
 * Debian and Ubuntu ship it 0666 (udev's default rule): opening it grants
 * nothing by itself, since creating a tap needs CAP_NET_ADMIN and attaching
 * to a persistent one needs to be its owner. Where it is 0600 (some
 * containers), the helper restores that default.
 */
export function ensureTunOpenable(dev: string): boolean {
  const st = statSync(dev);
  if ((st.mode & 0o666) === 0o666) return false;
  chmodSync(dev, (st.mode & 0o7777) | 0o666);
  return true;
}

export class HostNet {
  private readonly fwd: string;
  private readonly nat: string;
  private readonly dns: string;
  private readonly record: string | undefined;
  /** The record when it is kept in memory (netns without a path). */
  private memRecord: string | undefined;
  /** NAT and bridge changes run one at a time, so a restore never races a new NAT guest. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly runner: Runner,
    readonly cfg: HostNetConfig,
  ) {
    this.fwd = fwdChain(cfg.bridge);
    this.nat = natChain(cfg.bridge);
    this.dns = dnsChain(cfg.bridge);
    this.record = cfg.forwardRecord ?? (cfg.netns ? undefined : FORWARD_RECORD);
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private argv(cmd: string[]): string[] {
    return this.cfg.netns ? ['ip', 'netns', 'exec', this.cfg.netns, ...cmd] : cmd;
  }

  private async run(cmd: string[]): Promise<void> {
    await this.runner.run(this.argv(cmd), { timeoutMs: 30_000 });
  }

  private async ok(cmd: string[]): Promise<boolean> {
    const r = await this.runner.run(this.argv(cmd), { allowFailure: true, timeoutMs: 30_000 });
    return r.code === 0;
  }

  private async out(cmd: string[]): Promise<string> {
    return (await this.runner.run(this.argv(cmd), { timeoutMs: 30_000 })).stdout;
  }

  async linkExists(name: string): Promise<boolean> {
    return this.ok(['ip', 'link', 'show', 'dev', name]);
  }

  /** The bridge with its gateway address, up, and the base firewall chains. Returns whether the bridge was created. */
  async ensureBridge(): Promise<boolean> {
    const { bridge, subnet } = this.cfg;
    let created = false;
    if (!(await this.linkExists(bridge))) {
      await this.run(['ip', 'link', 'add', 'name', bridge, 'type', 'bridge']);
      created = true;
    }
    const addr = `${gatewayOf(subnet)}/${subnet.prefix}`;
    const addrs = await this.out(['ip', '-4', '-o', 'addr', 'show', 'dev', bridge]);
    if (!addrs.includes(` ${addr} `)) await this.run(['ip', 'addr', 'add', addr, 'dev', bridge]);
    await this.run(['ip', 'link', 'set', 'dev', bridge, 'up']);
    await this.ensureChains();
    ensureTunOpenable(this.cfg.tunDevice ?? TUN_DEVICE);
    return created;
  }

  private async ensureChains(): Promise<void> {
    const { bridge } = this.cfg;
    if (!(await this.ok(['iptables', '-w', '-t', 'filter', '-n', '-L', this.fwd]))) await this.run(['iptables', '-w', '-t', 'filter', '-N', this.fwd]);
    if (!(await this.ok(['iptables', '-w', '-t', 'nat', '-n', '-L', this.nat]))) await this.run(['iptables', '-w', '-t', 'nat', '-N', this.nat]);
    for (const dir of ['-i', '-o']) await this.ensureRule('filter', 'FORWARD', [dir, bridge, '-j', this.fwd], 'insert');
    await this.ensureRule('nat', 'POSTROUTING', ['-j', this.nat], 'append');
    if (!(await this.ok(['iptables', '-w', '-t', 'nat', '-n', '-L', this.dns]))) await this.run(['iptables', '-w', '-t', 'nat', '-N', this.dns]);
    await this.ensureRule('nat', 'PREROUTING', ['-i', bridge, '-j', this.dns], 'append');
    await this.ensureRule('filter', this.fwd, ['-o', bridge, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT'], 'insert');
    await this.ensureRule('filter', this.fwd, ['-i', bridge, '!', '-o', bridge, '-j', 'DROP'], 'append');
  }

  private async ensureRule(table: string, chain: string, spec: string[], how: 'insert' | 'append'): Promise<boolean> {
    if (await this.ok(['iptables', '-w', '-t', table, '-C', chain, ...spec])) return false;
    await this.run(['iptables', '-w', '-t', table, how === 'insert' ? '-I' : '-A', chain, ...(how === 'insert' ? ['1'] : []), ...spec]);
    return true;
  }

  /** Deletes every copy of a rule (a crashed run may have left two). Returns how many. */
  private async deleteRule(table: string, chain: string, spec: string[]): Promise<number> {
    let n = 0;
    while (n < 100 && (await this.ok(['iptables', '-w', '-t', table, '-C', chain, ...spec]))) {
      await this.run(['iptables', '-w', '-t', table, '-D', chain, ...spec]);
      n++;
    }
    return n;
  }

  /** Removes the bridge (and its taps with it) and banger's chains; puts ip_forward back when nothing else needs it. */
  removeBridge(): Promise<boolean> {
    return this.exclusive(async () => {
      const removed = await this.removeBridgeNow();
      await this.restoreForwarding();
      return removed;
    });
  }

  private async removeBridgeNow(): Promise<boolean> {
    const { bridge } = this.cfg;
    for (const dir of ['-i', '-o']) await this.deleteRule('filter', 'FORWARD', [dir, bridge, '-j', this.fwd]);
    await this.deleteRule('nat', 'POSTROUTING', ['-j', this.nat]);
    await this.deleteRule('nat', 'PREROUTING', ['-i', bridge, '-j', this.dns]);
    for (const [table, chain] of [['filter', this.fwd], ['nat', this.nat], ['nat', this.dns]] as const) {
      if (await this.ok(['iptables', '-w', '-t', table, '-n', '-L', chain])) {
        await this.run(['iptables', '-w', '-t', table, '-F', chain]);
        await this.run(['iptables', '-w', '-t', table, '-X', chain]);
      }
    }
    for (const tap of await this.taps()) await this.removeTap(tap);
    if (!(await this.linkExists(bridge))) return false;
    await this.run(['ip', 'link', 'del', 'dev', bridge]);
    return true;
  }

  /** A tap owned by the daemon's user, enslaved to the bridge, up. A leftover one (crashed run) is reclaimed. */
  async createTap(tap: string): Promise<boolean> {
    const { bridge, ownerUid } = this.cfg;
    if (!(await this.linkExists(bridge))) {
      throw new BangerError('not_found', `bridge ${bridge} does not exist`, 'the daemon ensures it first (bridge.ensure)');
    }
    let created = false;
    if (await this.linkExists(tap)) {
      // Reclaim only a tap of ours with the right owner; otherwise make it anew.
      const owner = await this.tapOwner(tap);
      if (owner !== ownerUid) {
        await this.run(['ip', 'link', 'del', 'dev', tap]);
      }
    }
    if (!(await this.linkExists(tap))) {
      await this.run(['ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap', 'user', String(ownerUid)]);
      created = true;
    }
    await this.run(['ip', 'link', 'set', 'dev', tap, 'master', bridge]);
    await this.run(['ip', 'link', 'set', 'dev', tap, 'up']);
    return created;
  }

  private async tapOwner(tap: string): Promise<number | null> {
    // `ip tuntap show` may list every tap whatever `dev` says: pick our line.
    const r = await this.runner.run(this.argv(['ip', 'tuntap', 'show', 'dev', tap]), { allowFailure: true });
    const line = r.stdout.split('\n').find((l) => l.startsWith(`${tap}:`));
    const m = line ? /\buser (\d+)/.exec(line) : null;
    return m ? Number(m[1]) : null;
  }

  async removeTap(tap: string): Promise<boolean> {
    if (!(await this.linkExists(tap))) return false;
    await this.run(['ip', 'link', 'del', 'dev', tap]);
    return true;
  }

  /** Links that are taps of this bridge (`isTapName`: never another bridge or another bridge's tap). */
  async taps(): Promise<string[]> {
    const out = await this.out(['ip', '-o', 'link', 'show']);
    return out
      .split('\n')
      .map((l) => /^\d+: ([^:@\s]+)[@:]/.exec(l)?.[1])
      .filter((x): x is string => x !== undefined && isTapName(this.cfg.bridge, x));
  }

  private natSpecs(ip: string): Array<[string, string, string[], 'insert' | 'append']> {
    const { bridge, subnet } = this.cfg;
    return [
      ['nat', this.nat, ['-s', `${ip}/32`, '!', '-d', subnet.cidr, '-j', 'MASQUERADE'], 'append'],
      ['filter', this.fwd, ['-i', bridge, '-s', `${ip}/32`, '!', '-o', bridge, '-j', 'ACCEPT'], 'insert'],
    ];
  }

  /** MASQUERADE + forward accept for one guest, and forwarding on; returns how many rules were added (0: already there). */
  addNat(ip: string): Promise<number> {
    return this.exclusive(async () => {
      await this.ensureChains();
      let added = 0;
      for (const [table, chain, spec, how] of this.natSpecs(ip)) if (await this.ensureRule(table, chain, spec, how)) added++;
      await this.enableForwarding();
      return added;
    });
  }

  /** Takes one guest's NAT rules away; after the last one, ip_forward goes back to what it was. */
  removeNat(ip: string): Promise<number> {
    return this.exclusive(async () => {
      let removed = 0;
      for (const [table, chain, spec] of this.natSpecs(ip)) {
        if (await this.ok(['iptables', '-w', '-t', table, '-n', '-L', chain])) removed += await this.deleteRule(table, chain, spec);
      }
      await this.restoreForwarding();
      return removed;
    });
  }

  async forwarding(): Promise<string> {
    return (await this.out(['sysctl', '-n', 'net.ipv4.ip_forward'])).trim();
  }

  private readRecord(): string | undefined {
    if (this.record === undefined) return this.memRecord;
    try {
      const v = readFileSync(this.record, 'utf8').trim();
      return /^[0-9]$/.test(v) ? v : undefined;
    } catch {
      return undefined;
    }
  }

  private writeRecord(v: string | undefined): void {
    if (this.record === undefined) {
      this.memRecord = v;
    } else if (v === undefined) {
      rmSync(this.record, { force: true });
    } else {
      mkdirSync(dirname(this.record), { recursive: true, mode: 0o755 });
      writeFileSync(this.record, `${v}\n`, { mode: 0o644 });
    }
  }

  /** ip_forward on; the value it had is recorded the first time banger turns it on. */
  private async enableForwarding(): Promise<void> {
    const now = await this.forwarding();
    if (now === '1') return;
    if (this.readRecord() === undefined) this.writeRecord(/^[0-9]$/.test(now) ? now : '0');
    await this.run(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  }

  /**
   * Puts ip_forward back to the recorded value once no banger bridge in this
   * namespace has a NAT guest (another helper's bridge may still need it).
   * Returns whether it did.
   */
  private async restoreForwarding(): Promise<boolean> {
    const before = this.readRecord();
    if (before === undefined) return false;
    const nat = await this.runner.run(this.argv(['iptables', '-w', '-t', 'nat', '-S']), { allowFailure: true, timeoutMs: 30_000 });
    if (nat.code !== 0 || /^-A BANGER-NAT-\S+ .*-j MASQUERADE/m.test(nat.stdout)) return false;
    await this.run(['sysctl', '-q', '-w', `net.ipv4.ip_forward=${before}`]);
    this.writeRecord(undefined);
    return true;
  }

  /** Guests' DNS (gateway:53/udp) goes to the daemon's port; replaces any earlier port. */
  async redirectDns(port: number): Promise<void> {
    await this.ensureChains();
    await this.run(['iptables', '-w', '-t', 'nat', '-F', this.dns]);
    await this.run(['iptables', '-w', '-t', 'nat', '-A', this.dns, '-d', gatewayOf(this.cfg.subnet), '-p', 'udp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', String(port)]);
  }

  /** Guest IPs that have NAT rules now (from BANGER-NAT). */
  async natIps(): Promise<string[]> {
    if (!(await this.ok(['iptables', '-w', '-t', 'nat', '-n', '-L', this.nat]))) return [];
    const out = await this.out(['iptables', '-w', '-t', 'nat', '-S', this.nat]);
    return [...out.matchAll(/-s (\d+\.\d+\.\d+\.\d+)\/32/g)].map((m) => m[1]!);
  }
}
