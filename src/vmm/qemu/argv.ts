/**
 * The QEMU command line for one VM (pure: no I/O). QEMU runs the `microvm`
 * machine: no PCI, no firmware boot, virtio-mmio devices that the Debian
 * cloud kernel finds through ACPI (it lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES,
 * so `acpi=on` is load-bearing).
 *
 * Device order is part of the guest contract:
 *   /dev/vda  root filesystem (the VM's qcow2 overlay), read-write
 *   /dev/vdb  per-boot config disk (raw), read-only
 *   /dev/vdc  persistent work disk (raw ext4, label banger-work), read-write;
 *             the guest mounts it at /root
 *   eth0      virtio-net on QEMU user networking, SSH forwarded from 127.0.0.1
 *   /dev/virtio-ports/org.qemu.guest_agent.0  qemu-guest-agent channel
 *   ttyS0     serial console, written to the VM's console.log
 * (verified on QEMU 7.2 with the Debian 6.1 cloud kernel: virtio-mmio
 * devices enumerate in command-line order).
 *
 * QEMU is started with -daemonize: the command returns once the VM is set up
 * (startup errors are printed on stderr and the exit code is non-zero); the VM
 * process is a grandchild in its own session (it is NOT a session leader: QEMU
 * forks, calls setsid, and forks again) and writes its pid to paths.pidFile.
 */
import { BangerError } from '../../errors/errors.js';
import { vmNameProblem } from '../../model/names.js';

export const QEMU_SYSTEM_X86_64 = 'qemu-system-x86_64';

export type QemuAccel = 'kvm' | 'tcg';

/**
 * The microvm machine options:
 *   acpi=on       the kernel discovers virtio-mmio devices (and the power
 *                 button used by system_powerdown) through ACPI
 *   rtc=on        the guest reads wall-clock time at boot (no kvmclock on TCG)
 *   pit=on        timer calibration under TCG needs the i8254
 *   pic=off       the IO-APIC is enough; one device less to emulate
 *   isa-serial=on ttyS0, the console
 *   x-option-roms=off  direct kernel boot needs no option ROMs
 */
export const MICROVM_MACHINE = 'microvm,acpi=on,rtc=on,pit=on,pic=off,isa-serial=on,x-option-roms=off';

/**
 * The revision of the machine this file and the driver describe (devices,
 * their order and options, and the kernel command line a template booted
 * with). A saved state only loads into the same machine, and a clone keeps
 * the kernel its template booted: the driver's version() carries the
 * revision, so a snapshot made before a change is made again.
 * 3: tsc=reliable under TCG.
 */
export const MACHINE_REVISION = 3;

/**
 * TCG's translation cache in MiB (QEMU's default under TCG is 1 GiB; unused
 * under KVM). It trades boot speed for host memory: a full cache is flushed
 * whole and everything is translated again, and the pages it touched stay in
 * QEMU's RSS. One cold boot of the default image to ready (QMP `info jit`,
 * measured here): 64 MiB flushed 10 times and generated ~683 MiB of code,
 * 128 MiB 3 times (~461 MiB), 256 MiB once (~373 MiB); 5 alternating cold
 * creates, 64 against 256 MiB: median 26.4 s against 22.2 s. An idle cold VM
 * held 327 MiB of host RSS with 64, 388 with 128 and 519 with 256. 7
 * alternating cold creates, 128 against 256 MiB: median 24.1 s against
 * 24.7 s (no difference beyond the noise), so 128: 256's speed for less
 * memory.
 */
export const TCG_TB_MIB = 128;

/** The guest-agent port name qemu-ga looks for by default. */
export const GUEST_AGENT_PORT = 'org.qemu.guest_agent.0';

/** The files one QEMU uses: the VM's disks and console, and QEMU's own pid file and sockets. */
export interface QemuPaths {
  overlay: string;
  configDisk: string;
  workDisk: string;
  /** More raw disks, read-write, after the work disk (a build VM's target). */
  extraDisks?: string[];
  consoleLog: string;
  pidFile: string;
  qmpSocket: string;
  qgaSocket: string;
}

export interface QemuSpec {
  vcpu: number;
  memoryMib: number;
  accel: QemuAccel;
  kernel: string;
  /** Empty string: boot without an initrd. */
  initrd: string;
  cmdline: string;
  paths: QemuPaths;
  /** Host loopback port forwarded to the guest's port 22 (user networking; ignored with `tap`). */
  sshHostPort: number;
  /** Bridge networking: attach eth0 to this existing tap (made by the root helper, owned by our user). */
  tap?: string;
  mac: string;
  /** User networking with restrict=on: the guest cannot reach the host's network (hostfwd still works). */
  restrictNet?: boolean;
  /** Shown by QEMU as the guest name (-name guest=...). */
  name?: string;
  /**
   * A snapshot template: eth0 is there but has no network backend (no
   * -netdev), so the saved state holds none (see VmmDriver BootNetwork 'none').
   */
  noNetBackend?: boolean;
  /**
   * Start paused, waiting for a saved state (QMP migrate-incoming) instead
   * of booting the kernel: a clone of a snapshot.
   */
  incoming?: boolean;
}

/** -cpu for each accelerator: `host` passes the real CPU through under KVM; `max` is TCG's richest model. */
export function cpuModel(accel: QemuAccel): string {
  return accel === 'kvm' ? 'host' : 'max';
}

/**
 * QEMU option values are comma-separated key=value lists: a literal comma
 * in a value (a path) is written as two commas.
 */
export function optValue(value: string): string {
  return value.replaceAll(',', ',,');
}

/** sun_path is 108 bytes including the terminating NUL. */
export const MAX_UNIX_SOCKET_PATH = 107;

export function qemuArgv(spec: QemuSpec): string[] {
  validateSpec(spec);
  const p = spec.paths;
  const hostfwd = `hostfwd=tcp:127.0.0.1:${spec.sshHostPort}-:22`;
  const argv: string[] = [
    QEMU_SYSTEM_X86_64,
    ...(spec.name !== undefined ? ['-name', `guest=${optValue(spec.name)}`] : []),
    '-M', MICROVM_MACHINE,
    '-accel', spec.accel === 'tcg' ? `tcg,tb-size=${TCG_TB_MIB}` : spec.accel,
    '-cpu', cpuModel(spec.accel),
    '-smp', String(spec.vcpu),
    '-m', `${spec.memoryMib}M`,
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-display', 'none',
    // A guest reboot or a kernel panic (panic=-1) ends the VM instead of looping.
    '-no-reboot',
    '-daemonize',
    '-pidfile', p.pidFile,

    // direct kernel boot
    '-kernel', spec.kernel,
    ...(spec.initrd !== '' ? ['-initrd', spec.initrd] : []),
    '-append', spec.cmdline,

    // /dev/vda: root overlay (first virtio-blk-device)
    '-drive', `id=root,if=none,file=${optValue(p.overlay)},format=qcow2,cache=writeback,discard=unmap`,
    '-device', 'virtio-blk-device,drive=root',
    // /dev/vdb: config disk, read-only (second virtio-blk-device)
    '-drive', `id=config,if=none,file=${optValue(p.configDisk)},format=raw,readonly=on`,
    '-device', 'virtio-blk-device,drive=config',
    // /dev/vdc: work disk, read-write (third virtio-blk-device). discard=unmap
    // keeps the sparse file sparse when the guest frees blocks (and when its
    // ext4 zeroes the lazily initialised inode tables with WRITE_ZEROES).
    '-drive', `id=work,if=none,file=${optValue(p.workDisk)},format=raw,cache=writeback,discard=unmap`,
    '-device', 'virtio-blk-device,drive=work',
    // /dev/vdd, …: a build VM's extra disks (raw, read-write)
    ...(p.extraDisks ?? []).flatMap((d, i) => ['-drive', `id=extra${i},if=none,file=${optValue(d)},format=raw,cache=writeback`, '-device', `virtio-blk-device,drive=extra${i}`]),

    // eth0: a tap on banger's bridge, or user networking with SSH forwarded
    // from loopback only, or (a snapshot template) no backend at all
    ...(spec.noNetBackend
      ? ['-device', `virtio-net-device,mac=${spec.mac.toLowerCase()}`]
      : [
          '-netdev', spec.tap !== undefined
            ? `tap,id=net0,ifname=${spec.tap},script=no,downscript=no`
            : `user,id=net0,${hostfwd}${spec.restrictNet ? ',restrict=on' : ''}`,
          '-device', `virtio-net-device,netdev=net0,mac=${spec.mac.toLowerCase()}`,
        ]),

    // guest agent channel
    '-chardev', `socket,id=qga0,path=${optValue(p.qgaSocket)},server=on,wait=off`,
    '-device', 'virtio-serial-device',
    '-device', `virtserialport,chardev=qga0,name=${GUEST_AGENT_PORT}`,

    // QMP control socket
    '-qmp', `unix:${optValue(p.qmpSocket)},server=on,wait=off`,

    // virtio-balloon with free page reporting: pages the guest frees (boot
    // leaves many) go back to the host within seconds (measured: a 300 MiB
    // allocation freed in the guest left QEMU's RSS where it was before it
    // within 8 s). Never inflated: it only returns what the guest freed.
    '-device', 'virtio-balloon-device,free-page-reporting=on',

    // serial console -> console.log (truncated at each boot)
    // (a clone appends: the daemon starts its console log with where it came from)
    '-chardev', `file,id=console0,path=${optValue(p.consoleLog)}${spec.incoming ? ',append=on' : ''}`,
    '-serial', 'chardev:console0',

    // a clone: paused (-S) until its state is loaded and checked
    ...(spec.incoming ? ['-S', '-incoming', 'defer'] : []),
  ];
  return argv;
}

const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

function validateSpec(spec: QemuSpec): void {
  const bad = (what: string, hint?: string): never => {
    throw new BangerError('bad_request', `invalid QEMU configuration: ${what}`, hint);
  };
  if (!Number.isInteger(spec.vcpu) || spec.vcpu < 1 || spec.vcpu > 255) bad(`vcpu must be 1-255, got ${spec.vcpu}`);
  if (!Number.isInteger(spec.memoryMib) || spec.memoryMib < 64) bad(`memory must be at least 64 MiB, got ${spec.memoryMib}`);
  if (spec.noNetBackend) {
    if (spec.tap !== undefined) bad('a NIC without a backend cannot have a tap');
  } else if (spec.tap !== undefined) {
    if (!/^[a-z0-9]{1,15}$/.test(spec.tap)) bad(`tap name ${JSON.stringify(spec.tap)} is not an interface name`);
  } else if (!Number.isInteger(spec.sshHostPort) || spec.sshHostPort < 1 || spec.sshHostPort > 65535) {
    bad(`SSH host port must be 1-65535, got ${spec.sshHostPort}`);
  }
  if (!MAC.test(spec.mac)) bad(`MAC address ${JSON.stringify(spec.mac)} is not six hex octets`);
  // bit 0 of the first octet set = multicast: not usable as a NIC address
  if ((parseInt(spec.mac.slice(0, 2), 16) & 1) === 1) bad(`MAC address ${spec.mac} is a multicast address`);
  if (spec.accel !== 'kvm' && spec.accel !== 'tcg') bad(`accelerator must be kvm or tcg, got ${String(spec.accel)}`);
  if (spec.kernel === '') bad('no kernel');
  if (spec.cmdline.includes('\n') || spec.cmdline.includes('\0')) bad('kernel command line contains a newline or NUL');
  for (const [what, path] of [['QMP', spec.paths.qmpSocket], ['guest agent', spec.paths.qgaSocket]] as const) {
    if (Buffer.byteLength(path) > MAX_UNIX_SOCKET_PATH) {
      bad(
        `the ${what} socket path ${path} is longer than ${MAX_UNIX_SOCKET_PATH} bytes (the unix socket limit)`,
        'set BANGER_RUNTIME_DIR (or XDG_RUNTIME_DIR) to a shorter directory',
      );
    }
  }
}

export interface CmdlineOptions {
  /** The VM name, given to systemd as the hostname. Must be a valid VM name (it is a cmdline token). */
  hostname?: string;
  /**
   * The guest's TSC frequency in kHz (`tsc_early_khz=`). Under TCG the guest
   * TSC ticks at the host's TSC rate and the kernel's PIT calibration of it
   * fails on a busy host (measured here: about a third of boots with 2 vCPUs),
   * after which the kernel hangs before the console shows anything useful.
   * Pass the host's TSC frequency for TCG boots; leave it out under KVM.
   */
  tscKhz?: number;
  /** More tokens, each one `key` or `key=value` without whitespace or quotes. */
  extra?: string[];
}

/**
 * The kernel command line. Kernel messages below warning level are kept off
 * the console (loglevel=4) but systemd still prints its boot progress
 * (systemd.show_status=1), so console.log shows how far a boot got.
 */
export function kernelCmdline(opts: CmdlineOptions = {}): string {
  const tokens = [
    'console=ttyS0',
    'root=/dev/vda',
    'rw',
    'net.ifnames=0',
    'biosdevname=0',
    // with -no-reboot, a panic or a reboot ends the QEMU process
    'panic=-1',
    // microvm has no keyboard controller or ACPI reset register: reboot by triple fault
    'reboot=t',
    'loglevel=4',
    'systemd.show_status=1',
  ];
  if (opts.hostname !== undefined) {
    const problem = vmNameProblem(opts.hostname);
    if (problem !== undefined) {
      throw new BangerError('bad_request', `invalid hostname ${JSON.stringify(opts.hostname)} for the kernel command line: ${problem}`);
    }
    tokens.push(`systemd.hostname=${opts.hostname}`);
  }
  if (opts.tscKhz !== undefined) {
    if (!Number.isInteger(opts.tscKhz) || opts.tscKhz <= 0) {
      throw new BangerError('bad_request', `invalid TSC frequency ${opts.tscKhz} kHz`);
    }
    tokens.push(`tsc_early_khz=${opts.tscKhz}`);
  }
  for (const t of opts.extra ?? []) {
    if (!/^[\x21-\x7e]+$/.test(t) || /["'\\]/.test(t)) {
      throw new BangerError(
        'bad_request',
        `invalid kernel command line token ${JSON.stringify(t)}`,
        'each extra token must be printable ASCII without spaces or quotes',
      );
    }
    tokens.push(t);
  }
  return tokens.join(' ');
}
