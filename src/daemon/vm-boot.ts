/**
 * The boot half of `vm create` and `vm start`, as steps with rollback:
 * config disk → accelerator → QEMU (detached, own session) → guest agent and SSH (waited for side by side).
 * The disks that persist (root overlay, work disk) are made by create only.
 */
import { readFileSync } from 'node:fs';
import { BangerError } from '../errors/errors.js';
import type { Logger } from '../log/log.js';
import type { ProgressEvent, SshTarget, VmRecord, VmRuntime } from '../model/types.js';
import { imagePaths, type Layout, type VmPaths } from '../paths/paths.js';
import type { Runner } from '../system/runner.js';
import { tail } from '../system/runner.js';
import { ensureDir } from '../system/fs.js';
import { freeLoopbackPort } from '../system/ports.js';
import { isSameProcess, killProcess, readCmdline, readPidFile, readStartTime, waitForExit } from '../system/proc.js';
import { kernelCmdline, qemuArgv } from '../vmm/qemu/argv.js';
import { hostTscKhz } from '../vmm/qemu/accel.js';
import { writeConfigDisk } from '../guest/config-disk.js';
import { waitForAgent } from '../guest/agent.js';
import { waitForSsh } from '../guest/ssh.js';
import { ensureKeypair } from '../guest/keys.js';
import { removeRuntime, writeRuntime } from './runtime-file.js';
import type { Step } from './steps.js';
import type { BridgeAttachment } from './network-service.js';

/** User-mode (slirp) network: the guest's fixed address, gateway and DNS. */
export const USER_NET = { address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', dns: ['10.0.2.3'] };

export interface BootContext {
  vm: VmRecord;
  paths: VmPaths;
  layout: Layout;
  runner: Runner;
  log: Logger;
  progress: (ev: ProgressEvent) => void;
  signal?: AbortSignal;
  bootTimeoutMs: number;
  chooseAccel: (kernel: string) => Promise<{ accel: 'kvm' | 'tcg'; warning?: string }>;
  /** Ports handed out but not yet bound by QEMU (shared across boots). */
  reservedPorts: Set<number>;
  targetFor: (rt: VmRuntime) => SshTarget;
  /** Bridge networking: gets the VM its tap (and NAT) from the root helper; undone by detach. */
  bridge?: { attach: () => Promise<BridgeAttachment>; detach: () => Promise<void> };
  /** Test-only fault injection at points inside a step ('qemu-started': QEMU runs, runtime.json not yet written). */
  onFault?: (point: string) => void;
}

/** Which QEMU a kill is for: its pid and start time (a reused pid is never signalled). */
type QemuProcess = Pick<VmRuntime, 'pid' | 'pidStartTime'>;

/**
 * This VM's QEMU when no runtime.json names it: the daemon died (or the
 * step failed) after QEMU started and before runtime.json was written. Found
 * through QEMU's own pid file, and only trusted when that process's argv
 * carries this VM's -pidfile path: a pid reused by anything else is not ours.
 */
export function orphanQemu(p: VmPaths): QemuProcess | undefined {
  const pid = readPidFile(p.pidFile);
  if (pid === undefined) return undefined;
  const argv = readCmdline(pid);
  const at = argv?.indexOf('-pidfile') ?? -1;
  if (!argv || at < 0 || argv[at + 1] !== p.pidFile) return undefined;
  const start = readStartTime(pid);
  return start === null ? undefined : { pid, pidStartTime: start };
}

/** A stable locally administered MAC from the VM id. */
export function macFor(id: string): string {
  const hex = id.padEnd(6, '0').slice(0, 6);
  return `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
}

/** SIGTERM (QEMU exits at once), then SIGKILL; never signals a reused pid. */
export async function killQemu(log: Logger, vmName: string, rt: QemuProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!isSameProcess(rt.pid, rt.pidStartTime)) return;
  killProcess(rt.pid, rt.pidStartTime, signal);
  if (await waitForExit(rt.pid, rt.pidStartTime, 5000)) return;
  log.warn({ vm: vmName, pid: rt.pid, signal }, 'qemu still alive; sending SIGKILL');
  killProcess(rt.pid, rt.pidStartTime, 'SIGKILL');
  await waitForExit(rt.pid, rt.pidStartTime, 5000);
}

/** The boot steps; `result()` gives the runtime once they all ran. */
export function bootSteps(ctx: BootContext): { steps: Step[]; result: () => VmRuntime } {
  const { vm, paths: p, layout, runner, log, progress, signal } = ctx;
  const img = imagePaths(layout, vm.image);
  let accel: 'kvm' | 'tcg' = 'tcg';
  let port = 0;
  let runtime: VmRuntime | undefined;
  let readyBy = 0;
  let attachment: BridgeAttachment | undefined;

  const network: Step[] = ctx.bridge
    ? [
        {
          name: 'network',
          message: 'tap on the bridge (root helper)',
          run: async () => {
            attachment = await ctx.bridge!.attach();
            progress({ stage: 'network', message: `${attachment.tap} on the bridge, guest address ${attachment.ip}` });
          },
          rollback: async () => ctx.bridge!.detach(),
        },
      ]
    : [];

  const steps: Step[] = [
    ...network,
    {
      name: 'config',
      message: 'per-boot config disk (hostname, SSH key, network)',
      run: async () => {
        ensureDir(p.socketsDir);
        const key = await ensureKeypair(runner, layout.sshKey);
        await writeConfigDisk(
          runner,
          p.configDisk,
          {
            hostname: vm.name,
            authorizedKeys: [key.publicKey],
            network: attachment
              ? { mac: attachment.mac, address: attachment.ip, prefixLength: attachment.prefixLength, gateway: attachment.gateway, dns: attachment.dns }
              : { mac: macFor(vm.id), ...USER_NET },
          },
          p.dir,
        );
      },
    },
    {
      name: 'accel',
      message: 'accelerator',
      run: async () => {
        const choice = await ctx.chooseAccel(img.kernel);
        accel = choice.accel;
        if (choice.warning) progress({ stage: 'accel', message: choice.warning, level: 'warn' });
      },
    },
    {
      name: 'boot',
      message: 'starting QEMU',
      run: async () => {
        if (!attachment) {
          port = await freeLoopbackPort(ctx.reservedPorts);
          ctx.reservedPorts.add(port);
        }
        const argv = qemuArgv({
          vcpu: vm.vcpu,
          memoryMib: vm.memoryMib,
          accel,
          kernel: img.kernel,
          initrd: img.initrd,
          // Under TCG the guest's TSC calibration can hang under load unless told the frequency.
          cmdline: kernelCmdline({ hostname: vm.name, tscKhz: accel === 'tcg' ? hostTscKhz() : undefined }),
          paths: p,
          sshHostPort: port,
          tap: attachment?.tap,
          mac: attachment?.mac ?? macFor(vm.id),
          name: vm.name,
          // No route off the host unless the VM was created with --nat.
          restrictNet: !vm.nat,
        });
        log.info({ vm: vm.name, argv }, 'starting qemu');
        // -daemonize: returns once QEMU is set up (errors on stderr); the VM runs in its own session.
        await runner.run(argv, { timeoutMs: 60_000 });
        ctx.onFault?.('qemu-started');
        const pid = readPidFile(p.pidFile);
        const start = pid !== undefined ? readStartTime(pid) : null;
        if (pid === undefined || start === null) {
          throw new BangerError('operation_failed', `QEMU for ${vm.name} started but is not running`, `see ${p.consoleLog}`);
        }
        runtime = {
          pid,
          pidStartTime: start,
          accel,
          sshHost: attachment ? attachment.ip : '127.0.0.1',
          sshPort: attachment ? 22 : port,
          qmpSocket: p.qmpSocket,
          qgaSocket: p.qgaSocket,
          startedAt: new Date().toISOString(),
        };
        writeRuntime(p.runtimeFile, runtime);
        readyBy = Date.now() + ctx.bootTimeoutMs;
        progress({ stage: 'boot', message: `QEMU running (pid ${pid}, ${accel.toUpperCase()})` });
      },
      rollback: async () => {
        // Without a runtime, QEMU may still have started (runner.run failed late): its pid file finds it.
        const qemu = runtime ?? orphanQemu(p);
        if (qemu) await killQemu(log, vm.name, qemu);
        ctx.reservedPorts.delete(port);
        removeRuntime(p.runtimeFile);
      },
    },
    {
      // Both must answer before the VM is ready; waiting for them side by side
      // saves the seconds one of them comes up after the other.
      name: 'ready',
      message: 'waiting for the guest agent and SSH',
      run: async () => {
        // When one wait fails, the other stops too (no retry loop outlives the boot).
        const peer = new AbortController();
        const both = signal ? AbortSignal.any([signal, peer.signal]) : peer.signal;
        const failFast = (e: unknown) => {
          peer.abort();
          throw e;
        };
        const agent = guardBoot(vm, p, runtime!, () => waitForAgent(p.qgaSocket, readyBy, both)).then(
          () => progress({ stage: 'agent', message: 'guest agent answered' }),
          failFast,
        );
        const ssh = guardBoot(vm, p, runtime!, () => waitForSsh(ctx.targetFor(runtime!), { deadlineMs: readyBy, signal: both })).then(
          () => progress({ stage: 'ssh', message: 'SSH answered' }),
          failFast,
        );
        const results = await Promise.allSettled([agent, ssh]);
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        // Report the real failure, not the "interrupted" of the peer we stopped.
        if (failed) {
          const real = results.find(
            (r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof BangerError && r.reason.code === 'interrupted' && !signal?.aborted),
          );
          throw (real ?? failed).reason;
        }
        ctx.reservedPorts.delete(port);
      },
    },
  ];
  return {
    steps,
    result: () => {
      if (!runtime) throw new BangerError('internal', 'boot steps did not run');
      return runtime;
    },
  };
}

/** Runs a readiness wait; if it fails, say whether QEMU died and show the console tail. */
async function guardBoot(vm: VmRecord, p: VmPaths, rt: VmRuntime, wait: () => Promise<void>): Promise<void> {
  try {
    await wait();
  } catch (e) {
    if (!(e instanceof BangerError) || e.code === 'interrupted' || e.code === 'host_key_mismatch') throw e;
    const alive = isSameProcess(rt.pid, rt.pidStartTime);
    let consoleTail = '';
    try {
      consoleTail = tail(readFileSync(p.consoleLog, 'utf8'), 1500);
    } catch {
      /* no console yet */
    }
    throw new BangerError(
      e.code,
      `${vm.name}: ${e.message}${alive ? '' : ' (QEMU exited)'}\n--- console (last lines) ---\n${consoleTail}`,
      e.hint ?? `full console log: ${p.consoleLog}`,
    );
  }
}
