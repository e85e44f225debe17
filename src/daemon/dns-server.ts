/**
 * The daemon's DNS server for `<name>.vm` (bridge networking): A and PTR
 * answers looked up in the store at query time, so a create, delete or
 * rename is visible at once. Anything outside `.vm` and the bridge's
 * reverse zone is REFUSED: this is not a recursive resolver. UDP only
 * (answers are tiny). Wire format by dns-packet.
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

/** The answer to one query packet (exported for tests). */
export function answer(query: Buffer, records: DnsRecords): Buffer | null {
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
  return dnsPacket.encode({ type: 'response', id: q.id ?? 0, flags: RCODE.REFUSED | recursionDesired(q), questions: [question] });
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
  ) {}

  /** Binds host:port (UDP). Rejects with the OS error (EADDRINUSE, EADDRNOTAVAIL …). */
  async start(host: string, port: number): Promise<void> {
    const sock = createSocket({ type: 'udp4', reuseAddr: false });
    sock.on('message', (msg, rinfo) => {
      const out = answer(msg, this.records);
      if (out) sock.send(out, rinfo.port, rinfo.address);
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
