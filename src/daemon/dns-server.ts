/**
 * The daemon's DNS server for `<name>.vm` (bridge networking): A and PTR
 * answers looked up in the store at query time, so a create, delete or
 * rename is visible at once. Other names are relayed to the host's
 * resolvers only for clients `forward.allowed` says yes to (guests created
 * with --nat: a guest without it gets no DNS channel off the host either);
 * everyone else gets REFUSED. UDP only. Wire format by dns-packet.
 *
 * Any guest on the bridge can send any datagram: a packet that does not
 * decode is dropped, and nothing a packet does (nor a failing record
 * lookup, nor a relay that goes wrong) may throw out of the socket's
 * handler. Such failures are logged at most once per LOG_EVERY_MS, with a
 * count and a clipped message, never with the packet's content.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import type { Logger } from '../log/log.js';
import { clip } from '../model/text.js';

export interface DnsRecords {
  /** IPv4 of a VM by name, or undefined. */
  addressOf(name: string): string | undefined;
  /** VM name of an IPv4, or undefined. */
  nameOf(ip: string): string | undefined;
}

export const DNS_TTL_SECONDS = 5;

/** The answer to one query packet, 'outside' for a name not ours, null for junk (exported for tests). */
export function answer(query: Buffer, records: DnsRecords): Buffer | 'outside' | null {
  let q: dnsPacket.Packet;
  try {
    q = dnsPacket.decode(query);
  } catch {
    return null; // not DNS: drop
  }
  if (q.type !== 'query' || !q.questions || q.questions.length !== 1) {
    return dnsPacket.encode({ type: 'response', id: q.id ?? 0, flags: RCODE.FORMERR, questions: q.questions ?? [] });
  }
  const question = q.questions[0]!;
  const name = question.name.toLowerCase().replace(/\.$/, '');
  const reply = (rcode: number, answers: dnsPacket.Answer[] = []) =>
    dnsPacket.encode({ type: 'response', id: q.id ?? 0, flags: dnsPacket.AUTHORITATIVE_ANSWER | rcode | recursionDesired(q), questions: [question], answers });

  if (name.endsWith('.vm')) {
    const vm = name.slice(0, -3);
    const ip = vm.includes('.') ? undefined : records.addressOf(vm);
    if (!ip) return reply(RCODE.NXDOMAIN);
    if (!wants(question, 'A')) return reply(RCODE.NOERROR); // the name exists, no such record (NODATA)
    return reply(RCODE.NOERROR, [{ type: 'A', name: question.name, ttl: DNS_TTL_SECONDS, class: 'IN', data: ip }]);
  }
  const rev = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.in-addr\.arpa$/.exec(name);
  if (rev) {
    const ip = [rev[4], rev[3], rev[2], rev[1]].join('.');
    const vm = records.nameOf(ip);
    if (!vm) return reply(RCODE.NXDOMAIN);
    if (!wants(question, 'PTR')) return reply(RCODE.NOERROR);
    return reply(RCODE.NOERROR, [{ type: 'PTR', name: question.name, ttl: DNS_TTL_SECONDS, class: 'IN', data: `${vm}.vm` }]);
  }
  return 'outside';
}

export function refused(query: Buffer): Buffer | null {
  try {
    const q = dnsPacket.decode(query);
    return dnsPacket.encode({ type: 'response', id: q.id ?? 0, flags: RCODE.REFUSED | recursionDesired(q), questions: q.questions ?? [] });
  } catch {
    return null;
  }
}

export interface DnsForwarding {
  /** Upstream resolvers, "ip" or "ip:port" (IPv4), e.g. the host's /etc/resolv.conf nameservers. */
  upstreams: () => string[];
  /** May this client have names outside .vm resolved? */
  allowed: (clientIp: string) => boolean;
}

/** The host's IPv4 nameservers from resolv.conf text. */
export function nameservers(resolvConf: string): string[] {
  return resolvConf
    .split('\n')
    .map((l) => /^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/.exec(l)?.[1])
    .filter((x): x is string => x !== undefined);
}

/**
 * Sends the query as is to one upstream and resolves with its reply (or
 * null after the timeout or on any error). Only a datagram from that
 * upstream's address and port counts as its reply.
 */
function relay(query: Buffer, upstream: string, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    let settled = false;
    const done = (b: Buffer | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.close();
      resolve(b);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    const [host = '', portText] = upstream.split(':');
    const port = portText ? Number(portText) : 53;
    s.on('message', (m, from) => {
      if (from.address === host && from.port === port) done(m);
    });
    s.on('error', () => done(null));
    try {
      s.send(query, port, host, (e) => {
        if (e) done(null);
      });
    } catch {
      done(null); // a malformed upstream address (e.g. a bad port)
    }
  });
}

/** The question asks for this type (or ANY, which dns-packet's types leave out). */
function wants(q: dnsPacket.Question, type: string): boolean {
  return (q.type as string) === type || (q.type as string) === 'ANY';
}

const RCODE = { NOERROR: 0, FORMERR: 1, NXDOMAIN: 3, REFUSED: 5 } as const;

function recursionDesired(q: dnsPacket.Packet): number {
  return (q.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
}

/** At most one "could not answer" log line per this long (a flood of bad packets must not flood the log). */
const LOG_EVERY_MS = 60_000;

export class DnsServer {
  private socket: Socket | undefined;
  private failures = 0;
  private lastLogAt = -Infinity;

  constructor(
    private readonly records: DnsRecords,
    private readonly log: Logger,
    private readonly forward?: DnsForwarding,
  ) {}

  /** Binds host:port (UDP). Rejects with the OS error (EADDRINUSE, EADDRNOTAVAIL …). */
  async start(host: string, port: number): Promise<void> {
    const sock = createSocket({ type: 'udp4', reuseAddr: false });
    sock.on('message', (msg, rinfo) => this.onMessage(sock, msg, rinfo));
    sock.on('error', (e) => this.log.warn({ err: e.message }, 'dns server error'));
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(port, host, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    this.socket = sock;
  }

  /** One datagram. Never throws, never leaves a rejection unhandled. */
  private onMessage(sock: Socket, msg: Buffer, rinfo: RemoteInfo): void {
    const send = (out: Buffer) => sock.send(out, rinfo.port, rinfo.address, (e) => e && this.failed(e));
    try {
      const out = answer(msg, this.records);
      if (out === null) return;
      if (out !== 'outside') return send(out);
      this.outside(msg, rinfo.address).then(
        (reply) => {
          if (reply) send(reply);
        },
        (e: unknown) => this.failed(e),
      );
    } catch (e) {
      this.failed(e);
    }
  }

  /** Counts a query we could not answer; logs the first and then at most one line per LOG_EVERY_MS. */
  private failed(e: unknown): void {
    this.failures++;
    const now = Date.now();
    if (now - this.lastLogAt < LOG_EVERY_MS) return;
    this.lastLogAt = now;
    try {
      this.log.warn({ err: clip(e instanceof Error ? e.message : String(e)), failures: this.failures }, 'dns: a query could not be answered');
    } catch {
      // logging must not turn a dropped query into a crash either
    }
    this.failures = 0;
  }

  private async outside(query: Buffer, client: string): Promise<Buffer | null> {
    if (!this.forward?.allowed(client)) return refused(query);
    for (const up of this.forward.upstreams()) {
      const r = await relay(query, up, 2500);
      if (r) return r;
    }
    return refused(query);
  }

  get address(): { host: string; port: number } | null {
    if (!this.socket) return null;
    const a = this.socket.address();
    return { host: a.address, port: a.port };
  }

  stop(): void {
    this.socket?.close();
    this.socket = undefined;
  }
}
