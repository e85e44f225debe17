import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { installPlan } from './distro.js';
import { EXIT_STILL_MISSING, MISSING_PREFIX, installScript } from './install-script.js';

const plan = installPlan('debian', ['systemd', 'sshd', 'guest-agent']);
if (!plan.ok) throw new Error('no debian plan');
const spec = { label: 'bgi-0a1b2c3d', family: plan.family, argv: plan.argv, env: plan.env };

describe('installScript', () => {
  it('is valid POSIX sh (dash -n) for every family that has a plan', () => {
    for (const family of ['debian', 'fedora', 'arch', 'opensuse'] as const) {
      const p = installPlan(family, ['sshd', 'guest-agent']);
      if (!p.ok) throw new Error(family);
      const r = spawnSync('dash', ['-n'], { input: installScript({ label: 'bgi-00000000', family, argv: p.argv, env: p.env }) });
      expect(r.status, `${family}: ${r.stderr.toString()}`).toBe(0);
    }
  });

  it('finds the image by its one-off label, runs the plan in a chroot with a clean environment, and puts the label back', () => {
    const s = installScript(spec);
    expect(s).toContain('dev=$(blkid -L bgi-0a1b2c3d)');
    expect(s).toContain(
      "chroot /mnt/banger-target /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd systemd-sysv openssh-server qemu-guest-agent </dev/null",
    );
    expect(s.indexOf('apt-get update')).toBeLessThan(s.indexOf('apt-get install'));
    expect(s).toMatch(/policy-rc\.d/);
    expect(s).toContain('e2label "$dev" banger-root');
    expect(s).toContain(`exit ${EXIT_STILL_MISSING}`);
  });

  it('scrubs per-VM identity after the install: host keys, machine-id (emptied, D-Bus link back), random seed', () => {
    const s = installScript(spec);
    const after = s.slice(s.indexOf('apt-get install'));
    expect(after).toContain('rm -f "$mnt"/etc/ssh/ssh_host_*');
    expect(after).toContain(': > "$mnt/etc/machine-id"');
    expect(after).toContain('ln -s /etc/machine-id "$mnt/var/lib/dbus/machine-id"');
    expect(after).toContain('rm -f "$mnt/var/lib/systemd/random-seed"');
    // the build's speed-ups do not stay in the image
    expect(s.slice(0, s.indexOf('apt-get update'))).toContain('force-unsafe-io');
    expect(after).toContain('rm -f "$mnt/usr/sbin/policy-rc.d" "$mnt/etc/dpkg/dpkg.cfg.d/banger-build"');
  });

  it('checks the contract again and names each need still missing', () => {
    const s = installScript(spec);
    expect(s).toContain(`echo '${MISSING_PREFIX}sshd'`);
    expect(s).toContain('[ -e "$mnt"/usr/sbin/sshd ] || [ -L "$mnt"/usr/sbin/sshd ]');
    expect(s).not.toContain(`${MISSING_PREFIX}ca-certificates`);
  });

  it('refuses a label or an environment name that could escape the script', () => {
    expect(() => installScript({ ...spec, label: 'bgi-0a1b2c3d; rm -rf /' })).toThrow(/label/);
    expect(() => installScript({ ...spec, env: { 'A;B': 'x' } })).toThrow(/env/);
  });

  it('quotes every word of the plan', () => {
    const s = installScript({ ...spec, argv: [['apt-get', 'install', "x'; reboot; '"]] });
    expect(s).toContain(`'x'\\''; reboot; '\\'''`);
  });
});
