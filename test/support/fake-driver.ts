/**
 * A VMM driver and guest channels with no VM behind them, for the lifecycle
 * tests of the daemon (src/daemon/vm-lifecycle.test.ts). The "VMM process"
 * is an entry in a table; its "pid file" is a real file in the VM's
 * directory, so a boot that fails after the process started is found the
 * way a real driver finds it (findOrphan). Nothing here waits: every wait
 * answers at once from the table.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { BangerError } from '../../src/errors/errors.js';
import { SnapshotUnusable, type AccelProbe, type BootSpec, type DiskInfo, type DiskSpec, type SavedState, type VmFiles, type VmmCapabilities, type VmmDriver, type VmmHandle } from '../../src/vmm/driver.js';
import type { AgentSession, GuestOps } from '../../src/daemon/guest-ops.js';

const handleSchema = z.object({ fakeId: z.number().int().positive(), agent: z.string() });
type FakeHandle = z.output<typeof handleSchema>;

export interface FakeProcess {
  id: number;
  name: string;
  files: VmFiles;
  alive: boolean;
  /** Signals received, in order. */
  signals: NodeJS.Signals[];
}

/** What the fake VMM does wrong when asked (each is a test's injected failure). */
export interface FakeFaults {
  /** prepareDisks writes the overlay, then fails. */
  prepareDisks?: boolean;
  /** probeAccel fails. */
  probeAccel?: boolean;
  /** boot starts the process, then fails (as a -daemonize whose pid file came late). */
  bootAfterStart?: boolean;
  /** boot fails before anything runs. */
  bootBeforeStart?: boolean;
  /** The power button reaches the VMM but the guest ignores it. */
  powerdownIgnored?: boolean;
  /** The power button cannot be sent. */
  powerdownFails?: boolean;
  /** Signals the process survives. */
  ignores?: NodeJS.Signals[];
  /** restore finds the snapshot unusable (nothing left running). */
  restoreUnusable?: boolean;
}

export const FAKE_PID_FILE = 'fake-vmm.pid';

export class FakeDriver implements VmmDriver {
  readonly vmm = 'qemu' as const;
  readonly capabilities: VmmCapabilities = { userNetworking: true, tapNetworking: true, agentChannel: 'virtio-serial', qcow2Overlays: true, snapshots: false };
  readonly hostTools = [];
  readonly processes = new Map<number, FakeProcess>();
  faults: FakeFaults = {};
  /** Every call, in order, shared with the fake guest: the stop chain's order is checked on it. */
  readonly calls: string[] = [];
  private nextId = 1;

  probeAccel(): Promise<AccelProbe> {
    this.calls.push('probeAccel');
    if (this.faults.probeAccel) return Promise.reject(new BangerError('operation_failed', 'fake: accelerator probe failed'));
    return Promise.resolve({ usable: false, reason: 'fake driver', ms: 0 });
  }

  prepareDisks(spec: DiskSpec): Promise<void> {
    this.calls.push('prepareDisks');
    writeFileSync(spec.files.overlay, `overlay of ${spec.baseImage}`);
    if (this.faults.prepareDisks) return Promise.reject(new BangerError('operation_failed', 'fake: overlay failed'));
    return Promise.resolve();
  }

  boot(spec: BootSpec): Promise<VmmHandle> {
    this.calls.push('boot');
    if (this.faults.bootBeforeStart) return Promise.reject(new BangerError('operation_failed', 'fake: VMM refused its arguments'));
    const id = this.nextId++;
    this.processes.set(id, { id, name: spec.name, files: spec.files, alive: true, signals: [] });
    writeFileSync(join(spec.files.dir, FAKE_PID_FILE), `${id}\n`);
    if (this.faults.bootAfterStart) return Promise.reject(new BangerError('operation_failed', 'fake: VMM started but boot failed'));
    return Promise.resolve(this.handleOf(id, spec.files));
  }

  findOrphan(files: VmFiles): VmmHandle | undefined {
    let id: number;
    try {
      id = Number(readFileSync(join(files.dir, FAKE_PID_FILE), 'utf8').trim());
    } catch {
      return undefined;
    }
    const p = this.processes.get(id);
    return p?.alive && p.files.dir === files.dir ? this.handleOf(id, files) : undefined;
  }

  parseHandle(json: unknown): VmmHandle | undefined {
    const r = handleSchema.safeParse(json);
    return r.success ? r.data : undefined;
  }

  isAlive(handle: VmmHandle): boolean {
    return this.proc(handle)?.alive ?? false;
  }

  waitForExit(handle: VmmHandle): Promise<boolean> {
    return Promise.resolve(!this.isAlive(handle));
  }

  signal(handle: VmmHandle, signal: NodeJS.Signals): void {
    this.calls.push(`signal ${signal}`);
    const p = this.proc(handle);
    if (!p?.alive) return;
    p.signals.push(signal);
    if (!(this.faults.ignores ?? []).includes(signal)) p.alive = false;
  }

  requestPowerdown(handle: VmmHandle): Promise<void> {
    this.calls.push('powerdown');
    if (this.faults.powerdownFails) return Promise.reject(new BangerError('unavailable', 'fake: no control socket'));
    const p = this.proc(handle);
    if (p && !this.faults.powerdownIgnored) p.alive = false;
    return Promise.resolve();
  }

  agentSocket(handle: VmmHandle): string {
    return own(handle).agent;
  }

  hostProcess(handle: VmmHandle): { pid: number; startTime: string } {
    return { pid: 100_000 + own(handle).fakeId, startTime: '1' };
  }

  describeDisks(files: VmFiles): Promise<DiskInfo[]> {
    return Promise.resolve([{ name: 'root', path: files.overlay, allocatedBytes: 0, virtualBytes: 0 }]);
  }

  version(): Promise<string> {
    return Promise.resolve('fake 1.0.0');
  }

  /** Writes the "state" (the VM's name), ends the process. */
  saveSnapshot(handle: VmmHandle, file: string): Promise<SavedState> {
    this.calls.push('saveSnapshot');
    const p = this.proc(handle);
    const data = Buffer.from(`state of ${p?.name ?? '?'}\n`);
    writeFileSync(file, data);
    if (p) p.alive = false;
    return Promise.resolve({ file, bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
  }

  restore(spec: BootSpec, state: SavedState): Promise<VmmHandle> {
    this.calls.push('restore');
    if (this.faults.restoreUnusable) return Promise.reject(new SnapshotUnusable(`fake: cannot load ${state.file}`));
    return this.boot(spec).then((h) => {
      this.calls.pop(); // the boot inside is part of the restore
      return h;
    });
  }

  /** The processes still running. */
  alive(): FakeProcess[] {
    return [...this.processes.values()].filter((p) => p.alive);
  }

  /** The guest powered itself off (agent shutdown, ssh poweroff): every process of this guest ends. */
  guestPoweredOff(agentSocket?: string): void {
    for (const p of this.processes.values()) {
      if (agentSocket === undefined || join(p.files.socketsDir, 'agent.sock') === agentSocket) p.alive = false;
    }
  }

  private handleOf(id: number, files: VmFiles): FakeHandle {
    return { fakeId: id, agent: join(files.socketsDir, 'agent.sock') };
  }

  private proc(handle: VmmHandle): FakeProcess | undefined {
    return this.processes.get(own(handle).fakeId);
  }
}

function own(handle: VmmHandle): FakeHandle {
  return handleSchema.parse(handle);
}

/** How the fake guest answers on each channel. */
export interface FakeGuestBehaviour {
  /** 'ok': answers; 'down': unreachable; 'no-shutdown': syncs but guest-shutdown fails (then exec poweroff works). */
  agent: 'ok' | 'down' | 'no-shutdown';
  ssh: 'ok' | 'down';
  /** The guest does not power off when asked (agent or SSH): the chain must go on to signals. */
  hangsOnPoweroff?: boolean;
}

/** Guest channels over a FakeDriver's table: what the guest does to its VMM (power off) is reflected there. */
export function fakeGuest(driver: FakeDriver, behaviour: FakeGuestBehaviour): GuestOps & { behaviour: FakeGuestBehaviour } {
  const down = (what: string) => new BangerError('unavailable', `fake: ${what} unreachable`);
  const poweroff = (socket?: string) => {
    if (!ops.behaviour.hangsOnPoweroff) driver.guestPoweredOff(socket);
  };
  const ops = {
    behaviour,
    waitForAgent: (socket: string) => {
      driver.calls.push('agent.wait');
      return ops.behaviour.agent === 'down' ? Promise.reject(down(`agent ${socket}`)) : Promise.resolve();
    },
    waitForSsh: () => {
      driver.calls.push('ssh.wait');
      return ops.behaviour.ssh === 'down' ? Promise.reject(down('ssh')) : Promise.resolve();
    },
    connectAgent: (socket: string): Promise<AgentSession> => {
      driver.calls.push('agent.connect');
      if (ops.behaviour.agent === 'down') return Promise.reject(down(`agent ${socket}`));
      const session: AgentSession = {
        sync: () => {
          driver.calls.push('agent.sync');
          return Promise.resolve();
        },
        shutdown: () => {
          driver.calls.push('agent.shutdown');
          if (ops.behaviour.agent === 'no-shutdown') return Promise.reject(down('guest-shutdown'));
          poweroff(socket);
          return Promise.resolve('closed' as const);
        },
        exec: (path: string, args: string[] = []) => {
          driver.calls.push(`agent.exec ${[path, ...args].join(' ')}`);
          poweroff(socket);
          return Promise.resolve({ exitCode: 0, signal: null, stdout: '', stderr: '', stdoutTruncated: false, stderrTruncated: false });
        },
        close: () => undefined,
      };
      return Promise.resolve(session);
    },
    sshExec: (_target: unknown, command: string) => {
      driver.calls.push(`ssh.exec ${command.split(';')[0]}`);
      if (ops.behaviour.ssh === 'down') return Promise.reject(down('ssh'));
      poweroff();
      return Promise.resolve({ exitCode: 0 });
    },
  };
  return ops;
}
