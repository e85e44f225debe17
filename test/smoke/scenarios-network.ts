/** Issue 5 scenarios: bridge networking through the root helper, DNS, NAT, ssh-config, known_hosts. */
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { check, cleanup, ok, type Banger, type RunDirs } from './harness.js';
import { runBridge, type SmokeBridge } from './bridge.js';
import { connectHelper } from '../../src/helper/client.js';
import type { Scenario } from './scenarios.js';

function bridgeOf(): SmokeBridge {
  const b = runBridge();
  check(b, 'the run has no root helper (see the setup lines)');
  return b;
}

function natRules(b: SmokeBridge, ip: string): string[] {
  return execFileSync('iptables', ['-w', '-t', 'nat', '-S'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(`-s ${ip}/32`) && l.includes('MASQUERADE') && l.includes(b.bridge));
}

async function vmIp(banger: Banger, name: string): Promise<string> {
  const v = JSON.parse(await ok(banger, ['vm', 'show', name, '--json'])) as { ip: string | null };
  check(v.ip, `${name} has no address`);
  return v.ip;
}

/** The parts of a decoded reply we look at (dns-packet's types omit rcode). */
interface DnsReply {
  rcode?: string;
  answers?: Array<{ data?: unknown }>;
}

async function dnsQuery(b: SmokeBridge, name: string, type: 'A' | 'PTR' = 'A'): Promise<DnsReply> {
  const sock = createSocket('udp4');
  try {
    const reply = new Promise<Buffer>((res, rej) => {
      sock.once('message', res);
      setTimeout(() => rej(new Error(`no DNS answer from ${b.gateway}:${b.dnsPort}`)), 3000);
    });
    sock.send(dnsPacket.encode({ type: 'query', id: 9, questions: [{ type, name }] }), b.dnsPort, b.gateway);
    return dnsPacket.decode(await reply) as unknown as DnsReply;
  } finally {
    sock.close();
  }
}

/** HOME for ssh-config scenarios: isolated, under the run's root. */
function isolatedHome(dirs: RunDirs, tag: string): string {
  const home = join(dirs.root, `home-${tag}`);
  mkdirSync(join(home, '.ssh'), { recursive: true, mode: 0o700 });
  return home;
}

function withHome(banger: Banger, home: string): Banger {
  const b = ((args: string[], opts?: { input?: string; timeoutMs?: number }) => banger(args, { ...opts, env: { HOME: home } })) as Banger;
  b.spawn = (args) => banger.spawn(args);
  return b;
}

export const networkScenarios: Scenario[] = [
  {
    name: 'bridge_run',
    needs: 'root',
    description: 'vm run --network bridge --rm -- ip -4 addr: the guest has the address the daemon allocated, on the run’s bridge',
    run: async ({ banger }) => {
      const b = bridgeOf();
      const r = await banger(['vm', 'run', '--network', 'bridge', '--rm', '--name', 'smoke-bridge', '--', 'sh', '-c', 'ip -4 -o addr show dev eth0; ip route show default']);
      check(r.code === 0, `exit ${r.code}: ${r.stderr}`);
      const m = /inet (10\.213\.\d+\.\d+)\/24/.exec(r.stdout);
      check(m, `no bridge address in ${JSON.stringify(r.stdout)}`);
      check(m[1]!.startsWith(b.gateway.replace(/\.1$/, '.')), `address ${m[1]} is not in ${b.subnet}`);
      check(r.stdout.includes(`default via ${b.gateway}`), `default route is not the bridge gateway: ${r.stdout}`);
      check(new RegExp(`guest address ${m[1]!.replace(/\./g, '\\.')}`).test(r.stderr), 'the progress did not name the allocated address');
    },
  },
  {
    name: 'dns_resolves',
    needs: 'root',
    description: "the daemon's DNS answers NAME.vm (A and PTR); with ssh-config installed in an isolated HOME, `ssh root@NAME.vm` works",
    run: async ({ banger, dirs }) => {
      const b = bridgeOf();
      const name = 'smoke-dns';
      try {
        await ok(banger, ['vm', 'create', '--network', 'bridge', '--name', name]);
        const ip = await vmIp(banger, name);
        const a = await dnsQuery(b, `${name}.vm`);
        check(a.rcode === 'NOERROR' && a.answers?.[0]?.data === ip, `A ${name}.vm: ${a.rcode} ${JSON.stringify(a.answers)}`);
        const ptr = await dnsQuery(b, ip.split('.').reverse().join('.') + '.in-addr.arpa', 'PTR');
        check(ptr.answers?.[0]?.data === `${name}.vm`, `PTR: ${JSON.stringify(ptr.answers)}`);
        check((await dnsQuery(b, 'nosuch.vm')).rcode === 'NXDOMAIN', 'unknown name is not NXDOMAIN');
        const show = JSON.parse(await ok(banger, ['network', 'show', '--json'])) as { dns: string; bridge: string; mode: string };
        check(show.dns === `${b.gateway}:${b.dnsPort}` && show.bridge === b.bridge, `network show: ${JSON.stringify(show)}`);
        const home = isolatedHome(dirs, 'dns');
        const hb = withHome(banger, home);
        await ok(hb, ['ssh-config', '--install']);
        const out = execFileSync('ssh', ['-F', join(home, '.ssh', 'config'), '-o', 'BatchMode=yes', `root@${name}.vm`, 'hostname'], {
          env: { ...dirs.env, HOME: home },
          encoding: 'utf8',
          timeout: 60_000,
        });
        check(out.trim() === name, `ssh root@${name}.vm printed ${JSON.stringify(out)}`);
        await ok(hb, ['ssh-config', '--uninstall']);
      } finally {
        await cleanup(banger, name);
      }
      check((await dnsQuery(b, `${name}.vm`)).rcode === 'NXDOMAIN', 'the DNS record outlived the VM');
    },
  },
  {
    name: 'nat_rule_lifecycle',
    needs: 'root',
    exclusive: true,
    description: '--nat: MASQUERADE for the guest /32 while running, once (also across a daemon restart, which reclaims a crashed run’s tap), gone after stop and delete',
    run: async ({ banger }) => {
      const b = bridgeOf();
      const name = 'smoke-nat';
      try {
        await ok(banger, ['vm', 'create', '--network', 'bridge', '--nat', '--name', name]);
        const ip = await vmIp(banger, name);
        check(natRules(b, ip).length === 1, `want 1 MASQUERADE rule for ${ip}, got ${natRules(b, ip).length}`);
        await ok(banger, ['daemon', 'stop']);
        // A tap left by a crashed run: the daemon's reconcile must reclaim it.
        const stray = `${b.bridge}t250`;
        execFileSync('ip', ['tuntap', 'add', 'dev', stray, 'mode', 'tap']);
        await ok(banger, ['vm', 'list']); // starts the daemon again: reconcile re-attaches
        check(natRules(b, ip).length === 1, `after a daemon restart: ${natRules(b, ip).length} rules`);
        const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
        check(!links.includes(`${stray}:`), `the stray tap ${stray} was not reclaimed`);
        // A --nat guest resolves outside names through the daemon (relayed to the host's resolver).
        const names = await banger(['vm', 'exec', name, '--', 'getent', 'hosts', 'deb.debian.org']);
        check(names.code === 0 && /\d+\.\d+/.test(names.stdout), `a --nat guest cannot resolve deb.debian.org: ${names.code} ${names.stdout} ${names.stderr}`);
        await ok(banger, ['vm', 'stop', name]);
        check(natRules(b, ip).length === 0, 'NAT rule still there after stop');
        await ok(banger, ['vm', 'start', name]);
        check(natRules(b, ip).length === 1, 'NAT rule not back (or duplicated) after start');
        await ok(banger, ['vm', 'delete', '-f', name]);
        check(natRules(b, ip).length === 0, 'NAT rule still there after delete');
      } finally {
        await cleanup(banger, name);
      }
    },
  },
  {
    name: 'no_nat_no_rule',
    needs: 'root',
    description: 'a bridge VM without --nat gets no NAT rule, resolves NAME.vm but no outside name (no DNS channel off the host)',
    run: async ({ banger }) => {
      const b = bridgeOf();
      const name = 'smoke-nonat';
      try {
        await ok(banger, ['vm', 'create', '--network', 'bridge', '--name', name]);
        const ip = await vmIp(banger, name);
        check(natRules(b, ip).length === 0, `a VM without --nat has NAT rules: ${natRules(b, ip).join(' | ')}`);
        const show = await ok(banger, ['vm', 'show', name]);
        check(/egress\s+none/.test(show), `vm show does not say egress none: ${show}`);
        // The guest resolves .vm names (its own) but gets no DNS channel off the host.
        const own = await banger(['vm', 'exec', name, '--', 'getent', 'hosts', `${name}.vm`]);
        check(own.code === 0 && own.stdout.startsWith(ip), `the guest cannot resolve ${name}.vm: ${own.code} ${own.stdout}`);
        const outside = await banger(['vm', 'exec', name, '--', 'getent', 'hosts', 'deb.debian.org']);
        check(outside.code !== 0, `a guest without --nat resolved deb.debian.org: ${outside.stdout}`);
      } finally {
        await cleanup(banger, name);
      }
    },
  },
  {
    name: 'ssh_config_roundtrip',
    description: 'ssh-config --install twice adds one Include line, keeps the user’s content byte for byte; --uninstall restores it exactly',
    run: async ({ banger, dirs }) => {
      const home = isolatedHome(dirs, 'sshcfg');
      const cfg = join(home, '.ssh', 'config');
      const mine = 'Host work\n  HostName 192.0.2.7\n  User me\n\n# my comment, no newline at the end';
      writeFileSync(cfg, mine, { mode: 0o600 });
      const hb = withHome(banger, home);
      await ok(hb, ['ssh-config', '--install']);
      await ok(hb, ['ssh-config', '--install']);
      const after = readFileSync(cfg, 'utf8');
      check(after.split('\n').filter((l) => l.startsWith('Include ')).length === 1, `want one Include line: ${after}`);
      check(after.endsWith(mine) && after.split('\n')[0]!.startsWith('Include '), `the user content moved or changed: ${after}`);
      await ok(hb, ['ssh-config', '--uninstall']);
      check(readFileSync(cfg, 'utf8') === mine, 'uninstall did not restore the file byte for byte');
      const home2 = isolatedHome(dirs, 'sshcfg-none');
      const hb2 = withHome(banger, home2);
      await ok(hb2, ['ssh-config', '--install']);
      await ok(hb2, ['ssh-config', '--uninstall']);
      check(!existsSync(join(home2, '.ssh', 'config')), 'uninstall left a config file that install created');
    },
  },
  {
    name: 'helper_rejects',
    needs: 'root',
    description: 'the root helper refuses an unknown op, a foreign interface and an address outside its subnet with coded errors; nothing changes',
    run: async () => {
      const b = bridgeOf();
      const before = execFileSync('sh', ['-c', 'ip -o link show; iptables-save -t nat; iptables-save -t filter'], { encoding: 'utf8' }).replace(/^#.*$/gm, '');
      const c = await connectHelper(b.socket);
      const raw = c as unknown as { call(m: string, p: unknown): Promise<unknown> };
      const codeOf = async (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code ?? 'no code');
      try {
        check((await codeOf(raw.call('run', { argv: ['id'] }))) === 'unknown_method', 'an unknown op was not unknown_method');
        check((await codeOf(c.call('tap.create', { tap: 'eth0' }))) === 'bad_request', 'a foreign interface name was accepted');
        check((await codeOf(c.call('tap.remove', { tap: 'lo' }))) === 'bad_request', 'removing lo was accepted');
        check((await codeOf(c.call('nat.add', { guestIp: '192.0.2.10' }))) === 'bad_request', 'an address outside the subnet was accepted');
        check((await codeOf(c.call('nat.add', { guestIp: b.gateway }))) === 'bad_request', 'the gateway address was accepted as a guest');
      } finally {
        c.close();
      }
      const after = execFileSync('sh', ['-c', 'ip -o link show; iptables-save -t nat; iptables-save -t filter'], { encoding: 'utf8' }).replace(/^#.*$/gm, '');
      check(after === before, 'the host changed after refused requests');
    },
  },
  {
    name: 'known_hosts_dropped_on_delete',
    needs: 'root',
    description: "vm delete drops the VM's entries (name and address) from banger's known_hosts",
    run: async ({ banger, dirs }) => {
      const name = 'smoke-kh';
      const kh = join(dirs.stateDir, 'ssh', 'known_hosts');
      try {
        await ok(banger, ['vm', 'create', '--network', 'bridge', '--name', name]);
        const ip = await vmIp(banger, name);
        check(readFileSync(kh, 'utf8').includes(`${name}.vm `), 'no known_hosts entry after boot');
        // An address entry, as `ssh root@IP` with CheckHostIP would add.
        const line = readFileSync(kh, 'utf8').split('\n').find((l) => l.startsWith(`${name}.vm `))!;
        writeFileSync(kh, readFileSync(kh, 'utf8') + line.replace(`${name}.vm`, ip) + '\n');
        await ok(banger, ['vm', 'delete', '-f', name]);
        const left = readFileSync(kh, 'utf8');
        check(!left.includes(`${name}.vm `) && !left.split('\n').some((l) => l.startsWith(`${ip} `)), `entries left: ${left}`);
      } finally {
        await cleanup(banger, name);
      }
    },
  },
];
