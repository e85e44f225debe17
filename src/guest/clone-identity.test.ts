import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { onPath } from '../system/which.js';
import { ROOT_SKEL_PATH, SSH_HOST_KEY } from '../images/guest-files.js';
import { CLONE_CONTRACT, CLONE_SCRIPT, TEMPLATE_PREP_SCRIPT, cloneArgs, type CloneSettings } from './clone-identity.js';
import { newHostKey } from './host-key.js';
import type { GuestConfig } from './config-disk.js';
import { WORK_DISK_MOUNT } from './work-disk.js';

const MAC = '52:54:00:12:34:56';
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGyvhhVtILO3c1zbPTVVzVId banger';
const HOST_KEY = newHostKey('box');

function settings(over: Partial<CloneSettings> = {}, cfg: Partial<GuestConfig> = {}): CloneSettings {
  return {
    config: {
      hostname: 'box',
      authorizedKeys: [KEY],
      network: { mac: MAC, address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', dns: ['10.0.2.3'] },
      ...cfg,
    },
    keepNetwork: true,
    growRoot: false,
    hostKey: HOST_KEY,
    ...over,
  };
}

describe('cloneArgs', () => {
  it('is [time, machine-id, entropy, MAC, hostname, NET, GROW, HOSTKEY, HOSTKEY_PUB, keys...]: the time now, 32 and 64 hex digits', () => {
    const before = Date.now();
    const args = cloneArgs(settings());
    const after = Date.now();
    expect(args).toHaveLength(10);
    const [time, machineId, entropy, mac, host, net, grow, hostKey, hostPub, key] = args;
    expect([hostKey, hostPub]).toEqual([HOST_KEY.privateKey, HOST_KEY.publicLine]);
    expect(time).toMatch(/^\d+\.\d{3}$/);
    const ms = Math.round(Number(time) * 1000);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after);
    expect(machineId).toMatch(/^[0-9a-f]{32}$/);
    expect(entropy).toMatch(/^[0-9a-f]{64}$/);
    expect([mac, host, net, grow, key]).toEqual([MAC, 'box', '-', '0', KEY]);
  });

  it('bridge networking: NET is "address prefix gateway dns..."; a larger root disk: GROW 1; every key its own argument', () => {
    const args = cloneArgs(
      settings({ keepNetwork: false, growRoot: true }, {
        authorizedKeys: [KEY, `${KEY}2`],
        network: { mac: '52:54:00:0a:00:05', address: '172.30.0.5', prefixLength: 24, gateway: '172.30.0.1', dns: ['172.30.0.1', '9.9.9.9'] },
      }),
    );
    expect(args.slice(3)).toEqual(['52:54:00:0a:00:05', 'box', '172.30.0.5 24 172.30.0.1 172.30.0.1 9.9.9.9', '1', HOST_KEY.privateKey, HOST_KEY.publicLine, KEY, `${KEY}2`]);
  });

  it('gives every clone its own machine-id and entropy', () => {
    const a = cloneArgs(settings());
    const b = cloneArgs(settings());
    expect(a[1]).not.toBe(b[1]);
    expect(a[2]).not.toBe(b[2]);
  });

  it('writes the time as seconds with three decimals (date -s @S.mmm)', () => {
    expect(cloneArgs(settings(), () => 1_700_000_000_005)[0]).toBe('1700000000.005');
    expect(cloneArgs(settings(), () => 1_700_000_000_999)[0]).toBe('1700000000.999');
    expect(cloneArgs(settings(), () => 1_700_000_000_000)[0]).toBe('1700000000.000');
    expect(cloneArgs(settings(), () => 1_700_000_000_120)[0]).toBe('1700000000.120');
  });

  it('reads the clock once', () => {
    let calls = 0;
    cloneArgs(settings(), () => (calls++, 1_700_000_000_000));
    expect(calls).toBe(1);
  });

  it('refuses settings that would reach the guest shell unchecked (the config disk validation), before reading the clock', () => {
    const bad: Array<Partial<GuestConfig>> = [
      { hostname: 'a b' },
      { hostname: '$(reboot)' },
      { authorizedKeys: [`${KEY}\nssh-rsa AAAA`] },
      { authorizedKeys: ['command="reboot" ssh-ed25519 AAAA'] },
      { network: { mac: `${MAC}; reboot`, address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', dns: [] } },
      { network: { mac: MAC, address: '10.0.2.15 ; reboot', prefixLength: 24, gateway: '10.0.2.2', dns: [] } },
      { network: { mac: MAC, address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', dns: ['$(reboot)'] } },
    ];
    for (const cfg of bad) {
      let read = false;
      expect(() =>
        cloneArgs(settings({}, cfg), () => {
          read = true;
          return 0;
        }),
      ).toThrow(/invalid guest config/);
      expect(read).toBe(false);
    }
  });
});

/** The contract as clone-identity.ts computes it, from any pair of scripts. */
function contractOf(prep: string, clone: string): string {
  return `clone-1-${createHash('sha256').update(JSON.stringify([prep, clone])).digest('hex').slice(0, 12)}`;
}

describe('CLONE_CONTRACT', () => {
  it('is clone-1- and 12 hex digits of the sha256 of both scripts', () => {
    expect(CLONE_CONTRACT).toMatch(/^clone-1-[0-9a-f]{12}$/);
    expect(contractOf(TEMPLATE_PREP_SCRIPT, CLONE_SCRIPT)).toBe(CLONE_CONTRACT);
  });

  it('changes when either script changes, by as little as one character', () => {
    const variants = [
      contractOf(TEMPLATE_PREP_SCRIPT + '\n', CLONE_SCRIPT),
      contractOf(TEMPLATE_PREP_SCRIPT.replace('blockdev --flushbufs', 'blockdev  --flushbufs'), CLONE_SCRIPT),
      contractOf(TEMPLATE_PREP_SCRIPT, CLONE_SCRIPT.replace('systemctl start ssh.service', 'systemctl start sshd.service')),
      // text moved across the boundary between the two scripts
      contractOf(TEMPLATE_PREP_SCRIPT + CLONE_SCRIPT.slice(0, 1), CLONE_SCRIPT.slice(1)),
      contractOf(TEMPLATE_PREP_SCRIPT, CLONE_SCRIPT + ' '),
      contractOf(CLONE_SCRIPT, TEMPLATE_PREP_SCRIPT),
    ];
    for (const v of variants) expect(v).not.toBe(CLONE_CONTRACT);
    expect(new Set(variants).size).toBe(variants.length);
  });
});

describe('the guest scripts', () => {
  const scripts = { TEMPLATE_PREP_SCRIPT, CLONE_SCRIPT };

  it('use what cloneArgs gives: $1 to $9, then the keys as "$@" after `shift 9`', () => {
    const used = [...CLONE_SCRIPT.matchAll(/\$\{?(\d)/g)].map((m) => Number(m[1]));
    expect(new Set(used)).toEqual(new Set([1, 2, 3, 4, 5, 6, 7, 8, 9]));
    expect(CLONE_SCRIPT).toContain('shift 9\n');
    // every positional parameter is used before the shift
    expect(Math.max(...[...CLONE_SCRIPT.matchAll(/\$\{?\d/g)].map((m) => m.index))).toBeLessThan(CLONE_SCRIPT.indexOf('shift 9'));
    expect(CLONE_SCRIPT).toContain('for k in "$@"; do');
    expect(TEMPLATE_PREP_SCRIPT).not.toMatch(/\$\{?\d/);
  });

  it('name the files they mean (absolute paths, nothing left uninterpolated)', () => {
    expect(CLONE_SCRIPT).toContain(`printf '%s\\n' "$8" >${SSH_HOST_KEY} ||`);
    expect(CLONE_SCRIPT).toContain(`printf '%s\\n' "$9" >${SSH_HOST_KEY}.pub ||`);
    expect(CLONE_SCRIPT).toContain(`cp -a -n /${ROOT_SKEL_PATH}/. ${WORK_DISK_MOUNT}/`);
    expect(CLONE_SCRIPT).toContain(`${WORK_DISK_MOUNT}/.ssh/authorized_keys`);
    expect(SSH_HOST_KEY.startsWith('/')).toBe(true);
    expect(ROOT_SKEL_PATH.startsWith('/')).toBe(false); // so `/${...}` is one slash
    expect(TEMPLATE_PREP_SCRIPT).toContain(`umount ${WORK_DISK_MOUNT} ||`);
    for (const s of Object.values(scripts)) {
      expect(s).not.toContain('undefined');
      expect(s.endsWith('\n')).toBe(true);
    }
  });

  it.each(Object.entries(scripts))('%s parses with /bin/sh -n', (_name, script) => {
    const r = spawnSync('/bin/sh', ['-n'], { input: script, encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('sh -n does fail on a broken script (the check above can fail)', () => {
    const r = spawnSync('/bin/sh', ['-n'], { input: CLONE_SCRIPT.replace(/\nfi\n/, '\n'), encoding: 'utf8' });
    expect(r.status).not.toBe(0);
  });

  it.skipIf(!onPath('shellcheck'))('shellcheck does complain about an unquoted argument (the check below can fail)', () => {
    const r = spawnSync('shellcheck', ['--shell=sh', '--severity=style', '--exclude=SC2015', '-'], { input: CLONE_SCRIPT.replace('date -u -s "@$1"', 'date -u -s @$1'), encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stdout).toMatch(/SC2086/);
  });

  // Every severity, down to style. Excluded: SC2015 (`A && B || C` is not if-then-else), which is the
  // intent in the clone script (`read && kill || fail`: either failing is a failure).
  const haveShellcheck = onPath('shellcheck');
  const title = 'shellcheck (POSIX sh, every severity) finds nothing in either script';
  it.skipIf(!haveShellcheck)(haveShellcheck ? title : `${title} — skipped: shellcheck is not installed (apt-get install shellcheck)`, () => {
    for (const [name, script] of Object.entries(scripts)) {
      const r = spawnSync('shellcheck', ['--shell=sh', '--severity=style', '--exclude=SC2015', '--format=gcc', '-'], { input: script, encoding: 'utf8' });
      expect(r.error).toBeUndefined();
      expect({ name, out: r.stdout.trim(), status: r.status }).toEqual({ name, out: '', status: 0 });
    }
  });
});

describe('cloneArgs and the host key', () => {
  it('cloneArgs refuses a host key that is not of newHostKey\'s shape', () => {
    expect(() => cloneArgs(settings({ hostKey: { ...HOST_KEY, privateKey: 'x' } }))).toThrow(/host key/);
    expect(() => cloneArgs(settings({ hostKey: { ...HOST_KEY, publicLine: `${HOST_KEY.publicLine}\nssh-rsa AAAA` } }))).toThrow(/host key/);
  });
});
