import { describe, it, expect, afterEach } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { onPath } from '../../system/which.js';
import type { VmPaths } from '../../paths/paths.js';
import { BangerError } from '../../errors/errors.js';
import { createRunner } from '../../system/runner.js';
import { freeLoopbackPort } from '../../system/ports.js';
import { isSameProcess, killProcess, readPidFile, readProcStat, readStartTime, waitForExit } from '../../system/proc.js';
import { GUEST_AGENT_PORT, MICROVM_MACHINE, TCG_TB_MIB, kernelCmdline, optValue, qemuArgv, type QemuSpec } from './argv.js';
import { QmpClient } from './qmp.js';

function pathsIn(dir: string): VmPaths {
  const sockets = join(dir, 'sock');
  return {
    dir,
    overlay: join(dir, 'root.qcow2'),
    configDisk: join(dir, 'config.img'),
    workDisk: join(dir, 'work.ext4'),
    consoleLog: join(dir, 'console.log'),
    pidFile: join(dir, 'qemu.pid'),
    runtimeFile: join(dir, 'runtime.json'),
    socketsDir: sockets,
    qmpSocket: join(sockets, 'qmp.sock'),
    qgaSocket: join(sockets, 'qga.sock'),
  };
}

function spec(over: Partial<QemuSpec> = {}): QemuSpec {
  return {
    vcpu: 2,
    memoryMib: 1024,
    accel: 'tcg',
    kernel: '/img/vmlinuz',
    initrd: '/img/initrd.img',
    cmdline: kernelCmdline({ hostname: 'box' }),
    paths: pathsIn('/state/vms/abc'),
    sshHostPort: 40022,
    mac: '52:54:00:12:34:56',
    ...over,
  };
}

/** The value after each occurrence of `flag`. */
function values(argv: string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag && i + 1 < argv.length ? [argv[i + 1]!] : []));
}

describe('qemuArgv', () => {
  it('runs qemu-system-x86_64 on microvm with the chosen accelerator', () => {
    const tcg = qemuArgv(spec());
    expect(tcg[0]).toBe('qemu-system-x86_64');
    expect(values(tcg, '-M')).toEqual([MICROVM_MACHINE]);
    expect(MICROVM_MACHINE).toMatch(/^microvm,/);
    expect(MICROVM_MACHINE).toContain('acpi=on');
    expect(MICROVM_MACHINE).toContain('rtc=on');
    expect(values(tcg, '-accel')).toEqual([`tcg,tb-size=${TCG_TB_MIB}`]);
    expect(values(tcg, '-cpu')).toEqual(['max']);
    const kvm = qemuArgv(spec({ accel: 'kvm' }));
    expect(values(kvm, '-accel')).toEqual(['kvm']);
    expect(values(kvm, '-cpu')).toEqual(['host']);
    expect(values(tcg, '-smp')).toEqual(['2']);
    expect(values(tcg, '-m')).toEqual(['1024M']);
  });

  it("attaches a build VM's extra disks after the work disk (raw, read-write); a plain VM has none", () => {
    const plain = qemuArgv(spec());
    expect(values(plain, '-drive').map((d) => d.split(',')[0])).toEqual(['id=root', 'id=config', 'id=work']);
    const paths = { ...pathsIn('/state/vms/abc'), extraDisks: ['/cache/build/x/rootfs.ext4'] };
    const argv = qemuArgv(spec({ paths }));
    const drives = values(argv, '-drive');
    expect(drives.map((d) => d.split(',')[0])).toEqual(['id=root', 'id=config', 'id=work', 'id=extra0']);
    expect(drives[3]).toBe('id=extra0,if=none,file=/cache/build/x/rootfs.ext4,format=raw,cache=writeback');
    expect(drives[3]).not.toContain('readonly');
    expect(values(argv, '-device').filter((d) => d.startsWith('virtio-blk-device'))).toEqual([
      'virtio-blk-device,drive=root',
      'virtio-blk-device,drive=config',
      'virtio-blk-device,drive=work',
      'virtio-blk-device,drive=extra0',
    ]);
  });

  it('has no default devices, no display, daemonizes with a pid file', () => {
    const argv = qemuArgv(spec());
    for (const f of ['-nodefaults', '-no-user-config', '-nographic', '-daemonize', '-no-reboot']) expect(argv).toContain(f);
    expect(values(argv, '-display')).toEqual(['none']);
    expect(values(argv, '-pidfile')).toEqual(['/state/vms/abc/qemu.pid']);
  });

  it('boots the kernel directly', () => {
    const argv = qemuArgv(spec());
    expect(values(argv, '-kernel')).toEqual(['/img/vmlinuz']);
    expect(values(argv, '-initrd')).toEqual(['/img/initrd.img']);
    expect(values(argv, '-append')).toEqual([kernelCmdline({ hostname: 'box' })]);
    expect(qemuArgv(spec({ initrd: '' }))).not.toContain('-initrd');
  });

  it('root overlay is the first virtio-blk device, the config disk the second (read-only), the work disk the third', () => {
    const argv = qemuArgv(spec());
    const drives = values(argv, '-drive');
    expect(drives).toEqual([
      'id=root,if=none,file=/state/vms/abc/root.qcow2,format=qcow2,cache=writeback,discard=unmap',
      'id=config,if=none,file=/state/vms/abc/config.img,format=raw,readonly=on',
      'id=work,if=none,file=/state/vms/abc/work.ext4,format=raw,cache=writeback,discard=unmap',
    ]);
    const blk = values(argv, '-device').filter((d) => d.startsWith('virtio-blk-device'));
    // command-line order is /dev/vda, /dev/vdb, /dev/vdc in the guest
    expect(blk).toEqual(['virtio-blk-device,drive=root', 'virtio-blk-device,drive=config', 'virtio-blk-device,drive=work']);
    // and each -device comes after the -drive it names
    const at = (s: string) => argv.indexOf(s);
    expect(at('virtio-blk-device,drive=config')).toBeGreaterThan(at('virtio-blk-device,drive=root'));
    expect(at('virtio-blk-device,drive=work')).toBeGreaterThan(at('virtio-blk-device,drive=config'));
  });

  it('user networking with SSH forwarded from loopback, restricted on request', () => {
    const argv = qemuArgv(spec());
    expect(values(argv, '-netdev')).toEqual(['user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22']);
    expect(values(argv, '-device')).toContain('virtio-net-device,netdev=net0,mac=52:54:00:12:34:56');
    const restricted = qemuArgv(spec({ restrictNet: true, mac: '52:54:00:AB:CD:EF' }));
    expect(values(restricted, '-netdev')).toEqual(['user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22,restrict=on']);
    expect(values(restricted, '-device')).toContain('virtio-net-device,netdev=net0,mac=52:54:00:ab:cd:ef');
  });

  it('bridge networking: eth0 on the given tap, no scripts, no port forward', () => {
    const argv = qemuArgv(spec({ tap: 'bgr0t5', sshHostPort: 0 }));
    expect(values(argv, '-netdev')).toEqual(['tap,id=net0,ifname=bgr0t5,script=no,downscript=no']);
    expect(() => qemuArgv(spec({ tap: 'bgr0t5,script=/bin/evil' }))).toThrow(/not an interface name/);
  });

  it('a snapshot template (noNetBackend): eth0 with its MAC and no backend, no -netdev, no port forward', () => {
    const argv = qemuArgv(spec({ noNetBackend: true, sshHostPort: 0, mac: '52:54:00:AB:CD:EF' }));
    expect(argv).not.toContain('-netdev');
    const nics = values(argv, '-device').filter((d) => d.startsWith('virtio-net-device'));
    expect(nics).toEqual(['virtio-net-device,mac=52:54:00:ab:cd:ef']);
    expect(argv.some((a) => a.includes('hostfwd') || a.includes('netdev='))).toBe(false);
    // the other devices are where a clone expects them
    expect(values(argv, '-drive')).toEqual(values(qemuArgv(spec()), '-drive'));
  });

  it('noNetBackend with a tap is refused', () => {
    let err: unknown;
    try {
      qemuArgv(spec({ noNetBackend: true, tap: 'bgr0t5' }));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BangerError);
    expect((err as BangerError).code).toBe('bad_request');
    expect((err as BangerError).message).toMatch(/without a backend cannot have a tap/);
  });

  it('a clone (incoming) starts paused waiting for its state: -S -incoming defer, once, at the end', () => {
    const argv = qemuArgv(spec({ incoming: true }));
    expect(argv.slice(-3)).toEqual(['-S', '-incoming', 'defer']);
    expect(argv.filter((a) => a === '-S')).toHaveLength(1);
    expect(values(argv, '-incoming')).toEqual(['defer']);
    // same machine as a cold boot otherwise (a saved state loads only into the same devices);
    // only the console file is appended to (the daemon wrote where the clone came from first)
    const cold = qemuArgv(spec());
    const consoleAt = cold.findIndex((a) => a.startsWith('file,id=console0,'));
    expect(argv[consoleAt]).toBe(`${cold[consoleAt]},append=on`);
    expect(argv.slice(0, -3).filter((_, i) => i !== consoleAt)).toEqual(cold.filter((_, i) => i !== consoleAt));
    expect(cold).not.toContain('-S');
    expect(cold).not.toContain('-incoming');
    expect(qemuArgv(spec({ incoming: false }))).toEqual(cold);
  });

  it('guest agent on virtio-serial, QMP and the console on their files', () => {
    const argv = qemuArgv(spec());
    const chardevs = values(argv, '-chardev');
    expect(chardevs).toContain('socket,id=qga0,path=/state/vms/abc/sock/qga.sock,server=on,wait=off');
    expect(chardevs).toContain('file,id=console0,path=/state/vms/abc/console.log');
    const devices = values(argv, '-device');
    expect(devices).toContain('virtio-serial-device');
    expect(devices).toContain(`virtserialport,chardev=qga0,name=${GUEST_AGENT_PORT}`);
    expect(GUEST_AGENT_PORT).toBe('org.qemu.guest_agent.0');
    expect(values(argv, '-qmp')).toEqual(['unix:/state/vms/abc/sock/qmp.sock,server=on,wait=off']);
    expect(values(argv, '-serial')).toEqual(['chardev:console0']);
    // the serial port is the only console: no monitor or parallel port sneaks in
    expect(argv).not.toContain('-monitor');
    expect(argv).not.toContain('stdio');
  });

  it('escapes commas in paths inside option values', () => {
    expect(optValue('/a,b/c')).toBe('/a,,b/c');
    const argv = qemuArgv(spec({ paths: pathsIn('/tmp/x,y') }));
    expect(values(argv, '-drive')[0]).toContain('file=/tmp/x,,y/root.qcow2,format=qcow2');
    expect(values(argv, '-drive')[2]).toContain('file=/tmp/x,,y/work.ext4,format=raw');
    expect(values(argv, '-qmp')).toEqual(['unix:/tmp/x,,y/sock/qmp.sock,server=on,wait=off']);
    // plain arguments are not option lists: no escaping
    expect(values(argv, '-pidfile')).toEqual(['/tmp/x,y/qemu.pid']);
  });

  it('names the guest when asked', () => {
    expect(values(qemuArgv(spec({ name: 'box' })), '-name')).toEqual(['guest=box']);
    expect(qemuArgv(spec())).not.toContain('-name');
  });

  it('rejects bad input with coded errors', () => {
    const bad = (over: Partial<QemuSpec>) => {
      try {
        qemuArgv(spec(over));
      } catch (e) {
        expect(e).toBeInstanceOf(BangerError);
        return (e as BangerError).code;
      }
      return 'accepted';
    };
    expect(bad({ vcpu: 0 })).toBe('bad_request');
    expect(bad({ vcpu: 1.5 })).toBe('bad_request');
    expect(bad({ memoryMib: 16 })).toBe('bad_request');
    expect(bad({ sshHostPort: 0 })).toBe('bad_request');
    expect(bad({ sshHostPort: 70000 })).toBe('bad_request');
    expect(bad({ mac: '52:54:00:12:34' })).toBe('bad_request');
    expect(bad({ mac: '01:00:5e:00:00:01' })).toBe('bad_request'); // multicast
    expect(bad({ cmdline: 'a\nb' })).toBe('bad_request');
    expect(bad({ paths: pathsIn('/' + 'x'.repeat(120)) })).toBe('bad_request'); // socket path too long
    expect(bad({})).toBe('accepted');
  });
});

describe('kernelCmdline', () => {
  it('has the console, the root disk and predictable behaviour on panic', () => {
    const tokens = kernelCmdline().split(' ');
    for (const t of ['console=ttyS0', 'root=/dev/vda', 'rw', 'net.ifnames=0', 'panic=-1', 'reboot=t', 'systemd.show_status=1']) {
      expect(tokens).toContain(t);
    }
    expect(tokens).not.toContain('quiet');
    expect(tokens.some((t) => t.startsWith('systemd.hostname='))).toBe(false);
  });

  it('adds the hostname, the TSC frequency and extra tokens', () => {
    const line = kernelCmdline({ hostname: 'my-vm', tscKhz: 2445406, extra: ['systemd.unit=multi-user.target', 'nokaslr'] });
    const tokens = line.split(' ');
    expect(tokens).toContain('systemd.hostname=my-vm');
    expect(tokens).toContain('tsc_early_khz=2445406');
    expect(tokens.slice(-2)).toEqual(['systemd.unit=multi-user.target', 'nokaslr']);
  });

  it('refuses tokens that would smuggle more arguments', () => {
    expect(() => kernelCmdline({ hostname: 'x init=/bin/sh' })).toThrow(BangerError);
    expect(() => kernelCmdline({ hostname: 'UPPER' })).toThrow(BangerError);
    expect(() => kernelCmdline({ extra: ['a b'] })).toThrow(BangerError);
    expect(() => kernelCmdline({ extra: ['x="y z"'] })).toThrow(BangerError);
    expect(() => kernelCmdline({ extra: [''] })).toThrow(BangerError);
    expect(() => kernelCmdline({ tscKhz: 0 })).toThrow(BangerError);
  });
});

// ---- the whole command line against the real QEMU -----------------------


/**
 * Just enough of a Linux boot-protocol header (bzImage) for QEMU to accept
 * it as a kernel. The VM is started paused (-S), so it never runs: this tests
 * the command line without needing a real kernel.
 */
function fakeBzImage(): Buffer {
  const b = Buffer.alloc(16384);
  b[0x1f1] = 1; // setup_sects
  b.writeUInt16LE(0xaa55, 0x1fe);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(0x020f, 0x206); // boot protocol 2.15
  b[0x211] = 0x01; // LOADED_HIGH
  b.writeUInt32LE(0x37ffffff, 0x22c); // initrd_addr_max
  b.writeUInt32LE(2047, 0x238); // cmdline_size
  return b;
}

const haveQemu = onPath('qemu-system-x86_64') && onPath('qemu-img');

/** The parts of QMP's query-block and query-chardev replies these tests read (zod drops the rest). */
const queryBlock = z.array(
  z.object({
    device: z.string(),
    qdev: z.string().optional(),
    inserted: z
      .object({
        ro: z.boolean(),
        drv: z.string(),
        file: z.string(),
        cache: z.object({ writeback: z.boolean(), direct: z.boolean() }).optional(),
      })
      .optional(),
  }),
);
const queryChardev = z.array(z.object({ label: z.string(), filename: z.string() }));

describe.skipIf(!haveQemu)('qemuArgv against QEMU (paused, fake kernel)', () => {
  const runner = createRunner();
  let vm: { pid: number; start: string } | undefined;
  let dir: string | undefined;

  afterEach(async () => {
    if (vm && isSameProcess(vm.pid, vm.start)) {
      killProcess(vm.pid, vm.start, 'SIGKILL');
      await waitForExit(vm.pid, vm.start, 5000);
    }
    vm = undefined;
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('starts daemonized in its own session with every device wired up', async () => {
    // a comma in the directory name exercises option-value escaping for real
    dir = mkdtempSync(join(tmpdir(), 'banger,argv-'));
    const p = pathsIn(dir);
    mkdirSync(p.socketsDir);
    await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', p.overlay, '64M']);
    writeFileSync(p.configDisk, Buffer.alloc(1024 * 1024));
    writeFileSync(p.workDisk, '');
    truncateSync(p.workDisk, 64 * 1024 * 1024);
    const kernel = join(dir, 'vmlinuz');
    const initrd = join(dir, 'initrd.img');
    writeFileSync(kernel, fakeBzImage());
    writeFileSync(initrd, Buffer.alloc(4096));
    const port = await freeLoopbackPort();

    const argv = [
      ...qemuArgv({ vcpu: 1, memoryMib: 128, accel: 'tcg', kernel, initrd, cmdline: kernelCmdline({ hostname: 'argv-test' }), paths: p, sshHostPort: port, mac: '52:54:00:00:00:01', restrictNet: true }),
      '-S',
    ];
    const t0 = Date.now();
    const res = await runner.run(argv, { timeoutMs: 30_000 });
    // -daemonize: the command returns once QEMU is set up, it does not wait for the VM
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(res.code).toBe(0);

    const pid = readPidFile(p.pidFile);
    expect(pid).toBeDefined();
    const start = readStartTime(pid!);
    expect(start).not.toBeNull();
    vm = { pid: pid!, start: start! };
    const stat = readProcStat(pid!)!;
    // QEMU forks, setsid()s and forks again: its own session, not a session leader
    expect(stat.session).not.toBe(readProcStat(process.pid)!.session);
    expect(stat.pgrp).toBe(stat.session);

    expect(existsSync(p.consoleLog)).toBe(true);
    expect(statSync(p.qgaSocket).isSocket()).toBe(true);

    // the SSH port is forwarded on loopback
    await new Promise<void>((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve();
      });
      s.on('error', reject);
    });

    const qmp = await QmpClient.connect(p.qmpSocket);
    try {
      expect((await qmp.queryStatus()).running).toBe(false);
      const blocks = await qmp.execute('query-block', undefined, { result: queryBlock });
      const byId = Object.fromEntries(blocks.map((b) => [b.device, b.inserted]));
      expect(byId.root).toMatchObject({ ro: false, drv: 'qcow2', file: p.overlay });
      expect(byId.config).toMatchObject({ ro: true, drv: 'raw', file: p.configDisk });
      expect(byId.work).toMatchObject({ ro: false, drv: 'raw', file: p.workDisk });
      const work = blocks.find((b) => b.device === 'work');
      expect(work?.inserted?.cache).toMatchObject({ writeback: true, direct: false });
      const chardevs = await qmp.execute('query-chardev', undefined, { result: queryChardev });
      const labels = chardevs.map((c) => c.label);
      expect(labels).toEqual(expect.arrayContaining(['qga0', 'console0']));
      await qmp.quit();
    } finally {
      qmp.close();
    }
    expect(await waitForExit(vm.pid, vm.start, 5000)).toBe(true);
  });

  it('reports startup errors on stderr with a non-zero exit', async () => {
    dir = mkdtempSync(join(tmpdir(), 'banger-argv-'));
    const p = pathsIn(dir);
    mkdirSync(p.socketsDir);
    const kernel = join(dir, 'vmlinuz');
    writeFileSync(kernel, fakeBzImage());
    // no overlay on disk: QEMU must refuse to start, before daemonizing
    const argv = qemuArgv({ vcpu: 1, memoryMib: 128, accel: 'tcg', kernel, initrd: '', cmdline: 'console=ttyS0', paths: p, sshHostPort: await freeLoopbackPort(), mac: '52:54:00:00:00:02' });
    const res = await runner.run([...argv, '-S'], { timeoutMs: 30_000, allowFailure: true });
    expect(res.code).not.toBe(0);
    expect(res.stderr).toContain('root.qcow2');
    expect(readPidFile(p.pidFile)).toBeUndefined();
  });
});
