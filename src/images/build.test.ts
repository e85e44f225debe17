import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner, type RunOptions, type RunResult, type Runner } from '../system/runner.js';
import { BangerError } from '../errors/errors.js';
import { MASKED_GENERATORS, MODPROBE_BLACKLIST_PATH, SSH_TUNING_DROPIN_PATH } from './tuning.js';
import {
  IMAGE_PACKAGES,
  DEV_PACKAGES,
  checkRecipe,
  INITRD_MODULES,
  MASKED_UNITS,
  _internal,
  buildDebianImage,
  cleanupWorkDir,
  customiseRootfs,
  findKernelVersion,
  killBuildProcesses,
  mmdebstrapArgv,
  mountsUnder,
  rootfsSize,
} from './build.js';
import {
  GUEST_SCRIPT,
  GUEST_SCRIPT_PATH,
  GUEST_UNIT,
  GUEST_UNIT_NAME,
  GUEST_UNIT_PATH,
  ROOT_SKEL_PATH,
  SSHD_CONFIG_PATH,
  SSH_DROPIN_PATH,
} from './guest-files.js';

const MiB = 1024 * 1024;
const KVER = '6.1.0-50-cloud-amd64';
const isRoot = process.getuid?.() === 0;

let tmp: string;
beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'banger-build-test-'));
});
afterEach(() => {
  rmSync(tmp, { recursive: true, force: true });
});

/** A tiny stand-in for what mmdebstrap produces (merged /usr, like bookworm). */
/** Debian bookworm's /etc/pam.d/sshd session lines (abridged). */
const STOCK_SSHD_PAM = [
  '@include common-auth',
  'session    required     pam_loginuid.so',
  '@include common-session',
  'session    optional     pam_motd.so  motd=/run/motd.dynamic',
  'session    optional     pam_motd.so noupdate',
  'session    optional     pam_mail.so standard noenv # [1]',
  'session    required     pam_limits.so',
  '',
].join('\n');

function fakeRootfs(root: string, kver = KVER): void {
  const mk = (rel: string, text = '', mode = 0o644) => {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    writeFileSync(join(root, rel), text, { mode });
  };
  mkdirSync(join(root, 'usr/lib/modules', kver), { recursive: true });
  symlinkSync('usr/lib', join(root, 'lib'));
  mk(`usr/lib/modules/${kver}/modules.builtin`, 'kernel/fs/ext4/ext4.ko\nkernel/lib/crc16.ko\n');
  mk(`boot/vmlinuz-${kver}`, 'KERNEL');
  mk(`boot/initrd.img-${kver}`, 'INITRD');
  mk('etc/ssh/sshd_config', '# sshd\n');
  mk('etc/pam.d/sshd', STOCK_SSHD_PAM);
  for (const t of ['rsa', 'ecdsa', 'ed25519']) {
    mk(`etc/ssh/ssh_host_${t}_key`, 'PRIVATE', 0o600);
    mk(`etc/ssh/ssh_host_${t}_key.pub`, 'PUBLIC');
  }
  mk('etc/shadow', 'root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n', 0o640);
  mk('etc/machine-id', 'b08dfa6083e7567a1921a715000001fb\n', 0o444);
  mk('var/lib/dbus/machine-id', 'b08dfa6083e7567a1921a715000001fb\n');
  mk('var/lib/systemd/random-seed', 'SEED', 0o600);
  mk('etc/hostname', 'buildhost\n');
  mk('etc/resolv.conf', 'nameserver 10.255.255.53\n');
  mk('etc/fstab', '# UNCONFIGURED FSTAB FOR BASE SYSTEM\n');
  mk('etc/initramfs-tools/initramfs.conf', 'MODULES=most\nBUSYBOX=auto\nCOMPRESS=zstd\n');
  mk('etc/initramfs-tools/modules', '# List of modules\n');
  mkdirSync(join(root, 'etc/systemd/system/timers.target.wants'), { recursive: true });
  mk('var/log/dpkg.log', 'log');
  mk('root/.bashrc', '# root bashrc\n');
  mk('root/.profile', '# root profile\n');
  chmodSync(join(root, 'root'), 0o700);
}

describe('mmdebstrapArgv', () => {
  it('builds bookworm in root mode with the image packages', () => {
    const argv = mmdebstrapArgv('/w/rootfs', 'http://deb.debian.org/debian');
    expect(argv[0]).toBe('mmdebstrap');
    expect(argv).toContain('--mode=root');
    expect(argv).toContain('--variant=apt');
    expect(argv).toContain('--format=directory');
    const include = argv.find((a) => a.startsWith('--include='))!;
    const pkgs = include.slice('--include='.length).split(',');
    for (const p of ['systemd', 'systemd-sysv', 'udev', 'openssh-server', 'qemu-guest-agent', 'git', 'ca-certificates', 'iproute2', 'linux-image-cloud-amd64', 'initramfs-tools', 'e2fsprogs', 'dbus']) {
      expect(pkgs).toContain(p);
    }
    // the default image is a development sandbox
    expect(pkgs).toEqual([...IMAGE_PACKAGES, ...DEV_PACKAGES]);
    for (const p of ['build-essential', 'make', 'python3', 'curl']) expect(pkgs).toContain(p);
    const i = argv.indexOf('bookworm');
    expect(argv.slice(i)).toEqual([
      'bookworm',
      '/w/rootfs',
      'deb http://deb.debian.org/debian bookworm main',
      'deb http://deb.debian.org/debian bookworm-updates main',
    ]);
  });

  it('takes the suite, minimal and extra packages of a recipe (no repeats)', () => {
    const argv = mmdebstrapArgv('/w/rootfs', 'http://m/debian', { suite: 'trixie', dev: false, packages: ['ripgrep', 'git'] });
    const pkgs = argv.find((a) => a.startsWith('--include='))!.slice('--include='.length).split(',');
    expect(pkgs).toEqual([...IMAGE_PACKAGES, 'ripgrep']);
    expect(argv.slice(-4)).toEqual(['trixie', '/w/rootfs', 'deb http://m/debian trixie main', 'deb http://m/debian trixie-updates main']);
  });

  it('a recipe with an unknown suite or a package name that is not one is refused, naming the field', () => {
    expect(() => checkRecipe({ suite: 'sid' as never, dev: true, packages: [] })).toThrow(expect.objectContaining({ code: 'bad_request', field: 'suite' }));
    for (const bad of ['--allow-unauthenticated', 'a', 'Foo', 'x y', 'p;rm', '../x']) {
      expect(() => checkRecipe({ suite: 'bookworm', dev: true, packages: [bad] })).toThrow(expect.objectContaining({ code: 'bad_request', field: 'packages' }));
    }
    expect(() => checkRecipe({ suite: 'bookworm', dev: true, packages: Array.from({ length: 201 }, (_, i) => `p${i}`) })).toThrow(/at most 200/);
    expect(() => checkRecipe({ suite: 'trixie', dev: false, packages: ['g++', 'libc6-dev', 'python3.11'] })).not.toThrow();
  });
});

describe('rootfsSize', () => {
  it('is at least 1 GiB, in 64 MiB steps, with generous headroom', () => {
    expect(rootfsSize(0)).toBe(1024 * MiB);
    expect(rootfsSize(357 * MiB)).toBe(1024 * MiB);
    const big = rootfsSize(2000 * MiB);
    expect(big % (64 * MiB)).toBe(0);
    expect(big).toBeGreaterThanOrEqual(2000 * MiB * 1.5 + 256 * MiB);
  });
});

describe('findKernelVersion', () => {
  it('picks the newest kernel that has an initrd and modules', () => {
    fakeRootfs(tmp, '6.1.0-9-cloud-amd64');
    mkdirSync(join(tmp, 'usr/lib/modules/6.1.0-10-cloud-amd64'), { recursive: true });
    writeFileSync(join(tmp, 'boot/vmlinuz-6.1.0-10-cloud-amd64'), 'K');
    writeFileSync(join(tmp, 'boot/initrd.img-6.1.0-10-cloud-amd64'), 'I');
    // newer, but without modules: not usable
    writeFileSync(join(tmp, 'boot/vmlinuz-6.1.0-11-cloud-amd64'), 'K');
    writeFileSync(join(tmp, 'boot/initrd.img-6.1.0-11-cloud-amd64'), 'I');
    expect(findKernelVersion(tmp)).toBe('6.1.0-10-cloud-amd64');
  });

  it('fails with a coded error when there is no kernel', () => {
    mkdirSync(join(tmp, 'boot'));
    expect(() => findKernelVersion(tmp)).toThrow(BangerError);
  });
});

describe('customiseRootfs', () => {
  it("never writes, reads or deletes outside a hostile tree whose links point at the host", () => {
    const root = join(tmp, 'root');
    const host = join(tmp, 'host');
    mkdirSync(join(host, 'log/apt'), { recursive: true });
    writeFileSync(join(host, 'hostname'), 'the host\n');
    writeFileSync(join(host, 'log/dpkg.log'), 'host log');
    mkdirSync(join(host, 'local'));
    writeFileSync(join(host, 'local/keep'), 'keep');
    fakeRootfs(root);
    rmSync(join(root, 'etc/hostname'));
    symlinkSync(join(host, 'hostname'), join(root, 'etc/hostname')); // last component: replaced
    rmSync(join(root, 'var/log'), { recursive: true, force: true });
    symlinkSync(join(host, 'log'), join(root, 'var/log')); // intermediate: resolved inside the tree
    mkdirSync(join(root, 'usr'), { recursive: true });
    symlinkSync(join(host, 'local'), join(root, 'usr/local')); // where the guest script goes
    rmSync(join(root, 'root'), { recursive: true, force: true });
    symlinkSync('/', join(root, 'root')); // the root skeleton's source
    customiseRootfs(root);
    expect(readFileSync(join(host, 'hostname'), 'utf8')).toBe('the host\n');
    expect(readFileSync(join(host, 'log/dpkg.log'), 'utf8')).toBe('host log');
    expect(readdirSync(join(host, 'local'))).toEqual(['keep']);
    expect(lstatSync(join(root, 'etc/hostname')).isFile()).toBe(true);
    expect(readFileSync(join(root, 'etc/hostname'), 'utf8')).toBe('banger\n');
    // the script landed where the guest will find it: /usr/local resolves to <root><host>/local
    expect(existsSync(join(root, host.slice(1), 'local', GUEST_SCRIPT_PATH.slice('usr/local/'.length)))).toBe(true);
  });

  it('makes the rootfs a per-VM-configurable banger guest', () => {
    fakeRootfs(tmp);
    customiseRootfs(tmp);
    const r = (rel: string) => readFileSync(join(tmp, rel), 'utf8');

    // guest unit + script, enabled, ssh ordered after it
    expect(r(GUEST_UNIT_PATH)).toBe(GUEST_UNIT);
    expect(r(GUEST_SCRIPT_PATH)).toBe(GUEST_SCRIPT);
    expect(statSync(join(tmp, GUEST_SCRIPT_PATH)).mode & 0o777).toBe(0o755);
    expect(readlinkSync(join(tmp, 'etc/systemd/system/multi-user.target.wants', GUEST_UNIT_NAME))).toBe(`/${GUEST_UNIT_PATH}`);
    expect(r(SSH_DROPIN_PATH)).toContain(`After=${GUEST_UNIT_NAME}`);
    expect(r(SSHD_CONFIG_PATH)).toContain('PasswordAuthentication no');

    // no baked-in host keys
    expect(readdirSync(join(tmp, 'etc/ssh')).filter((f) => f.startsWith('ssh_host_'))).toEqual([]);
    // root locked, other entries untouched, mode kept
    expect(r('etc/shadow')).toBe('root:!*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\n');
    expect(statSync(join(tmp, 'etc/shadow')).mode & 0o777).toBe(0o640);
    // per-VM identity
    expect(r('etc/machine-id')).toBe('');
    expect(readlinkSync(join(tmp, 'var/lib/dbus/machine-id'))).toBe('/etc/machine-id');
    expect(existsSync(join(tmp, 'var/lib/systemd/random-seed'))).toBe(false);
    // nothing of the build host leaks in
    expect(r('etc/hostname')).toBe('banger\n');
    expect(r('etc/resolv.conf')).not.toContain('10.255.255.53');
    expect(r('etc/hosts')).toContain('127.0.0.1\tlocalhost');
    expect(existsSync(join(tmp, 'var/log/dpkg.log'))).toBe(false);
    // root on /dev/vda; /root (the work disk) is mounted by the guest script, not fstab
    expect(r('etc/fstab')).toMatch(/^\/dev\/vda\t\/\text4\t/m);
    expect(r('etc/fstab')).not.toMatch(/^[^#].*\s\/root\s/m);
    // the image's /root is kept for fresh work disks (the image's /root stays too)
    expect(r(`${ROOT_SKEL_PATH}/.bashrc`)).toBe('# root bashrc\n');
    expect(r(`${ROOT_SKEL_PATH}/.profile`)).toBe('# root profile\n');
    expect(statSync(join(tmp, ROOT_SKEL_PATH)).mode & 0o777).toBe(0o700);
    expect(r('root/.bashrc')).toBe('# root bashrc\n');
    // masked units
    for (const u of MASKED_UNITS) expect(readlinkSync(join(tmp, 'etc/systemd/system', u))).toBe('/dev/null');
    expect(MASKED_UNITS).toContain('apt-daily.timer');
    expect(MASKED_UNITS).not.toContain('serial-getty@ttyS0.service');
    // initrd configuration
    expect(r('etc/initramfs-tools/initramfs.conf')).toMatch(/^MODULES=list$/m);
    expect(r('etc/initramfs-tools/initramfs.conf')).not.toMatch(/MODULES=most/);
    for (const m of INITRD_MODULES) expect(r('etc/initramfs-tools/modules')).toMatch(new RegExp(`^${m}$`, 'm'));
  });

  it('tunes the boot unless told not to (tuned: false keeps Debian\'s defaults and the guest contract)', () => {
    fakeRootfs(tmp);
    customiseRootfs(tmp);
    const r = (rel: string) => readFileSync(join(tmp, rel), 'utf8');
    for (const g of MASKED_GENERATORS) expect(readlinkSync(join(tmp, 'etc/systemd/system-generators', g))).toBe('/dev/null');
    expect(MASKED_GENERATORS).not.toContain('systemd-fstab-generator');
    expect(MASKED_GENERATORS).not.toContain('systemd-getty-generator');
    expect(r(SSH_TUNING_DROPIN_PATH)).toMatch(/^ExecStartPre=$/m);
    expect(r(MODPROBE_BLACKLIST_PATH)).toMatch(/^blacklist kvm_amd$/m);
    const pam = r('etc/pam.d/sshd');
    expect(pam).not.toMatch(/^session\s+\S+\s+pam_(motd|mail)/m);
    expect(pam).toMatch(/^session    required     pam_limits\.so$/m);
    expect(pam).toMatch(/^session    required     pam_loginuid\.so$/m);
    expect(pam).toContain('# banger: off (one process per login): session    optional     pam_motd.so noupdate');

    const stock = mkdtempSync(join(tmpdir(), 'banger-stock-'));
    try {
      fakeRootfs(stock);
      customiseRootfs(stock, { tuned: false });
      const s = (rel: string) => readFileSync(join(stock, rel), 'utf8');
      expect(s('etc/pam.d/sshd')).toBe(STOCK_SSHD_PAM);
      expect(existsSync(join(stock, SSH_TUNING_DROPIN_PATH))).toBe(false);
      expect(existsSync(join(stock, MODPROBE_BLACKLIST_PATH))).toBe(false);
      expect(existsSync(join(stock, 'etc/systemd/system', MASKED_UNITS[0]!))).toBe(false);
      expect(existsSync(join(stock, 'etc/systemd/system-generators'))).toBe(false);
      expect(s('etc/initramfs-tools/initramfs.conf')).toMatch(/^MODULES=most$/m);
      // the guest contract is there all the same
      expect(s(GUEST_UNIT_PATH)).toBe(GUEST_UNIT);
      expect(s(SSH_DROPIN_PATH)).toContain(`After=${GUEST_UNIT_NAME}`);
      for (const m of INITRD_MODULES) expect(s('etc/initramfs-tools/modules')).toMatch(new RegExp(`^${m}$`, 'm'));
    } finally {
      rmSync(stock, { recursive: true, force: true });
    }
  });

  it('is idempotent', () => {
    fakeRootfs(tmp);
    customiseRootfs(tmp);
    const modules = readFileSync(join(tmp, 'etc/initramfs-tools/modules'), 'utf8');
    const shadow = readFileSync(join(tmp, 'etc/shadow'), 'utf8');
    writeFileSync(join(tmp, 'root/.bashrc'), '# changed\n');
    customiseRootfs(tmp);
    expect(readdirSync(join(tmp, ROOT_SKEL_PATH)).sort()).toEqual(['.bashrc', '.profile', '.ssh']);
    expect(statSync(join(tmp, ROOT_SKEL_PATH)).mode & 0o777).toBe(0o700);
    expect(statSync(join(tmp, ROOT_SKEL_PATH, '.ssh')).mode & 0o777).toBe(0o700);
    expect(readFileSync(join(tmp, ROOT_SKEL_PATH, '.bashrc'), 'utf8')).toBe('# changed\n');
    expect(readFileSync(join(tmp, 'etc/initramfs-tools/modules'), 'utf8')).toBe(modules);
    expect(readFileSync(join(tmp, 'etc/shadow'), 'utf8')).toBe(shadow);
  });

  it('refuses a rootfs without a root account', () => {
    fakeRootfs(tmp);
    writeFileSync(join(tmp, 'etc/shadow'), 'daemon:*:1:0:99999:7:::\n');
    expect(() => customiseRootfs(tmp)).toThrow(/root entry/);
  });
});

describe('mountsUnder', () => {
  const info = [
    '22 1 0:21 / / rw,relatime - ext4 /dev/vda rw',
    '40 22 0:5 / /work/cache/build/x-1/rootfs/proc rw - proc proc rw',
    '41 22 0:6 / /work/cache/build/x-1/rootfs/dev/pts rw - devpts devpts rw',
    '42 22 0:7 / /work/cache/build/x-10/rootfs/sys rw - sysfs sysfs rw',
    '43 22 0:8 / /work/cache/build/x-1/with\\040space rw - tmpfs tmpfs rw',
  ].join('\n');

  it('lists mount points below a directory, deepest first, decoding escapes', () => {
    // longest path first: a mount nested in another always comes before it
    expect(mountsUnder('/work/cache/build/x-1', info)).toEqual([
      '/work/cache/build/x-1/rootfs/dev/pts',
      '/work/cache/build/x-1/rootfs/proc',
      '/work/cache/build/x-1/with space',
    ]);
  });

  it('does not confuse a sibling with a common prefix', () => {
    expect(mountsUnder('/work/cache/build/x-10', info)).toEqual(['/work/cache/build/x-10/rootfs/sys']);
    expect(mountsUnder('/nowhere', info)).toEqual([]);
  });
});

describe('helpers', () => {
  it('compares kernel versions numerically', () => {
    const sorted = ['6.1.0-10-cloud-amd64', '6.1.0-9-cloud-amd64', '6.10.0-1-cloud-amd64', '6.1.0-50-cloud-amd64'].sort(
      _internal.compareVersions,
    );
    expect(sorted).toEqual(['6.1.0-9-cloud-amd64', '6.1.0-10-cloud-amd64', '6.1.0-50-cloud-amd64', '6.10.0-1-cloud-amd64']);
  });

  it('splits output into lines across chunks and carriage returns', () => {
    const lines: string[] = [];
    const s = _internal.lineSplitter((l) => lines.push(l));
    s.push(Buffer.from('I: one\nI: tw'));
    s.push(Buffer.from('o\r\n\n  \rprogress 10%\rprogress 20%'));
    s.flush();
    expect(lines).toEqual(['I: one', 'I: two', 'progress 10%', 'progress 20%']);
  });

  it('lineSplitter never holds more than 64 KiB of a line that does not end (hostile output)', () => {
    const lines: string[] = [];
    const s = _internal.lineSplitter((l) => lines.push(l));
    for (let i = 0; i < 100; i++) s.push(Buffer.alloc(4096, 0x41));
    expect(lines.length).toBeGreaterThanOrEqual(6);
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThanOrEqual(64 * 1024);
  });
});

describe('cleanupWorkDir', () => {
  it('removes the work dir and tolerates a missing one', async () => {
    const calls: string[][] = [];
    const runner = fakeRunner(async (argv) => {
      calls.push(argv);
      return ok(argv);
    });
    const w = join(tmp, 'work');
    mkdirSync(join(w, 'rootfs/etc'), { recursive: true });
    writeFileSync(join(w, 'rootfs/etc/x'), 'x');
    await cleanupWorkDir(runner, w);
    expect(existsSync(w)).toBe(false);
    await cleanupWorkDir(runner, w);
    expect(calls).toEqual([]); // nothing was mounted there
  });
});

function ok(argv: string[], stdout = ''): RunResult {
  return { argv, code: 0, signal: null, stdout, stderr: '', timedOut: false, durationMs: 1 };
}

function fakeRunner(run: (argv: string[], opts?: RunOptions) => Promise<RunResult>): Runner {
  return {
    run,
    spawnDetached: () => {
      throw new Error('not used');
    },
    runInteractive: async () => 0,
  };
}

/** A runner that plays mmdebstrap, chroot and mkfs.ext4 without doing any of it. */
function scriptedRunner(opts: { failMkfs?: boolean; lsinitramfs?: string; onMmdebstrap?: () => void } = {}) {
  const calls: string[][] = [];
  const runner = fakeRunner(async (argv, o) => {
    calls.push(argv);
    const cmd = argv[0]!.split('/').pop();
    if (cmd === 'mmdebstrap') {
      const root = argv[argv.indexOf('bookworm') + 1]!;
      fakeRootfs(root);
      o?.onStderr?.(Buffer.from('I: downloading packages with apt...\nI: success in 1 s\n'));
      opts.onMmdebstrap?.();
      return ok(argv);
    }
    if (cmd === 'chroot' && argv[2] === 'lsinitramfs') {
      const list =
        opts.lsinitramfs ??
        [
          `usr/lib/modules/${KVER}/kernel/drivers/block/virtio_blk.ko`,
          `usr/lib/modules/${KVER}/kernel/drivers/virtio/virtio_mmio.ko`,
          `usr/lib/modules/${KVER}/kernel/drivers/virtio/virtio_pci.ko`,
        ].join('\n');
      return ok(argv, list + '\n');
    }
    if (cmd === 'chroot' && argv[2] === 'update-initramfs') return ok(argv);
    if (cmd === 'mkfs.ext4') {
      if (opts.failMkfs) throw new BangerError('operation_failed', 'mkfs.ext4 exploded');
      return ok(argv);
    }
    throw new Error(`unexpected command ${argv.join(' ')}`);
  });
  return { runner, calls };
}

describe.skipIf(!isRoot)('buildDebianImage (scripted runner)', () => {
  it('builds in the work dir, publishes the image atomically and cleans up', async () => {
    const { runner, calls } = scriptedRunner();
    const outDir = join(tmp, 'images/bookworm');
    const workDir = join(tmp, 'build/bookworm-1');
    const stages: string[] = [];
    const res = await buildDebianImage(
      { runner },
      { name: 'bookworm', outDir, workDir, mirror: 'http://deb.debian.org/debian', onProgress: (s, m) => stages.push(`${s}: ${m}`) },
    );
    expect(res.kernelVersion).toBe(KVER);
    expect(res.rootfsBytes).toBe(1024 * MiB);
    expect(res.packages).toEqual([...IMAGE_PACKAGES, ...DEV_PACKAGES]);
    expect(readdirSync(outDir).sort()).toEqual(['image.json', 'initrd.img', 'rootfs.ext4', 'vmlinuz']);
    expect(readFileSync(join(outDir, 'vmlinuz'), 'utf8')).toBe('KERNEL');
    expect(readFileSync(join(outDir, 'initrd.img'), 'utf8')).toBe('INITRD');
    expect(statSync(join(outDir, 'rootfs.ext4')).size).toBe(1024 * MiB);
    expect(JSON.parse(readFileSync(join(outDir, 'image.json'), 'utf8'))).toMatchObject({ kernelVersion: KVER, suite: 'bookworm' });
    expect(existsSync(workDir)).toBe(false);
    expect(readdirSync(join(tmp, 'images'))).toEqual(['bookworm']); // no staging leftovers
    // mmdebstrap's lines reach the progress callback
    expect(stages).toContain('bootstrap: I: downloading packages with apt...');
    expect(stages.some((s) => s.startsWith('initrd: '))).toBe(true);
    const mkfs = calls.find((c) => c[0]!.endsWith('mkfs.ext4'))!;
    expect(mkfs).toEqual(expect.arrayContaining(['-L', 'banger-root', '-d', join(workDir, 'rootfs')]));
    // the rootfs handed to mkfs was customised
    expect(calls.some((c) => c[2] === 'update-initramfs')).toBe(true);
  });

  it('replaces an existing image directory', async () => {
    const outDir = join(tmp, 'images/bookworm');
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'stale'), 'x');
    await buildDebianImage({ runner: scriptedRunner().runner }, { name: 'bookworm', outDir, workDir: join(tmp, 'w'), mirror: 'http://m/debian' });
    expect(readdirSync(outDir).sort()).toEqual(['image.json', 'initrd.img', 'rootfs.ext4', 'vmlinuz']);
    expect(readdirSync(join(tmp, 'images'))).toEqual(['bookworm']);
  });

  it('publishes nothing and cleans the work dir when a step fails', async () => {
    const outDir = join(tmp, 'images/bookworm');
    const workDir = join(tmp, 'w');
    await expect(
      buildDebianImage({ runner: scriptedRunner({ failMkfs: true }).runner }, { name: 'bookworm', outDir, workDir, mirror: 'http://m/debian' }),
    ).rejects.toThrow('mkfs.ext4 exploded');
    expect(existsSync(outDir)).toBe(false);
    expect(existsSync(workDir)).toBe(false);
  });

  it('fails when the regenerated initrd lacks virtio modules', async () => {
    const outDir = join(tmp, 'images/bookworm');
    const workDir = join(tmp, 'w');
    const { runner } = scriptedRunner({ lsinitramfs: 'usr/lib/modules/x/kernel/drivers/virtio/virtio_mmio.ko' });
    await expect(buildDebianImage({ runner }, { name: 'bookworm', outDir, workDir, mirror: 'http://m/debian' })).rejects.toThrow(
      /lacks virtio_pci, virtio_blk/,
    );
    expect(existsSync(outDir)).toBe(false);
    expect(existsSync(workDir)).toBe(false);
  });

  it('stops with interrupted when aborted, and cleans up', async () => {
    const ac = new AbortController();
    const { runner, calls } = scriptedRunner({ onMmdebstrap: () => ac.abort() });
    const outDir = join(tmp, 'images/bookworm');
    const workDir = join(tmp, 'w');
    await expect(
      buildDebianImage({ runner }, { name: 'bookworm', outDir, workDir, mirror: 'http://m/debian', signal: ac.signal }),
    ).rejects.toMatchObject({ code: 'interrupted' });
    expect(calls.map((c) => c[0])).toEqual(['mmdebstrap']);
    expect(existsSync(outDir)).toBe(false);
    expect(existsSync(workDir)).toBe(false);
  });

  it('passes the abort signal to mmdebstrap', async () => {
    const ac = new AbortController();
    let seen: AbortSignal | undefined;
    const runner = fakeRunner(async (argv, o) => {
      seen = o?.signal;
      throw new BangerError('operation_failed', 'killed');
    });
    await expect(
      buildDebianImage({ runner }, { name: 'b', outDir: join(tmp, 'o'), workDir: join(tmp, 'w'), mirror: 'http://m/debian', signal: ac.signal }),
    ).rejects.toThrow('killed');
    expect(seen).toBe(ac.signal);
    expect(existsSync(join(tmp, 'w'))).toBe(false);
  });

  it('refuses overlapping directories and bad mirrors before running anything', async () => {
    const { runner, calls } = scriptedRunner();
    await expect(
      buildDebianImage({ runner }, { name: 'b', outDir: join(tmp, 'w/out'), workDir: join(tmp, 'w'), mirror: 'http://m/debian' }),
    ).rejects.toMatchObject({ code: 'internal' });
    await expect(
      buildDebianImage({ runner }, { name: 'b', outDir: join(tmp, 'o'), workDir: join(tmp, 'w'), mirror: 'file:///etc' }),
    ).rejects.toMatchObject({ code: 'bad_request' });
    expect(calls).toEqual([]);
    expect(lstatSync(tmp).isDirectory()).toBe(true);
  });
});

describe.skipIf(isRoot)('buildDebianImage as a regular user', () => {
  it('explains that building needs root', async () => {
    const { runner, calls } = scriptedRunner();
    await expect(
      buildDebianImage({ runner }, { name: 'b', outDir: join(tmp, 'o'), workDir: join(tmp, 'w'), mirror: 'http://m/debian' }),
    ).rejects.toMatchObject({ code: 'operation_failed' });
    expect(calls).toEqual([]);
  });
});

describe('killBuildProcesses', () => {
  it('kills a process tree running in the build dir, so a run holding pipes settles', async () => {
    const work = join(tmp, 'work');
    mkdirSync(work);
    // a parent with two children that inherit stdout: like mmdebstrap's forks
    const started = Date.now();
    const run = createRunner().run(['sh', '-c', 'sleep 30 & sleep 30 & wait'], { cwd: work, allowFailure: true, timeoutMs: 20_000 });
    await new Promise((r) => setTimeout(r, 300));
    expect(killBuildProcesses(work)).toBeGreaterThanOrEqual(3);
    const res = await run;
    expect(res.signal).toBe('SIGKILL');
    expect(res.timedOut).toBe(false);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(killBuildProcesses(work)).toBe(0);
  });
});

describe.skipIf(!isRoot)('buildDebianImage abort with a real process tree', () => {
  it('kills mmdebstrap and its forks, reports interrupted and cleans up', async () => {
    const real = createRunner();
    const ac = new AbortController();
    const runner = fakeRunner(async (argv, o) => {
      // stands in for mmdebstrap: forks that keep the output pipes open
      setTimeout(() => ac.abort(), 300);
      return real.run(['sh', '-c', 'sleep 30 & sleep 30 & wait'], o);
    });
    const workDir = join(tmp, 'w');
    const started = Date.now();
    await expect(
      buildDebianImage({ runner }, { name: 'b', outDir: join(tmp, 'o'), workDir, mirror: 'http://m/debian', signal: ac.signal }),
    ).rejects.toMatchObject({ code: 'interrupted' });
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(existsSync(workDir)).toBe(false);
    expect(existsSync(join(tmp, 'o'))).toBe(false);
  });
});
