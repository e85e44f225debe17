/** The DNS server over a real UDP socket, queried with dns-packet (as a resolver would). */
import { describe, it, expect, afterEach } from 'vitest';
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { pino } from 'pino';
import { silentLogger, type Logger } from '../log/log.js';
import { answer, DnsServer, nameservers, refused } from './dns-server.js';
import { prng, watchCrashes } from '../../test/support/hostile.js';

const vms = new Map([['box', '10.213.0.5']]);
const records = {
  addressOf: (n: string) => vms.get(n),
  nameOf: (ip: string) => [...vms].find(([, v]) => v === ip)?.[0],
};
let server: DnsServer | undefined;
afterEach(() => server?.stop());

/**
 * A decoded reply. dns-packet's decode sets `rcode` (the name of the
 * response code: 'NOERROR', 'NXDOMAIN', 'REFUSED', …), but @types/dns-packet's
 * DecodedPacket leaves it out.
 */
interface DecodedReply extends dnsPacket.DecodedPacket {
  rcode: string;
}

async function ask(port: number, name: string, type: 'A' | 'PTR' | 'AAAA' = 'A', waitMs = 2000): Promise<DecodedReply> {
  const sock = createSocket('udp4');
  try {
    const reply = new Promise<Buffer>((res, rej) => {
      sock.once('message', res);
      setTimeout(() => rej(new Error('no answer')), waitMs);
    });
    sock.send(dnsPacket.encode({ type: 'query', id: 77, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] }), port, '127.0.0.1');
    return dnsPacket.decode(await reply) as DecodedReply;
  } finally {
    sock.close();
  }
}

describe('DNS for <name>.vm', () => {
  it('answers A and PTR from the records, NXDOMAIN for unknown VMs, REFUSED elsewhere; changes show at once', async () => {
    server = new DnsServer(records, silentLogger());
    await server.start('127.0.0.1', 0);
    const port = server.address!.port;
    const a = await ask(port, 'box.vm');
    expect(a.id).toBe(77);
    expect(a.rcode).toBe('NOERROR');
    expect(a.answers).toEqual([expect.objectContaining({ type: 'A', name: 'box.vm', data: '10.213.0.5' })]);
    expect((await ask(port, 'BOX.VM.')).answers?.[0]).toMatchObject({ data: '10.213.0.5' });
    const ptr = await ask(port, '5.0.213.10.in-addr.arpa', 'PTR');
    expect(ptr.answers).toEqual([expect.objectContaining({ type: 'PTR', data: 'box.vm' })]);
    expect((await ask(port, 'nope.vm')).rcode).toBe('NXDOMAIN');
    expect((await ask(port, 'a.box.vm')).rcode).toBe('NXDOMAIN');
    const aaaa = await ask(port, 'box.vm', 'AAAA');
    expect(aaaa.rcode).toBe('NOERROR');
    expect(aaaa.answers).toEqual([]);
    expect((await ask(port, 'example.com')).rcode).toBe('REFUSED');
    vms.set('new', '10.213.0.6');
    expect((await ask(port, 'new.vm')).answers?.[0]).toMatchObject({ data: '10.213.0.6' });
    vms.delete('new');
    expect((await ask(port, 'new.vm')).rcode).toBe('NXDOMAIN');
  });

  it('relays other names to the upstream only for allowed clients; REFUSED for the rest', async () => {
    // A stand-in upstream resolver on a free port.
    const upstream = createSocket('udp4');
    upstream.on('message', (m, r) => {
      const q = dnsPacket.decode(m);
      upstream.send(dnsPacket.encode({ type: 'response', id: q.id, questions: q.questions, answers: [{ type: 'A', name: q.questions![0]!.name, data: '192.0.2.44' }] }), r.port, r.address);
    });
    await new Promise<void>((r) => upstream.bind(0, '127.0.0.1', () => r()));
    let allow = false;
    server = new DnsServer(records, silentLogger(), { upstreams: () => [`127.0.0.1:${upstream.address().port}`], allowed: () => allow });
    await server.start('127.0.0.1', 0);
    const port = server.address!.port;
    expect((await ask(port, 'deb.debian.org')).rcode).toBe('REFUSED');
    allow = true;
    const fwd = await ask(port, 'deb.debian.org');
    expect(fwd.answers?.[0]).toMatchObject({ data: '192.0.2.44' });
    expect((await ask(port, 'box.vm')).answers?.[0]).toMatchObject({ data: '10.213.0.5' }); // ours, never relayed
    upstream.close();
  });

  it('reads the host nameservers from resolv.conf', () => {
    expect(nameservers('# c\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\nnameserver 10.0.0.2 \n')).toEqual(['127.0.0.53', '10.0.0.2']);
  });

  it('a taken port is an error at start', async () => {
    server = new DnsServer(records, silentLogger());
    await server.start('127.0.0.1', 0);
    const other = new DnsServer(records, silentLogger());
    await expect(other.start('127.0.0.1', server.address!.port)).rejects.toThrow(/EADDRINUSE/);
  });
});

// ---- hostile clients ------------------------------------------------------



/** A logger that keeps its lines. */
function capturingLogger(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }), lines };
}

/** Seeded garbage: random bytes, mutated queries, headers that promise more than they carry, pointer loops, huge packets. */
function garbage(count: number, seed: number): Buffer[] {
  const rand = prng(seed);
  const byte = () => Math.floor(rand() * 256);
  const valid = dnsPacket.encode({ type: 'query', id: 9, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'box.vm' }] });
  const fixed = [
    Buffer.alloc(0),
    Buffer.alloc(1),
    Buffer.alloc(12, 0xff), // a header claiming 65535 of every section
    Buffer.concat([Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([0xc0, 12, 0, 1, 0, 1])]), // a name pointing at itself
    Buffer.concat([valid.subarray(0, 12), Buffer.from([63, ...Buffer.alloc(63, 0xff), 1, 0x2e, 1, 0x0a, 2, 0x76, 0x6d, 0, 0, 1, 0, 1])]), // labels with 0xff, '.', newline
    Buffer.alloc(65_000, 0x41), // about the largest datagram
    dnsPacket.encode({ type: 'response', id: 1, questions: [{ type: 'A', name: 'box.vm' }], answers: [{ type: 'A', name: 'box.vm', data: '1.2.3.4' }] }),
    dnsPacket.encode({ type: 'query', id: 2, questions: [] }),
    dnsPacket.encode({ type: 'query', id: 3, questions: Array.from({ length: 500 }, (_, i) => ({ type: 'A' as const, name: `n${i}.vm` })) }),
  ];
  const out = [...fixed];
  while (out.length < count) {
    const r = rand();
    if (r < 0.3) out.push(Buffer.from(Array.from({ length: Math.floor(rand() * 80) }, byte)));
    else {
      const b = Buffer.from(valid);
      for (let i = 1 + Math.floor(rand() * 4); i > 0; i--) b[Math.floor(rand() * b.length)] = byte();
      out.push(r < 0.8 ? b : Buffer.concat([b, Buffer.from(Array.from({ length: Math.floor(rand() * 40) }, byte))]));
    }
  }
  return out;
}

describe('DNS server against hostile clients', () => {
  it('garbage datagrams are dropped or answered, never thrown; the server keeps answering', async () => {
    const watch = watchCrashes();
    try {
      const packets = garbage(500, 0xd1a5);
      const t0 = Date.now();
      for (const p of packets) {
        const out = answer(p, records);
        expect(out === null || out === 'outside' || Buffer.isBuffer(out)).toBe(true);
        const r = refused(p);
        expect(r === null || Buffer.isBuffer(r)).toBe(true);
      }
      expect(Date.now() - t0).toBeLessThan(5000);

      const { log, lines } = capturingLogger();
      server = new DnsServer(records, log);
      await server.start('127.0.0.1', 0);
      const port = server.address!.port;
      const sender = createSocket('udp4');
      sender.on('message', () => undefined); // answers to the garbage that decoded: not checked
      for (const [i, p] of packets.entries()) {
        await new Promise<void>((r) => sender.send(p, port, '127.0.0.1', () => r()));
        // a valid query every 20 datagrams: the server still answers (and the
        // sender does not outrun the receive buffer, where the kernel would drop)
        if (i % 20 === 19) expect((await ask(port, 'box.vm')).answers?.[0]).toMatchObject({ data: '10.213.0.5' });
      }
      sender.close();
      expect((await ask(port, 'box.vm')).answers?.[0]).toMatchObject({ data: '10.213.0.5' });
      expect(lines).toEqual([]); // garbage is dropped quietly: nothing of it reaches the log
    } finally {
      watch.stop();
    }
    expect(watch.crashes).toEqual([]);
  });

  it('a record lookup that throws (e.g. the store is closed) costs that query only, and is logged clipped, at most once a minute', async () => {
    const watch = watchCrashes();
    let broken = true;
    const flaky = {
      addressOf: (n: string) => {
        if (broken) throw new Error(`The database connection is not open ${'x'.repeat(10_000)}`);
        return records.addressOf(n);
      },
      nameOf: records.nameOf,
    };
    const { log, lines } = capturingLogger();
    try {
      server = new DnsServer(flaky, log);
      await server.start('127.0.0.1', 0);
      const port = server.address!.port;
      for (let i = 0; i < 10; i++) await expect(ask(port, 'box.vm', 'A', 50)).rejects.toThrow(/no answer/);
      broken = false;
      expect((await ask(port, 'box.vm')).answers?.[0]).toMatchObject({ data: '10.213.0.5' });
    } finally {
      watch.stop();
    }
    expect(watch.crashes).toEqual([]);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.length).toBeLessThan(600);
    expect(lines[0]).toContain('The database connection is not open');
  });

  it('a forwarding policy that throws leaves no unhandled rejection behind', async () => {
    const watch = watchCrashes();
    try {
      server = new DnsServer(records, silentLogger(), {
        upstreams: () => ['127.0.0.1:not-a-port'],
        allowed: () => {
          throw new Error('store closed');
        },
      });
      await server.start('127.0.0.1', 0);
      const port = server.address!.port;
      await expect(ask(port, 'example.com', 'A', 200)).rejects.toThrow(/no answer/);
      expect((await ask(port, 'box.vm')).answers?.[0]).toMatchObject({ data: '10.213.0.5' });
    } finally {
      watch.stop();
    }
    expect(watch.crashes).toEqual([]);
  });

  it('a malformed upstream address does not throw: the client gets REFUSED', async () => {
    const watch = watchCrashes();
    try {
      server = new DnsServer(records, silentLogger(), { upstreams: () => ['127.0.0.1:99999', '127.0.0.1:x'], allowed: () => true });
      await server.start('127.0.0.1', 0);
      expect((await ask(server.address!.port, 'example.com')).rcode).toBe('REFUSED');
    } finally {
      watch.stop();
    }
    expect(watch.crashes).toEqual([]);
  });
});
