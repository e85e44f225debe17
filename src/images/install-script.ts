/**
 * The script a throwaway build VM runs (as root, over SSH) to install what a
 * pulled image lacks of the guest contract, once, at pull time: it finds the
 * image's ext4 among its disks by a one-off label, mounts it, chroots into
 * it with the build VM's network, runs the distribution's package manager
 * (distro.ts's plan), scrubs what the install left that must be per-VM
 * (SSH host keys, machine-id, the random seed, package lists), checks the
 * contract again and restores the image's label. The image's own programs
 * run inside the build VM only, never on the host.
 *
 * Every word that comes from banger's tables is shell-quoted; the label is
 * checked. Output lines are the caller's progress (hostile: it clips them).
 */
import { shellJoin, shellQuote } from '../model/quote.js';
import { GUEST_NEEDS, NEED_PATHS, type Family, type GuestNeed } from './distro.js';
import { ROOTFS_LABEL } from './ext4.js';

export interface InstallScriptSpec {
  /** The image's ext4 label while it is attached (`bgi-` and 8 hex digits). */
  label: string;
  family: Family;
  argv: string[][];
  env: Record<string, string>;
}

export const INSTALL_LABEL = /^bgi-[0-9a-f]{8}$/;
const ENV_NAME = /^[A-Z_][A-Z0-9_]{0,63}$/;
/** What the script prints for each need still missing after the install. */
export const MISSING_PREFIX = 'banger-install: missing ';
/** Exit code of a run whose install succeeded but left a need missing. */
export const EXIT_STILL_MISSING = 3;

/** The contract check, as shell: one `MISSING_PREFIX need` line per need none of whose paths exists. */
function contractCheck(mnt: string, needs: readonly GuestNeed[]): string[] {
  return needs.map((need) => {
    const groups = NEED_PATHS[need].map((g) => `{ ${g.map((p) => `[ -e ${mnt}/${p} ] || [ -L ${mnt}/${p} ]`).join(' || ')}; }`);
    return `{ ${groups.join(' && ')}; } || { echo ${shellQuote(MISSING_PREFIX + need)}; missing=1; }`;
  });
}

export function installScript(spec: InstallScriptSpec): string {
  if (!INSTALL_LABEL.test(spec.label)) throw new Error(`bad install label ${spec.label}`);
  for (const k of Object.keys(spec.env)) if (!ENV_NAME.test(k)) throw new Error(`bad env name ${k}`);
  const mnt = '/mnt/banger-target';
  const env = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'LC_ALL=C', ...Object.entries(spec.env).map(([k, v]) => `${k}=${v}`)];
  const inChroot = (argv: string[]) => `chroot ${mnt} /usr/bin/env -i ${shellJoin(env)} ${shellJoin(argv)}`;
  const debian = spec.family === 'debian';
  const needs = GUEST_NEEDS.filter((n) => n !== 'ca-certificates');
  return [
    'set -eu',
    `mnt=${mnt}`,
    `dev=$(blkid -L ${spec.label}) || { echo "banger-install: no disk labelled ${spec.label}" >&2; exit 2; }`,
    'mkdir -p "$mnt"',
    'mount "$dev" "$mnt"',
    'undo() { for m in dev/pts dev sys proc; do umount "$mnt/$m" 2>/dev/null || true; done; umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; }',
    'trap undo EXIT',
    // The image's own /proc etc. may be missing, or links: they are made
    // plain directories (the guest's are mounts at boot anyway).
    'for d in proc sys dev; do [ -d "$mnt/$d" ] && [ ! -L "$mnt/$d" ] || { rm -f "$mnt/$d"; mkdir -p "$mnt/$d"; }; done',
    'mount -t proc proc "$mnt/proc"',
    'mount -t sysfs sysfs "$mnt/sys"',
    'mount --bind /dev "$mnt/dev"',
    '[ -d "$mnt/dev/pts" ] && mount --bind /dev/pts "$mnt/dev/pts" || true',
    // The build VM's resolver, for the package manager; put back afterwards.
    'rm -f "$mnt/etc/resolv.conf"; cp /etc/resolv.conf "$mnt/etc/resolv.conf"',
    // Debian: no service starts in the chroot; dpkg does not fsync every
    // file (the VM syncs once at the end: under TCG that halves the unpack);
    // openssh-server's postinst finds host keys and makes none (an RSA key
    // takes a minute under TCG, and every VM gets its own from the daemon).
    ...(debian
      ? [
          `printf '#!/bin/sh\\nexit 101\\n' > "$mnt/usr/sbin/policy-rc.d"`,
          'chmod 755 "$mnt/usr/sbin/policy-rc.d"',
          'mkdir -p "$mnt/etc/dpkg/dpkg.cfg.d" "$mnt/etc/ssh"',
          `printf 'force-unsafe-io\\n' > "$mnt/etc/dpkg/dpkg.cfg.d/banger-build"`,
          'for t in rsa ecdsa ed25519; do [ -e "$mnt/etc/ssh/ssh_host_${t}_key" ] || : > "$mnt/etc/ssh/ssh_host_${t}_key"; done',
        ]
      : []),
    ...spec.argv.map((a) => `echo ${shellQuote(`banger-install: ${a.join(' ')}`)}; ${inChroot(a)} </dev/null`),
    ...(debian ? ['rm -f "$mnt/usr/sbin/policy-rc.d" "$mnt/etc/dpkg/dpkg.cfg.d/banger-build"', `${inChroot(['apt-get', 'clean'])} || true`, 'rm -rf "$mnt"/var/lib/apt/lists/*'] : []),
    // Per-VM identity the packages made: host keys (each VM gets its own
    // from the daemon), the machine-id (D-Bus' postinst writes it through
    // /var/lib/dbus/machine-id), the random seed.
    'rm -f "$mnt"/etc/ssh/ssh_host_*',
    'rm -f "$mnt/etc/machine-id" "$mnt/var/lib/dbus/machine-id"; : > "$mnt/etc/machine-id"; chmod 444 "$mnt/etc/machine-id"',
    'mkdir -p "$mnt/var/lib/dbus"; ln -s /etc/machine-id "$mnt/var/lib/dbus/machine-id"',
    'rm -f "$mnt/var/lib/systemd/random-seed"',
    `printf '# written by banger-guest-config at boot\\n' > "$mnt/etc/resolv.conf"`,
    'missing=0',
    ...contractCheck('"$mnt"', needs),
    'sync',
    'undo',
    'trap - EXIT',
    `e2label "$dev" ${ROOTFS_LABEL}`,
    `[ "$missing" = 0 ] || exit ${EXIT_STILL_MISSING}`,
    'echo "banger-install: done"',
  ].join('\n');
}
