/**
 * Guest integration: the files every banger image carries so that it meets
 * the guest contract (docs/ARCHITECTURE.md): the guest config unit and its
 * script, sshd's configuration, no password login, a per-VM machine-id and
 * host identity, the fstab, the root skeleton for a fresh work disk, and
 * (tuned) the boot tuning. Plain file operations on the root tree; nothing
 * in the tree is run.
 */
import { chmodSync, chownSync, cpSync, existsSync, lstatSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BangerError } from '../errors/errors.js';
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
import { INITRD_MODULES } from './kernel.js';
import { applyBootTuning } from './tuning.js';
import { readInRoot, resolveInRoot } from './tree.js';

/** All rootfs changes, as plain file operations on the directory. */
export function customiseRootfs(rootDir: string, opts: { tuned?: boolean; initramfs?: boolean } = {}): void {
  const tuned = opts.tuned !== false;
  // Every path is resolved inside the tree (tree.ts): a pulled image's
  // `etc` may be a symlink to the host's /etc. A last component that is a
  // symlink is replaced, never written through.
  const p = (rel: string) => resolveInRoot(rootDir, rel);
  const dir = (rel: string) => resolveInRoot(rootDir, rel, { followLast: true });
  const read = (rel: string) => readInRoot(rootDir, rel);
  const write = (rel: string, text: string, mode = 0o644) => {
    const path = p(rel);
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    // Keep the owner of a file we replace (/etc/shadow is root:shadow).
    let owner: { uid: number; gid: number } | undefined;
    try {
      const st = lstatSync(path);
      if (st.isFile()) owner = { uid: st.uid, gid: st.gid };
    } catch {
      /* new file */
    }
    rmSync(path, { force: true, recursive: true });
    writeFileSync(path, text, { mode, flag: 'wx' });
    chmodSync(path, mode);
    if (owner) chownSync(path, owner.uid, owner.gid);
  };
  const link = (target: string, rel: string) => {
    const path = p(rel);
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    rmSync(path, { force: true, recursive: true });
    symlinkSync(target, path);
  };

  // Guest config unit + script, enabled, and ssh waits for it.
  write(GUEST_SCRIPT_PATH, GUEST_SCRIPT, 0o755);
  write(GUEST_UNIT_PATH, GUEST_UNIT);
  link(`/${GUEST_UNIT_PATH}`, `etc/systemd/system/multi-user.target.wants/${GUEST_UNIT_NAME}`);
  write(SSH_DROPIN_PATH, SSH_DROPIN);
  write(SSHD_CONFIG_PATH, SSHD_CONFIG);

  // Each VM generates its own SSH host keys (the guest unit runs ssh-keygen -A).
  const sshDir = dir('etc/ssh');
  for (const f of existsSync(sshDir) ? readdirSync(sshDir) : []) {
    if (/^ssh_host_.*_key(\.pub)?$/.test(f)) rmSync(join(sshDir, f), { force: true });
  }

  // root: no password login (key-only SSH; the serial console shows logs).
  const shadow = read('etc/shadow') ?? '';
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
  // Only a real directory: an image whose /root is a link (to / even) starts with an empty skeleton.
  const home = p('root');
  if (existsSync(home) && lstatSync(home).isDirectory()) {
    cpSync(home, skel, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
  } else {
    mkdirSync(skel);
  }
  chmodSync(skel, 0o700);
  // With ~/.ssh in it, a clone's copy of the skeleton makes the directory
  // that authorized_keys goes in (one process less under TCG, ~0.15 s).
  if (!existsSync(join(skel, '.ssh'))) mkdirSync(join(skel, '.ssh'), { mode: 0o700 });

  if (tuned) {
    applyBootTuning({
      read,
      write,
      link,
    });
  }

  // The tree's own initrd (an image that boots its own kernel; banger's kernel brings its initrd).
  if (opts.initramfs !== false) {
    // A small initrd (tuned): only the modules named in /etc/initramfs-tools/modules
    // (plus what initramfs-tools' hooks add). MODULES=most made a 13 MB initrd
    // that took 2-3 s longer to unpack and coldplug under TCG. Untuned keeps
    // MODULES=most; both list the modules root needs on microvm.
    const conf = read('etc/initramfs-tools/initramfs.conf') ?? '';
    const modulesLine = `MODULES=${tuned ? 'list' : 'most'}`;
    write(
      'etc/initramfs-tools/initramfs.conf',
      /^MODULES=/m.test(conf) ? conf.replace(/^MODULES=.*$/m, modulesLine) : `${conf}${conf.endsWith('\n') || conf === '' ? '' : '\n'}${modulesLine}\n`,
    );
    const current = read('etc/initramfs-tools/modules') ?? '';
    const have = new Set(current.split('\n').map((l) => l.trim().split(/\s+/)[0]));
    const missing = INITRD_MODULES.filter((m) => !have.has(m));
    if (missing.length > 0) {
      write(
        'etc/initramfs-tools/modules',
        `${current}${current.endsWith('\n') || current === '' ? '' : '\n'}# banger: root on virtio-blk over virtio-mmio (microvm) or virtio-pci\n${missing.join('\n')}\n`,
      );
    }
  }

  // Caches and logs of the build itself.
  for (const f of ['var/cache/apt/pkgcache.bin', 'var/cache/apt/srcpkgcache.bin']) rmSync(p(f), { force: true });
  for (const f of ['apt/eipp.log.xz', 'apt/history.log', 'apt/term.log', 'dpkg.log', 'alternatives.log', 'bootstrap.log']) {
    rmSync(p(`var/log/${f}`), { force: true });
  }
}
