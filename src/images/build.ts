/**
 * Builds the default image: a Debian bookworm rootfs from mmdebstrap,
 * customised in Node (plain file operations; the only program run inside
 * the rootfs is update-initramfs/lsinitramfs via chroot, to make and check a
 * small initrd), turned into an ext4 image with `mkfs.ext4 -d`, plus the
 * image's own kernel and initrd.
 *
 * Everything is built under `workDir`; the finished files are renamed into
 * `outDir` only when complete, so a concurrent reader never sees a torn
 * image. `workDir` is always removed (after unmounting anything mmdebstrap
 * left mounted and killing anything still running inside it).
 *
 * mmdebstrap runs in root mode, so building needs root (the rootfs must be
 * owned by root before `mkfs.ext4 -d` copies it).
 */
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  chownSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BangerError, messageOf } from '../errors/errors.js';
import type { RunOptions, RunResult, Runner } from '../system/runner.js';
import { toolPath } from '../system/which.js';
import {
  GUEST_SCRIPT,
  GUEST_SCRIPT_PATH,
  GUEST_UNIT,
  GUEST_UNIT_NAME,
  GUEST_UNIT_PATH,
  SSHD_CONFIG,
  SSHD_CONFIG_PATH,
  SSH_DROPIN,
  SSH_DROPIN_PATH,
  ROOT_SKEL_PATH,
} from './guest-files.js';
import { applyBootTuning } from './tuning.js';

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

/** The boot tuning (tuning.ts); re-exported for the image's callers and tests. */
export { MASKED_UNITS } from './tuning.js';

/**
 * Modules the initrd must carry (unless built in) to mount root on
 * virtio-blk over virtio-mmio (QEMU microvm); virtio_pci too, so the image
 * also boots on a PCI machine. The initrd is built with MODULES=list.
 */
export const INITRD_MODULES = ['virtio_mmio', 'virtio_pci', 'virtio_blk', 'ext4'];

export const ROOTFS_LABEL = 'banger-root';

export interface BuildDeps {
  runner: Runner;
  log?: (msg: string) => void;
}

export interface BuildOptions {
  name: string;
  /** Final image directory (imagePaths(...).dir). Must not be inside workDir. */
  outDir: string;
  /** Scratch directory under layout.buildDir; created here and always removed. */
  workDir: string;
  mirror: string;
  /** Apply the boot tuning (tuning.ts; default true). False keeps Debian's defaults, for comparing boots. */
  tuned?: boolean;
  onProgress?: (stage: string, message: string) => void;
  signal?: AbortSignal;
}

export interface BuildResult {
  kernelVersion: string;
  rootfsBytes: number;
  packages: string[];
}

const MiB = 1024 * 1024;

export async function buildDebianImage(deps: BuildDeps, opts: BuildOptions): Promise<BuildResult> {
  const { runner } = deps;
  const progress = (stage: string, message: string) => {
    deps.log?.(`${stage}: ${message}`);
    opts.onProgress?.(stage, message);
  };
  const checkAbort = () => {
    if (opts.signal?.aborted) throw new BangerError('interrupted', `image build of ${opts.name} was cancelled`);
  };
  if (process.getuid?.() !== 0) {
    throw new BangerError(
      'operation_failed',
      'building an image needs root: mmdebstrap must create root-owned files for the image',
      'run the build as root (e.g. `sudo banger image build`)',
    );
  }
  if (!/^https?:\/\/[^\s]+$/.test(opts.mirror)) {
    throw new BangerError('bad_request', `mirror must be an http(s) URL, got ${JSON.stringify(opts.mirror)}`);
  }
  const workDir = resolve(opts.workDir);
  const outDir = resolve(opts.outDir);
  if (isInside(outDir, workDir) || isInside(workDir, outDir)) {
    throw new BangerError('internal', `image build: outDir ${outDir} and workDir ${workDir} overlap`);
  }
  checkAbort();
  mkdirSync(workDir, { recursive: true, mode: 0o700 });
  const rootDir = join(workDir, 'rootfs');
  const stageDir = join(workDir, 'image');
  // The runner's abort kills the program it started, but mmdebstrap's forks,
  // apt-get and dpkg (in the chroot), or update-initramfs' children, would
  // live on, keep the output pipes open (so the run never settles) and keep
  // /proc, /sys, /dev/pts mounted in the rootfs. Kill the whole build tree.
  const onAbort = () => {
    killBuildProcesses(workDir);
    setTimeout(() => killBuildProcesses(workDir), 500).unref();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  /** runner.run that gives up 15 s after an abort and then reports `interrupted`. */
  const run = async (argv: string[], runOpts: RunOptions = {}): Promise<RunResult> => {
    try {
      const p = runner.run(argv, { ...runOpts, signal: opts.signal });
      p.catch(() => undefined);
      return await settledOrAbandoned(p, opts.signal, 15_000);
    } catch (e) {
      checkAbort();
      throw e;
    }
  };
  try {
    mkdirSync(stageDir, { mode: 0o755 });

    // 1. Bootstrap.
    const started = Date.now();
    progress('bootstrap', `mmdebstrap ${SUITE} from ${opts.mirror}`);
    const outLines = lineSplitter((line) => progress('bootstrap', line));
    const errLines = lineSplitter((line) => progress('bootstrap', line));
    try {
      await run(mmdebstrapArgv(rootDir, opts.mirror), {
        cwd: workDir,
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
    checkAbort();
    progress('bootstrap', `rootfs bootstrapped in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    // 2. Kernel.
    const kernelVersion = findKernelVersion(rootDir);
    progress('kernel', `kernel ${kernelVersion}`);

    // 3. Customise the rootfs (plain file operations).
    const tuned = opts.tuned !== false;
    progress(
      'customise',
      `guest config unit, SSH, machine-id, fstab, root skeleton for the work disk${tuned ? ', boot tuning (masked units and generators, SSH login)' : '; no boot tuning (Debian defaults)'}`,
    );
    customiseRootfs(rootDir, { tuned });

    // 4. Initrd: small (MODULES=list) and able to mount root on virtio-blk over virtio-mmio.
    await ensureInitrd(run, rootDir, kernelVersion, progress);
    checkAbort();
    copyFileSync(join(rootDir, 'boot', `vmlinuz-${kernelVersion}`), join(stageDir, 'vmlinuz'));
    copyFileSync(join(rootDir, 'boot', `initrd.img-${kernelVersion}`), join(stageDir, 'initrd.img'));
    chmodSync(join(stageDir, 'vmlinuz'), 0o644);
    chmodSync(join(stageDir, 'initrd.img'), 0o644);

    // 5. ext4 image.
    const usage = diskUsage(rootDir);
    const rootfsBytes = rootfsSize(usage.bytes);
    const rootfsImg = join(stageDir, 'rootfs.ext4');
    progress(
      'rootfs',
      `mkfs.ext4 -d: ${(usage.bytes / MiB).toFixed(0)} MiB in ${usage.inodes} files → ${(rootfsBytes / MiB).toFixed(0)} MiB image`,
    );
    writeFileSync(rootfsImg, '', { mode: 0o644 });
    truncateSync(rootfsImg, rootfsBytes);
    await run(
      [
        toolPath('mkfs.ext4'),
        '-q',
        '-F',
        '-t',
        'ext4',
        '-L',
        ROOTFS_LABEL,
        '-m',
        '0',
        '-i',
        '8192',
        '-d',
        rootDir,
        rootfsImg,
      ],
      { timeoutMs: 30 * 60 * 1000 },
    );
    checkAbort();
    writeFileSync(
      join(stageDir, 'image.json'),
      JSON.stringify(
        {
          name: opts.name,
          suite: SUITE,
          mirror: opts.mirror,
          kernelVersion,
          rootfsBytes,
          tuned,
          packages: IMAGE_PACKAGES,
          builtAt: new Date().toISOString(),
        },
        null,
        2,
      ) + '\n',
      { mode: 0o644 },
    );

    // 6. Publish atomically.
    checkAbort();
    progress('install', `installing into ${outDir}`);
    await publishDir(run, stageDir, outDir);
    progress('done', `image ${opts.name}: kernel ${kernelVersion}, rootfs ${(rootfsBytes / MiB).toFixed(0)} MiB`);
    return { kernelVersion, rootfsBytes, packages: [...IMAGE_PACKAGES] };
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    try {
      await cleanupWorkDir(runner, workDir);
    } catch (e) {
      deps.log?.(`cleanup of ${workDir} failed: ${messageOf(e)}`);
    }
  }
}

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

/** Image size: used space plus generous headroom, at least 1 GiB, in 64 MiB steps (sparse). */
export function rootfsSize(usedBytes: number): number {
  const want = Math.max(usedBytes * 1.5 + 256 * MiB, 1024 * MiB);
  return Math.ceil(want / (64 * MiB)) * 64 * MiB;
}

/** Picks the (newest) kernel in /boot that has its modules in /lib/modules. */
export function findKernelVersion(rootDir: string): string {
  const boot = join(rootDir, 'boot');
  const versions = readdirSync(boot)
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => existsSync(join(boot, `initrd.img-${v}`)) && existsSync(join(modulesDir(rootDir), v)))
    .sort(compareVersions);
  const v = versions.at(-1);
  if (!v) {
    throw new BangerError(
      'operation_failed',
      `no kernel with an initrd and modules in ${boot}`,
      'the linux-image-cloud-amd64 install failed; see the mmdebstrap output',
    );
  }
  return v;
}

/** /lib/modules of the rootfs, without following an absolute /lib symlink out of it. */
function modulesDir(rootDir: string): string {
  try {
    if (lstatSync(join(rootDir, 'lib')).isSymbolicLink()) return join(rootDir, 'usr/lib/modules');
  } catch {
    /* no /lib */
  }
  return join(rootDir, 'lib/modules');
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = Number(x);
    const ny = Number(y);
    const c = Number.isInteger(nx) && Number.isInteger(ny) && x !== '' && y !== '' ? nx - ny : x.localeCompare(y);
    if (c !== 0) return c;
  }
  return 0;
}

/** All rootfs changes, as plain file operations on the directory. */
export function customiseRootfs(rootDir: string, opts: { tuned?: boolean } = {}): void {
  const tuned = opts.tuned !== false;
  const p = (rel: string) => join(rootDir, rel);
  const write = (rel: string, text: string, mode = 0o644) => {
    mkdirSync(dirname(p(rel)), { recursive: true, mode: 0o755 });
    // Keep the owner of a file we replace (/etc/shadow is root:shadow).
    let owner: { uid: number; gid: number } | undefined;
    try {
      const st = lstatSync(p(rel));
      if (st.isFile()) owner = { uid: st.uid, gid: st.gid };
    } catch {
      /* new file */
    }
    rmSync(p(rel), { force: true });
    writeFileSync(p(rel), text, { mode });
    chmodSync(p(rel), mode);
    if (owner) chownSync(p(rel), owner.uid, owner.gid);
  };
  const link = (target: string, rel: string) => {
    mkdirSync(dirname(p(rel)), { recursive: true, mode: 0o755 });
    rmSync(p(rel), { force: true });
    symlinkSync(target, p(rel));
  };

  // Guest config unit + script, enabled, and ssh waits for it.
  write(GUEST_SCRIPT_PATH, GUEST_SCRIPT, 0o755);
  write(GUEST_UNIT_PATH, GUEST_UNIT);
  link(`/${GUEST_UNIT_PATH}`, `etc/systemd/system/multi-user.target.wants/${GUEST_UNIT_NAME}`);
  write(SSH_DROPIN_PATH, SSH_DROPIN);
  write(SSHD_CONFIG_PATH, SSHD_CONFIG);

  // Each VM generates its own SSH host keys (the guest unit runs ssh-keygen -A).
  const sshDir = p('etc/ssh');
  for (const f of readdirSync(sshDir)) {
    if (/^ssh_host_.*_key(\.pub)?$/.test(f)) rmSync(join(sshDir, f), { force: true });
  }

  // root: no password login (key-only SSH; the serial console shows logs).
  const shadow = readFileSync(p('etc/shadow'), 'utf8');
  const locked = shadow
    .split('\n')
    .map((l) => {
      const f = l.split(':');
      return f[0] === 'root' && f.length > 2 ? [f[0], '!*', ...f.slice(2)].join(':') : l;
    })
    .join('\n');
  if (locked === shadow && !/^root:!/m.test(shadow)) {
    throw new BangerError('operation_failed', 'no root entry in the rootfs /etc/shadow');
  }
  write('etc/shadow', locked, 0o640);

  // Each VM gets its own machine-id (empty: systemd generates one at boot
  // without treating it as a first boot) and random seed.
  write('etc/machine-id', '', 0o444);
  link('/etc/machine-id', 'var/lib/dbus/machine-id');
  rmSync(p('var/lib/systemd/random-seed'), { force: true });

  // Host identity leaked by mmdebstrap (it copies the host's files).
  write('etc/hostname', 'banger\n');
  write(
    'etc/hosts',
    '127.0.0.1\tlocalhost\n127.0.1.1\tbanger\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n',
  );
  write('etc/resolv.conf', '# written by banger-guest-config at boot\n');
  // C.UTF-8 is built into glibc; without this file pam_env warns at every SSH login.
  write('etc/default/locale', 'LANG=C.UTF-8\n');

  write(
    'etc/fstab',
    `# Installed by banger: root is the VM's disk (a qcow2 overlay over the image).\n` +
      `# /root (the work disk) is mounted by ${GUEST_UNIT_NAME}, not from here.\n` +
      `/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t1\n`,
  );

  // The image's /root (root's dotfiles), kept for a fresh work disk, which
  // the guest script fills from it on first use (the work disk hides /root).
  const skel = p(ROOT_SKEL_PATH);
  rmSync(skel, { recursive: true, force: true });
  mkdirSync(dirname(skel), { recursive: true, mode: 0o755 });
  if (existsSync(p('root'))) {
    cpSync(p('root'), skel, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
  } else {
    mkdirSync(skel);
  }
  chmodSync(skel, 0o700);
  // With ~/.ssh in it, a clone's copy of the skeleton makes the directory
  // that authorized_keys goes in (one process less under TCG, ~0.15 s).
  if (!existsSync(join(skel, '.ssh'))) mkdirSync(join(skel, '.ssh'), { mode: 0o700 });

  if (tuned) {
    applyBootTuning({
      read: (rel) => (existsSync(p(rel)) ? readFileSync(p(rel), 'utf8') : undefined),
      write,
      link,
    });
  }

  // A small initrd (tuned): only the modules named in /etc/initramfs-tools/modules
  // (plus what initramfs-tools' hooks add). MODULES=most made a 13 MB initrd
  // that took 2-3 s longer to unpack and coldplug under TCG. Untuned keeps
  // MODULES=most; both list the modules root needs on microvm.
  const confFile = p('etc/initramfs-tools/initramfs.conf');
  const conf = existsSync(confFile) ? readFileSync(confFile, 'utf8') : '';
  const modulesLine = `MODULES=${tuned ? 'list' : 'most'}`;
  write(
    'etc/initramfs-tools/initramfs.conf',
    /^MODULES=/m.test(conf) ? conf.replace(/^MODULES=.*$/m, modulesLine) : `${conf}${conf.endsWith('\n') || conf === '' ? '' : '\n'}${modulesLine}\n`,
  );
  const modulesFile = p('etc/initramfs-tools/modules');
  const current = existsSync(modulesFile) ? readFileSync(modulesFile, 'utf8') : '';
  const have = new Set(current.split('\n').map((l) => l.trim().split(/\s+/)[0]));
  const missing = INITRD_MODULES.filter((m) => !have.has(m));
  if (missing.length > 0) {
    write(
      'etc/initramfs-tools/modules',
      `${current}${current.endsWith('\n') || current === '' ? '' : '\n'}# banger: root on virtio-blk over virtio-mmio (microvm) or virtio-pci\n${missing.join('\n')}\n`,
    );
  }

  // Caches and logs of the build itself.
  for (const f of ['var/cache/apt/pkgcache.bin', 'var/cache/apt/srcpkgcache.bin']) rmSync(p(f), { force: true });
  const logDir = p('var/log');
  for (const f of ['apt/eipp.log.xz', 'apt/history.log', 'apt/term.log', 'dpkg.log', 'alternatives.log', 'bootstrap.log']) {
    rmSync(join(logDir, f), { force: true });
  }
}

/**
 * Regenerates the initrd inside the rootfs (chroot + update-initramfs: the
 * only step that runs a program inside it; it needs no /proc or /dev mounts)
 * with the small MODULES=list configuration, then checks that it carries
 * the modules needed to mount root (or that they are built into the kernel).
 */
async function ensureInitrd(
  run: (argv: string[], opts?: RunOptions) => Promise<RunResult>,
  rootDir: string,
  kernelVersion: string,
  progress: (stage: string, message: string) => void,
): Promise<void> {
  const chrootEnv = { ...process.env, LC_ALL: 'C.UTF-8', PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
  const builtin = builtinModules(rootDir, kernelVersion);
  const needed = INITRD_MODULES.filter((m) => !builtin.has(m));
  const missing = async () => {
    const listed = await run([toolPath('chroot'), rootDir, 'lsinitramfs', `/boot/initrd.img-${kernelVersion}`], {
      timeoutMs: 5 * 60 * 1000,
      env: chrootEnv,
    });
    const names = new Set(
      listed.stdout
        .split('\n')
        .map((l) => /\/([^/]+)\.ko(\.[a-z]+)?$/.exec(l.trim())?.[1])
        .filter((m): m is string => m !== undefined)
        .map((m) => m.replace(/-/g, '_')),
    );
    return needed.filter((m) => !names.has(m));
  };
  progress('initrd', `update-initramfs (root on microvm needs: ${INITRD_MODULES.join(', ')})`);
  await run([toolPath('chroot'), rootDir, 'update-initramfs', '-u', '-k', kernelVersion], {
    timeoutMs: 15 * 60 * 1000,
    env: chrootEnv,
  });
  const lacking = await missing();
  if (lacking.length > 0) {
    throw new BangerError(
      'operation_failed',
      `the image's initrd lacks ${lacking.join(', ')}`,
      'a VM could not mount its root disk; check /etc/initramfs-tools in the build',
    );
  }
  const builtinNote = INITRD_MODULES.filter((m) => builtin.has(m));
  progress('initrd', `initrd has ${needed.join(', ')}${builtinNote.length ? ` (built in: ${builtinNote.join(', ')})` : ''}`);
}

function builtinModules(rootDir: string, kernelVersion: string): Set<string> {
  const file = join(modulesDir(rootDir), kernelVersion, 'modules.builtin');
  const out = new Set<string>();
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /([^/]+)\.ko$/.exec(line.trim());
    if (m?.[1]) out.add(m[1].replace(/-/g, '_'));
  }
  return out;
}

/** Bytes allocated and inode count of a tree (does not cross mount points). */
export function diskUsage(dir: string): { bytes: number; inodes: number } {
  const dev = lstatSync(dir).dev;
  let bytes = 0;
  let inodes = 0;
  const seen = new Set<string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      const st = lstatSync(path);
      if (st.dev !== dev) continue;
      if (st.nlink > 1 && !st.isDirectory()) {
        const key = `${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      inodes++;
      bytes += Math.max(st.blocks * 512, 4096);
      if (st.isDirectory()) walk(path);
    }
  };
  walk(dir);
  return { bytes, inodes };
}

/**
 * Moves the finished image directory to `outDir`. A rename when both are on
 * one filesystem; otherwise a sparse copy into a sibling of outDir, then a
 * rename. An existing outDir is moved aside first and removed afterwards.
 */
async function publishDir(
  run: (argv: string[], opts?: RunOptions) => Promise<RunResult>,
  stageDir: string,
  outDir: string,
): Promise<void> {
  mkdirSync(dirname(outDir), { recursive: true, mode: 0o700 });
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  let source = stageDir;
  try {
    const probe = join(dirname(outDir), `.${basename(outDir)}.probe-${suffix}`);
    renameSync(stageDir, probe);
    source = probe;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    const copy = join(dirname(outDir), `.${basename(outDir)}.partial-${suffix}`);
    try {
      await run(['cp', '-a', '--sparse=always', stageDir, copy], { timeoutMs: 30 * 60 * 1000 });
    } catch (err) {
      rmSync(copy, { recursive: true, force: true });
      throw err;
    }
    source = copy;
  }
  let aside: string | undefined;
  try {
    if (existsSync(outDir)) {
      aside = join(dirname(outDir), `.${basename(outDir)}.old-${suffix}`);
      renameSync(outDir, aside);
    }
    renameSync(source, outDir);
  } catch (e) {
    rmSync(source, { recursive: true, force: true });
    if (aside && !existsSync(outDir)) renameSync(aside, outDir);
    throw e;
  }
  if (aside) rmSync(aside, { recursive: true, force: true });
}

/**
 * Removes the work directory safely: kills processes still running inside
 * it (an aborted mmdebstrap leaves apt/dpkg behind), unmounts whatever is
 * mounted below it (deepest first) and only then deletes it. Refuses to
 * delete while something is still mounted there (rm -r would reach into
 * the host's /dev, /proc or /sys).
 */
export async function cleanupWorkDir(runner: Runner, workDir: string): Promise<void> {
  const dir = resolve(workDir);
  if (!existsSync(dir)) return;
  for (let round = 0; round < 10 && killBuildProcesses(dir) > 0; round++) {
    await new Promise((r) => setTimeout(r, 200));
  }
  for (let round = 0; round < 3; round++) {
    const mounts = mountsUnder(dir);
    if (mounts.length === 0) break;
    for (const m of mounts) {
      const r = await runner.run([toolPath('umount'), m], { allowFailure: true, timeoutMs: 60_000 });
      if (r.code !== 0) await runner.run([toolPath('umount'), '--lazy', m], { allowFailure: true, timeoutMs: 60_000 });
    }
  }
  const left = mountsUnder(dir);
  if (left.length > 0) {
    throw new BangerError('operation_failed', `not removing ${dir}: still mounted there: ${left.join(', ')}`, `unmount them (umount -R ${dir}) and remove ${dir}`);
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Mount points at or below dir, deepest first (from /proc/self/mountinfo). */
export function mountsUnder(dir: string, mountinfo?: string): string[] {
  let text = mountinfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/mountinfo', 'utf8');
    } catch {
      return [];
    }
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const raw = line.split(' ')[4];
    if (!raw) continue;
    const mp = raw.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mp === dir || isInside(mp, dir)) out.push(mp);
  }
  return [...new Set(out)].sort((a, b) => b.length - a.length);
}

/**
 * Kills (SIGKILL) every process of the build: each process whose cwd or
 * root is inside `dir` (mmdebstrap runs with cwd=workDir; its forks,
 * apt-get and dpkg in the chroot inherit or live there, even once orphaned)
 * together with all its descendants (taken from the process table before
 * anything is killed). Returns how many were signalled.
 */
export function killBuildProcesses(dir: string): number {
  const table = processTable();
  const victims = new Set<number>();
  const inside = (pid: number) =>
    ['cwd', 'root'].some((what) => {
      try {
        const target = readlinkSync(`/proc/${pid}/${what}`);
        return target === dir || isInside(target, dir);
      } catch {
        return false;
      }
    });
  const children = new Map<number, number[]>();
  for (const [pid, ppid] of table) {
    const list = children.get(ppid) ?? [];
    list.push(pid);
    children.set(ppid, list);
  }
  const addTree = (pid: number) => {
    if (victims.has(pid)) return;
    victims.add(pid);
    for (const c of children.get(pid) ?? []) addTree(c);
  };
  for (const pid of table.keys()) {
    if (pid !== process.pid && inside(pid)) addTree(pid);
  }
  victims.delete(process.pid);
  let n = 0;
  for (const pid of victims) {
    try {
      process.kill(pid, 'SIGKILL');
      n++;
    } catch {
      /* already gone */
    }
  }
  return n;
}

/** pid → ppid of every process (from /proc/PID/stat). */
function processTable(): Map<number, number> {
  const out = new Map<number, number>();
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((f) => /^[0-9]+$/.test(f));
  } catch {
    return out;
  }
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may contain spaces and parentheses
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(pid), Number(fields[1]));
    } catch {
      /* gone */
    }
  }
  return out;
}

function isInside(path: string, dir: string): boolean {
  return path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

/**
 * Waits for `p`; once `signal` aborts, waits at most `graceMs` more (a
 * process that escaped the kill may hold the output pipes open forever).
 */
async function settledOrAbandoned<T>(p: Promise<T>, signal: AbortSignal | undefined, graceMs: number): Promise<T> {
  if (!signal) return p;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const abandoned = new Promise<never>((_, reject) => {
    const arm = () => {
      timer = setTimeout(() => reject(new BangerError('interrupted', 'cancelled')), graceMs);
    };
    if (signal.aborted) arm();
    else {
      onAbort = arm;
      signal.addEventListener('abort', onAbort, { once: true });
    }
  });
  abandoned.catch(() => undefined);
  try {
    return await Promise.race([p, abandoned]);
  } finally {
    if (timer) clearTimeout(timer);
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

/** Splits a byte stream into trimmed, non-empty lines (also on \r, for apt's progress). */
function lineSplitter(onLine: (line: string) => void): { push: (chunk: Buffer) => void; flush: () => void } {
  let buf = '';
  return {
    push: (chunk) => {
      buf += chunk.toString('utf8');
      const parts = buf.split(/\r?\n|\r/);
      buf = parts.pop() ?? '';
      for (const p of parts) {
        const t = p.trim();
        if (t) onLine(t);
      }
    },
    flush: () => {
      const t = buf.trim();
      buf = '';
      if (t) onLine(t);
    },
  };
}

// Exported for tests.
export const _internal = { compareVersions, lineSplitter };
