/**
 * Bridge-network arithmetic and names, shared by the daemon (allocation) and
 * the root helper (validation). IPv4 only. No I/O.
 */
import { BangerError } from '../errors/errors.js';

/** Every interface banger makes starts with this (the helper refuses others). */
export const IFACE_PREFIX = 'bgr';
export const DEFAULT_BRIDGE = 'bgr0';
/** Linux IFNAMSIZ - 1. */
const MAX_IFNAME = 15;

export interface Subnet {
  /** Network address as a 32-bit unsigned integer. */
  network: number;
  prefix: number;
  cidr: string;
}

export function ipToInt(ip: string): number {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) throw new BangerError('bad_request', `${JSON.stringify(ip)} is not an IPv4 address`);
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255) || m.slice(1).some((p) => p.length > 1 && p.startsWith('0'))) {
    throw new BangerError('bad_request', `${JSON.stringify(ip)} is not an IPv4 address`);
  }
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** "10.213.0.0/24" → Subnet; the prefix must leave room for guests (16..28) and the address must be the network. */
export function parseSubnet(cidr: string): Subnet {
  const m = /^([0-9.]+)\/(\d{1,2})$/.exec(cidr);
  if (!m) throw new BangerError('bad_request', `subnet ${JSON.stringify(cidr)} is not a CIDR like 10.213.0.0/24`);
  const prefix = Number(m[2]);
  if (prefix < 16 || prefix > 28) throw new BangerError('bad_request', `subnet ${cidr}: the prefix must be between /16 and /28`);
  const addr = ipToInt(m[1]!);
  const network = (addr & maskOf(prefix)) >>> 0;
  if (network !== addr) throw new BangerError('bad_request', `subnet ${cidr} is not a network address (did you mean ${intToIp(network)}/${prefix}?)`);
  return { network, prefix, cidr };
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function broadcast(s: Subnet): number {
  return (s.network | (~maskOf(s.prefix) >>> 0)) >>> 0;
}

/** The bridge's own address: the first host. */
export function gatewayOf(s: Subnet): string {
  return intToIp(s.network + 1);
}

export function contains(s: Subnet, ip: string): boolean {
  return ((ipToInt(ip) & maskOf(s.prefix)) >>> 0) === s.network;
}

/** A guest address: inside the subnet, not the network, gateway or broadcast address. */
export function checkGuestIp(s: Subnet, ip: string): string {
  const n = ipToInt(ip);
  if (!contains(s, ip) || n === s.network || n === s.network + 1 || n === broadcast(s)) {
    throw new BangerError('bad_request', `${ip} is not a guest address of banger's subnet ${s.cidr}`, 'guest addresses come from the daemon; this request did not');
  }
  return ip;
}

/** Guest addresses in order (second host onwards). */
export function guestIps(s: Subnet): string[] {
  const out: string[] = [];
  for (let n = s.network + 2; n < broadcast(s); n++) out.push(intToIp(n));
  return out;
}

export function tapName(bridge: string, index: number): string {
  return `${bridge}t${index}`;
}

/** Is `name` a tap of this bridge: `<bridge>t<0-9999>` (no leading zero), within IFNAMSIZ. */
export function isTapName(bridge: string, name: string): boolean {
  const m = new RegExp(`^${escapeRe(bridge)}t(\\d{1,4})$`).exec(name);
  return m !== null && name.length <= MAX_IFNAME && !(m[1]!.length > 1 && m[1]!.startsWith('0'));
}

export function checkTapName(bridge: string, name: string): string {
  if (!isTapName(bridge, name)) {
    throw new BangerError('bad_request', `${JSON.stringify(name)} is not a banger tap name (${bridge}t0, ${bridge}t1, …)`, 'tap names come from the daemon; this request did not');
  }
  return name;
}

/**
 * A bridge: "bgr" then up to 7 of a-z0-9 but never the letter "t" (at most
 * 10 characters, so its taps fit IFNAMSIZ). Taps are `<bridge>t<N>`, so with
 * no "t" in a bridge name the two sets are disjoint by construction: a tap
 * name is never a bridge name, and the first "t" of a tap name splits it
 * into one bridge and one index, so one bridge's tap pattern (clean-up
 * included) never matches another bridge or another bridge's tap.
 */
export function checkBridgeName(name: string): string {
  if (!new RegExp(`^${IFACE_PREFIX}[a-su-z0-9]{0,${MAX_IFNAME - 5 - IFACE_PREFIX.length}}$`).test(name)) {
    throw new BangerError(
      'bad_request',
      `${JSON.stringify(name)} is not a banger bridge name`,
      `a bridge name is "${IFACE_PREFIX}" then up to 7 of a-z and 0-9 but no "t" (tap names are <bridge>t<N>), e.g. ${DEFAULT_BRIDGE} or ${IFACE_PREFIX}dev`,
    );
  }
  return name;
}

/** A locally administered MAC derived from a guest IP (stable: same IP, same MAC). */
export function macForIp(ip: string): string {
  const n = ipToInt(ip);
  return ['52', '54', '00', (n >>> 16) & 255, (n >>> 8) & 255, n & 255].map((b) => (typeof b === 'string' ? b : b.toString(16).padStart(2, '0'))).join(':');
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Candidate /24s for the bridge: the first that no route on the host overlaps. */
export const SUBNET_CANDIDATES = ['10.213.0.0/24', '10.214.0.0/24', '172.30.213.0/24', '192.168.213.0/24'];

export function pickSubnet(ipRoutes: string, candidates = SUBNET_CANDIDATES): string {
  const routed = ipRoutes
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((d) => /^\d+\.\d+\.\d+\.\d+(\/\d+)?$/.test(d))
    .map((d) => (d.includes('/') ? d : `${d}/32`));
  const overlaps = (a: string, b: string) => {
    const [an, ap] = a.split('/');
    const [bn, bp] = b.split('/');
    const p = Math.min(Number(ap), Number(bp));
    const mask = p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0;
    return ((ipToInt(an!) & mask) >>> 0) === ((ipToInt(bn!) & mask) >>> 0);
  };
  const free = candidates.find((c) => !routed.some((r) => overlaps(c, r)));
  if (!free) throw new BangerError('conflict', `every candidate subnet (${candidates.join(', ')}) overlaps a route on this host`, 'pass one with --subnet CIDR');
  return parseSubnet(free).cidr;
}
