/**
 * A VMM driver and guest channels with no VM behind them, for the lifecycle
 * tests of the daemon (src/daemon/vm-lifecycle.test.ts). The "VMM process"
 * is an entry in a table; its "pid file" is a real file in the VM's
 * directory, so a boot that fails after the process started is found the
 * way a real driver finds it (findOrphan). Nothing here waits: every wait
 * answers at once from the table.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { BangerError } from '../../src/errors/errors.js';
import { SnapshotUnusable, type AccelProbe, type BootSpec, type DiskInfo, type DiskSpec, type SavedState, type VmFiles, type VmmCapabilities, type VmmDriver, type VmmHandle } from '../../src/vmm/driver.js';
import type { AgentSession, GuestOps } from '../../src/daemon/guest-ops.js';
import type { ExecOptions, ExecResult } from '../../src/guest/agent.js';
import type { SshdReadiness } from '../../src/guest/sshd-ready.js';
import { CLONE_SCRIPT } from '../../src/guest/clone-identity.js';

/** What a fake clone's identity script prints: its step marks and the host key it made (a valid ed25519 key blob). */
/** The host key a fake cold-booted guest's sshd serves. */
export const FAKE_HOST_KEY = 'AAAAC3NzaC1lZDI1NTE5AAAAIF5oI44ZWbG9v+093kmhWplEwisDjxnqlbsepEg2dspq';
const FAKE_CLONE_STDOUT = 'banger-clone: 1.00 start\nbanger-clone: 1.10 hostname, work disk\nbanger-clone: 1.20 clock, RNG, sync\n';

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
  /** saveSnapshot writes part of the state file, then fails; the VMM keeps running (paused). */
  saveFails?: boolean;
  /** version() fails. */
  versionFails?: boolean;
}

/** One VMM start, as the fake was asked for it. */
export interface FakeStart {
  op: 'boot' | 'restore';
  spec: BootSpec;
  /** restore: the saved state it was given. */
  state?: SavedState;
}

export const FAKE_PID_FILE = 'fake-vmm.pid';

export class FakeDriver implements VmmDriver {
  readonly vmm = 'qemu' as const;
  readonly capabilities: VmmCapabilities;
  readonly hostTools = [];
  readonly processes = new Map<number, FakeProcess>();
  faults: FakeFaults = {};
  /** Every call, in order, shared with the fake guest: the stop chain's order is checked on it. */
  readonly calls: string[] = [];
  /** Every VMM start (boot or restore) with its spec, in order. */
  readonly starts: FakeStart[] = [];
  /** Every prepareDisks spec, in order. */
  readonly diskSpecs: DiskSpec[] = [];
  /** What version() answers (a test changes it to make snapshots stale). */
  vmmVersion = 'fake 1.0.0';
  private nextId = 1;

  /** `snapshots`: the capability (saveSnapshot/restore work either way; the daemon only uses them when it is set). */
  constructor(opts: { snapshots?: boolean } = {}) {
    this.capabilities = { userNetworking: true, tapNetworking: true, agentChannel: 'virtio-serial', qcow2Overlays: true, snapshots: opts.snapshots === true };
  }

  probeAccel(): Promise<AccelProbe> {
    this.calls.push('probeAccel');
    if (this.faults.probeAccel) return Promise.reject(new BangerError('operation_failed', 'fake: accelerator probe failed'));
    return Promise.resolve({ usable: false, reason: 'fake driver', ms: 0 });
  }

  prepareDisks(spec: DiskSpec): Promise<void> {
    this.calls.push('prepareDisks');
    this.diskSpecs.push(spec);
    if (spec.fromSnapshot) {
      // As the real driver: the copy the daemon made is only grown, never replaced.
      if (!existsSync(spec.files.overlay)) return Promise.reject(new BangerError('operation_failed', 'fake: no copy of the snapshot root disk'));
    } else writeFileSync(spec.files.overlay, `overlay of ${spec.baseImage}`);
    if (this.faults.prepareDisks) return Promise.reject(new BangerError('operation_failed', 'fake: overlay failed'));
    return Promise.resolve();
  }

  boot(spec: BootSpec): Promise<VmmHandle> {
    this.calls.push('boot');
    this.starts.push({ op: 'boot', spec });
    return this.start(spec);
  }

  private start(spec: BootSpec): Promise<VmmHandle> {
    if (this.faults.bootBeforeStart) return Promise.reject(new BangerError('operation_failed', 'fake: VMM refused its arguments'));
    const id = this.nextId++;
    this.processes.set(id, { id, name: spec.name, files: spec.files, alive: true, signals: [] });
    writeFileSync(join(spec.files.dir, FAKE_PID_FILE), `${id}\n`);
    writeFileSync(spec.files.consoleLog, `console of ${spec.name}\n`);
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

  /** A small real ext4 (so debugfs can work on it) with a VM's identity in it: host keys, machine-id, random seed. */
  exportRootDisk(files: VmFiles, out: string): Promise<void> {
    this.calls.push('exportRootDisk');
    const tree = mkdtempSync(join(tmpdir(), 'fake-root-'));
    try {
      mkdirSync(join(tree, 'etc/ssh'), { recursive: true });
      mkdirSync(join(tree, 'var/lib/systemd'), { recursive: true });
      writeFileSync(join(tree, 'etc/ssh/ssh_host_ed25519_key'), 'PRIVATE', { mode: 0o600 });
      writeFileSync(join(tree, 'etc/ssh/ssh_host_ed25519_key.pub'), 'PUBLIC');
      writeFileSync(join(tree, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
      writeFileSync(join(tree, 'var/lib/systemd/random-seed'), 'SEED');
      writeFileSync(join(tree, 'etc/overlay-was'), readFileSync(files.overlay, 'utf8'));
      const r = spawnSync('mkfs.ext4', ['-q', '-F', '-d', tree, out, '8M']);
      if (r.status !== 0) return Promise.reject(new BangerError('operation_failed', `fake: mkfs.ext4: ${r.stderr.toString()}`));
    } finally {
      rmSync(tree, { recursive: true, force: true });
    }
    return Promise.resolve();
  }

  describeDisks(files: VmFiles): Promise<DiskInfo[]> {
    return Promise.resolve([{ name: 'root', path: files.overlay, allocatedBytes: 0, virtualBytes: 0 }]);
  }

  version(): Promise<string> {
    if (this.faults.versionFails) return Promise.reject(new BangerError('operation_failed', 'fake: no version'));
    return Promise.resolve(this.vmmVersion);
  }

  /** Writes the "state" (the VM's name), ends the process. */
  saveSnapshot(handle: VmmHandle, file: string): Promise<SavedState> {
    this.calls.push('saveSnapshot');
    const p = this.proc(handle);
    const data = Buffer.from(`state of ${p?.name ?? '?'}\n`);
    if (this.faults.saveFails) {
      writeFileSync(file, data.subarray(0, 3));
      return Promise.reject(new BangerError('operation_failed', 'fake: the migration failed'));
    }
    writeFileSync(file, data);
    if (p) p.alive = false;
    return Promise.resolve({ file, bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
  }

  /** Reads the state as the real one does (the descriptor when given, positionally), refusing one whose size or sha256 is not the recorded one. */
  restore(spec: BootSpec, state: SavedState): Promise<VmmHandle> {
    this.calls.push('restore');
    this.starts.push({ op: 'restore', spec, state });
    if (this.faults.restoreUnusable) return Promise.reject(new SnapshotUnusable(`fake: cannot load ${state.file}`));
    let data: Buffer;
    try {
      data = state.fd === undefined ? readFileSync(state.file) : readAt(state.fd);
    } catch (e) {
      return Promise.reject(new SnapshotUnusable(`fake: cannot read ${state.file}`, { cause: e }));
    }
    if (data.length !== state.bytes || createHash('sha256').update(data).digest('hex') !== state.sha256) {
      return Promise.reject(new SnapshotUnusable(`fake: ${state.file} does not match its sha256`));
    }
    return this.start(spec);
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

/** The whole file behind fd, read positionally (the descriptor's offset is not moved). */
function readAt(fd: number): Buffer {
  const parts: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const buf = Buffer.alloc(64 * 1024);
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) return Buffer.concat(parts);
    parts.push(buf.subarray(0, n));
    pos += n;
  }
}

/** How the fake guest answers on each channel. */
export interface FakeGuestBehaviour {
  /** 'ok': answers; 'down': unreachable; 'no-shutdown': syncs but guest-shutdown fails (then exec poweroff works). */
  agent: 'ok' | 'down' | 'no-shutdown';
  ssh: 'ok' | 'down';
  /** What the agent's look at sshd finds on a cold boot (default 'listening', with FAKE_HOST_KEY). */
  sshd?: 'listening' | 'unsure' | 'down';
  /** The guest does not power off when asked (agent or SSH): the chain must go on to signals. */
  hangsOnPoweroff?: boolean;
  /** This many agent waits never answer (a guest stalled in early boot; its console never grows): they end only when aborted. */
  agentStalls?: number;
  /**
   * What an agent exec returns (default: exit 0, no output); it may wait
   * (a long script). Only the stop chain's `systemctl poweroff` powers the
   * guest off.
   */
  exec?: (call: FakeExec) => Promise<Partial<ExecResult> | undefined> | Partial<ExecResult> | undefined;
}

/** One agent exec the fake guest received. */
export interface FakeExec {
  socket: string;
  path: string;
  args: string[];
  /** What was fed on its stdin. */
  input: string | undefined;
}

/** Guest channels over a FakeDriver's table: what the guest does to its VMM (power off) is reflected there. */
export function fakeGuest(driver: FakeDriver, behaviour: FakeGuestBehaviour): GuestOps & { behaviour: FakeGuestBehaviour; execs: FakeExec[] } {
  const down = (what: string) => new BangerError('unavailable', `fake: ${what} unreachable`);
  const poweroff = (socket?: string) => {
    if (!ops.behaviour.hangsOnPoweroff) driver.guestPoweredOff(socket);
  };
  const ops = {
    behaviour,
    /** Every agent exec, in order. */
    execs: [] as FakeExec[],
    waitForAgent: (socket: string, _deadline: number, signal?: AbortSignal) => {
      driver.calls.push('agent.wait');
      if ((ops.behaviour.agentStalls ?? 0) > 0) {
        ops.behaviour.agentStalls!--;
        return new Promise<void>((_, reject) => {
          const stop = () => reject(new BangerError('interrupted', 'fake: agent wait aborted'));
          if (signal?.aborted) stop();
          else signal?.addEventListener('abort', stop, { once: true });
        });
      }
      return ops.behaviour.agent === 'down' ? Promise.reject(down(`agent ${socket}`)) : Promise.resolve();
    },
    waitForSsh: () => {
      driver.calls.push('ssh.wait');
      return ops.behaviour.ssh === 'down' ? Promise.reject(down('ssh')) : Promise.resolve();
    },
    waitForSshd: (socket: string): Promise<SshdReadiness> => {
      driver.calls.push('sshd.wait');
      if (ops.behaviour.agent === 'down' || ops.behaviour.sshd === 'down') return Promise.reject(down(`agent ${socket}`));
      if (ops.behaviour.sshd === 'unsure') return Promise.resolve({ kind: 'unsure', reason: 'fake: banger-guest-config ended with status 1' });
      return Promise.resolve({ kind: 'listening', hostKey: { keyType: 'ssh-ed25519', keyBase64: FAKE_HOST_KEY } });
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
        exec: async (path: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> => {
          driver.calls.push(`agent.exec ${[path, ...args].join(' ')}`);
          const call: FakeExec = { socket, path, args, input: opts.input === undefined ? undefined : Buffer.from(opts.input).toString() };
          ops.execs.push(call);
          const r = (await ops.behaviour.exec?.(call)) ?? {};
          // The stop chain's fallback (vm-stop.ts): the only exec that powers the guest off.
          if (path === '/bin/systemctl' && args.includes('poweroff')) poweroff(socket);
          const stdout = call.input === CLONE_SCRIPT ? FAKE_CLONE_STDOUT : '';
          return { exitCode: 0, signal: null, stdout, stderr: '', stdoutTruncated: false, stderrTruncated: false, ...r };
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
