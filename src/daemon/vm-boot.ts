/**
 * The boot half of `vm create` and `vm start`, as steps with rollback:
 * config disk → accelerator → the VMM (its driver's boot: detached, own session) → guest agent and SSH (waited for side by side).
 * The disks that persist (root overlay, work disk) are made by create only.
 */
import { appendFileSync, readFileSync, statSync } from 'node:fs';
import { BangerError } from '../errors/errors.js';
import type { Logger } from '../log/log.js';
import type { ProgressEvent, SshTarget, VmRecord, Vmm } from '../model/types.js';
import { imagePaths, type Layout, type VmPaths } from '../paths/paths.js';
import type { Runner } from '../system/runner.js';
import { tail } from '../system/runner.js';
import { ensureDir, writeFileAtomic } from '../system/fs.js';
import { freeLoopbackPort, waitTcpReachable } from '../system/ports.js';
import type { BootSpec, VmmDriver, VmmHandle } from '../vmm/driver.js';
import { clip } from '../model/text.js';
import { CLONE_SCRIPT, cloneArgs } from '../guest/clone-identity.js';
import { newHostKey } from '../guest/host-key.js';
import { verifyOrPin } from '../guest/known-hosts.js';
import type { CloneSource } from './snapshot-service.js';
import { writeConfigDisk, type GuestConfig } from '../guest/config-disk.js';
import { ensureKeypair } from '../guest/keys.js';
import { removeRuntime, writeRuntime, type RuntimeRecord } from './runtime-file.js';
import type { GuestOps } from './guest-ops.js';
import type { Step } from './steps.js';
import type { BridgeAttachment } from './network-service.js';
import { forceStop } from './vm-stop.js';

/** How long a bridge VM that is ready may take to answer a TCP connect from the host. */
const REACHABLE_WAIT_MS = 15_000;

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
  /** Console silence before the agent answers that counts as a stalled boot (default BOOT_STALL_MS). */
  stallMs?: number;
  /** The VM's VMM. */
  driver: VmmDriver;
  /** Agent and SSH readiness waits. */
  guest: GuestOps;
  chooseAccel: (kernel: string) => Promise<{ accel: 'kvm' | 'tcg'; warning?: string }>;
  /** The files of the catalog kernel a VM boots (`vm create --kernel`), pulled first when missing. */
  catalogKernel: (name: string, signal?: AbortSignal) => Promise<BootKernel>;
  /** Ports handed out but not yet bound by QEMU (shared across boots). */
  reservedPorts: Set<number>;
  targetFor: (rt: Pick<RuntimeRecord, 'sshHost' | 'sshPort'>) => SshTarget;
  /** banger's known_hosts pins a key for this VM (it booted before): no host key goes on its config disk. */
  hostKeyPinned: () => boolean;
  /** Bridge networking: gets the VM its tap (and NAT) from the root helper; undone by detach. */
  bridge?: { attach: () => Promise<BridgeAttachment>; detach: () => Promise<void> };
  /**
   * A warm clone: the VMM starts from this snapshot's saved state instead of
   * the kernel, then the 'identity' step makes the guest a VM of its own.
   */
  clone?: CloneSource;
  /** Test-only fault injection at points inside a step ('qemu-started': the VMM runs, runtime.json not yet written). */
  onFault?: (point: string) => void;
}

/** The kernel and initrd a VM boots. */
export interface BootKernel {
  kernel: string;
  initrd: string;
}

/** A stable locally administered MAC from the VM id. */
export function macFor(id: string): string {
  const hex = id.padEnd(6, '0').slice(0, 6);
  return `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
}

/** How the daemon's messages name each VMM. */
export const VMM_NAMES: Record<Vmm, string> = { qemu: 'QEMU', firecracker: 'Firecracker' };

/** What a successful boot leaves: the record written to runtime.json and the driver's handle. */
export interface Booted {
  record: RuntimeRecord;
  handle: VmmHandle;
}

/** The boot steps; `result()` gives the runtime once they all ran. */
export function bootSteps(ctx: BootContext): { steps: Step[]; result: () => Booted } {
  const { vm, paths: p, layout, runner, log, progress, signal, driver } = ctx;
  const img = imagePaths(layout, vm.image);
  // Its image's kernel, or (vm create --kernel) a catalog kernel, found (or pulled) by the 'kernel' step.
  let kernel: BootKernel | undefined = vm.kernel === null ? { kernel: img.kernel, initrd: img.initrd } : undefined;
  const catalogName = vm.kernel;
  const kernelSteps: Step[] =
    catalogName === null
      ? []
      : [
          {
            name: 'kernel',
            message: `kernel ${catalogName} (from the kernel catalog)`,
            run: async () => {
              kernel = await ctx.catalogKernel(catalogName, signal);
            },
          },
        ];
  const vmmName = VMM_NAMES[driver.vmm];
  // User networking: a clone keeps its snapshot's MAC (clone-identity.ts says why); bridge: the address's.
  const userMac = ctx.clone ? ctx.clone.manifest.mac : macFor(vm.id);
  let accel: 'kvm' | 'tcg' = 'tcg';
  let port = 0;
  let handle: VmmHandle | undefined;
  let runtime: RuntimeRecord | undefined;
  let readyBy = 0;
  let attachment: BridgeAttachment | undefined;
  /** This boot's settings: on the config disk, and given to a clone's identity step. */
  let guestConfig: GuestConfig | undefined;

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

  /** A clone's identity step: the clone script through the guest agent (clone-identity.ts). */
  const takeIdentity = async (socket: string | undefined, stop: AbortSignal): Promise<void> => {
    if (socket === undefined) throw new BangerError('internal', `the ${vmmName} driver restores snapshots but has no agent channel`);
    const c0 = Date.now();
    const agent = await ctx.guest.connectAgent(socket, { deadlineMs: readyBy, signal: stop });
    const connectMs = Date.now() - c0;
    try {
      const hostKey = newHostKey(vm.name);
      const args = cloneArgs({ config: guestConfig!, keepNetwork: !attachment, growRoot: vm.systemOverlayBytes > ctx.clone!.manifest.rootBytes, hostKey });
      const t0 = Date.now();
      const r = await agent.exec('/bin/sh', ['-s', '--', ...args], { input: CLONE_SCRIPT, timeoutMs: 60_000 });
      // Where the time went (the script's marks) and what the guest said.
      log.info({ vm: vm.name, connectMs, ms: Date.now() - t0, exitCode: r.exitCode, out: clip(r.stdout.trim(), 4000) }, 'clone identity');
      // The identity steps go on the console too (`vm logs`), where a boot's guest unit lines would be.
      appendFileSync(p.consoleLog, `${clip(r.stdout.trim(), 4000)}\n${r.stderr.trim() ? `${clip(r.stderr.trim(), 2000)}\n` : ''}`);
      if (r.exitCode !== 0) {
        throw new BangerError('operation_failed', `the clone could not take its own identity: ${clip(r.stderr.trim(), 500)}`, `console log: ${p.consoleLog}`);
      }
      // The clone's host key, pinned under its name now. The clone's sshd
      // is the template's and listening (the script checked), so the VM is
      // ready without an SSH round trip (~1.2 s under TCG); the first
      // connection is checked against this pin like any later one.
      const target = ctx.targetFor(runtime!);
      verifyOrPin(target.knownHostsPath, target.hostKeyAlias, hostKey.keyType, hostKey.keyBase64);
    } finally {
      agent.close();
    }
  };

  const steps: Step[] = [
    ...kernelSteps,
    ...network,
    {
      name: 'config',
      message: 'per-boot config disk (hostname, SSH key, network)',
      run: async () => {
        ensureDir(p.socketsDir);
        const key = await ensureKeypair(runner, layout.sshKey);
        guestConfig = {
          hostname: vm.name,
          authorizedKeys: [key.publicKey],
          network: attachment
            ? { mac: attachment.mac, address: attachment.ip, prefixLength: attachment.prefixLength, gateway: attachment.gateway, dns: attachment.dns }
            : { mac: userMac, ...USER_NET },
        };
        // A VM's first cold boot gets its host key from here (later boots
        // keep the guest's; a clone's identity step writes its own).
        const firstKey = !ctx.clone && !ctx.hostKeyPinned() ? newHostKey(vm.name) : undefined;
        await writeConfigDisk(runner, p.configDisk, firstKey ? { ...guestConfig, hostKey: firstKey } : guestConfig, p.dir);
      },
    },
    {
      name: 'accel',
      message: 'accelerator',
      run: async () => {
        const choice = await ctx.chooseAccel(kernel!.kernel);
        accel = choice.accel;
        if (choice.warning) progress({ stage: 'accel', message: choice.warning, level: 'warn' });
      },
    },
    {
      name: 'boot',
      message: ctx.clone ? `starting ${vmmName} from snapshot ${ctx.clone.key}` : `starting ${vmmName}`,
      run: async () => {
        if (!attachment) {
          port = await freeLoopbackPort(ctx.reservedPorts);
          ctx.reservedPorts.add(port);
        }
        const spec: BootSpec = {
          name: vm.name,
          vcpu: vm.vcpu,
          memoryMib: vm.memoryMib,
          accel,
          kernel: kernel!.kernel,
          initrd: kernel!.initrd,
          files: p,
          network: attachment
            ? { mode: 'tap', tap: attachment.tap, mac: attachment.mac }
            : // No route off the host unless the VM was created with --nat.
              { mode: 'user', sshHostPort: port, restrict: !vm.nat, mac: userMac },
        };
        if (ctx.clone) {
          // A clone's console shows no boot (it resumed one): say where it came from, for `vm logs`.
          writeFileAtomic(
            p.consoleLog,
            `banger: ${vm.name} resumed from snapshot ${ctx.clone.key} of image ${vm.image} at ${new Date().toISOString()}; ` +
              `it booted as that snapshot's template (\`banger image show ${vm.image}\`)\n`,
          );
        }
        handle = ctx.clone ? await driver.restore(spec, ctx.clone.state) : await driver.boot(spec);
        ctx.clone?.release();
        ctx.onFault?.('qemu-started');
        runtime = {
          vmm: driver.vmm,
          accel,
          sshHost: attachment ? attachment.ip : '127.0.0.1',
          sshPort: attachment ? 22 : port,
          startedAt: new Date().toISOString(),
          driver: handle,
        };
        writeRuntime(p.runtimeFile, runtime);
        readyBy = Date.now() + ctx.bootTimeoutMs;
        progress({
          stage: 'boot',
          message: `${vmmName} running (pid ${driver.hostProcess(handle).pid}, ${accel.toUpperCase()}${ctx.clone ? ', resumed from the snapshot' : ''})`,
        });
      },
      rollback: async () => {
        // Without a handle the VMM may still have started (boot failed late): the driver finds it.
        const started = handle ?? driver.findOrphan(p);
        if (started) await forceStop(log, vm.name, { driver, handle: started });
        ctx.reservedPorts.delete(port);
        removeRuntime(p.runtimeFile);
      },
    },
    {
      // The agent answers, then SSH (a clone: its identity step alone).
      name: 'ready',
      message: ctx.clone
        ? 'making the clone a VM of its own (clock, machine-id, RNG, host key, hostname, work disk, address)'
        : 'waiting for the guest agent and SSH',
      run: async () => {
        // When one wait fails, the other stops too (no retry loop outlives the boot).
        const peer = new AbortController();
        const both = signal ? AbortSignal.any([signal, peer.signal]) : peer.signal;
        const failFast = (e: unknown) => {
          peer.abort();
          throw e;
        };
        const booted = { driver, handle: handle! };
        // A VMM without an agent channel: SSH alone says the guest is ready.
        const agentSocket = driver.capabilities.agentChannel === 'none' ? undefined : driver.agentSocket(handle!);
        // A clone: its identity step (through the agent) makes its host key,
        // checks that the template's sshd listens, and the key is pinned from
        // its output: no SSH wait. (The template's sshd listens in every clone
        // from the moment it resumes; only the identity step gives it a key.)
        const agent = ctx.clone
          ? guardBoot(vm, p, booted, () => takeIdentity(agentSocket, both)).then(
              () => progress({ stage: 'identity', message: 'the clone has its own identity' }),
              failFast,
            )
          : agentSocket === undefined
            ? Promise.resolve()
            : untilStalled(p.consoleLog, ctx.stallMs ?? BOOT_STALL_MS, both, () => guardBoot(vm, p, booted, () => ctx.guest.waitForAgent(agentSocket, readyBy, both))).then(
                () => progress({ stage: 'agent', message: 'guest agent answered' }),
                failFast,
              );
        // A cold boot: once the agent answers, the agent tells when sshd
        // listens after the guest unit succeeded, and which host key it
        // serves; the daemon pins that key (sshd-ready.ts). An SSH login
        // proved the same ~2 s later under TCG (key exchange and
        // authentication in a guest still booting). When the agent cannot
        // tell (the unit failed, the agent misbehaved) or the VMM has no
        // agent channel, SSH is waited for: attempts 250 ms apart, started
        // only after the agent answers — an attempt made through QEMU's
        // user-mode network before the guest's network is up hangs in
        // slirp's SYN backoff (SSH then answered 2.5 s after sshd listened).
        const waitSsh = () => guardBoot(vm, p, booted, () => ctx.guest.waitForSsh(ctx.targetFor(runtime!), { deadlineMs: readyBy, signal: both }));
        const viaAgent = async (): Promise<void> => {
          const r = await guardBoot(vm, p, booted, () => ctx.guest.waitForSshd(agentSocket!, { deadlineMs: readyBy, signal: both }));
          if (r.kind === 'listening') {
            const target = ctx.targetFor(runtime!);
            verifyOrPin(target.knownHostsPath, target.hostKeyAlias, r.hostKey.keyType, r.hostKey.keyBase64);
            progress({ stage: 'ssh', message: 'sshd listening (host key pinned)' });
            return;
          }
          log.info({ vm: vm.name, reason: r.reason }, 'sshd readiness through the agent unsure; waiting for an SSH login');
          await waitSsh();
          progress({ stage: 'ssh', message: 'SSH answered' });
        };
        const ssh = ctx.clone
          ? Promise.resolve()
          : (agentSocket === undefined ? waitSsh().then(() => progress({ stage: 'ssh', message: 'SSH answered' })) : agent.then(viaAgent)).then(() => undefined, failFast);
        const results = await Promise.allSettled([agent, ssh]);
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        // Report the real failure, not the "interrupted" of the peer we stopped.
        if (failed) {
          const real = results.find(
            (r): r is PromiseRejectedResult => r.status === 'rejected' && !(r.reason instanceof BangerError && r.reason.code === 'interrupted' && !signal?.aborted),
          );
          throw (real ?? failed).reason;
        }
        // Bridge: the guest's address may still be in the host's neighbour table with
        // an earlier VM's MAC (addresses are reused), and a connect then fails with
        // EHOSTUNREACH until ARP resolves it again (seen once: `ssh NAME.vm` right after
        // a create). Ready means reachable from the host: wait for a TCP connect (bounded;
        // a guest that stays unreachable is logged, SSH then says why).
        if (ctx.bridge) {
          const t = ctx.targetFor(runtime!);
          const t0 = Date.now();
          if (!(await waitTcpReachable(t.host, t.port, t0 + REACHABLE_WAIT_MS, signal))) {
            log.warn({ vm: vm.name, host: t.host, port: t.port, ms: Date.now() - t0 }, 'guest not reachable over TCP from the host after it was ready');
          } else if (Date.now() - t0 > 500) {
            log.info({ vm: vm.name, ms: Date.now() - t0 }, 'guest reachable from the host after a wait');
          }
        }
        ctx.reservedPorts.delete(port);
      },
    },
  ];
  return {
    steps,
    result: () => {
      if (!runtime || !handle) throw new BangerError('internal', 'boot steps did not run');
      return { record: runtime, handle };
    },
  };
}

/**
 * How long a cold boot's console may stay silent before the guest agent
 * answers. Seen here about once in 50–150 TCG boots: the console stops
 * after "PCI: Fatal: No config space access function found" (~0.7 s in)
 * and the guest never gets further (the agent wait ran its whole 300 s).
 * A healthy boot under load prints within seconds (initramfs, systemd's
 * status lines), so 45 s of silence is a stall.
 */
export const BOOT_STALL_MS = 45_000;

/** The guest stopped printing during early boot (see BOOT_STALL_MS); the create boots it again once. */
export class BootStalled extends BangerError {
  constructor(seconds: number, consolePath: string) {
    super('timeout', `the guest stalled early in its boot: no console output for ${seconds} s before its agent answered`, `console log: ${consolePath}`);
  }
}

/** `wait()`, unless the console file stops growing for `stallMs` first (then BootStalled). */
async function untilStalled<T>(consolePath: string, stallMs: number, signal: AbortSignal, wait: () => Promise<T>): Promise<T> {
  const done = new AbortController();
  const watch = new Promise<never>((_, reject) => {
    let size = -1;
    let since = Date.now();
    const timer = setInterval(() => {
      if (done.signal.aborted || signal.aborted) return clearInterval(timer);
      let now = 0;
      try {
        now = statSync(consolePath).size;
      } catch {
        /* not there yet */
      }
      if (now !== size) {
        size = now;
        since = Date.now();
      } else if (Date.now() - since >= stallMs) {
        clearInterval(timer);
        reject(new BootStalled(Math.round(stallMs / 1000), consolePath));
      }
    }, Math.min(1000, stallMs / 4));
    done.signal.addEventListener('abort', () => clearInterval(timer), { once: true });
  });
  watch.catch(() => undefined);
  try {
    return await Promise.race([wait(), watch]);
  } finally {
    done.abort();
  }
}

/** Runs a readiness wait; if it fails, say whether the VMM died and show the console tail. */
async function guardBoot<T>(vm: VmRecord, p: VmPaths, booted: { driver: VmmDriver; handle: VmmHandle }, wait: () => Promise<T>): Promise<T> {
  try {
    return await wait();
  } catch (e) {
    if (!(e instanceof BangerError) || e.code === 'interrupted' || e.code === 'host_key_mismatch') throw e;
    const alive = booted.driver.isAlive(booted.handle);
    let consoleTail = '';
    try {
      consoleTail = tail(readFileSync(p.consoleLog, 'utf8'), 1500);
    } catch {
      /* no console yet */
    }
    throw new BangerError(
      e.code,
      `${vm.name}: ${e.message}${alive ? '' : ` (${VMM_NAMES[booted.driver.vmm]} exited)`}\n--- console (last lines) ---\n${consoleTail}`,
      e.hint ?? `full console log: ${p.consoleLog}`,
    );
  }
}
