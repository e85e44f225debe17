import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { onPath } from '../system/which.js';
import { GUEST_SCRIPT_PATH, SSH_HOST_KEY } from '../images/guest-files.js';
import { CLONE_CONTRACT, CLONE_SCRIPT, TEMPLATE_PREP_SCRIPT, cloneArgs } from './clone-identity.js';
import { WORK_DISK_MOUNT } from './work-disk.js';

const MAC = '52:54:00:12:34:56';

/** The contract as clone-identity.ts computes it, from any pair of scripts. */
function contractOf(prep: string, clone: string): string {
  return `clone-1-${createHash('sha256').update(JSON.stringify([prep, clone])).digest('hex').slice(0, 12)}`;
}

describe('cloneArgs', () => {
  it('is [host time, machine-id, entropy, MAC]: the time now, 32 and 64 hex digits, the MAC as given', () => {
    const before = Date.now();
    const args = cloneArgs(MAC);
    const after = Date.now();
    expect(args).toHaveLength(4);
    const [time, machineId, entropy, mac] = args;
    expect(time).toMatch(/^\d+\.\d{3}$/);
    const ms = Math.round(Number(time) * 1000);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after);
    expect(machineId).toMatch(/^[0-9a-f]{32}$/);
    expect(entropy).toMatch(/^[0-9a-f]{64}$/);
    expect(mac).toBe(MAC);
  });

  it('gives every clone its own machine-id and entropy', () => {
    const a = cloneArgs(MAC);
    const b = cloneArgs(MAC);
    expect(a[1]).not.toBe(b[1]);
    expect(a[2]).not.toBe(b[2]);
  });

  it('writes the time as seconds with three decimals (date -s @S.mmm)', () => {
    expect(cloneArgs(MAC, () => 1_700_000_000_005)[0]).toBe('1700000000.005');
    expect(cloneArgs(MAC, () => 1_700_000_000_999)[0]).toBe('1700000000.999');
    expect(cloneArgs(MAC, () => 1_700_000_000_000)[0]).toBe('1700000000.000');
    expect(cloneArgs(MAC, () => 1_700_000_000_120)[0]).toBe('1700000000.120');
  });

  it('reads the clock once', () => {
    let calls = 0;
    cloneArgs(MAC, () => (calls++, 1_700_000_000_000));
    expect(calls).toBe(1);
  });

  it('refuses anything that is not a lower-case MAC (it becomes a guest shell argument), before reading the clock', () => {
    for (const bad of ['', '52:54:00:12:34', '52:54:00:12:34:56:78', '52-54-00-12-34-56', '52:54:00:12:34:5g', '52:54:00:AB:CD:EF', `${MAC}\n`, `${MAC}; reboot`, '$(reboot)', ` ${MAC}`]) {
      let read = false;
      expect(() =>
        cloneArgs(bad, () => {
          read = true;
          return 0;
        }),
      ).toThrow(/invalid MAC/);
      expect(read).toBe(false);
    }
  });
});

describe('CLONE_CONTRACT', () => {
  it('is clone-1- and 12 hex digits of the sha256 of both scripts', () => {
    expect(CLONE_CONTRACT).toMatch(/^clone-1-[0-9a-f]{12}$/);
    expect(contractOf(TEMPLATE_PREP_SCRIPT, CLONE_SCRIPT)).toBe(CLONE_CONTRACT);
  });

  it('changes when either script changes, by as little as one character', () => {
    const variants = [
      contractOf(TEMPLATE_PREP_SCRIPT + '\n', CLONE_SCRIPT),
      contractOf(TEMPLATE_PREP_SCRIPT.replace('echo 3', 'echo 1'), CLONE_SCRIPT),
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

  it('use what cloneArgs gives: $1 to $4, no more', () => {
    const used = [...CLONE_SCRIPT.matchAll(/\$\{?(\d)/g)].map((m) => Number(m[1]));
    expect(Math.max(...used)).toBe(cloneArgs(MAC).length);
    expect(new Set(used)).toEqual(new Set([1, 2, 3, 4]));
    expect(TEMPLATE_PREP_SCRIPT).not.toMatch(/\$\{?\d/);
  });

  it('name the files they mean (absolute paths, nothing left uninterpolated)', () => {
    expect(CLONE_SCRIPT).toContain(`\n/${GUEST_SCRIPT_PATH} || fail`);
    expect(CLONE_SCRIPT).toContain(`rm -f ${SSH_HOST_KEY} ${SSH_HOST_KEY}.pub\n`);
    expect(SSH_HOST_KEY.startsWith('/')).toBe(true);
    expect(GUEST_SCRIPT_PATH.startsWith('/')).toBe(false); // so `/${...}` is one slash
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
