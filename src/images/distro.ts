/**
 * What distribution an image's root tree is, what it lacks of banger's guest
 * contract, and the package-manager commands that add it — for images that
 * do not come from banger's own mmdebstrap build (`image pull`).
 *
 * The guest contract (see source-debian.ts's package list): systemd as init
 * (the kernel gets no `init=`, so /sbin/init must be systemd's), sshd,
 * qemu-guest-agent, iproute2's `ip`, e2fsprogs (mkfs.ext4, e2fsck),
 * util-linux's `mount`, kmod's `modprobe`, udev, D-Bus (logind needs it) and
 * CA certificates.
 *
 * - parseOsRelease reads os-release(5): `KEY=value` lines, values unquoted,
 *   'single' or "double" quoted (shell escapes; pieces may be concatenated),
 *   `#` comments. It is image content: bounded (64 KiB), control characters
 *   stripped from values, malformed lines skipped; only a BangerError is
 *   thrown.
 * - detectFamily maps ID, then each ID_LIKE entry, to a package family.
 * - missingNeeds decides from file paths (relative to the root, checked by
 *   a caller-supplied probe: this module does no I/O). Every path is listed
 *   where each family puts it physically — merged /usr (`sbin -> usr/sbin`,
 *   Arch's `usr/sbin -> bin`) or not — so a probe that never follows a
 *   symlink inside the image still finds it. A probe answers "is there an
 *   entry at this path" (a symlink counts: /sbin/init is one).
 * - installPlan names each family's packages and non-interactive commands.
 *   Alpine cannot meet the contract (no systemd: it is built on OpenRC and
 *   musl, and systemd is not packaged there), so its plan is a refusal when
 *   systemd is missing; the guest unit and readiness are systemd units, and
 *   an OpenRC port of them is not something a package install can give.
 *
 * Only Debian's mirror is reachable from banger's test machines; the other
 * families' names come from their packaging (Fedora/RHEL specs, Arch
 * PKGBUILDs, openSUSE specs) and are unit-tested only.
 */
import { BangerError } from '../errors/errors.js';
import { clip } from '../model/text.js';

export type Family = 'debian' | 'fedora' | 'alpine' | 'arch' | 'opensuse';

export const GUEST_NEEDS = ['systemd', 'sshd', 'guest-agent', 'iproute2', 'e2fsprogs', 'util-linux', 'kmod', 'udev', 'dbus', 'ca-certificates'] as const;
export type GuestNeed = (typeof GUEST_NEEDS)[number];

export interface OsRelease {
  /** ID, lower case; `linux` when absent or malformed (os-release(5)'s default). */
  id: string;
  idLike: string[];
  versionId?: string;
  prettyName?: string;
}

/** Largest os-release read. */
export const OS_RELEASE_MAX = 64 * 1024;
const IDENT = /^[a-z0-9._-]{1,64}$/;
const KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
// C0/C1 controls and bidi overrides: never put into a message or a terminal.
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** A value as the shell reads one word: quotes and backslash escapes; undefined when a quote is left open. */
function parseValue(raw: string): string | undefined {
  let out = '';
  let i = 0;
  while (i < raw.length) {
    const c = raw[i]!;
    if (c === "'") {
      const end = raw.indexOf("'", i + 1);
      if (end < 0) return undefined;
      out += raw.slice(i + 1, end);
      i = end + 1;
    } else if (c === '"') {
      i++;
      let closed = false;
      while (i < raw.length) {
        const d = raw[i]!;
        if (d === '\\' && i + 1 < raw.length && '$`"\\'.includes(raw[i + 1]!)) {
          out += raw[i + 1]!;
          i += 2;
        } else if (d === '"') {
          closed = true;
          i++;
          break;
        } else {
          out += d;
          i++;
        }
      }
      if (!closed) return undefined;
    } else if (c === '\\') {
      if (i + 1 < raw.length) out += raw[i + 1]!;
      i += 2;
    } else if (c === ' ' || c === '\t') {
      break; // the word ends; what follows is a comment (or not os-release)
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** os-release(5) text, read into the fields banger uses. */
export function parseOsRelease(text: string): OsRelease {
  if (typeof text !== 'string') throw new BangerError('internal', 'os-release text is not a string', 'this is a bug');
  if (text.length > OS_RELEASE_MAX || Buffer.byteLength(text) > OS_RELEASE_MAX) {
    throw new BangerError('operation_failed', `the image's os-release is larger than ${OS_RELEASE_MAX} bytes`, 'an os-release file is a few hundred bytes; the image is damaged or not a Linux distribution');
  }
  const vars = new Map<string, string>();
  for (const rawLine of text.replace(/^\uFEFF/, '').split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    const key = line.slice(0, eq);
    if (!KEY.test(key)) continue;
    const value = parseValue(line.slice(eq + 1));
    if (value === undefined) continue;
    vars.set(key, value.replace(UNPRINTABLE, ''));
  }
  const idText = (vars.get('ID') ?? '').toLowerCase();
  const result: OsRelease = {
    id: IDENT.test(idText) ? idText : 'linux',
    idLike: (vars.get('ID_LIKE') ?? '')
      .toLowerCase()
      .split(/\s+/)
      .filter((s) => IDENT.test(s))
      .slice(0, 16),
  };
  const version = vars.get('VERSION_ID');
  if (version !== undefined && /^[A-Za-z0-9._~+-]{1,64}$/.test(version)) result.versionId = version;
  const pretty = vars.get('PRETTY_NAME')?.trim();
  if (pretty !== undefined && pretty !== '') result.prettyName = clip(pretty, 200);
  return result;
}

/** Distribution IDs (as ID or in ID_LIKE) and their family. */
const FAMILY_OF: Readonly<Record<string, Family>> = {
  debian: 'debian',
  ubuntu: 'debian',
  raspbian: 'debian',
  linuxmint: 'debian',
  pop: 'debian',
  kali: 'debian',
  fedora: 'fedora',
  rhel: 'fedora',
  centos: 'fedora',
  rocky: 'fedora',
  almalinux: 'fedora',
  ol: 'fedora',
  amzn: 'fedora',
  alpine: 'alpine',
  postmarketos: 'alpine',
  arch: 'arch',
  archarm: 'arch',
  manjaro: 'arch',
  'manjaro-arm': 'arch',
  endeavouros: 'arch',
  opensuse: 'opensuse',
  'opensuse-leap': 'opensuse',
  'opensuse-tumbleweed': 'opensuse',
  'opensuse-slowroll': 'opensuse',
  suse: 'opensuse',
  sles: 'opensuse',
  sled: 'opensuse',
};

/** The package family of a distribution: its ID first, then its ID_LIKE entries in order. */
export function detectFamily(osr: OsRelease): Family | undefined {
  for (const id of [osr.id, ...osr.idLike]) {
    if (Object.hasOwn(FAMILY_OF, id)) return FAMILY_OF[id];
  }
  return undefined;
}

/**
 * Where each need is found: every group must have one path present (a group
 * lists the same file's places across families and /usr layouts).
 */
export const NEED_PATHS: Readonly<Record<GuestNeed, readonly (readonly string[])[]>> = {
  systemd: [
    ['usr/lib/systemd/systemd', 'lib/systemd/systemd'],
    // the kernel runs /sbin/init: Debian's systemd-sysv, Fedora's systemd, Arch's systemd-sysvcompat, openSUSE's systemd-sysvinit
    ['sbin/init', 'usr/sbin/init', 'usr/bin/init'],
  ],
  sshd: [['usr/sbin/sshd', 'usr/bin/sshd', 'sbin/sshd']],
  'guest-agent': [['usr/bin/qemu-ga', 'usr/sbin/qemu-ga']],
  iproute2: [['usr/sbin/ip', 'sbin/ip', 'usr/bin/ip', 'bin/ip']],
  e2fsprogs: [
    ['usr/sbin/mkfs.ext4', 'sbin/mkfs.ext4', 'usr/bin/mkfs.ext4'],
    ['usr/sbin/e2fsck', 'sbin/e2fsck', 'usr/bin/e2fsck'],
  ],
  'util-linux': [['usr/bin/mount', 'bin/mount']],
  kmod: [['usr/sbin/modprobe', 'sbin/modprobe', 'usr/bin/modprobe', 'bin/modprobe']],
  udev: [['usr/lib/systemd/systemd-udevd', 'lib/systemd/systemd-udevd']],
  dbus: [['usr/bin/dbus-daemon', 'usr/bin/dbus-broker', 'bin/dbus-daemon']],
  'ca-certificates': [['etc/ssl/certs/ca-certificates.crt', 'etc/pki/tls/certs/ca-bundle.crt', 'etc/ssl/ca-bundle.pem']],
};

/** The needs the tree lacks, in GUEST_NEEDS order. `probe(relPath)` says whether an entry exists there. */
export function missingNeeds(probe: (relPath: string) => boolean): GuestNeed[] {
  return GUEST_NEEDS.filter((need) => !NEED_PATHS[need].every((group) => group.some((p) => probe(p))));
}

/** Each family's packages per need. */
export const PACKAGES: Readonly<Record<Family, Readonly<Record<GuestNeed, readonly string[]>>>> = {
  debian: {
    systemd: ['systemd', 'systemd-sysv'],
    sshd: ['openssh-server'],
    'guest-agent': ['qemu-guest-agent'],
    iproute2: ['iproute2'],
    e2fsprogs: ['e2fsprogs'],
    // `mount` is its own package on Debian and Ubuntu (not Essential)
    'util-linux': ['util-linux', 'mount'],
    kmod: ['kmod'],
    udev: ['udev'],
    dbus: ['dbus'],
    'ca-certificates': ['ca-certificates'],
  },
  fedora: {
    systemd: ['systemd'],
    sshd: ['openssh-server'],
    'guest-agent': ['qemu-guest-agent'],
    iproute2: ['iproute'],
    e2fsprogs: ['e2fsprogs'],
    'util-linux': ['util-linux'],
    kmod: ['kmod'],
    udev: ['systemd-udev'],
    // Fedora's and RHEL 9's dbus pulls in dbus-broker; RHEL 8's is the daemon itself
    dbus: ['dbus'],
    'ca-certificates': ['ca-certificates'],
  },
  alpine: {
    systemd: [],
    sshd: ['openssh-server'],
    'guest-agent': ['qemu-guest-agent'],
    iproute2: ['iproute2'],
    e2fsprogs: ['e2fsprogs'],
    'util-linux': ['util-linux'],
    kmod: ['kmod'],
    udev: ['eudev'],
    dbus: ['dbus'],
    'ca-certificates': ['ca-certificates'],
  },
  arch: {
    systemd: ['systemd', 'systemd-sysvcompat'],
    sshd: ['openssh'],
    'guest-agent': ['qemu-guest-agent'],
    iproute2: ['iproute2'],
    e2fsprogs: ['e2fsprogs'],
    'util-linux': ['util-linux'],
    kmod: ['kmod'],
    udev: ['systemd'],
    dbus: ['dbus'],
    'ca-certificates': ['ca-certificates'],
  },
  opensuse: {
    systemd: ['systemd', 'systemd-sysvinit'],
    sshd: ['openssh-server'],
    'guest-agent': ['qemu-guest-agent'],
    iproute2: ['iproute2'],
    e2fsprogs: ['e2fsprogs'],
    'util-linux': ['util-linux'],
    kmod: ['kmod'],
    udev: ['udev'],
    dbus: ['dbus-1'],
    'ca-certificates': ['ca-certificates'],
  },
};

export type InstallPlan =
  | {
      ok: true;
      family: Family;
      /** Commands to run in the image's root, in order (no shell). */
      argv: string[][];
      /** Environment for every command. */
      env: Record<string, string>;
      packages: string[];
    }
  | { ok: false; family: Family; missing: GuestNeed[]; reason: string };

/** The commands that install what `missing` names on `family` (nothing to run when nothing is missing). */
export function installPlan(family: Family, missing: readonly GuestNeed[]): InstallPlan {
  const unknown = missing.find((n) => !(GUEST_NEEDS as readonly string[]).includes(n));
  if (unknown !== undefined || !Object.hasOwn(PACKAGES, family)) {
    throw new BangerError('internal', `no install plan for ${JSON.stringify(unknown ?? family)}`, 'this is a bug');
  }
  if (family === 'alpine' && missing.includes('systemd')) {
    return {
      ok: false,
      family,
      missing: [...missing],
      reason:
        `Alpine cannot run as a banger guest: it has no systemd (Alpine uses OpenRC and musl, and does not package systemd), ` +
        `and banger's guest runs systemd as init; missing: ${missing.join(', ')}`,
    };
  }
  const packages = [...new Set(missing.flatMap((n) => PACKAGES[family][n]))];
  if (packages.length === 0) return { ok: true, family, argv: [], env: {}, packages };
  switch (family) {
    case 'debian':
      return {
        ok: true,
        family,
        argv: [['apt-get', 'update'], ['apt-get', 'install', '-y', '--no-install-recommends', ...packages]],
        env: { DEBIAN_FRONTEND: 'noninteractive' },
        packages,
      };
    case 'fedora':
      return { ok: true, family, argv: [['dnf', '-y', 'install', '--setopt=install_weak_deps=False', ...packages]], env: {}, packages };
    case 'alpine':
      return { ok: true, family, argv: [['apk', 'add', '--no-cache', ...packages]], env: {}, packages };
    case 'arch':
      // -Syu, not -Sy: installing after a bare -Sy is a partial upgrade, which Arch does not support.
      return { ok: true, family, argv: [['pacman', '-Syu', '--noconfirm', '--needed', ...packages]], env: {}, packages };
    case 'opensuse':
      return { ok: true, family, argv: [['zypper', '--non-interactive', 'install', '--no-recommends', ...packages]], env: {}, packages };
  }
}
