/**
 * The daemon's DNS server for `<name>.vm` (bridge networking): A and PTR
 * answers looked up in the store at query time, so a create, delete or
 * rename is visible at once. Other names are relayed to the host's
 * resolvers only for clients `forward.allowed` says yes to (guests created
 * with --nat: a guest without it gets no DNS channel off the host either);
 * everyone else gets REFUSED. UDP only. Wire format by dns-packet.
 */
import { createSocket, type Socket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import type { Logger } from '../log/log.js';

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

/** Sends the query as is to one upstream and resolves with its reply (or null after the timeout). */
function relay(query: Buffer, upstream: string, timeoutMs: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    const done = (b: Buffer | null) => {
      clearTimeout(timer);
      s.close();
      resolve(b);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    s.on('message', (m) => done(m));
    s.on('error', () => done(null));
    const [host, port] = upstream.split(':');
    s.send(query, port ? Number(port) : 53, host);
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

export class DnsServer {
  private socket: Socket | undefined;

  constructor(
    private readonly records: DnsRecords,
    private readonly log: Logger,
    private readonly forward?: DnsForwarding,
  ) {}

  /** Binds host:port (UDP). Rejects with the OS error (EADDRINUSE, EADDRNOTAVAIL …). */
  async start(host: string, port: number): Promise<void> {
    const sock = createSocket({ type: 'udp4', reuseAddr: false });
    sock.on('message', (msg, rinfo) => {
      const out = answer(msg, this.records);
      if (out === null) return;
      if (out !== 'outside') return void sock.send(out, rinfo.port, rinfo.address);
      void this.outside(msg, rinfo.address).then((reply) => {
        if (reply) sock.send(reply, rinfo.port, rinfo.address);
      });
    });
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
