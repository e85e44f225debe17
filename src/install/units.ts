/**
 * systemd units for `banger system install`: the root helper and the owner
 * user's daemon. What matters most (from the seeds): stopping or restarting
 * either unit must never kill a VM. QEMU runs in bangerd's cgroup, so the
 * daemon unit signals only its main process (KillMode=process) and never
 * SIGKILLs what is left (SendSIGKILL=no; KillMode alone still SIGKILLs
 * leftovers in the final stage). The helper starts no VM, but gets the same
 * two lines so nothing in its cgroup is ever swept. Runtime directories are
 * preserved across restarts: the VMs' QMP and agent sockets live there.
 * Both run from the root-owned install (package.ts), so the user cannot
 * change the code the helper runs as root.
 */

export interface UnitParams {
  /** Absolute, root-owned path of node (install.ts checks it). */
  node: string;
  /**
   * The root-owned install the units run from (PREFIX/lib/banger/current:
   * its bin/ has banger-helper.js and bangerd.js), never the user's checkout.
   */
  root: string;
  user: string;
  uid: number;
  gid: number;
  home: string;
  subnet: string;
  bridge: string;
  helperSocket: string;
}

export const HELPER_UNIT = 'banger-helper.service';
export const daemonUnitName = (user: string) => `bangerd-${user}.service`;
/** The daemon's runtime directory under systemd (the CLI looks here first: src/paths). */
export const systemRuntimeDir = (uid: number) => `/run/banger/u${uid}`;

/** A value for an ExecStart= or Environment= line: systemd's own quoting. */
function q(v: string): string {
  if (/["\\\n]/.test(v)) throw new Error(`cannot put ${JSON.stringify(v)} into a unit file`);
  return /[\s'$%;]/.test(v) ? `"${v.replace(/%/g, '%%').replace(/\$/g, '$$$$')}"` : v;
}

export function helperUnit(p: UnitParams): string {
  return `[Unit]
Description=banger root helper (bridge, taps, NAT, .vm resolver routing) for ${p.user}
Documentation=file://${p.root}/docs/ARCHITECTURE.md
After=network.target

[Service]
Type=simple
ExecStart=${q(p.node)} ${q(`${p.root}/bin/banger-helper.js`)} --owner-uid ${p.uid} --owner-gid ${p.gid} --socket ${q(p.helperSocket)} --subnet ${p.subnet} --bridge ${p.bridge} --log /var/log/banger-helper.log
Restart=on-failure
RestartSec=1
# Never sweep the cgroup: a stop or restart touches nothing but this process.
KillMode=process
SendSIGKILL=no
RuntimeDirectory=banger
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
# Hardening: only what ip, iptables, sysctl and resolvectl need.
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE
ProtectSystem=strict
ReadWritePaths=/run /var/log
ProtectHome=yes
PrivateTmp=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
RestrictNamespaces=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
`;
}

export function daemonUnit(p: UnitParams): string {
  return `[Unit]
Description=banger daemon of ${p.user} (owns the VMs)
Documentation=file://${p.root}/docs/ARCHITECTURE.md
Wants=${HELPER_UNIT}
After=${HELPER_UNIT} network.target

[Service]
Type=simple
User=${p.user}
Group=${p.gid}
Environment=HOME=${q(p.home)}
Environment=BANGER_RUNTIME_DIR=${systemRuntimeDir(p.uid)}
Environment=BANGER_HELPER_SOCKET=${q(p.helperSocket)}
ExecStart=${q(p.node)} ${q(`${p.root}/bin/bangerd.js`)} --foreground
Restart=on-failure
RestartSec=1
# QEMU runs in this unit's cgroup: stopping or restarting the daemon must
# signal the daemon alone, and nothing may SIGKILL the VMs afterwards.
KillMode=process
SendSIGKILL=no
RuntimeDirectory=banger/u${p.uid}
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
`;
}
