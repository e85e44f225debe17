/**
 * Guest-side files the image build installs into the rootfs: a systemd unit
 * and a POSIX sh script that, at every boot, mount the work disk at /root
 * (giving a fresh one root's dotfiles), apply this VM's settings from the
 * config disk written by src/guest/config-disk.ts (hostname, SSH keys,
 * network), generate the VM's own SSH host key, and grow the root fs.
 *
 * The work disk (label banger-work, src/guest/work-disk.ts) is mounted at
 * /root by the script (not from /etc/fstab: see WORK_DISK_MOUNT_UNIT), before
 * it installs authorized_keys there. systemd tracks that mount as root.mount
 * (from /proc/self/mountinfo) and unmounts it at shutdown, after this unit,
 * ssh and user sessions have stopped (the unit is ordered After=root.mount).
 *
 * The script runs before ssh.service and before network-pre.target, logs
 * every action to the serial console (and the journal), and keeps going
 * when one step fails so SSH still starts; it exits non-zero if any step
 * failed so `systemctl status banger-guest-config` shows it.
 *
 * Under TCG every process start costs tens to hundreds of milliseconds, so
 * the script uses shell builtins wherever it can (read, printf, test).
 */
import { CONFIG_DISK_FILES, CONFIG_DISK_LABEL } from '../guest/config-disk.js';
import { WORK_DISK_LABEL, WORK_DISK_MOUNT } from '../guest/work-disk.js';

export const GUEST_UNIT_NAME = 'banger-guest-config.service';
/** Where the unit lives inside the rootfs (relative to its root). */
export const GUEST_UNIT_PATH = `etc/systemd/system/${GUEST_UNIT_NAME}`;
export const GUEST_SCRIPT_PATH = 'usr/local/libexec/banger-guest-config';
/** Marker the script writes when it finished (its exit status). */
export const GUEST_DONE_FILE = '/run/banger/guest-config.done';
/**
 * The VM's SSH host key, generated at first boot. Only ed25519: `ssh-keygen
 * -A` also makes an RSA-3072 key, which took ~10 s under TCG.
 */
export const SSH_HOST_KEY = '/etc/ssh/ssh_host_ed25519_key';
/**
 * Console line prefix of the host key report, e.g.
 * `banger-guest-config: ssh host key ssh-ed25519 AAAA…` (lets the host pin it).
 */
export const HOST_KEY_LOG_PREFIX = 'banger-guest-config: ssh host key ';

/**
 * The image's /root as it was built (dotfiles), copied by the image build
 * (relative to the rootfs); the script copies it onto a fresh work disk.
 */
export const ROOT_SKEL_PATH = 'usr/local/share/banger/root-skel';
/** Written on the work disk once it has root's dotfiles. */
export const WORK_DISK_MARKER = `${WORK_DISK_MOUNT}/.banger-work-initialized`;
/**
 * systemd's unit for the work disk's mount (/root → root.mount), made by
 * systemd from /proc/self/mountinfo when the script mounts /root.
 *
 * Why the script mounts it rather than an fstab line (`LABEL=banger-work
 * /root ext4 nofail,x-systemd.device-timeout=…`), tried on this image under
 * TCG: systemd's device timeout runs from systemd's start, and the disk's
 * udev by-label unit showed up ~7 s after that on a loaded 2-core host, so a
 * 10 s timeout is a coin toss away from silently booting with the image's
 * /root (files written there are hidden by the work disk at the next boot);
 * and the fstab fsck pass put 2.3 s of e2fsck on the boot-to-SSH path (the
 * kernel replays the ext4 journal on mount anyway). The script's wait starts
 * once udev has been triggered, like the config disk's.
 */
export const WORK_DISK_MOUNT_UNIT = 'root.mount';
/** Mount options of the work disk in the guest (it holds what users build: no noexec). */
export const WORK_DISK_MOUNT_OPTIONS = 'rw,nosuid,nodev';

export const GUEST_UNIT = `# Installed by banger's image build. Applies this VM's settings from the
# banger config disk (label ${CONFIG_DISK_LABEL}) at every boot, and mounts the
# work disk (label ${WORK_DISK_LABEL}) at ${WORK_DISK_MOUNT}.
# After=${WORK_DISK_MOUNT_UNIT}: the mount this script makes becomes ${WORK_DISK_MOUNT_UNIT}; the
# ordering makes shutdown unmount ${WORK_DISK_MOUNT} only after this unit, ssh and user
# sessions have stopped.
[Unit]
Description=banger per-VM configuration (work disk, hostname, SSH keys, network)
DefaultDependencies=no
Wants=network-pre.target systemd-udev-trigger.service
After=local-fs.target ${WORK_DISK_MOUNT_UNIT} systemd-remount-fs.service systemd-udevd.service systemd-udev-trigger.service
Before=network-pre.target ssh.service systemd-user-sessions.service shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/${GUEST_SCRIPT_PATH}
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=120

[Install]
WantedBy=multi-user.target
`;

/** Drop-in that makes ssh.service pull the unit in and wait for it. */
export const SSH_DROPIN_PATH = 'etc/systemd/system/ssh.service.d/banger.conf';
export const SSH_DROPIN = `# Installed by banger: the host key and authorized_keys come from ${GUEST_UNIT_NAME}.
[Unit]
Wants=${GUEST_UNIT_NAME}
After=${GUEST_UNIT_NAME}
`;

export const SSHD_CONFIG_PATH = 'etc/ssh/sshd_config.d/banger.conf';
export const SSHD_CONFIG = `# Installed by banger: key-only root login; one host key per VM, made at
# first boot by ${GUEST_UNIT_NAME}.
HostKey ${SSH_HOST_KEY}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
`;

const F = CONFIG_DISK_FILES;

export const GUEST_SCRIPT = `#!/bin/sh
# banger-guest-config: apply this VM's settings from the banger config disk.
# Installed by banger's image build; run by ${GUEST_UNIT_NAME} at every boot.
# POSIX sh, written to start few processes (each one is slow under TCG).
# Every step logs to the console; a failed step does not stop the others,
# but makes the script exit 1.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

LABEL=${CONFIG_DISK_LABEL}
WORK_LABEL=${WORK_DISK_LABEL}
WORK=${WORK_DISK_MOUNT}
WORK_MARKER=${WORK_DISK_MARKER}
SKEL=/${ROOT_SKEL_PATH}
RUN=/run/banger
MNT=$RUN/config
DONE=${GUEST_DONE_FILE}
HOSTKEY=${SSH_HOST_KEY}
status=0

log() { printf 'banger-guest-config: %s\\n' "$*"; }
fail() {
  printf 'banger-guest-config: ERROR: %s\\n' "$*"
  status=1
}

mkdir -p "$MNT"

# Grow the root filesystem to fill its disk (the overlay is usually larger
# than the image), in the background while we wait for devices; reported
# at the end. Failure is harmless.
rootdev=/dev/vda
work_dev=''
while read -r src mnt _rest; do
  [ "$mnt" = / ] && rootdev=$src
  [ "$mnt" = "$WORK" ] && work_dev=$src
done </proc/self/mounts
case "$rootdev" in
  /dev/vd* | /dev/sd* | /dev/xvd* | /dev/nvme*) ;;
  *) rootdev=/dev/vda ;;
esac
resize2fs "$rootdev" >"$RUN/resize.log" 2>&1 &
resize_pid=$!

# Sets up= to whole seconds since boot (a builtin read: no process).
uptime_s() {
  read -r up _ </proc/uptime
  up=\${up%%.*}
}

# Waits up to $2 (default 10) seconds of wall time (udev may still be
# probing) for the disk labelled $1; prints its device. Counted by the clock,
# not by rounds: under TCG each \`sleep\` costs as much again as it sleeps.
find_disk() {
  uptime_s
  end=$((up + \${2:-10}))
  i=0
  while :; do
    if [ -b "/dev/disk/by-label/$1" ]; then
      printf '%s\\n' "/dev/disk/by-label/$1"
      return 0
    fi
    # Before udev has made the symlink: probe the disks directly (at once,
    # then about once a second).
    if [ $((i % 5)) -eq 0 ]; then
      dev=$(blkid -c /dev/null -l -o device -t "LABEL=$1" 2>/dev/null || true)
      if [ -n "$dev" ] && [ -b "$dev" ]; then
        printf '%s\\n' "$dev"
        return 0
      fi
    fi
    uptime_s
    [ "$up" -lt "$end" ] || return 1
    sleep 0.2
    i=$((i + 1))
  done
}

# Waits up to ~10 s for the NIC with this MAC; prints its name.
find_nic() {
  i=0
  while [ "$i" -lt 50 ]; do
    for d in /sys/class/net/*; do
      [ -r "$d/address" ] || continue
      read -r a <"$d/address" || continue
      if [ "$a" = "$1" ]; then
        printf '%s\\n' "\${d##*/}"
        return 0
      fi
    done
    sleep 0.2
    i=$((i + 1))
  done
  return 1
}

is_label() {
  case "$1" in
    '' | -* | *- | *[!A-Za-z0-9-]*) return 1 ;;
  esac
  [ "\${#1}" -le 63 ]
}

is_ipv4() {
  case "$1" in
    '' | *[!0-9.]* | .* | *. | *..*) return 1 ;;
  esac
  old_ifs=$IFS
  IFS=.
  # shellcheck disable=SC2086
  set -- $1
  IFS=$old_ifs
  [ "$#" -eq 4 ] || return 1
  for o in "$@"; do
    [ "\${#o}" -le 3 ] && [ "$o" -le 255 ] || return 1
  done
  return 0
}

is_mac() {
  case "$1" in
    [0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]) return 0 ;;
  esac
  return 1
}

hostname_value=''
mac='' addr='' prefix='' gw='' dns=''

# 0. The work disk: mounted at /root before anything is put there. On its
#    first use it gets the image's /root (dotfiles) and /root is made root's,
#    mode 0700. Without one, /root stays the image's.
if [ -n "$work_dev" ]; then
  log "work disk $work_dev was already mounted at $WORK"
elif dev=$(find_disk "$WORK_LABEL"); then
  if mount -t ext4 -o ${WORK_DISK_MOUNT_OPTIONS} "$dev" "$WORK"; then
    work_dev=$dev
  else
    fail "cannot mount the work disk $dev at $WORK; $WORK is the image's"
  fi
else
  log "no work disk (no disk labelled $WORK_LABEL after 10 s); $WORK is the image's"
fi
if [ -n "$work_dev" ]; then
  if [ -e "$WORK_MARKER" ]; then
    log "work disk $work_dev at $WORK"
  elif { [ ! -d "$SKEL" ] || cp -a -n "$SKEL/." "$WORK/"; } &&
    install -d -m 0700 -o root -g root "$WORK" && : >"$WORK_MARKER"; then
    log "work disk $work_dev at $WORK: first use, root's files from $SKEL"
  else
    fail "cannot prepare the work disk $work_dev at $WORK"
  fi
fi

# 1. The config disk (mounted read-only inside the guest, unmounted after):
#    read the settings, install root's authorized_keys.
if dev=$(find_disk "$LABEL"); then
  if mount -t ext4 -o ro,nosuid,nodev,noexec "$dev" "$MNT"; then
    ver=''
    [ -r "$MNT/${F.version}" ] && read -r ver <"$MNT/${F.version}"
    log "config disk $dev (format $ver)"
    [ "$ver" = 1 ] || log "unknown config disk format '$ver' (expected 1); trying anyway"
    [ -r "$MNT/${F.hostname}" ] && read -r hostname_value <"$MNT/${F.hostname}"
    if [ -r "$MNT/${F.network}" ]; then
      while IFS='=' read -r key value; do
        case "$key" in
          MAC) mac=$value ;;
          ADDRESS) addr=$value ;;
          PREFIX) prefix=$value ;;
          GATEWAY) gw=$value ;;
          DNS) dns=$value ;;
        esac
      done <"$MNT/${F.network}"
    fi
    if [ -r "$MNT/${F.authorizedKeys}" ]; then
      n=0
      while read -r line; do
        [ -n "$line" ] && n=$((n + 1))
      done <"$MNT/${F.authorizedKeys}"
      if install -d -m 0700 -o root -g root /root/.ssh &&
        install -m 0600 -o root -g root "$MNT/${F.authorizedKeys}" /root/.ssh/authorized_keys; then
        log "authorized_keys: $n key(s)"
      else
        fail "cannot write /root/.ssh/authorized_keys"
      fi
    else
      fail "the config disk has no ${F.authorizedKeys}"
    fi
    # The SSH host key the daemon made, at this VM's first boot: installed
    # with builtins (ssh-keygen in step 3 took ~0.8 s under TCG).
    if [ -s "$MNT/${F.hostKey}" ] && [ -s "$MNT/${F.hostKeyPub}" ]; then
      umask 077
      { while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done <"$MNT/${F.hostKey}"; } >"$HOSTKEY"
      k=$?
      umask 022
      { while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done <"$MNT/${F.hostKeyPub}"; } >"$HOSTKEY.pub"
      p=$?
      if [ "$k" = 0 ] && [ "$p" = 0 ]; then
        log "ssh host key from the config disk"
      else
        rm -f "$HOSTKEY" "$HOSTKEY.pub"
        fail "cannot install the ssh host key from the config disk"
      fi
    fi
    umount "$MNT" || fail "cannot unmount $MNT"
  else
    fail "cannot mount the config disk $dev"
  fi
else
  fail "no disk labelled $LABEL after 10 s; hostname, SSH keys and network are not configured"
fi

# 2. Hostname and /etc/hosts.
if [ -n "$hostname_value" ]; then
  if is_label "$hostname_value"; then
    printf '%s\\n' "$hostname_value" >/etc/hostname
    printf '%s\\n' "$hostname_value" >/proc/sys/kernel/hostname || fail "cannot set the hostname"
    printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\t%s\\n::1\\tlocalhost ip6-localhost ip6-loopback\\nff02::1\\tip6-allnodes\\nff02::2\\tip6-allrouters\\n' \\
      "$hostname_value" >/etc/hosts
    log "hostname $hostname_value"
  else
    fail "refusing hostname '$hostname_value' (not a DNS label)"
  fi
fi

# 3. This VM's own SSH host key (the image ships none): the one installed
#    from the config disk, else the one from an earlier boot, else a new
#    one; logged.
if [ ! -s "$HOSTKEY" ] || [ ! -s "$HOSTKEY.pub" ]; then
  rm -f "$HOSTKEY" "$HOSTKEY.pub"
  ssh-keygen -q -t ed25519 -N '' -C "root@$hostname_value" -f "$HOSTKEY" </dev/null >/dev/null || fail "ssh-keygen failed"
fi
if [ -r "$HOSTKEY.pub" ] && read -r ktype kdata _comment <"$HOSTKEY.pub"; then
  log "ssh host key $ktype $kdata"
fi

# 4. Network: the NIC whose MAC matches; address, default route, resolvers.
if [ -n "$mac" ]; then
  case "$prefix" in
    [1-9] | [12][0-9] | 3[0-2]) ;;
    *) prefix='' ;;
  esac
  if ! is_mac "$mac" || ! is_ipv4 "$addr" || ! is_ipv4 "$gw" || [ -z "$prefix" ]; then
    fail "refusing network settings mac='$mac' address='$addr' prefix='$prefix' gateway='$gw'"
  elif nic=$(find_nic "$mac"); then
    if printf 'link set dev %s up\\naddr flush dev %s\\naddr add %s/%s dev %s\\nroute replace default via %s dev %s\\n' \\
      "$nic" "$nic" "$addr" "$prefix" "$nic" "$gw" "$nic" | ip -4 -batch -; then
      log "network $nic ($mac) $addr/$prefix via $gw"
    else
      fail "cannot configure $nic"
    fi
  else
    fail "no network interface with MAC $mac after 10 s"
  fi
  resolv=''
  for d in $dns; do
    if is_ipv4 "$d"; then
      resolv="\${resolv}nameserver $d
"
    else
      fail "refusing DNS server '$d'"
    fi
  done
  if [ -n "$resolv" ]; then
    [ -L /etc/resolv.conf ] && rm -f /etc/resolv.conf
    printf '# written by banger-guest-config at boot\\n%s' "$resolv" >/etc/resolv.conf
    log "dns $dns"
  fi
fi

# 5. Report the resize started at the top.
if wait "$resize_pid"; then
  how=ok
else
  how='failed (ignored)'
fi
last=''
while read -r line; do
  [ -n "$line" ] && last=$line
done <"$RUN/resize.log"
log "resize2fs $rootdev $how: $last"

printf '%s\\n' "$status" >"$DONE"
log "done (status $status)"
exit "$status"
`;
