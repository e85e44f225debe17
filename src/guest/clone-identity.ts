/**
 * What makes a warm clone a VM of its own, and what makes a template ready
 * to be snapshotted: two POSIX sh scripts that the daemon runs through the
 * guest agent (fed on stdin to `/bin/sh -s`), so an image needs nothing new
 * baked in: they use what every banger image has (the guest unit's script,
 * src/images/guest-files.ts, and perl-base, which Debian always has).
 *
 * The template, before it is saved (TEMPLATE_PREP_SCRIPT):
 *   - waits until systemd has finished booting (no job left to replay in
 *     every clone);
 *   - stops sshd: each clone starts it with its own host key;
 *   - unmounts the work disk from /root: each clone mounts its own;
 *   - drops the page cache, so no clone believes it has cached blocks of the
 *     template's config and work disks (and the saved state is smaller).
 *
 * Each clone, right after it resumes (CLONE_SCRIPT, args: host time,
 * machine-id, entropy, MAC):
 *   1. wall clock: set to the host's (the template's clock stopped when it
 *      was saved);
 *   2. /etc/machine-id: its own (PID 1 and journald keep the template's id
 *      in memory until the next boot);
 *   3. kernel RNG: 256 bits from the host credited (RNDADDENTROPY) and the
 *      CRNG reseeded at once (RNDRESEEDCRNG), so two clones' random streams
 *      diverge from the first read. QEMU's vmgenid device would do this in
 *      the kernel, but the microvm machine has no ACPI table for it (checked
 *      on QEMU 7.2: the device is accepted and the guest never sees it);
 *   4. in bridge networking, eth0 gets the clone's MAC (the template's is in
 *      the saved NIC state) and neighbours are forgotten. In user networking
 *      each VM has a private network of its own, and a clone keeps the
 *      snapshot's MAC until its next cold boot: QEMU's user-mode stack
 *      learns the guest's MAC from the first packets the guest sends after
 *      it resumes and never forgets it, so a MAC changed after that point
 *      made every connection to the guest vanish (measured: SYNs sent to
 *      the old MAC, dropped by the NIC's filter);
 *   5. the SSH host key is deleted, and the guest unit's script runs as at
 *      a boot: mounts this VM's work disk at /root, reads this VM's config
 *      disk (hostname, authorized_keys, address), makes a new host key, grows
 *      the root filesystem;
 *   6. sshd starts (the template stopped it before it was saved), so the
 *      first key any client sees under the clone's name is the clone's.
 * What a clone cannot change: the kernel's boot_id and uptime are the
 * template's (they are fixed at kernel boot).
 */
import { createHash, randomBytes } from 'node:crypto';
import { GUEST_SCRIPT_PATH, SSH_HOST_KEY } from '../images/guest-files.js';
import { WORK_DISK_MOUNT } from './work-disk.js';

export const TEMPLATE_PREP_SCRIPT = `set -u
# systemd done booting: running, or degraded (a unit failed; the guest still works)
state=$(systemctl is-system-running --wait 2>/dev/null) || true
case "$state" in running | degraded) ;; *) echo "system is $state" >&2; exit 1 ;; esac
if [ -s /run/banger/guest-config.done ]; then read -r st </run/banger/guest-config.done; else st=missing; fi
[ "$st" = 0 ] || { echo "banger-guest-config status $st" >&2; exit 1; }
# sshd goes: each clone starts it with its own host key (an sshd that
# survived into a clone would answer with the template's key until reloaded,
# and a client could pin that key under the clone's name meanwhile).
systemctl stop ssh.service || { echo "cannot stop sshd" >&2; exit 1; }
umount ${WORK_DISK_MOUNT} || { echo "cannot unmount ${WORK_DISK_MOUNT}" >&2; exit 1; }
sync
echo 3 >/proc/sys/vm/drop_caches
`;

export const CLONE_SCRIPT = `set -u
status=0
fail() { echo "banger-clone: $*" >&2; status=1; }
date -u -s "@$1" >/dev/null || fail "cannot set the clock"
printf '%s\\n' "$2" >/etc/machine-id || fail "cannot write /etc/machine-id"
perl -e 'open(my $f, ">", "/dev/urandom") or die "$!\\n"; my $b = pack("H*", $ARGV[0]);
  ioctl($f, 0x40085203, pack("ii", length($b) * 8, length($b)) . $b) or die "RNDADDENTROPY: $!\\n";
  ioctl($f, 0x5207, 0) or die "RNDRESEEDCRNG: $!\\n";' "$3" || fail "cannot reseed the RNG"
nic=''
for d in /sys/class/net/*; do
  [ "\${d##*/}" = lo ] && continue
  nic=\${d##*/}
  break
done
cur=''
[ -n "$nic" ] && read -r cur <"/sys/class/net/$nic/address"
if [ -n "$nic" ] && [ "$cur" != "$4" ]; then
  printf 'link set dev %s down\\nlink set dev %s address %s\\nlink set dev %s up\\nneigh flush dev %s\\n' "$nic" "$nic" "$4" "$nic" "$nic" | ip -batch - || fail "cannot set the MAC of $nic"
fi
rm -f ${SSH_HOST_KEY} ${SSH_HOST_KEY}.pub
/${GUEST_SCRIPT_PATH} || fail "banger-guest-config failed"
# sshd starts only now, with this clone's key (the template stopped it)
systemctl start ssh.service || fail "cannot start sshd"
exit $status
`;

/** Changes whenever what a snapshot's guest was prepared with, or what a clone runs, changes. */
export const CLONE_CONTRACT = `clone-1-${createHash('sha256').update(JSON.stringify([TEMPLATE_PREP_SCRIPT, CLONE_SCRIPT])).digest('hex').slice(0, 12)}`;

/** The clone script's arguments (fresh for every clone; the time is taken last, just before it runs). */
export function cloneArgs(mac: string, now: () => number = Date.now): string[] {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac)) throw new Error(`invalid MAC ${mac}`);
  const ms = now();
  const time = `${Math.floor(ms / 1000)}.${String(ms % 1000).padStart(3, '0')}`;
  return [time, randomBytes(16).toString('hex'), randomBytes(32).toString('hex'), mac];
}
