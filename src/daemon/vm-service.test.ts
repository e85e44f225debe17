/** Reconcile rules and input validation, with a real Store, the real QEMU driver and real (sleep) processes standing in for QEMU. */
import { describe, it, expect, afterEach } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../store/store.js';
import { resolveLayout, vmPaths } from '../paths/paths.js';
import { DEFAULT_CONFIG } from '../config/config.js';
import { silentLogger } from '../log/log.js';
import { createRunner } from '../system/runner.js';
import { isSameProcess, killProcess, readStartTime } from '../system/proc.js';
import { ImageService } from './image-service.js';
import { NetworkService } from './network-service.js';
import { VmService } from './vm-service.js';
import { readRuntime, writeRuntime } from './runtime-file.js';
import { builtinDrivers } from '../vmm/drivers.js';
import type { VmRecord, VmState } from '../model/types.js';
import type { Connection } from '../rpc/server.js';
import { BangerError } from '../errors/errors.js';

const runner = createRunner();
const started: Array<{ pid: number; start: string }> = [];
afterEach(() => {
  for (const p of started.splice(0)) killProcess(p.pid, p.start, 'SIGKILL');
});

let idSeq = 0;

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'vmsvc-'));
  const layout = resolveLayout({ BANGER_STATE_DIR: join(root, 's'), BANGER_CACHE_DIR: join(root, 'c'), BANGER_RUNTIME_DIR: join(root, 'r'), BANGER_CONFIG_DIR: join(root, 'cfg') });
  mkdirSync(layout.stateDir, { recursive: true });
  const store = Store.open(layout.dbPath);
  const log = silentLogger();
  const images = new ImageService({ store, runner, layout, config: DEFAULT_CONFIG, log, buildImage: async () => Promise.reject(new Error('no builds in this test')), pullImage: async () => Promise.reject(new Error('no pulls in this test')) });
  // No root helper here: user networking (reconcile has no bridge VMs to look after).
  const network = new NetworkService({ store, log, helperSocket: join(root, 'no-helper.sock'), configured: 'user', dnsPort: 10053 });
  const vms = new VmService({ store, runner, layout, config: DEFAULT_CONFIG, log, images, network, drivers: builtinDrivers({ runner, log }), bootTimeoutMs: 1000 });
  /** A VM row, its directory, and (optionally) a live stand-in process recorded as its QEMU. */
  const addVm = (name: string, state: VmState, opts: { alive?: boolean; deadPid?: boolean; ephemeral?: boolean } = {}) => {
    const vm: VmRecord = {
      id: (++idSeq).toString(16).padStart(12, '0'), name, image: 'bookworm', vcpu: 1, memoryMib: 512, systemOverlayBytes: 1, diskBytes: 1, vmm: 'qemu', network: 'user',
      state, ephemeral: opts.ephemeral ?? false, nat: false, ip: null, kernel: null, lastError: null, createdAt: 'now', updatedAt: 'now',
    };
    store.insertVm(vm);
    const p = vmPaths(layout, vm.id);
    mkdirSync(p.dir, { recursive: true });
    mkdirSync(p.socketsDir, { recursive: true });
    writeFileSync(p.workDisk, 'data');
    let pid = 0;
    let start = '';
    if (opts.alive) {
      pid = runner.spawnDetached(['sleep', '60']);
      start = readStartTime(pid)!;
      started.push({ pid, start });
    } else if (opts.deadPid) {
      pid = process.pid; // alive, but its start time will not match: a reused pid
      start = '1';
    }
    if (pid) {
      const driver = { pid, pidStartTime: start, qmpSocket: p.qmpSocket, qgaSocket: p.qgaSocket };
      writeRuntime(p.runtimeFile, { vmm: 'qemu', accel: 'tcg', sshHost: '127.0.0.1', sshPort: 1, startedAt: 'now', driver });
    }
    return { vm, p, pid, start };
  };
  return { root, store, layout, vms, addVm };
}

describe('VmService.reconcile', () => {
  it("kills a QEMU that started but never reached runtime.json (found by its pid file, trusted only when its argv names that pid file)", async () => {
    const { vms, addVm, store } = setup();
    const c = addVm('halfboot', 'creating');
    const s = addVm('halfstart', 'stopped');
    // Stand-ins whose argv carries -pidfile <the VM's pid file>, as QEMU's does.
    const spawnQemuLike = (pidFile: string) => {
      const pid = runner.spawnDetached([process.execPath, '-e', 'setTimeout(() => undefined, 60000)', '--', '-pidfile', pidFile]);
      const start = readStartTime(pid)!;
      expect(isSameProcess(pid, start)).toBe(true);
      started.push({ pid, start });
      writeFileSync(pidFile, `${pid}\n`);
      return { pid, start };
    };
    const q1 = spawnQemuLike(c.p.pidFile);
    const q2 = spawnQemuLike(s.p.pidFile);
    // A pid file naming a live process that is not this VM's QEMU (a reused pid) is never signalled.
    const other = addVm('reusedpid', 'stopped');
    const bystander = runner.spawnDetached(['sleep', '60']);
    const bystanderStart = readStartTime(bystander)!;
    started.push({ pid: bystander, start: bystanderStart });
    writeFileSync(other.p.pidFile, `${bystander}\n`);
    await new Promise((r) => setTimeout(r, 300));
    expect(isSameProcess(q1.pid, q1.start) && isSameProcess(q2.pid, q2.start)).toBe(true);
    await vms.reconcile();
    await new Promise((r) => setTimeout(r, 200));
    expect(isSameProcess(q1.pid, q1.start)).toBe(false);
    expect(isSameProcess(q2.pid, q2.start)).toBe(false);
    expect(isSameProcess(bystander, bystanderStart)).toBe(true);
    expect(store.findVmByName('halfboot')).toBeUndefined();
    expect(store.findVmByName('halfstart')?.state).toBe('stopped');
  });

  it('adopts a running VM whose QEMU is alive (same pid and start time)', async () => {
    const { vms, addVm, store } = setup();
    const a = addVm('alive', 'running', { alive: true });
    await vms.reconcile();
    expect(store.findVmByName('alive')?.state).toBe('running');
    expect(isSameProcess(a.pid, a.start)).toBe(true);
    expect(vms.show('alive').runtime?.pid).toBe(a.pid);
  });

  it('adopts a running VM whose runtime.json has the shape written before the driver split (an upgrade keeps VMs that run now)', async () => {
    const { vms, addVm, store } = setup();
    const a = addVm('old', 'running');
    const pid = runner.spawnDetached(['sleep', '60']);
    const start = readStartTime(pid)!;
    started.push({ pid, start });
    // Exactly what the previous daemon wrote: QEMU's fields flat beside the daemon's.
    const old = { pid, pidStartTime: start, accel: 'tcg', sshHost: '127.0.0.1', sshPort: 2222, qmpSocket: a.p.qmpSocket, qgaSocket: a.p.qgaSocket, startedAt: '2026-11-29T20:00:00.000Z' };
    writeFileSync(a.p.runtimeFile, JSON.stringify(old, null, 2) + '\n');
    expect(readRuntime(a.p.runtimeFile)).toEqual({
      vmm: 'qemu',
      accel: 'tcg',
      sshHost: '127.0.0.1',
      sshPort: 2222,
      startedAt: '2026-11-29T20:00:00.000Z',
      driver: { pid, pidStartTime: start, qmpSocket: a.p.qmpSocket, qgaSocket: a.p.qgaSocket },
    });
    await vms.reconcile();
    expect(store.findVmByName('old')?.state).toBe('running');
    expect(isSameProcess(pid, start)).toBe(true);
    expect(vms.show('old').runtime).toEqual({ vmm: 'qemu', pid, accel: 'tcg', sshHost: '127.0.0.1', sshPort: 2222, startedAt: '2026-11-29T20:00:00.000Z' });
    expect(vms.sshTarget('old')).toMatchObject({ host: '127.0.0.1', port: 2222 });
    // The adopted VM is still under control: kill reaches its process through the old record.
    await vms.kill('old', 'TERM');
    expect(isSameProcess(pid, start)).toBe(false);
    expect(store.findVmByName('old')?.state).toBe('stopped');
    expect(existsSync(a.p.runtimeFile)).toBe(false);
  });

  it('demotes a running VM whose pid now belongs to another process, and never signals that process', async () => {
    const { vms, addVm, store } = setup();
    const d = addVm('reused', 'running', { deadPid: true });
    await vms.reconcile();
    expect(store.findVmByName('reused')?.state).toBe('stopped');
    expect(existsSync(d.p.runtimeFile)).toBe(false);
    expect(existsSync(d.p.socketsDir)).toBe(false);
    expect(existsSync(d.p.workDisk)).toBe(true); // the disks stay
    expect(isSameProcess(process.pid, readStartTime(process.pid)!)).toBe(true); // we are still here
  });

  it('rolls back a VM caught mid-create or mid-delete, killing its QEMU: no row, no files', async () => {
    const { vms, addVm, store } = setup();
    const c = addVm('half', 'creating', { alive: true });
    const d = addVm('going', 'deleting');
    await vms.reconcile();
    expect(store.listVms()).toEqual([]);
    expect(existsSync(c.p.dir) || existsSync(d.p.dir)).toBe(false);
    await new Promise((r) => setTimeout(r, 100));
    expect(isSameProcess(c.pid, c.start)).toBe(false);
  });

  it('removes ephemeral VMs (their client cannot have survived) and stops a half-started stopped VM', async () => {
    const { vms, addVm, store } = setup();
    addVm('eph', 'running', { alive: true, ephemeral: true });
    const s = addVm('halfstart', 'stopped', { alive: true });
    await vms.reconcile();
    expect(store.findVmByName('eph')).toBeUndefined();
    expect(store.findVmByName('halfstart')?.state).toBe('stopped');
    expect(isSameProcess(s.pid, s.start)).toBe(false);
  });
});

describe('VmService: rows that fail validation are never acted on', () => {
  it("reconcile leaves a row with id '../x' in state creating alone: <state>/x survives, the row stays", async () => {
    const { vms, store, layout, addVm } = setup();
    const victim = join(layout.stateDir, 'x'); // what vmPaths(layout, '../x').dir would be
    mkdirSync(victim);
    writeFileSync(join(victim, 'keep'), 'precious');
    const ok = addVm('ok', 'creating');
    store.insertVm({ ...ok.vm, id: 'ffffffffffff', name: 'hostile' });
    store.db.prepare("UPDATE vms SET id = '../x' WHERE name = 'hostile'").run();
    await vms.reconcile();
    expect(existsSync(join(victim, 'keep'))).toBe(true);
    expect(store.db.prepare("SELECT id FROM vms WHERE name = 'hostile'").get()).toEqual({ id: '../x' });
    expect(store.findVmByName('ok')).toBeUndefined(); // the valid creating row was rolled back as before
    expect(existsSync(ok.p.dir)).toBe(false);
  });

  it("a row with vcpu 'many' is not listed; show and delete are a coded conflict naming the row, and its files stay", async () => {
    const { vms, store, addVm } = setup();
    const bad = addVm('bad', 'stopped');
    addVm('fine', 'stopped');
    store.db.prepare("UPDATE vms SET vcpu = 'many' WHERE name = 'bad'").run();
    expect(vms.list().map((v) => v.name)).toEqual(['fine']);
    const ops: Array<() => unknown> = [() => vms.show('bad'), () => vms.delete('bad', true)];
    for (const op of ops) {
      const e = (await Promise.resolve().then(op).catch((x: unknown) => x)) as BangerError;
      expect(e).toBeInstanceOf(BangerError);
      expect(e.code).toBe('conflict');
      expect(e.message).toMatch(/"bad" \(rowid \d+\).*invalid \(vcpu: /);
    }
    expect(existsSync(bad.p.workDisk)).toBe(true);
    await vms.reconcile();
    expect(existsSync(bad.p.workDisk)).toBe(true);
  });

  it('a runtime.json that does not match its schema reads as no runtime (pid 1 is never adopted)', async () => {
    const { vms, addVm } = setup();
    const a = addVm('r', 'stopped');
    writeFileSync(a.p.runtimeFile, JSON.stringify({ pid: 1, pidStartTime: '1', accel: 'tcg', sshHost: 'h', sshPort: 22, qmpSocket: '/q', qgaSocket: '/g', startedAt: 'now' }));
    expect(vms.show('r').runtime).toBeNull();
    writeFileSync(a.p.runtimeFile, 'null');
    expect(vms.show('r').runtime).toBeNull();
  });
});

describe('VmService input validation', () => {
  const conn: Connection = { id: 'c', closed: false, onClose: () => undefined };
  it.each([
    [{ vcpu: 0 }, /vCPU count must be at least 1/, 'vcpu'],
    [{ vcpu: 4096 }, /more than this host/, 'vcpu'],
    [{ memoryMib: 1 }, /memory must be at least 256/, 'memoryMib'],
    [{ memoryMib: 1024 * 1024 * 1024 }, /more than this host/, 'memoryMib'],
    [{ diskBytes: 1024 }, /work disk size must be at least/, 'diskBytes'],
    [{ diskBytes: 3 * 1024 ** 4 }, /work disk size must be at most 2.0 TiB/, 'diskBytes'],
    [{ image: 'nope' }, /image nope not found/, undefined],
    [{ image: '../../etc' }, /invalid image name/, 'image'],
    [{ name: 'Bad_Name' }, /invalid VM name/, 'name'],
  ])('%j is refused before any side effect, naming the field (never a flag)', async (params, re, field) => {
    const { vms, store, layout } = setup();
    const e = (await vms.create(params, conn, () => undefined).catch((x: unknown) => x)) as BangerError;
    expect(e).toBeInstanceOf(BangerError);
    expect(e.message).toMatch(re);
    expect(e.field).toBe(field);
    expect(`${e.message} ${e.hint}`).not.toMatch(/--[a-z]/);
    expect(store.listVms()).toEqual([]);
    expect(existsSync(layout.vmsDir)).toBe(false);
  });
});
