/**
 * What makes a warm clone a VM of its own, and what makes a template ready
 * to be snapshotted: two POSIX sh scripts that the daemon runs through the
 * guest agent (fed on stdin to `/bin/sh -s`), so an image needs nothing new
 * baked in: they use what every banger image has (the guest integration of
 * src/images/guest-files.ts, util-linux, and perl-base, which Debian always
 * has).
 *
 * The template, before it is saved (TEMPLATE_PREP_SCRIPT):
 *   - waits until systemd has finished booting (no job left to replay in
 *     every clone);
 *   - removes its SSH host key, and leaves sshd listening: OpenSSH before
 *     9.8 (bookworm's 9.2) re-executes sshd for each connection, which
 *     loads the host key from disk, so a clone's first session already
 *     serves the clone's key (checked: a key replaced on disk under a
 *     running sshd is the one the next connection presents). Starting sshd
 *     in each clone instead cost ~1 s (`systemctl start ssh` with its
 *     `sshd -t`). Where sshd-session exists (9.8 on, whose listener hands
 *     its loaded keys to each session), sshd is stopped and each clone
 *     starts it;
 *   - unmounts the work disk from /root: each clone mounts its own;
 *   - flushes the config and work disks' buffers, so no clone believes it
 *     has cached blocks of the template's disks (the root filesystem's page
 *     cache is kept: it is the clone's root too, and a clone then finds the
 *     programs it runs in memory).
 *
 * Each clone, right after it resumes (CLONE_SCRIPT):
 *   1. wall clock: set to the host's (the template's clock stopped when it
 *      was saved);
 *   2. /etc/machine-id: its own (PID 1 and journald keep the template's id
 *      in memory until the next boot);
 *   3. kernel RNG: 256 bits from the host credited (RNDADDENTROPY) and the
 *      CRNG reseeded at once (RNDRESEEDCRNG), so two clones' random streams
 *      diverge. QEMU's vmgenid device would do this in the kernel, but the
 *      microvm machine has no ACPI table for it (checked on QEMU 7.2: the
 *      device is accepted and the guest never sees it);
 *   4. a new SSH host key, made by the daemon (newHostKey: from the host's
 *      RNG, with no guest process to start; ssh-keygen under TCG took
 *      ~0.4 s) and written by the script, synced to disk with the
 *      machine-id (a clone killed a moment later boots its disk with them;
 *      found by the smoke's kill-then-start, which met a host key
 *      mismatch). The daemon pins it under the clone's name once the script
 *      succeeded, so the clone is ready with no SSH round trip. The script
 *      ends by checking that sshd runs (sshd's sessions load the key, see
 *      the template's);
 *   5. hostname and /etc/hosts; this VM's work disk at /root (root's
 *      dotfiles on first use) with root's authorized_keys; the root
 *      filesystem grown when this VM's root disk is larger than the
 *      template's — what the guest unit does at a boot, with this VM's
 *      settings passed in rather than read from its config disk (which holds
 *      the same settings, for the VM's later cold boots);
 *   6. in bridge networking, eth0 gets the clone's MAC (the template's is in
 *      the saved NIC state), address and route, neighbours are forgotten,
 *      resolv.conf is rewritten. In user networking each VM has a private
 *      network of its own with the same address, and a clone keeps the
 *      snapshot's MAC until its next cold boot: QEMU's user-mode stack
 *      learns the guest's MAC from the first packets the guest sends after
 *      it resumes and never forgets it, so a MAC changed after that point
 *      made every connection to the guest vanish (measured: SYNs sent to
 *      the old MAC, dropped by the NIC's filter);
 * What a clone cannot change: the kernel's boot_id and uptime are the
 * template's (they are fixed at kernel boot).
 */
import { createHash, randomBytes } from 'node:crypto';
import { ROOT_SKEL_PATH, SSH_HOST_KEY, WORK_DISK_MARKER, WORK_DISK_MOUNT_OPTIONS } from '../images/guest-files.js';
import { validateGuestConfig, type GuestConfig } from './config-disk.js';
import { isHostKey, type HostKey } from './host-key.js';
import { WORK_DISK_MOUNT } from './work-disk.js';

/** The disks in the guest (the device order of src/vmm/qemu/argv.ts, part of the guest contract). */
const ROOT_DEVICE = '/dev/vda';
const CONFIG_DEVICE = '/dev/vdb';
const WORK_DEVICE = '/dev/vdc';
/** Left by the template prep when it stopped sshd (OpenSSH 9.8 and later): each clone starts it. */
const SSHD_STOPPED_MARK = '/run/banger/clone-sshd-stopped';

export const TEMPLATE_PREP_SCRIPT = `set -u
# systemd done booting: running, or degraded (a unit failed; the guest still works)
state=$(systemctl is-system-running --wait 2>/dev/null) || true
case "$state" in running | degraded) ;; *) echo "system is $state" >&2; exit 1 ;; esac
if [ -s /run/banger/guest-config.done ]; then read -r st </run/banger/guest-config.done; else st=missing; fi
[ "$st" = 0 ] || { echo "banger-guest-config status $st" >&2; exit 1; }
# The template's host key goes: no clone may ever serve it. sshd keeps
# listening where its sessions load the host key from disk (OpenSSH before
# 9.8: each connection re-executes sshd, which reads its HostKey files), so
# a clone's sshd serves the clone's key from its first connection and needs
# no start. From 9.8 the listener hands the keys it loaded to each
# sshd-session: there sshd is stopped, and each clone starts it.
rm -f ${SSH_HOST_KEY} ${SSH_HOST_KEY}.pub || { echo "cannot remove the template's host key" >&2; exit 1; }
rm -f ${SSHD_STOPPED_MARK}
stopped=''
for f in /usr/lib/openssh/sshd-session /usr/libexec/openssh/sshd-session /usr/libexec/sshd-session; do
  if [ -e "$f" ]; then
    systemctl stop ssh.service || { echo "cannot stop sshd" >&2; exit 1; }
    : >${SSHD_STOPPED_MARK}
    stopped=1
    break
  fi
done
# Each clone relies on this sshd (it is not waited for over SSH).
if [ -z "$stopped" ]; then
  systemctl is-active --quiet ssh.service || { echo "sshd is not running in the template" >&2; exit 1; }
fi
umount ${WORK_DISK_MOUNT} || { echo "cannot unmount ${WORK_DISK_MOUNT}" >&2; exit 1; }
sync
# Forget the cached blocks of the config and work disks (each clone has its
# own); the root filesystem's cache stays: a clone then finds the programs it
# runs next in memory instead of reading them through its disk (measured
# under TCG: the identity step took 12.6 s after dropping all caches).
blockdev --flushbufs ${CONFIG_DEVICE} ${WORK_DEVICE} || { echo "cannot flush the config and work disks' buffers" >&2; exit 1; }
# The clone script's one program that a boot does not run
perl -e 1
`;

/**
 * Args: TIME MACHINE_ID ENTROPY MAC HOSTNAME NET GROW HOSTKEY HOSTKEY_PUB
 * KEY... where NET is `-` (user networking: the template's address is the
 * clone's) or "ADDRESS PREFIX GATEWAY [DNS...]" (bridge), GROW is 1 when the
 * root disk is larger than the template's, HOSTKEY and HOSTKEY_PUB are the
 * clone's SSH host key (made by the daemon: host-key.ts) and the KEYs are
 * root's authorized_keys lines. Every value was validated by the daemon.
 *
 * Under TCG every process start costs 0.1–0.2 s (measured: /bin/true), so
 * the script starts as few as it can, and side by side: the clock, the RNG
 * reseed and the sync of the new files run as background jobs beside the
 * work disk and the network; files are written with shell builtins.
 */
export const CLONE_SCRIPT = `set -u
status=0
fail() { echo "banger-clone: $*" >&2; status=1; }
# Seconds since the guest's boot at each step, on stdout (the daemon logs them).
mark() {
  read -r up _ </proc/uptime
  echo "banger-clone: $up $1"
}
# The host key the daemon made (the template's was removed): sshd's next
# session serves it. No session is opened before this script has ended (and
# the RNG below was reseeded).
umask 077
printf '%s\\n' "$8" >${SSH_HOST_KEY} || fail "cannot write the host key"
umask 022
printf '%s\\n' "$9" >${SSH_HOST_KEY}.pub || fail "cannot write the host key"
mark start
entropy=$3 mac=$4 host=$5 net=$6 grow=$7
date -u -s "@$1" >/dev/null &
clock_job=$!
# The RNG reseeded: every clone resumed with the template's RNG state, so
# without this two clones' random streams would be the same.
perl -e 'open(my $f, ">", "/dev/urandom") or die "$!\\n"; my $b = pack("H*", $ARGV[0]);
  ioctl($f, 0x40085203, pack("ii", length($b) * 8, length($b)) . $b) or die "RNDADDENTROPY: $!\\n";
  ioctl($f, 0x5207, 0) or die "RNDRESEEDCRNG: $!\\n";' "$entropy" &
rng_job=$!
# The machine-id, and both synced with the host key: a VM killed right after
# this boots its disk again, and must come back with the same ones.
printf '%s\\n' "$2" >/etc/machine-id || fail "cannot write /etc/machine-id"
shift 9
sync ${SSH_HOST_KEY} ${SSH_HOST_KEY}.pub /etc/machine-id &
sync_job=$!
resize=''
if [ "$grow" = 1 ]; then
  resize2fs ${ROOT_DEVICE} >/run/banger/resize.log 2>&1 &
  resize=$!
fi
{ printf '%s\\n' "$host" >/etc/hostname && printf '%s\\n' "$host" >/proc/sys/kernel/hostname; } || fail "cannot set the hostname"
printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t%s\\n::1\\tlocalhost ip6-localhost ip6-loopback\\nff02::1\\tip6-allnodes\\nff02::2\\tip6-allrouters\\n' "$host" >/etc/hosts
if mount -t ext4 -o ${WORK_DISK_MOUNT_OPTIONS} ${WORK_DEVICE} ${WORK_DISK_MOUNT}; then
  if [ ! -e ${WORK_DISK_MARKER} ]; then
    # The skeleton is root's and 0700 (the image build made it so, with
    # ~/.ssh in it), and cp -a gives /root its mode and owner: one process.
    if [ -d /${ROOT_SKEL_PATH} ]; then
      cp -a -n /${ROOT_SKEL_PATH}/. ${WORK_DISK_MOUNT}/
    else
      install -d -m 0700 -o root -g root ${WORK_DISK_MOUNT}
    fi && : >${WORK_DISK_MARKER} || fail "cannot prepare the work disk"
  fi
  keys=''
  for k in "$@"; do
    keys="$keys$k
"
  done
  umask 077
  { [ -d ${WORK_DISK_MOUNT}/.ssh ] || mkdir ${WORK_DISK_MOUNT}/.ssh; } && printf '%s' "$keys" >${WORK_DISK_MOUNT}/.ssh/authorized_keys || fail "cannot write authorized_keys"
  umask 022
else
  fail "cannot mount the work disk ${WORK_DEVICE} at ${WORK_DISK_MOUNT}"
fi
mark 'hostname, work disk'
if [ "$net" != - ]; then
  read -r addr prefix gw dns <<NET
$net
NET
  nic=''
  for d in /sys/class/net/*; do
    [ "\${d##*/}" = lo ] && continue
    nic=\${d##*/}
    break
  done
  if [ -n "$nic" ]; then
    printf 'link set dev %s down\\nlink set dev %s address %s\\nlink set dev %s up\\naddr flush dev %s\\naddr add %s/%s dev %s\\nroute replace default via %s dev %s\\nneigh flush dev %s\\n' \\
      "$nic" "$nic" "$mac" "$nic" "$nic" "$addr" "$prefix" "$nic" "$gw" "$nic" "$nic" | ip -4 -batch - || fail "cannot configure $nic"
  else
    fail "no network interface"
  fi
  resolv=''
  for d in $dns; do
    resolv="\${resolv}nameserver $d
"
  done
  [ -L /etc/resolv.conf ] && rm -f /etc/resolv.conf
  printf '# written by banger when this clone started\\n%s' "$resolv" >/etc/resolv.conf || fail "cannot write /etc/resolv.conf"
  mark network
fi
wait "$clock_job" || fail "cannot set the clock"
wait "$rng_job" || fail "cannot reseed the RNG"
wait "$sync_job" || fail "cannot sync the host key and machine-id"
mark 'clock, RNG, sync'
# sshd (the template's, listening) serves the new key from its next
# session; where the template stopped it (see there), it starts now, after
# the reseed: its random numbers must be this clone's own.
if [ -e ${SSHD_STOPPED_MARK} ]; then
  systemctl start ssh.service || fail "cannot start sshd"
fi
if read -r spid _ </run/sshd.pid && kill -0 "$spid" 2>/dev/null; then :; else fail "sshd is not running"; fi
if [ -n "$resize" ]; then wait "$resize" || echo "banger-clone: resize2fs ${ROOT_DEVICE} failed (ignored)"; fi
exit $status
`;

/** Changes whenever what a snapshot's guest was prepared with, or what a clone runs, changes. */
export const CLONE_CONTRACT = `clone-1-${createHash('sha256').update(JSON.stringify([TEMPLATE_PREP_SCRIPT, CLONE_SCRIPT])).digest('hex').slice(0, 12)}`;

/** What the clone script is told besides fresh randomness: this VM's settings. */
export interface CloneSettings {
  /** The same settings as the VM's config disk (validated the same way). */
  config: GuestConfig;
  /** User networking: the template's address, route and resolvers are the clone's; nothing to change. */
  keepNetwork: boolean;
  /** The VM's root disk is larger than the template's: grow its filesystem. */
  growRoot: boolean;
  /** The clone's SSH host key (host-key.ts: newHostKey). */
  hostKey: HostKey;
}

/** The clone script's arguments (fresh randomness for every clone; the time is taken last, just before it runs). */
export function cloneArgs(settings: CloneSettings, now: () => number = Date.now): string[] {
  const c = validateGuestConfig(settings.config);
  const n = c.network;
  const net = settings.keepNetwork ? '-' : [n.address, String(n.prefixLength), n.gateway, ...n.dns].join(' ');
  const { privateKey, publicLine } = settings.hostKey;
  if (!isHostKey(settings.hostKey)) {
    throw new Error('cloneArgs: the host key is not one newHostKey made');
  }
  const machineId = randomBytes(16).toString('hex');
  const entropy = randomBytes(32).toString('hex');
  const ms = now();
  const time = `${Math.floor(ms / 1000)}.${String(ms % 1000).padStart(3, '0')}`;
  return [time, machineId, entropy, n.mac, c.hostname, net, settings.growRoot ? '1' : '0', privateKey, publicLine, ...c.authorizedKeys];
}
