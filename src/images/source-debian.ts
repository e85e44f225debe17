/**
 * The Debian source: a root tree bootstrapped by mmdebstrap (root mode) from
 * the configured mirror, with the image's own kernel and initramfs-tools.
 */
import type { ImageSource, SourceResult, StageContext } from './pipeline.js';
import { lineSplitter } from './work-dir.js';

/** The suite of the default image. */
export const SUITE = 'bookworm';
/** Suites `image build --suite` takes (their kernel, initramfs-tools and systemd are what the guest integration expects). */
export const SUITES = ['bookworm', 'trixie'] as const;
export type Suite = (typeof SUITES)[number];

/** A Debian package name as policy allows it (it ends up in mmdebstrap's argv). */
export const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]{1,99}$/;
export const MAX_EXTRA_PACKAGES = 200;

/** The guest contract's packages, in every Debian image (their dependencies come along). */
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

/**
 * What a typical repo's tests need, in the default image (a development
 * sandbox); `image build --minimal` and the `minimal` image leave them out.
 */
export const DEV_PACKAGES = ['build-essential', 'make', 'python3', 'curl', 'wget', 'pkg-config', 'unzip', 'xz-utils', 'file', 'less', 'jq'];

/** What a Debian image is made of. */
export interface DebianRecipe {
  suite: Suite;
  /** Include DEV_PACKAGES (the default image); false: only the guest contract's packages. */
  dev: boolean;
  /** More packages (`image build --packages`). */
  packages: string[];
}

export const DEFAULT_RECIPE: DebianRecipe = { suite: SUITE, dev: true, packages: [] };
export const MINIMAL_RECIPE: DebianRecipe = { suite: SUITE, dev: false, packages: [] };

/** Every package named on mmdebstrap's --include for a recipe, without repeats. */
export function recipePackages(r: DebianRecipe): string[] {
  return [...new Set([...IMAGE_PACKAGES, ...(r.dev ? DEV_PACKAGES : []), ...r.packages])];
}

/** The recipe in words, for the image's source: `bookworm (mirror)`, `trixie, minimal, +jq,ripgrep (mirror)`. */
export function recipeRef(r: DebianRecipe, mirror: string): string {
  const parts: string[] = [r.suite];
  if (!r.dev) parts.push('minimal');
  if (r.packages.length > 0) parts.push(`+${r.packages.join(',')}`);
  return `${parts.join(', ')} (${mirror})`;
}


export function mmdebstrapArgv(rootDir: string, mirror: string, recipe: DebianRecipe = DEFAULT_RECIPE): string[] {
  const suite = recipe.suite;
  return [
    'mmdebstrap',
    '--mode=root',
    '--variant=apt',
    '--format=directory',
    `--include=${recipePackages(recipe).join(',')}`,
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
    suite,
    rootDir,
    `deb ${mirror} ${suite} main`,
    `deb ${mirror} ${suite}-updates main`,
  ];
}

/** The Debian source: mmdebstrap fills the tree (root mode: the files must be root's). */
export function debianSource(mirror: string, recipe: DebianRecipe = DEFAULT_RECIPE): ImageSource {
  return {
    kind: 'debian',
    ref: recipeRef(recipe, mirror),
    async fill(ctx: StageContext): Promise<SourceResult> {
      const started = Date.now();
      ctx.progress('bootstrap', `mmdebstrap ${recipeRef(recipe, mirror)}`);
      const outLines = lineSplitter((line) => ctx.progress('bootstrap', line));
      const errLines = lineSplitter((line) => ctx.progress('bootstrap', line));
      try {
        await ctx.run(mmdebstrapArgv(ctx.rootDir, mirror, recipe), {
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
      return { packages: recipePackages(recipe), manifest: { suite: recipe.suite, mirror, dev: recipe.dev, extraPackages: recipe.packages } };
    },
  };
}
