import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../system/runner.js';
import { CONFIG_DISK_FILES, CONFIG_DISK_LABEL } from '../guest/config-disk.js';
import { WORK_DISK_LABEL } from '../guest/work-disk.js';
import {
  GUEST_SCRIPT,
  GUEST_SCRIPT_PATH,
  GUEST_UNIT,
  GUEST_UNIT_NAME,
  GUEST_UNIT_PATH,
  ROOT_SKEL_PATH,
  SSHD_CONFIG,
  SSH_HOST_KEY,
  WORK_DISK_MARKER,
  WORK_DISK_MOUNT_OPTIONS,
  WORK_DISK_MOUNT_UNIT,
} from './guest-files.js';

const runner = createRunner();
const isRoot = process.getuid?.() === 0;
const haveDash = existsSync('/bin/dash');
const systemdAnalyze = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));

/** The script's validation helpers (is_label, is_ipv4, is_mac), cut out to test them in sh. */
function helpers(): string {
  const start = GUEST_SCRIPT.indexOf('is_label() {');
  const end = GUEST_SCRIPT.indexOf("hostname_value=''");
  expect(start).toBeGreaterThan(0);
  expect(end).toBeGreaterThan(start);
  return GUEST_SCRIPT.slice(start, end);
}

async function sh(script: string): Promise<number | null> {
  const r = await runner.run(['/bin/dash', '-c', script], { allowFailure: true, timeoutMs: 10_000 });
  return r.code;
}

describe('guest unit', () => {
  it('runs the script once per boot, before ssh and the network, logging to the console', () => {
    expect(GUEST_UNIT).toContain(`ExecStart=/${GUEST_SCRIPT_PATH}\n`);
    expect(GUEST_UNIT).toContain('Type=oneshot\n');
    expect(GUEST_UNIT).toMatch(/^Before=.*\bssh\.service\b/m);
    expect(GUEST_UNIT).toMatch(/^Before=.*\bnetwork-pre\.target\b/m);
    expect(GUEST_UNIT).toMatch(/^After=.*\blocal-fs\.target\b/m);
    expect(GUEST_UNIT).toContain('StandardOutput=journal+console\n');
    expect(GUEST_UNIT).toContain('WantedBy=multi-user.target\n');
    expect(GUEST_UNIT_PATH).toBe(`etc/systemd/system/${GUEST_UNIT_NAME}`);
  });

  it('runs after the work disk is mounted at /root (so shutdown unmounts it after ssh and sessions)', () => {
    expect(WORK_DISK_MOUNT_UNIT).toBe('root.mount');
    expect(GUEST_UNIT).toMatch(/^After=.*\broot\.mount\b/m);
    expect(GUEST_UNIT).toMatch(/^Before=.*\bsystemd-user-sessions\.service\b/m);
    // ordering only: a missing or failed work disk must not stop the unit
    expect(GUEST_UNIT).not.toMatch(/^(Requires|BindsTo|RequiresMountsFor)=.*root/m);
  });

  it('sshd uses the per-VM host key the script makes', () => {
    expect(SSHD_CONFIG).toContain(`HostKey ${SSH_HOST_KEY}\n`);
    expect(GUEST_SCRIPT).toContain(`HOSTKEY=${SSH_HOST_KEY}\n`);
  });

  describe.skipIf(systemdAnalyze === undefined)('systemd-analyze verify', () => {
    let root: string;
    beforeAll(() => {
      root = mkdtempSync(join(tmpdir(), 'banger-unit-'));
    });
    afterAll(() => rmSync(root, { recursive: true, force: true }));

    it('accepts the unit', async () => {
      mkdirSync(join(root, 'etc/systemd/system'), { recursive: true });
      mkdirSync(join(root, GUEST_SCRIPT_PATH, '..'), { recursive: true });
      writeFileSync(join(root, GUEST_SCRIPT_PATH), GUEST_SCRIPT, { mode: 0o755 });
      writeFileSync(join(root, GUEST_UNIT_PATH), GUEST_UNIT);
      const r = await runner.run([systemdAnalyze!, `--root=${root}`, 'verify', '--man=no', join(root, GUEST_UNIT_PATH)], {
        allowFailure: true,
        timeoutMs: 20_000,
      });
      expect(r.stderr + r.stdout).toBe('');
      expect(r.code).toBe(0);
    });
  });
});

describe('guest script', () => {
  it('is a POSIX sh script that reads the config disk format', () => {
    expect(GUEST_SCRIPT.startsWith('#!/bin/sh\n')).toBe(true);
    expect(GUEST_SCRIPT).toContain(`LABEL=${CONFIG_DISK_LABEL}\n`);
    for (const f of Object.values(CONFIG_DISK_FILES)) expect(GUEST_SCRIPT).toContain(`$MNT/${f}`);
    // no bashisms
    expect(GUEST_SCRIPT).not.toMatch(/\[\[|\bfunction\s|\blocal\s|\$'|<<<|\bsource\s/);
    // every step the brief needs
    expect(GUEST_SCRIPT).toContain('mount -t ext4 -o ro,');
    expect(GUEST_SCRIPT).toContain('/root/.ssh/authorized_keys');
    expect(GUEST_SCRIPT).toContain('install -d -m 0700');
    expect(GUEST_SCRIPT).toContain('ssh-keygen');
    expect(GUEST_SCRIPT).toContain('/etc/resolv.conf');
    expect(GUEST_SCRIPT).toContain('resize2fs');
    expect(GUEST_SCRIPT).toContain('/proc/sys/kernel/hostname');
    expect(GUEST_SCRIPT).toContain(`WORK_LABEL=${WORK_DISK_LABEL}\n`);
    expect(GUEST_SCRIPT).toContain(`WORK_MARKER=${WORK_DISK_MARKER}\n`);
    expect(GUEST_SCRIPT).toContain(`SKEL=/${ROOT_SKEL_PATH}\n`);
    // the work disk is mounted (exec allowed) before authorized_keys go into /root/.ssh
    expect(GUEST_SCRIPT).toContain(`mount -t ext4 -o ${WORK_DISK_MOUNT_OPTIONS} "$dev" "$WORK"`);
    expect(WORK_DISK_MOUNT_OPTIONS.split(',')).not.toContain('noexec');
    expect(WORK_DISK_MOUNT_OPTIONS.split(',')).toContain('rw');
    expect(GUEST_SCRIPT).toContain('find_disk "$WORK_LABEL"');
    expect(GUEST_SCRIPT).toContain('find_disk "$LABEL"');
    expect(GUEST_SCRIPT.indexOf('# 0. The work disk')).toBeGreaterThan(0);
    expect(GUEST_SCRIPT.indexOf('# 0. The work disk')).toBeLessThan(GUEST_SCRIPT.indexOf('/root/.ssh/authorized_keys'));
  });

  it.skipIf(!haveDash)('parses with dash -n', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'banger-script-'));
    try {
      const file = join(dir, 'banger-guest-config');
      writeFileSync(file, GUEST_SCRIPT, { mode: 0o755 });
      const r = await runner.run(['/bin/dash', '-n', file], { allowFailure: true, timeoutMs: 10_000 });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe.skipIf(!haveDash)('validation helpers (in dash)', () => {
    it.each(['10.0.2.15', '0.0.0.0', '255.255.255.255'])('is_ipv4 accepts %s', async (ip) => {
      expect(await sh(`${helpers()}\nis_ipv4 '${ip}'`)).toBe(0);
    });
    it.each(['', '10.0.2', '10.0.2.256', '1.2.3.4.5', '1..2.3', '.1.2.3', '1.2.3.', '1.2.3.4;x', '1234.1.1.1', 'a.b.c.d'])(
      'is_ipv4 rejects %j',
      async (ip) => {
        expect(await sh(`${helpers()}\nis_ipv4 '${ip}'`)).not.toBe(0);
      },
    );
    it.each(['vm', 'amber-badger-1a2b', 'A1', 'a'.repeat(63)])('is_label accepts %s', async (h) => {
      expect(await sh(`${helpers()}\nis_label '${h}'`)).toBe(0);
    });
    it.each(['', '-a', 'a-', 'a.b', 'a b', 'a$(reboot)', 'a'.repeat(64)])('is_label rejects %j', async (h) => {
      expect(await sh(`${helpers()}\nis_label '${h}'`)).not.toBe(0);
    });
    it('find_disk gives up after its wall-clock timeout', async () => {
      const start = GUEST_SCRIPT.indexOf('# Sets up= to whole seconds since boot');
      const end = GUEST_SCRIPT.indexOf('# Waits up to ~10 s for the NIC');
      expect(start).toBeGreaterThan(0);
      expect(end).toBeGreaterThan(start);
      const t0 = Date.now();
      expect(await sh(`${GUEST_SCRIPT.slice(start, end)}\nfind_disk banger-no-such-label-x 1`)).toBe(1);
      const ms = Date.now() - t0;
      expect(ms).toBeGreaterThanOrEqual(200);
      expect(ms).toBeLessThan(5000);
    });
    it('is_mac takes lower-case colon form only (what the host writes)', async () => {
      expect(await sh(`${helpers()}\nis_mac 52:54:00:12:34:56`)).toBe(0);
      expect(await sh(`${helpers()}\nis_mac 52:54:00:12:34`)).not.toBe(0);
      expect(await sh(`${helpers()}\nis_mac 52:54:00:12:34:5G`)).not.toBe(0);
    });
  });
});

/**
 * Step 0 of the script (readying the work disk), cut out and run in dash
 * against temporary directories standing in for /root and the skeleton.
 */
describe.skipIf(!haveDash || !isRoot)('work disk step (in dash)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'banger-work-step-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function step(): string {
    const start = GUEST_SCRIPT.indexOf('# 0. The work disk');
    const end = GUEST_SCRIPT.indexOf('# 1. The config disk');
    expect(start).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(start);
    return GUEST_SCRIPT.slice(start, end);
  }

  /**
   * `found`: what the stubbed find_disk prints ('' = no disk); `mountOk`:
   * whether the stubbed mount succeeds; `mounted`: already mounted at /root.
   */
  async function runStep(
    work: string,
    skel: string,
    opts: { found?: string; mountOk?: boolean; mounted?: string } = {},
  ): Promise<{ code: number | null; out: string }> {
    const found = opts.found ?? '';
    const script = [
      'set -u',
      `find_disk() { [ "$1" = ${WORK_DISK_LABEL} ] || exit 99; [ -n '${found}' ] && printf '%s\\n' '${found}'; }`,
      `mount() { printf 'MOUNT %s\\n' "$*"; return ${opts.mountOk === false ? 32 : 0}; }`,
      "log() { printf 'banger-guest-config: %s\\n' \"$*\"; }",
      "fail() { printf 'banger-guest-config: ERROR: %s\\n' \"$*\"; status=1; }",
      'status=0',
      `WORK='${work}'`,
      `WORK_MARKER='${work}/.banger-work-initialized'`,
      `SKEL='${skel}'`,
      `WORK_LABEL='${WORK_DISK_LABEL}'`,
      `work_dev='${opts.mounted ?? ''}'`,
      step(),
      'exit "$status"',
    ].join('\n');
    const r = await runner.run(['/bin/dash', '-c', script], { allowFailure: true, timeoutMs: 10_000 });
    return { code: r.code, out: r.stdout + r.stderr };
  }

  it('fills a fresh work disk from the skeleton once, then leaves it alone', async () => {
    const skel = join(dir, 'skel');
    const work = join(dir, 'work');
    mkdirSync(join(skel, '.config'), { recursive: true, mode: 0o700 });
    writeFileSync(join(skel, '.bashrc'), 'skel bashrc\n');
    writeFileSync(join(skel, '.config', 'x'), 'x\n');
    mkdirSync(join(work, 'lost+found'), { recursive: true, mode: 0o755 });

    const first = await runStep(work, skel, { found: '/dev/disk/by-label/banger-work' });
    expect(first.out).toContain(`MOUNT -t ext4 -o ${WORK_DISK_MOUNT_OPTIONS} /dev/disk/by-label/banger-work ${work}`);
    expect(first.out).toContain('first use');
    expect(first.code).toBe(0);
    expect(readFileSync(join(work, '.bashrc'), 'utf8')).toBe('skel bashrc\n');
    expect(readFileSync(join(work, '.config', 'x'), 'utf8')).toBe('x\n');
    expect(existsSync(join(work, '.banger-work-initialized'))).toBe(true);
    const st = statSync(work);
    expect(st.mode & 0o777).toBe(0o700);
    expect([st.uid, st.gid]).toEqual([0, 0]);

    // the user's changes survive later boots
    writeFileSync(join(work, '.bashrc'), 'mine\n');
    const again = await runStep(work, skel, { found: '/dev/vdc' });
    expect(again.code).toBe(0);
    expect(again.out).not.toContain('first use');
    expect(readFileSync(join(work, '.bashrc'), 'utf8')).toBe('mine\n');
  });

  it('carries on with the image /root when there is no work disk', async () => {
    const work = join(dir, 'plain-root');
    mkdirSync(work);
    const r = await runStep(work, join(dir, 'skel'));
    expect(r.code).toBe(0);
    expect(r.out).toContain('no work disk');
    expect(r.out).not.toContain('MOUNT');
    expect(readdirSync(work)).toEqual([]);
  });

  it('reports a work disk it cannot mount, and leaves /root alone', async () => {
    const work = join(dir, 'unmountable');
    mkdirSync(work);
    const r = await runStep(work, join(dir, 'skel'), { found: '/dev/vdc', mountOk: false });
    expect(r.code).toBe(1);
    expect(r.out).toContain('ERROR: cannot mount the work disk /dev/vdc');
    expect(readdirSync(work)).toEqual([]);
  });

  it('does not mount twice when /root is already the work disk', async () => {
    const work = join(dir, 'already');
    mkdirSync(work);
    writeFileSync(join(work, '.banger-work-initialized'), '');
    const r = await runStep(work, join(dir, 'skel'), { found: '/dev/vdc', mounted: '/dev/vdc' });
    expect(r.code).toBe(0);
    expect(r.out).not.toContain('MOUNT');
    expect(r.out).toContain('already mounted');
  });
});

/** The config disk's host key install (step 1), cut out and run in dash against temporary files. */
describe.skipIf(!haveDash)('host key from the config disk (in dash)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'banger-hostkey-step-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function snippet(): string {
    const start = GUEST_SCRIPT.indexOf("    # The SSH host key the daemon made");
    const end = GUEST_SCRIPT.indexOf('    umount "$MNT"', start);
    expect(start).toBeGreaterThan(0);
    expect(end).toBeGreaterThan(start);
    return GUEST_SCRIPT.slice(start, end);
  }

  async function run(mnt: string, hostkey: string): Promise<{ code: number | null; out: string }> {
    const script = [
      'set -u',
      "log() { printf 'banger-guest-config: %s\\n' \"$*\"; }",
      "fail() { printf 'banger-guest-config: ERROR: %s\\n' \"$*\"; status=1; }",
      'status=0',
      'umask 022',
      `MNT='${mnt}'`,
      `HOSTKEY='${hostkey}'`,
      snippet(),
      'exit "$status"',
    ].join('\n');
    const r = await runner.run(['/bin/dash', '-c', script], { allowFailure: true, timeoutMs: 10_000 });
    return { code: r.code, out: r.stdout + r.stderr };
  }

  it('installs both halves byte for byte, the private one 0600, and says so', async () => {
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt, { recursive: true });
    const priv = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n';
    writeFileSync(join(mnt, CONFIG_DISK_FILES.hostKey), priv);
    // A .pub without its final newline still arrives whole.
    writeFileSync(join(mnt, CONFIG_DISK_FILES.hostKeyPub), 'ssh-ed25519 AAAAC3Nz root@box');
    const key = join(dir, 'ssh_host_ed25519_key');
    const r = await run(mnt, key);
    expect(r).toEqual({ code: 0, out: 'banger-guest-config: ssh host key from the config disk\n' });
    expect(readFileSync(key, 'utf8')).toBe(priv);
    expect(statSync(key).mode & 0o777).toBe(0o600);
    expect(readFileSync(`${key}.pub`, 'utf8')).toBe('ssh-ed25519 AAAAC3Nz root@box\n');
    expect(statSync(`${key}.pub`).mode & 0o777).toBe(0o644);
  });

  it('a key it cannot write is a failure, and no half is left', async () => {
    const mnt = join(dir, 'mnt2');
    mkdirSync(mnt, { recursive: true });
    writeFileSync(join(mnt, CONFIG_DISK_FILES.hostKey), 'k\n');
    writeFileSync(join(mnt, CONFIG_DISK_FILES.hostKeyPub), 'p\n');
    // The .pub cannot be written (a directory is in its way); the private half must go too.
    const key = join(dir, 'half_key');
    mkdirSync(`${key}.pub`);
    const r = await run(mnt, key);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/ERROR: cannot install the ssh host key from the config disk/);
    expect(existsSync(key)).toBe(false);
  });

  it('leaves the key alone when the config disk has none', async () => {
    const mnt = join(dir, 'empty');
    mkdirSync(mnt, { recursive: true });
    const key = join(dir, 'kept_key');
    writeFileSync(key, 'old\n', { mode: 0o600 });
    const r = await run(mnt, key);
    expect(r).toEqual({ code: 0, out: '' });
    expect(readFileSync(key, 'utf8')).toBe('old\n');
  });
});
