import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { inspectTree, planGuestContract, requireGuestContract } from './guest-contract.js';
import { summarise } from './source-oci.js';

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'banger-contract-'));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const touch = (rel: string, text = '') => {
  mkdirSync(dirname(join(root, rel)), { recursive: true });
  writeFileSync(join(root, rel), text);
};

/** A merged-/usr Debian tree with every file the contract looks for. */
function debianTree(skip: string[] = []): void {
  symlinkSync('usr/sbin', join(root, 'sbin'));
  symlinkSync('usr/lib', join(root, 'lib'));
  symlinkSync('usr/bin', join(root, 'bin'));
  touch('usr/lib/os-release', 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n');
  mkdirSync(join(root, 'etc'), { recursive: true });
  symlinkSync('../usr/lib/os-release', join(root, 'etc/os-release'));
  const files = [
    'usr/lib/systemd/systemd',
    'usr/sbin/sshd',
    'usr/sbin/qemu-ga',
    'usr/sbin/ip',
    'usr/sbin/mkfs.ext4',
    'usr/sbin/e2fsck',
    'usr/bin/mount',
    'usr/sbin/modprobe',
    'usr/lib/systemd/systemd-udevd',
    'usr/bin/dbus-daemon',
    'etc/ssl/certs/ca-certificates.crt',
  ];
  for (const f of files) if (!skip.some((s) => f.includes(s))) touch(f);
  if (!skip.includes('init')) symlinkSync('/lib/systemd/systemd', join(root, 'usr/sbin/init'));
}

describe('guest contract', () => {
  it('a tree with systemd, sshd, the agent and the tools passes (CA certificates are not required)', () => {
    debianTree(['ca-certificates']);
    const r = requireGuestContract(root, 'image x');
    expect(r.family).toBe('debian');
    expect(r.missing).toEqual(['ca-certificates']);
    expect(r.blocking).toEqual([]);
  });

  it('a container image without init, sshd or the agent is refused, naming each and the apt-get line that adds them', () => {
    debianTree(['init', 'systemd/systemd', 'sshd', 'qemu-ga']);
    const err = (() => {
      try {
        requireGuestContract(root, 'image debian:bookworm');
      } catch (e) {
        return e as { code: string; message: string; hint: string };
      }
      throw new Error('not refused');
    })();
    expect(err.code).toBe('operation_failed');
    expect(err.message).toBe('image debian:bookworm (Debian GNU/Linux 12 (bookworm)) cannot boot as a banger guest: it lacks systemd (as /sbin/init), an SSH server (sshd), qemu-guest-agent, udev');
    expect(err.hint).toMatch(/apt-get update && apt-get install -y --no-install-recommends systemd systemd-sysv openssh-server qemu-guest-agent udev/);
  });

  it('Alpine is refused with the reason (no systemd there); an unknown distribution names the families banger knows', () => {
    touch('etc/os-release', 'ID=alpine\nPRETTY_NAME="Alpine Linux v3.20"\n');
    expect(() => requireGuestContract(root, 'image alpine:3.20')).toThrow(expect.objectContaining({ hint: expect.stringMatching(/OpenRC/) }));
    rmSync(join(root, 'etc/os-release'));
    expect(() => requireGuestContract(root, 'image scratch')).toThrow(expect.objectContaining({ message: expect.stringMatching(/unknown distribution/), hint: expect.stringMatching(/Debian\/Ubuntu, Fedora/) }));
  });

  it('never looks outside the tree: an os-release or sshd linked to the host does not count', () => {
    debianTree(['sshd']);
    rmSync(join(root, 'etc/os-release'));
    symlinkSync('/etc/os-release', join(root, 'etc/os-release')); // resolved in the tree: it names itself, a loop
    expect(() => inspectTree(root)).toThrow(/symbolic links/);
    rmSync(join(root, 'etc/os-release'));
    symlinkSync('/usr/sbin/sshd', join(root, 'usr/sbin/sshd-host')); // a name the contract does not use
    expect(inspectTree(root).missing).toContain('sshd');
  });
});

describe('planGuestContract', () => {
  it('plans the install of what a guest needs (not CA certificates) when an installer exists; refuses without one', () => {
    debianTree(['init', 'systemd/systemd', 'sshd', 'qemu-ga', 'ca-certificates']);
    const { install } = planGuestContract(root, 'image x', true);
    expect(install?.family).toBe('debian');
    expect(install?.packages).toEqual(['systemd', 'systemd-sysv', 'openssh-server', 'qemu-guest-agent', 'udev']);
    expect(install?.argv.at(-1)).toEqual(['apt-get', 'install', '-y', '--no-install-recommends', 'systemd', 'systemd-sysv', 'openssh-server', 'qemu-guest-agent', 'udev']);
    expect(() => planGuestContract(root, 'image x', false)).toThrow(/cannot boot as a banger guest/);
  });

  it('a tree that meets the contract needs nothing; Alpine without systemd is refused even with an installer', () => {
    debianTree(['ca-certificates']);
    expect(planGuestContract(root, 'image x', true).install).toBeUndefined();
    rmSync(join(root, 'etc/os-release'));
    touch('etc/os-release', 'ID=alpine\n');
    rmSync(join(root, 'usr/lib/systemd/systemd')); // Alpine has no systemd
    expect(() => planGuestContract(root, 'image alpine', true)).toThrow(expect.objectContaining({ hint: expect.stringMatching(/OpenRC/) }));
  });
});

describe('summarise', () => {
  it("folds the device nodes of a base layer into one line and keeps other warnings", () => {
    const w = ['dev/console', 'dev/null', 'dev/zero', 'dev/tty', 'dev/random'].map((d) => `layer sha256:aa: skipped "${d}", a device node (banger creates files…)`);
    w.push('layer sha256:aa: skipped "run/initctl", a FIFO (…)', 'something else');
    const s = summarise(w);
    expect(s).toHaveLength(2);
    expect(s[0]).toBe("skipped 6 device node(s) and FIFO(s) (dev/console, dev/null, dev/zero, dev/tty, …): the guest's /dev is a devtmpfs");
    expect(s[1]).toBe('something else');
  });
});
