// Only Debian's mirror is reachable from these machines: the other families are tested at this level only (names and argv, no package manager runs).
import { describe, it, expect } from 'vitest';
import { BangerError } from '../errors/errors.js';
import { detectFamily, GUEST_NEEDS, installPlan, missingNeeds, NEED_PATHS, OS_RELEASE_MAX, parseOsRelease, type Family, type GuestNeed, type OsRelease } from './distro.js';

const SAMPLES: Record<string, { text: string; want: OsRelease; family: Family | undefined }> = {
  debian12: {
    text: `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
`,
    want: { id: 'debian', idLike: [], versionId: '12', prettyName: 'Debian GNU/Linux 12 (bookworm)' },
    family: 'debian',
  },
  ubuntu2404: {
    text: `PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
`,
    want: { id: 'ubuntu', idLike: ['debian'], versionId: '24.04', prettyName: 'Ubuntu 24.04.1 LTS' },
    family: 'debian',
  },
  mint: { text: 'ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_ID="22"\n', want: { id: 'linuxmint', idLike: ['ubuntu', 'debian'], versionId: '22' }, family: 'debian' },
  fedora40: {
    text: `NAME="Fedora Linux"
VERSION="40 (Container Image)"
ID=fedora
VERSION_ID=40
VERSION_CODENAME=""
PLATFORM_ID="platform:f40"
PRETTY_NAME="Fedora Linux 40 (Container Image)"
ANSI_COLOR="0;38;2;60;110;180"
CPE_NAME="cpe:/o:fedoraproject:fedora:40"
VARIANT="Container Image"
VARIANT_ID=container
`,
    want: { id: 'fedora', idLike: [], versionId: '40', prettyName: 'Fedora Linux 40 (Container Image)' },
    family: 'fedora',
  },
  rocky9: {
    text: 'NAME="Rocky Linux"\nVERSION="9.4 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\nPRETTY_NAME="Rocky Linux 9.4 (Blue Onyx)"\n',
    want: { id: 'rocky', idLike: ['rhel', 'centos', 'fedora'], versionId: '9.4', prettyName: 'Rocky Linux 9.4 (Blue Onyx)' },
    family: 'fedora',
  },
  alma: { text: 'ID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n', want: { id: 'almalinux', idLike: ['rhel', 'centos', 'fedora'], versionId: '9.4' }, family: 'fedora' },
  amazon2023: { text: 'NAME="Amazon Linux"\nID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\nPRETTY_NAME="Amazon Linux 2023.5.20240916"\n', want: { id: 'amzn', idLike: ['fedora'], versionId: '2023', prettyName: 'Amazon Linux 2023.5.20240916' }, family: 'fedora' },
  alpine320: {
    text: 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux v3.20"\nHOME_URL="https://alpinelinux.org/"\n',
    want: { id: 'alpine', idLike: [], versionId: '3.20.3', prettyName: 'Alpine Linux v3.20' },
    family: 'alpine',
  },
  arch: {
    text: 'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\nBUILD_ID=rolling\nANSI_COLOR="38;2;23;147;209"\nLOGO=archlinux-logo\n',
    want: { id: 'arch', idLike: [], prettyName: 'Arch Linux' },
    family: 'arch',
  },
  manjaro: { text: 'NAME="Manjaro Linux"\nID=manjaro\nID_LIKE=arch\n', want: { id: 'manjaro', idLike: ['arch'] }, family: 'arch' },
  tumbleweed: {
    text: 'NAME="openSUSE Tumbleweed"\n# VERSION="20240920"\nID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\nVERSION_ID="20240920"\nPRETTY_NAME="openSUSE Tumbleweed"\n',
    want: { id: 'opensuse-tumbleweed', idLike: ['opensuse', 'suse'], versionId: '20240920', prettyName: 'openSUSE Tumbleweed' },
    family: 'opensuse',
  },
  leap156: { text: 'NAME="openSUSE Leap"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.6"\n', want: { id: 'opensuse-leap', idLike: ['suse', 'opensuse'], versionId: '15.6' }, family: 'opensuse' },
  sles: { text: 'NAME="SLES"\nID="sles"\nID_LIKE="suse"\nVERSION_ID="15.6"\n', want: { id: 'sles', idLike: ['suse'], versionId: '15.6' }, family: 'opensuse' },
  gentoo: { text: 'NAME=Gentoo\nID=gentoo\nPRETTY_NAME="Gentoo Linux"\n', want: { id: 'gentoo', idLike: [], prettyName: 'Gentoo Linux' }, family: undefined },
  nixos: { text: 'ID=nixos\nVERSION_ID="24.05"\n', want: { id: 'nixos', idLike: [], versionId: '24.05' }, family: undefined },
};

describe('parseOsRelease and detectFamily on real os-release files', () => {
  it.each(Object.entries(SAMPLES))('%s', (_name, s) => {
    const osr = parseOsRelease(s.text);
    expect(osr).toEqual(s.want);
    expect(detectFamily(osr)).toBe(s.family);
  });
});

describe('parseOsRelease: the format', () => {
  it('reads quotes, escapes, concatenation, comments, CRLF and a BOM', () => {
    const osr = parseOsRelease(
      '\uFEFF# a comment\r\n\r\n  ID=\'debian\'  \r\nPRETTY_NAME="A \\"quoted\\" \\$name \\\\ and \\n kept"\r\nVERSION_ID=1\\.2  # trailing comment\r\nID_LIKE=\'a\'"b"c\r\n',
    );
    expect(osr).toEqual({ id: 'debian', idLike: ['abc'], versionId: '1.2', prettyName: 'A "quoted" $name \\ and \\n kept' });
  });

  it('the last assignment of a key wins, and ID is read in lower case', () => {
    expect(parseOsRelease('ID=fedora\nID=Debian\n').id).toBe('debian');
  });

  it('defaults ID to linux when it is absent, empty or malformed', () => {
    expect(parseOsRelease('NAME=x\n').id).toBe('linux');
    expect(parseOsRelease('ID=\n').id).toBe('linux');
    expect(parseOsRelease('ID="$(rm -rf /)"\n').id).toBe('linux');
    expect(parseOsRelease('ID="deb ian"\n').id).toBe('linux');
    expect(detectFamily(parseOsRelease(''))).toBeUndefined();
  });
});

describe('parseOsRelease: hostile text', () => {
  it('refuses text over 64 KiB (characters or bytes) with a BangerError', () => {
    expect(parseOsRelease(`ID=debian\n${'#'.repeat(OS_RELEASE_MAX - 10)}`).id).toBe('debian');
    for (const text of [`ID=debian\n${'#'.repeat(OS_RELEASE_MAX)}`, `ID=debian\n#${'é'.repeat(OS_RELEASE_MAX / 2)}`]) {
      const e = (() => {
        try {
          parseOsRelease(text);
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      expect(e).toBeInstanceOf(BangerError);
      expect((e as BangerError).code).toBe('operation_failed');
      expect((e as BangerError).message).toMatch(/larger than 65536 bytes/);
    }
  });

  it('refuses a value that is not a string with a BangerError', () => {
    expect(() => parseOsRelease(undefined as unknown as string)).toThrow(BangerError);
    expect(() => parseOsRelease(Buffer.from('ID=x') as unknown as string)).toThrow(BangerError);
  });

  it('skips malformed lines and keeps the rest', () => {
    const osr = parseOsRelease('ID="debian\nA B=c\n=x\n1A=y\nnot an assignment\nID_LIKE=\'ubuntu\nVERSION_ID=12\nID=ubuntu\n');
    expect(osr).toEqual({ id: 'ubuntu', idLike: [], versionId: '12' });
  });

  it('strips control characters and bidi overrides, and clips a long PRETTY_NAME', () => {
    const osr = parseOsRelease('ID=debian\nPRETTY_NAME="Evil\u001b[31m\u0000\u202eName\u0007"\n');
    expect(osr.prettyName).toBe('Evil[31mName');
    expect(parseOsRelease(`PRETTY_NAME=${'x'.repeat(5000)}`).prettyName).toMatch(/^x{200}… \(5000 characters\)$/);
  });

  it('does not map prototype names to a family', () => {
    for (const id of ['__proto__', 'constructor', 'tostring', 'hasownproperty']) {
      const osr = parseOsRelease(`ID=${id}\nID_LIKE="${id} valueof"\n`);
      expect(osr.id).toBe(id);
      expect(detectFamily(osr)).toBeUndefined();
    }
  });

  it('bounds ID_LIKE and drops malformed entries', () => {
    const osr = parseOsRelease(`ID_LIKE="${Array.from({ length: 100 }, (_, i) => `d${i}`).join(' ')} $bad"\n`);
    expect(osr.idLike).toHaveLength(16);
    expect(parseOsRelease('ID_LIKE="debian $(x) Ubuntu"\n').idLike).toEqual(['debian', 'ubuntu']);
  });

  it('never throws anything but a BangerError on random text, and always returns the right shape', () => {
    const alphabet = ['I', 'D', '_', 'L', 'K', 'E', '=', '"', "'", '\\', '\n', '\r', '#', ' ', '\t', 'a', 'z', '0', '.', '-', '$', '`', '\u0000', 'é', '\u202e', '\uFEFF', '\uD800'];
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 3000; i++) {
      const len = rand(200);
      let text = '';
      for (let j = 0; j < len; j++) text += alphabet[rand(alphabet.length)];
      if (i % 3 === 0) text = `ID=${text}`;
      let osr: OsRelease;
      try {
        osr = parseOsRelease(text);
      } catch (e) {
        expect(e).toBeInstanceOf(BangerError);
        continue;
      }
      expect(osr.id).toMatch(/^[a-z0-9._-]{1,64}$/);
      for (const l of osr.idLike) expect(l).toMatch(/^[a-z0-9._-]{1,64}$/);
      expect(osr.prettyName ?? '').not.toMatch(/[\u0000-\u001f\u007f]/);
    }
  });
});

describe('detectFamily', () => {
  it.each([
    [{ id: 'ubuntu', idLike: [] }, 'debian'],
    [{ id: 'centos', idLike: [] }, 'fedora'],
    [{ id: 'rhel', idLike: [] }, 'fedora'],
    [{ id: 'ol', idLike: ['fedora'] }, 'fedora'],
    [{ id: 'opensuse-tumbleweed', idLike: [] }, 'opensuse'],
    [{ id: 'endeavouros', idLike: [] }, 'arch'],
    [{ id: 'pop', idLike: [] }, 'debian'],
    [{ id: 'unknown-derivative', idLike: ['gentoo', 'fedora', 'debian'] }, 'fedora'],
    [{ id: 'debian', idLike: ['fedora'] }, 'debian'],
    [{ id: 'linux', idLike: [] }, undefined],
  ] as const)('%j → %s', (osr, want) => {
    expect(detectFamily({ id: osr.id, idLike: [...osr.idLike] })).toBe(want);
  });
});

describe('missingNeeds', () => {
  const probeOf = (paths: string[]): ((p: string) => boolean) => {
    const set = new Set(paths);
    return (p) => set.has(p);
  };

  it.each([
    [
      'Debian 12 (merged /usr, seen without following the /sbin link)',
      ['usr/lib/systemd/systemd', 'usr/sbin/init', 'usr/sbin/sshd', 'usr/sbin/qemu-ga', 'usr/bin/ip', 'usr/sbin/mkfs.ext4', 'usr/sbin/e2fsck', 'usr/bin/mount', 'usr/sbin/modprobe', 'usr/lib/systemd/systemd-udevd', 'usr/bin/dbus-daemon', 'etc/ssl/certs/ca-certificates.crt'],
    ],
    [
      'an older Debian (no merged /usr)',
      ['lib/systemd/systemd', 'sbin/init', 'usr/sbin/sshd', 'usr/sbin/qemu-ga', 'sbin/ip', 'sbin/mkfs.ext4', 'sbin/e2fsck', 'bin/mount', 'sbin/modprobe', 'lib/systemd/systemd-udevd', 'usr/bin/dbus-daemon', 'etc/ssl/certs/ca-certificates.crt'],
    ],
    [
      'Fedora',
      ['usr/lib/systemd/systemd', 'usr/sbin/init', 'usr/sbin/sshd', 'usr/bin/qemu-ga', 'usr/sbin/ip', 'usr/sbin/mkfs.ext4', 'usr/sbin/e2fsck', 'usr/bin/mount', 'usr/sbin/modprobe', 'usr/lib/systemd/systemd-udevd', 'usr/bin/dbus-broker', 'etc/pki/tls/certs/ca-bundle.crt'],
    ],
    [
      'Arch (sbin merged into bin)',
      ['usr/lib/systemd/systemd', 'usr/bin/init', 'usr/bin/sshd', 'usr/bin/qemu-ga', 'usr/bin/ip', 'usr/bin/mkfs.ext4', 'usr/bin/e2fsck', 'usr/bin/mount', 'usr/bin/modprobe', 'usr/lib/systemd/systemd-udevd', 'usr/bin/dbus-broker', 'etc/ssl/certs/ca-certificates.crt'],
    ],
    [
      'openSUSE',
      ['usr/lib/systemd/systemd', 'usr/sbin/init', 'usr/sbin/sshd', 'usr/bin/qemu-ga', 'usr/sbin/ip', 'usr/sbin/mkfs.ext4', 'usr/sbin/e2fsck', 'usr/bin/mount', 'usr/sbin/modprobe', 'usr/lib/systemd/systemd-udevd', 'usr/bin/dbus-daemon', 'etc/ssl/ca-bundle.pem'],
    ],
  ])('%s: nothing missing', (_name, paths) => {
    expect(missingNeeds(probeOf(paths))).toEqual([]);
  });

  it('an empty tree misses everything, in order', () => {
    expect(missingNeeds(() => false)).toEqual([...GUEST_NEEDS]);
  });

  it('a container base image (no init, no daemons) misses what it lacks', () => {
    expect(missingNeeds(probeOf(['usr/bin/mount', 'etc/pki/tls/certs/ca-bundle.crt']))).toEqual(['systemd', 'sshd', 'guest-agent', 'iproute2', 'e2fsprogs', 'kmod', 'udev', 'dbus']);
  });

  it('systemd without /sbin/init, or mkfs.ext4 without e2fsck, is missing', () => {
    const all = Object.values(NEED_PATHS).flatMap((groups) => groups.map((g) => g[0]!));
    expect(missingNeeds(probeOf(all.filter((p) => p !== 'sbin/init')))).toEqual(['systemd']);
    expect(missingNeeds(probeOf(all.filter((p) => p !== 'usr/sbin/e2fsck')))).toEqual(['e2fsprogs']);
  });

  it('asks only about relative paths inside the root', () => {
    const asked: string[] = [];
    missingNeeds((p) => {
      asked.push(p);
      return false;
    });
    expect(asked.length).toBeGreaterThan(20);
    for (const p of asked) expect(p).toMatch(/^[a-z0-9][a-z0-9._/-]*$/);
    expect(asked.some((p) => p.split('/').includes('..'))).toBe(false);
  });
});

describe('installPlan', () => {
  const all: GuestNeed[] = [...GUEST_NEEDS];

  it('Debian: apt-get update, then install without recommends, non-interactive', () => {
    expect(installPlan('debian', all)).toEqual({
      ok: true,
      family: 'debian',
      env: { DEBIAN_FRONTEND: 'noninteractive' },
      packages: ['systemd', 'systemd-sysv', 'openssh-server', 'qemu-guest-agent', 'iproute2', 'e2fsprogs', 'util-linux', 'mount', 'kmod', 'udev', 'dbus', 'ca-certificates'],
      argv: [
        ['apt-get', 'update'],
        ['apt-get', 'install', '-y', '--no-install-recommends', 'systemd', 'systemd-sysv', 'openssh-server', 'qemu-guest-agent', 'iproute2', 'e2fsprogs', 'util-linux', 'mount', 'kmod', 'udev', 'dbus', 'ca-certificates'],
      ],
    });
  });

  it('Fedora: dnf without weak dependencies', () => {
    const pkgs = ['systemd', 'openssh-server', 'qemu-guest-agent', 'iproute', 'e2fsprogs', 'util-linux', 'kmod', 'systemd-udev', 'dbus', 'ca-certificates'];
    expect(installPlan('fedora', all)).toEqual({ ok: true, family: 'fedora', env: {}, packages: pkgs, argv: [['dnf', '-y', 'install', '--setopt=install_weak_deps=False', ...pkgs]] });
  });

  it('Arch: a full -Syu (never a partial upgrade), each package once', () => {
    const pkgs = ['systemd', 'systemd-sysvcompat', 'openssh', 'qemu-guest-agent', 'iproute2', 'e2fsprogs', 'util-linux', 'kmod', 'dbus', 'ca-certificates'];
    expect(installPlan('arch', all)).toEqual({ ok: true, family: 'arch', env: {}, packages: pkgs, argv: [['pacman', '-Syu', '--noconfirm', '--needed', ...pkgs]] });
  });

  it('openSUSE: zypper non-interactive without recommends', () => {
    const pkgs = ['systemd', 'systemd-sysvinit', 'openssh-server', 'qemu-guest-agent', 'iproute2', 'e2fsprogs', 'util-linux', 'kmod', 'udev', 'dbus-1', 'ca-certificates'];
    expect(installPlan('opensuse', all)).toEqual({ ok: true, family: 'opensuse', env: {}, packages: pkgs, argv: [['zypper', '--non-interactive', 'install', '--no-recommends', ...pkgs]] });
  });

  it('Alpine: refused while systemd is missing, saying why and what is missing', () => {
    const p = installPlan('alpine', ['systemd', 'sshd']);
    expect(p).toEqual({ ok: false, family: 'alpine', missing: ['systemd', 'sshd'], reason: expect.stringMatching(/no systemd.*OpenRC.*missing: systemd, sshd$/) });
  });

  it('Alpine: the rest installs with apk when systemd is there', () => {
    expect(installPlan('alpine', ['sshd', 'udev'])).toEqual({ ok: true, family: 'alpine', env: {}, packages: ['openssh-server', 'eudev'], argv: [['apk', 'add', '--no-cache', 'openssh-server', 'eudev']] });
  });

  it('only what is missing, and nothing to run when nothing is', () => {
    expect(installPlan('debian', ['guest-agent'])).toMatchObject({ packages: ['qemu-guest-agent'], argv: [['apt-get', 'update'], ['apt-get', 'install', '-y', '--no-install-recommends', 'qemu-guest-agent']] });
    for (const f of ['debian', 'fedora', 'alpine', 'arch', 'opensuse'] as const) expect(installPlan(f, [])).toEqual({ ok: true, family: f, argv: [], env: {}, packages: [] });
  });

  it('refuses an unknown need or family as a bug', () => {
    expect(() => installPlan('debian', ['nope' as GuestNeed])).toThrow(BangerError);
    expect(() => installPlan('gentoo' as Family, ['sshd'])).toThrow(BangerError);
  });

  it('from os-release to a plan', () => {
    const osr = parseOsRelease(SAMPLES.ubuntu2404!.text);
    const family = detectFamily(osr)!;
    const missing = missingNeeds((p) => p !== 'usr/sbin/qemu-ga' && p !== 'usr/bin/qemu-ga');
    expect(installPlan(family, missing)).toMatchObject({ ok: true, packages: ['qemu-guest-agent'] });
  });
});
