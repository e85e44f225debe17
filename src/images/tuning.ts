/**
 * The boot tuning of the default image: what a throwaway VM does not need
 * at boot or at each SSH login, taken out. Measured in a bookworm guest
 * under TCG (2 vCPUs; `systemd-analyze blame`, the journal's monotonic
 * stamps, and `ssh HOST true` timed 7 times before and after):
 *   - every process start costs 0.1-0.3 s, and a boot's units run side by
 *     side on two vCPUs: a unit off the critical path still slows it;
 *   - sshd's PAM stack ran pam_motd (update-motd's scripts) and pam_mail at
 *     every session, `ssh true` included: median 1.63 s → 1.20 s without;
 *   - ssh.service runs `sshd -t` before sshd (0.24 s, at every start);
 *   - udev's coldplug loaded kvm/kvm_amd (`-cpu max` offers SVM), and the
 *     generators below ran at every boot though they never make a unit here.
 * A build without tuning (`tuned: false`) keeps all of Debian's defaults,
 * for comparing boots (`npm run bench -- --tuning`); both carry banger's
 * guest contract (guest-files.ts).
 */

/** Units that slow a throwaway VM down or make no sense in one: masked. */
export const MASKED_UNITS = [
  'apt-daily.timer',
  'apt-daily.service',
  'apt-daily-upgrade.timer',
  'apt-daily-upgrade.service',
  'man-db.timer',
  'man-db.service',
  'dpkg-db-backup.timer',
  'dpkg-db-backup.service',
  'e2scrub_all.timer',
  'e2scrub_all.service',
  'e2scrub_reap.service',
  'fstrim.timer',
  'logrotate.timer',
  'systemd-firstboot.service',
  'systemd-pstore.service',
  'remote-fs.target',
  // microvm has no display: the serial console (serial-getty@ttyS0, from
  // console=ttyS0) is the only terminal.
  'getty@tty1.service',
  'modprobe@drm.service',
  'sys-kernel-debug.mount',
  'sys-kernel-tracing.mount',
  // Modules loaded ahead of use at every boot (0.8-4.7 s each in blame,
  // side by side): no device-mapper or configfs in a sandbox; loop and
  // fuse load on demand when /dev/loop-control or /dev/fuse is opened
  // (kmod-static-nodes makes those nodes).
  'modprobe@dm_mod.service',
  'modprobe@loop.service',
  'modprobe@fuse.service',
  'modprobe@configfs.service',
  'sys-kernel-config.mount',
  // The image is built with every system user its packages need; a package
  // installed later runs systemd-sysusers from its own postinst.
  'systemd-sysusers.service',
];

/**
 * Generators that never make a unit in a banger VM (no encrypted, verity,
 * integrity or GPT-auto disks, no hibernation, no offline updates, no SysV
 * scripts without a native unit, no rc.local, no systemd.run=), masked by a
 * link to /dev/null in /etc/systemd/system-generators. Kept: fstab, getty,
 * debug (systemd.mask= on the kernel command line stays a way to debug a boot).
 */
export const MASKED_GENERATORS = [
  'systemd-cryptsetup-generator',
  'systemd-gpt-auto-generator',
  'systemd-hibernate-resume-generator',
  'systemd-integritysetup-generator',
  'systemd-veritysetup-generator',
  'systemd-system-update-generator',
  'systemd-sysv-generator',
  'systemd-rc-local-generator',
  'systemd-run-generator',
];

/** Modules udev's coldplug loads for nothing (an explicit `modprobe kvm_amd` still works). */
export const MODPROBE_BLACKLIST_PATH = 'etc/modprobe.d/banger.conf';
export const MODPROBE_BLACKLIST = `# Installed by banger: not loaded at boot (udev loads kvm for -cpu max's SVM
# flag; nested VMs under an emulated CPU are of no use). modprobe by name still works.
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
`;

/** ssh.service without its `sshd -t` pre-check (sshd checks its config when it starts anyway). */
export const SSH_TUNING_DROPIN_PATH = 'etc/systemd/system/ssh.service.d/banger-fast.conf';
export const SSH_TUNING_DROPIN = `# Installed by banger: sshd validates its configuration when it starts;
# the separate \`sshd -t\` run cost a process start at every boot.
[Service]
ExecStartPre=
`;

export const SSHD_PAM_PATH = 'etc/pam.d/sshd';

/** /etc/pam.d/sshd without pam_motd and pam_mail (lines commented out, marked). */
export function trimSshdPam(text: string): string {
  return text
    .split('\n')
    .map((line) => (/^\s*session\s+\S+\s+pam_(motd|mail)\.so\b/.test(line) ? `# banger: off (one process per login): ${line}` : line))
    .join('\n');
}

/** What a tuned build changes, as plain file operations on the rootfs. */
export interface TuningOps {
  read(rel: string): string | undefined;
  write(rel: string, text: string, mode?: number): void;
  link(target: string, rel: string): void;
}

export function applyBootTuning(ops: TuningOps): void {
  for (const unit of MASKED_UNITS) ops.link('/dev/null', `etc/systemd/system/${unit}`);
  for (const gen of MASKED_GENERATORS) ops.link('/dev/null', `etc/systemd/system-generators/${gen}`);
  ops.write(MODPROBE_BLACKLIST_PATH, MODPROBE_BLACKLIST);
  ops.write(SSH_TUNING_DROPIN_PATH, SSH_TUNING_DROPIN);
  const pam = ops.read(SSHD_PAM_PATH);
  if (pam !== undefined) ops.write(SSHD_PAM_PATH, trimSshdPam(pam));
}
