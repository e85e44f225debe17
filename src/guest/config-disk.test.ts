import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../system/runner.js';
import { toolPath } from '../system/which.js';
import { BangerError } from '../errors/errors.js';
import { newHostKey } from './host-key.js';
import {
  CONFIG_DISK_BYTES,
  CONFIG_DISK_LABEL,
  configDiskFiles,
  parseIpv4,
  validateGuestConfig,
  writeConfigDisk,
  type GuestConfig,
} from './config-disk.js';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC9YxE44IweSIyKgbpil/iR0mZilrF7iUhx/esjQI5WR user@host';

function good(): GuestConfig {
  return {
    hostname: 'amber-badger-1a2b',
    authorizedKeys: [KEY],
    network: { mac: '52:54:00:AB:cd:01', address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', dns: ['10.0.2.3'] },
  };
}

function badRequestOf(fn: () => unknown): BangerError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(BangerError);
    expect((e as BangerError).code).toBe('bad_request');
    return e as BangerError;
  }
  throw new Error('expected a bad_request error');
}

describe('parseIpv4', () => {
  it('parses dotted quads', () => {
    expect(parseIpv4('10.0.2.15')).toBe(0x0a00020f);
    expect(parseIpv4('255.255.255.255')).toBe(0xffffffff);
    expect(parseIpv4('0.0.0.0')).toBe(0);
  });
  it.each(['', '10.0.2', '10.0.2.256', '10.0.02.1', '1.2.3.4.5', ' 1.2.3.4', '1.2.3.4\n', 'a.b.c.d', '1..2.3', '-1.2.3.4'])(
    'rejects %j',
    (s) => {
      expect(parseIpv4(s)).toBeUndefined();
    },
  );
});

describe('validateGuestConfig', () => {
  it('accepts a good config and normalises the MAC', () => {
    const c = validateGuestConfig(good());
    expect(c.network.mac).toBe('52:54:00:ab:cd:01');
    expect(c.hostname).toBe('amber-badger-1a2b');
    expect(c.authorizedKeys).toEqual([KEY]);
  });

  it('trims keys (a .pub file ends with a newline)', () => {
    const c = validateGuestConfig({ ...good(), authorizedKeys: [KEY + '\n'] });
    expect(c.authorizedKeys).toEqual([KEY]);
  });

  it('accepts a /32 with any gateway and an empty DNS list', () => {
    const c = good();
    c.network = { ...c.network, prefixLength: 32, gateway: '192.168.1.1', dns: [] };
    expect(() => validateGuestConfig(c)).not.toThrow();
  });

  it.each(['', '-a', 'a-', 'a_b', 'a.b', 'x'.repeat(64), 'héllo', 'a b', 'a;reboot', 'a\n'])('rejects hostname %j', (h) => {
    const e = badRequestOf(() => validateGuestConfig({ ...good(), hostname: h }));
    expect(e.message).toContain('hostname');
  });

  it('accepts a 63-character hostname', () => {
    expect(() => validateGuestConfig({ ...good(), hostname: 'a'.repeat(63) })).not.toThrow();
  });

  it.each([
    ['no keys', []],
    ['a newline inside a key', [`${KEY}\nssh-ed25519 AAAA evil`]],
    ['an options prefix', [`command="/bin/sh" ${KEY}`]],
    ['an unknown key type', ['ssh-dss AAAAB3NzaC1kc3MAAACBAP']],
    ['no key data', ['ssh-ed25519']],
    ['bad base64', ['ssh-ed25519 not*base64']],
    ['a non-string', [42 as unknown as string]],
    ['a control character', [`${KEY}\u0007`]],
  ])('rejects authorizedKeys with %s', (_what, keys) => {
    const e = badRequestOf(() => validateGuestConfig({ ...good(), authorizedKeys: keys as string[] }));
    expect(e.message).toContain('authorizedKeys');
  });

  it.each(['52:54:00:12:34', '52-54-00-12-34-56', '52:54:00:12:34:5g', '525400123456', '', '01:00:5e:00:00:01'])(
    'rejects MAC %j',
    (mac) => {
      const e = badRequestOf(() => validateGuestConfig({ ...good(), network: { ...good().network, mac } }));
      expect(e.message).toContain('network.mac');
    },
  );

  it.each([
    ['address', { address: '10.0.2' }],
    ['address', { address: '10.0.2.15/24' }],
    ['prefixLength', { prefixLength: 0 }],
    ['prefixLength', { prefixLength: 33 }],
    ['prefixLength', { prefixLength: 24.5 }],
    ['gateway', { gateway: 'gw' }],
    ['gateway', { gateway: '10.0.3.1' }],
    ['gateway', { gateway: '10.0.2.15' }],
    ['dns', { dns: ['10.0.2.3', '1.1.1.1', '8.8.8.8', '9.9.9.9'] }],
    ['dns', { dns: ['dns.example'] }],
  ])('rejects a bad network.%s', (field, patch) => {
    const e = badRequestOf(() => validateGuestConfig({ ...good(), network: { ...good().network, ...patch } }));
    expect(e.message).toContain(`network.${field}`);
  });
});

describe('configDiskFiles', () => {
  it('lays out plain files the guest script reads', () => {
    const files = configDiskFiles(good());
    expect(Object.keys(files).sort()).toEqual(['authorized_keys', 'hostname', 'network.env', 'version']);
    expect(files['version']).toBe('1\n');
    expect(files['hostname']).toBe('amber-badger-1a2b\n');
    expect(files['authorized_keys']).toBe(`${KEY}\n`);
    expect(files['network.env']).toBe(
      'MAC=52:54:00:ab:cd:01\nADDRESS=10.0.2.15\nPREFIX=24\nGATEWAY=10.0.2.2\nDNS=10.0.2.3\n',
    );
  });

  it('carries the host key the daemon made (first boot only): private key and .pub, each ending in a newline', () => {
    const hostKey = newHostKey('amber-badger-1a2b');
    const files = configDiskFiles({ ...good(), hostKey });
    expect(Object.keys(files).sort()).toEqual(['authorized_keys', 'hostname', 'network.env', 'ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub', 'version']);
    expect(files['ssh_host_ed25519_key']).toBe(`${hostKey.privateKey}\n`);
    expect(files['ssh_host_ed25519_key.pub']).toBe(`${hostKey.publicLine}\n`);
  });

  it('refuses a host key of another shape, without echoing the private key', () => {
    const hostKey = newHostKey('box');
    let err: unknown;
    try {
      configDiskFiles({ ...good(), hostKey: { ...hostKey, privateKey: `${hostKey.privateKey}\nX` } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BangerError);
    expect((err as BangerError).message).toMatch(/hostKey .* is not a host key banger made/);
    expect((err as BangerError).message).not.toContain('PRIVATE KEY');
  });

  it('joins several keys and DNS servers', () => {
    const c = good();
    c.authorizedKeys = [KEY, KEY.replace('user@host', 'other')];
    c.network.dns = ['10.0.2.3', '1.1.1.1'];
    const files = configDiskFiles(c);
    expect(files['authorized_keys']!.split('\n')).toHaveLength(3);
    expect(files['network.env']).toContain('DNS=10.0.2.3 1.1.1.1\n');
  });
});

const searchDirs = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/sbin'];
const haveTools = ['mkfs.ext4', 'debugfs', 'e2label', 'dumpe2fs'].every((t) => searchDirs.some((d) => existsSync(join(d, t))));

describe.skipIf(!haveTools)('writeConfigDisk (real mkfs.ext4)', () => {
  const runner = createRunner();
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'banger-cfgdisk-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const cat = async (img: string, file: string) =>
    (await runner.run([toolPath('debugfs'), '-R', `cat /${file}`, img], { timeoutMs: 10_000 })).stdout;

  it('writes a small ext4 image labelled BANGERCFG holding the files', async () => {
    const img = join(dir, 'config.img');
    const scratch = join(dir, 'scratch');
    await writeConfigDisk(runner, img, good(), scratch);
    expect(statSync(img).size).toBe(CONFIG_DISK_BYTES);
    expect(statSync(img).mode & 0o777).toBe(0o600);
    const label = await runner.run([toolPath('e2label'), img], { timeoutMs: 10_000 });
    expect(label.stdout.trim()).toBe(CONFIG_DISK_LABEL);
    const files = configDiskFiles(good());
    for (const [name, text] of Object.entries(files)) {
      expect(await cat(img, name)).toBe(text);
    }
    // no journal: the guest mounts it read-only from a read-only drive
    const header = await runner.run([toolPath('dumpe2fs'), '-h', img], { timeoutMs: 10_000 });
    expect(header.stdout).not.toMatch(/has_journal/);
    // scratch space is cleaned, and no temp image is left beside the output
    expect(readdirSync(scratch)).toEqual([]);
    expect(readdirSync(dir).sort()).toEqual(['config.img', 'scratch']);
  });

  it('writes the host key\'s private half with mode 0600', async () => {
    const img = join(dir, 'key.img');
    const hostKey = newHostKey('box');
    await writeConfigDisk(runner, img, { ...good(), hostKey }, join(dir, 'scratch'));
    expect(await cat(img, 'ssh_host_ed25519_key')).toBe(`${hostKey.privateKey}\n`);
    const st = await runner.run([toolPath('debugfs'), '-R', 'stat /ssh_host_ed25519_key', img], { timeoutMs: 10_000 });
    expect(st.stdout).toMatch(/Mode:\s+0600/);
    rmSync(img);
  });

  it('replaces an existing image', async () => {
    const img = join(dir, 'config.img');
    await writeConfigDisk(runner, img, { ...good(), hostname: 'second' }, join(dir, 'scratch'));
    expect(await cat(img, 'hostname')).toBe('second\n');
  });

  it('writes nothing when the config is invalid', async () => {
    const img = join(dir, 'bad.img');
    await expect(writeConfigDisk(runner, img, { ...good(), hostname: 'no way' }, join(dir, 'scratch'))).rejects.toMatchObject({
      code: 'bad_request',
    });
    expect(existsSync(img)).toBe(false);
    expect(readdirSync(join(dir, 'scratch'))).toEqual([]);
  });

  it('cleans up when mkfs fails', async () => {
    const failing = {
      ...runner,
      run: async () => {
        throw new BangerError('operation_failed', 'mkfs failed');
      },
    };
    const img = join(dir, 'fail.img');
    await expect(writeConfigDisk(failing, img, good(), join(dir, 'scratch'))).rejects.toThrow('mkfs failed');
    expect(existsSync(img)).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('.fail.img'))).toEqual([]);
    expect(readdirSync(join(dir, 'scratch'))).toEqual([]);
  });
});

describe('toolPath', () => {
  it('returns the bare name when the tool is on PATH', () => {
    expect(toolPath('sh', '/bin:/usr/bin')).toBe('sh');
  });
  it('falls back to an sbin directory when it is not on PATH', () => {
    const p = toolPath('mkfs.ext4', '/nonexistent');
    expect(p === 'mkfs.ext4' || p.endsWith('/mkfs.ext4')).toBe(true);
    if (existsSync('/usr/sbin/mkfs.ext4') || existsSync('/sbin/mkfs.ext4')) expect(p).toMatch(/^\/.*sbin\/mkfs\.ext4$/);
  });
  it('returns the bare name when it is found nowhere', () => {
    expect(toolPath('no-such-tool-xyz', '/nonexistent')).toBe('no-such-tool-xyz');
  });
});
