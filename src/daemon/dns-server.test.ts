/** The DNS server over a real UDP socket, queried with dns-packet (as a resolver would). */
import { describe, it, expect, afterEach } from 'vitest';
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { silentLogger } from '../log/log.js';
import { DnsServer } from './dns-server.js';

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

  it('a taken port is an error at start', async () => {
    server = new DnsServer(records, silentLogger());
    await server.start('127.0.0.1', 0);
    const other = new DnsServer(records, silentLogger());
    await expect(other.start('127.0.0.1', server.address!.port)).rejects.toThrow(/EADDRINUSE/);
  });
});
