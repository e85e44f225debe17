/**
 * Bridge networking, daemon side. The daemon never does privileged work
 * itself: it asks the root helper (src/helper) for the bridge, a tap per
 * VM and NAT rules, and keeps the durable facts (each VM's address) in the
 * store. It serves `<name>.vm` DNS on the bridge address itself.
 *
 *   address  lowest free guest IP of the helper's subnet, stored in vms.ip
 *            (a UNIQUE index settles races); the MAC and the tap name follow
 *            from it, so nothing else needs storing
 *   attach   (boot) bridge.ensure, tap.create, nat.add or nat.remove
 *   detach   (stop, kill, delete, failed boot) nat.remove, tap.remove
 *   reconcile (daemon start) the helper's taps and NAT rules that belong to
 *            no running bridge VM are removed; running ones are re-attached
 */
import { readFileSync } from 'node:fs';
import { BangerError, messageOf } from '../errors/errors.js';
import type { Logger } from '../log/log.js';
import { gatewayOf, guestIps, ipToInt, macForIp, parseSubnet, tapName, type Subnet } from '../model/net.js';
import type { NetworkMode, VmRecord } from '../model/types.js';
import type { Store } from '../store/store.js';
import { connectHelper, type HelperClient } from '../helper/client.js';
import type { HelperInfo } from '../helper/ops.js';
import { DnsServer, nameservers } from './dns-server.js';
import type { NetworkShow } from '../rpc/methods.js';

/** A file's text, or '' when it cannot be read (resolv.conf may be missing). */
function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

export interface NetworkServiceDeps {
  store: Store;
  log: Logger;
  /** The root helper's socket. */
  helperSocket: string;
  /** config `network`: what a VM gets when create does not say. */
  configured: NetworkMode | 'auto';
  /** UDP port of the `.vm` DNS server on the bridge address. */
  dnsPort: number;
  /** Test seam. */
  connect?: (socket: string) => Promise<HelperClient>;
}

/** What the guest is given on a bridge (the config disk's network section). */
export interface BridgeAttachment {
  tap: string;
  ip: string;
  mac: string;
  prefixLength: number;
  gateway: string;
  dns: string[];
}


export class NetworkService {
  private client: HelperClient | undefined;
  private info: HelperInfo | undefined;
  private subnet: Subnet | undefined;
  private dns: DnsServer | undefined;
  private resolverDetail: string | null = null;

  constructor(private readonly deps: NetworkServiceDeps) {}

  private async helper(): Promise<HelperClient> {
    if (this.client) return this.client;
    let c: HelperClient;
    try {
      c = await (this.deps.connect ?? connectHelper)(this.deps.helperSocket);
    } catch (e) {
      throw new BangerError(
        'unavailable',
        `bridge networking needs banger's root helper, which does not answer on ${this.deps.helperSocket} (${messageOf(e)})`,
        `install it with \`sudo banger system install\`, or run it by hand: \`sudo banger-helper --owner-uid ${process.getuid?.() ?? 'UID'} --socket ${this.deps.helperSocket}\`; or use rootless user networking (network = "user" in config.toml, or ask for it when you create the VM)`,
      );
    }
    this.info = c.hello;
    this.subnet = parseSubnet(this.info.subnet);
    if (this.info.ownerUid !== (process.getuid?.() ?? -1)) {
      c.close();
      throw new BangerError('unavailable', `the root helper on ${this.deps.helperSocket} serves uid ${this.info.ownerUid}, not this daemon's`, `start a helper for this user: \`sudo banger-helper --owner-uid ${process.getuid?.() ?? 'UID'} --socket ${this.deps.helperSocket}\``);
    }
    this.client = c;
    return c;
  }

  /** The mode a new VM gets, and why (doctor and vm create). */
  async resolveMode(requested?: NetworkMode): Promise<{ mode: NetworkMode; why: string }> {
    const want = requested ?? this.deps.configured;
    if (want === 'user') return { mode: 'user', why: requested ? 'user networking requested' : 'network = "user" in config' };
    try {
      await this.helper();
      return { mode: 'bridge', why: want === 'bridge' ? 'bridge requested' : `the root helper answers on ${this.deps.helperSocket}` };
    } catch (e) {
      if (want === 'bridge') throw e;
      return { mode: 'user', why: `no root helper on ${this.deps.helperSocket}: rootless user networking` };
    }
  }

  /** Lowest guest address no VM holds. */
  async allocateIp(): Promise<string> {
    await this.helper();
    const taken = new Set(this.deps.store.listVms().map((v) => v.ip).filter((x): x is string => x !== null));
    const free = guestIps(this.subnet!).find((ip) => !taken.has(ip));
    if (!free) throw new BangerError('unavailable', `no free address left in ${this.subnet!.cidr}`, 'delete VMs you no longer need (`banger vm prune`)');
    return free;
  }

  tapFor(ip: string): string {
    return tapName(this.info!.bridge, ipToInt(ip) - this.subnet!.network);
  }

  /** Boot: bridge, tap and NAT as this VM needs them; the DNS server up. */
  async attach(vm: VmRecord): Promise<BridgeAttachment> {
    if (!vm.ip) throw new BangerError('internal', `VM ${vm.name} is on the bridge but has no address`);
    const h = await this.helper();
    await h.call('bridge.ensure', {});
    await this.ensureDns(h);
    const tap = this.tapFor(vm.ip);
    await h.call('tap.create', { tap });
    if (vm.nat) await h.call('nat.add', { guestIp: vm.ip });
    else await h.call('nat.remove', { guestIp: vm.ip });
    const gateway = gatewayOf(this.subnet!);
    return { tap, ip: vm.ip, mac: macForIp(vm.ip), prefixLength: this.subnet!.prefix, gateway, dns: [gateway] };
  }

  /** Stop/kill/delete: the VM's NAT rules and tap go. Best effort: logged, never thrown. */
  async detach(vm: VmRecord): Promise<void> {
    if (vm.network !== 'bridge' || !vm.ip) return;
    try {
      const h = await this.helper();
      await h.call('nat.remove', { guestIp: vm.ip });
      await h.call('tap.remove', { tap: this.tapFor(vm.ip) });
    } catch (e) {
      this.deps.log.warn({ vm: vm.name, err: messageOf(e) }, 'could not release the VM\'s tap and NAT rules (reconcile retries at daemon start)');
    }
  }

  /** Daemon start: drop taps and NAT rules of VMs that are not running (crashed runs, deleted VMs). */
  async reconcile(running: VmRecord[]): Promise<void> {
    const bridged = this.deps.store.listVms().some((v) => v.network === 'bridge');
    if (!bridged) return;
    let h: HelperClient;
    try {
      h = await this.helper();
    } catch (e) {
      this.deps.log.warn({ err: messageOf(e) }, 'reconcile: bridge VMs exist but the root helper does not answer');
      return;
    }
    const live = running.filter((v) => v.network === 'bridge' && v.ip);
    const state = await h.call('state', {});
    const wantTaps = new Set(live.map((v) => this.tapFor(v.ip!)));
    const wantNat = new Set(live.filter((v) => v.nat).map((v) => v.ip!));
    for (const tap of state.taps) {
      if (!wantTaps.has(tap)) {
        this.deps.log.info({ tap }, 'reconcile: removing a tap no running VM uses');
        await h.call('tap.remove', { tap });
      }
    }
    for (const ip of state.natIps) {
      if (!wantNat.has(ip)) {
        this.deps.log.info({ ip }, 'reconcile: removing NAT rules of a VM that is not running');
        await h.call('nat.remove', { guestIp: ip });
      }
    }
    for (const vm of live) await this.attach(vm); // idempotent: nothing is duplicated
  }

  private async ensureDns(h: HelperClient): Promise<void> {
    if (this.dns) return;
    const gateway = gatewayOf(this.subnet!);
    const dns = new DnsServer(
      {
        addressOf: (name) => {
          const vm = this.deps.store.findVmByName(name);
          return vm?.network === 'bridge' && vm.ip ? vm.ip : undefined;
        },
        nameOf: (ip) => this.deps.store.listVms().find((v) => v.network === 'bridge' && v.ip === ip)?.name,
      },
      this.deps.log,
      {
        // Names outside .vm are resolved only for guests created with --nat.
        upstreams: () => nameservers(readText('/etc/resolv.conf')),
        allowed: (ip) => this.deps.store.listVms().some((v) => v.network === 'bridge' && v.ip === ip && v.nat),
      },
    );
    try {
      await dns.start(gateway, this.deps.dnsPort);
    } catch (e) {
      throw new BangerError('unavailable', `cannot serve .vm DNS on ${gateway}:${this.deps.dnsPort}: ${messageOf(e)}`, 'another process holds that port: set dns_port in config.toml');
    }
    this.dns = dns;
    const routed = await h.call('resolver.route', { port: this.deps.dnsPort });
    this.resolverDetail = routed.detail;
    this.deps.log.info({ dns: `${gateway}:${this.deps.dnsPort}`, resolver: routed.detail }, '.vm DNS up');
  }

  /** The default mode for new VMs, and the bridge's facts whenever the helper answers (even if user is the default). */
  async show(): Promise<NetworkShow> {
    const { mode, why } = await this.resolveMode();
    const none = { mode, why, bridge: null, subnet: null, gateway: null, dns: null, resolver: null, helperSocket: this.deps.helperSocket };
    let h: HelperClient;
    try {
      h = await this.helper();
    } catch {
      return none;
    }
    await h.call('bridge.ensure', {});
    await this.ensureDns(h);
    const gateway = gatewayOf(this.subnet!);
    return { ...none, bridge: this.info!.bridge, subnet: this.info!.subnet, gateway, dns: `${gateway}:${this.deps.dnsPort}`, resolver: this.resolverDetail };
  }

  close(): void {
    this.dns?.stop();
    this.client?.close();
  }
}

