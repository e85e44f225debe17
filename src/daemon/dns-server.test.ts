/** The DNS server over a real UDP socket, queried with dns-packet (as a resolver would). */
import { describe, it, expect, afterEach } from 'vitest';
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { silentLogger } from '../log/log.js';
import { DnsServer, nameservers } from './dns-server.js';

const vms = new Map([['box', '10.213.0.5']]);
const records = {
  addressOf: (n: string) => vms.get(n),
  nameOf: (ip: string) => [...vms].find(([, v]) => v === ip)?.[0],
};
let server: DnsServer | undefined;
afterEach(() => server?.stop());

async function ask(port: number, name: string, type: 'A' | 'PTR' | 'AAAA' = 'A'): Promise<dnsPacket.Packet> {
  const sock = createSocket('udp4');
  try {
    const reply = new Promise<Buffer>((res, rej) => {
      sock.once('message', res);
      setTimeout(() => rej(new Error('no answer')), 2000);
    });
    sock.send(dnsPacket.encode({ type: 'query', id: 77, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] }), port, '127.0.0.1');
    return dnsPacket.decode(await reply);
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
