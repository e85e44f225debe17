/**
 * The Debian source: a root tree bootstrapped by mmdebstrap (root mode) from
 * the configured mirror, with the image's own kernel and initramfs-tools.
 */
import type { ImageSource, SourceResult, StageContext } from './pipeline.js';
import { lineSplitter } from './work-dir.js';

export const SUITE = 'bookworm';

/** Packages named on mmdebstrap's --include (their dependencies come along). */
export const IMAGE_PACKAGES = [
  'systemd',
  'systemd-sysv',
  'udev',
  // logind needs D-Bus; logind turns the ACPI power button (QMP
  // system_powerdown) into a poweroff, and `shutdown +0` (what
  // qemu-guest-agent's guest-shutdown runs) schedules through logind.
  'dbus',
  'openssh-server',
  'qemu-guest-agent',
  'git',
  'ca-certificates',
  'iproute2',
  'linux-image-cloud-amd64',
  'initramfs-tools',
  'zstd',
  'e2fsprogs',
  'kmod',
  'util-linux',
  'procps',
];


export function mmdebstrapArgv(rootDir: string, mirror: string): string[] {
  return [
    'mmdebstrap',
    '--mode=root',
    '--variant=apt',
    '--format=directory',
    `--include=${IMAGE_PACKAGES.join(',')}`,
    // Keep the image small: no manuals, docs (but licences) or translations.
    '--dpkgopt=path-exclude=/usr/share/man/*',
    '--dpkgopt=path-exclude=/usr/share/doc/*',
    '--dpkgopt=path-include=/usr/share/doc/*/copyright',
    '--dpkgopt=path-exclude=/usr/share/locale/*',
    '--dpkgopt=path-include=/usr/share/locale/locale.alias',
    '--dpkgopt=path-exclude=/usr/share/info/*',
    '--aptopt=Acquire::Retries "3"',
    // The work dir is private (0700), so apt cannot drop to its _apt user.
    '--aptopt=APT::Sandbox::User "root"',
    SUITE,
    rootDir,
    `deb ${mirror} ${SUITE} main`,
    `deb ${mirror} ${SUITE}-updates main`,
  ];
}

/** The Debian source: mmdebstrap fills the tree (root mode: the files must be root's). */
export function debianSource(mirror: string): ImageSource {
  return {
    kind: 'debian',
    ref: `${SUITE} (${mirror})`,
    async fill(ctx: StageContext): Promise<SourceResult> {
      const started = Date.now();
      ctx.progress('bootstrap', `mmdebstrap ${SUITE} from ${mirror}`);
      const outLines = lineSplitter((line) => ctx.progress('bootstrap', line));
      const errLines = lineSplitter((line) => ctx.progress('bootstrap', line));
      try {
        await ctx.run(mmdebstrapArgv(ctx.rootDir, mirror), {
          cwd: ctx.workDir,
          env: { ...process.env, LC_ALL: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive' },
          timeoutMs: 60 * 60 * 1000,
          maxStdoutBytes: 1024 * 1024,
          onStdout: outLines.push,
          onStderr: errLines.push,
        });
      } finally {
        outLines.flush();
        errLines.flush();
      }
      ctx.checkAbort();
      ctx.progress('bootstrap', `rootfs bootstrapped in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return { packages: [...IMAGE_PACKAGES], manifest: { suite: SUITE, mirror } };
    },
  };
}
