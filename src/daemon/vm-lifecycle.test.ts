/**
 * The VM lifecycle (create, start, stop chain, kill, delete, restart, and
 * rollback of a failure at each boot step) against a fake VMM driver and
 * fake guest channels (test/support/fake-driver.ts), with the real Store,
 * NetworkService (user networking), config and work disks (mkfs.ext4) and
 * step runner. No VM, no QEMU.
 */
import { describe, it, expect } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { DEFAULT_CONFIG } from '../config/config.js';
import { silentLogger } from '../log/log.js';
import type { ImageRecord, ProgressEvent } from '../model/types.js';
import { resolveLayout, vmPaths } from '../paths/paths.js';
import type { Connection } from '../rpc/server.js';
import { createRunner, type Runner } from '../system/runner.js';
import { Store } from '../store/store.js';
import type { ImageService } from './image-service.js';
import { NetworkService } from './network-service.js';
import { readRuntime } from './runtime-file.js';
import { VmService } from './vm-service.js';
import { FakeDriver, fakeGuest, type FakeFaults, type FakeGuestBehaviour } from '../../test/support/fake-driver.js';

const MIB = 1024 * 1024;
const conn: Connection = { id: 'c', closed: false, onClose: () => undefined };

interface SetupOptions {
  faults?: FakeFaults;
  guest?: FakeGuestBehaviour;
  /** The image step fails. */
  imageFails?: boolean;
  /** mkfs of the config disk fails (the config step). */
  configDiskFails?: boolean;
  /** Throw as this step (or fault point, e.g. 'qemu-started') starts. */
  failAt?: string;
}

function setup(opts: SetupOptions = {}) {
  const root = mkdtempSync(join(tmpdir(), 'lifecycle-'));
  const layout = resolveLayout({ BANGER_STATE_DIR: join(root, 's'), BANGER_CACHE_DIR: join(root, 'c'), BANGER_RUNTIME_DIR: join(root, 'r'), BANGER_CONFIG_DIR: join(root, 'cfg') });
  mkdirSync(layout.stateDir, { recursive: true });
  const store = Store.open(layout.dbPath);
  const log = silentLogger();
  const driver = new FakeDriver();
  driver.faults = opts.faults ?? {};
  const guest = fakeGuest(driver, opts.guest ?? { agent: 'ok', ssh: 'ok' });
  const real = createRunner();
  const runner: Runner = {
    ...real,
    run: (argv, o) =>
      opts.configDiskFails && argv.some((a) => a.includes('config.img'))
        ? Promise.reject(new BangerError('operation_failed', 'fake: mkfs.ext4 of the config disk failed'))
        : real.run(argv, o),
  };
  const image: ImageRecord = { name: 'bookworm', source: 'test', kernelVersion: '6.1', rootfsBytes: 1, packages: [], createdAt: 'now' };
  // Only what VmService asks of images: ensure (the image step) and show.
  const images = {
    ensure: () => (opts.imageFails ? Promise.reject(new BangerError('operation_failed', 'fake: image build failed')) : Promise.resolve(image)),
    show: () => image,
  } as unknown as ImageService;
  const network = new NetworkService({ store, log, helperSocket: join(root, 'no-helper.sock'), configured: 'user', dnsPort: 10053 });
  const onStepStart = (name: string) => {
    if (name === opts.failAt) throw new BangerError('operation_failed', `fake: failure at ${name}`);
  };
  const vms = new VmService({
    store, runner, layout, log, images, network, onStepStart,
    config: { ...DEFAULT_CONFIG, network: 'user' },
    drivers: (vmm) => (vmm === 'qemu' ? driver : undefined),
    guest,
    bootTimeoutMs: 1000,
  });
  const events: ProgressEvent[] = [];
  const create = (name: string, extra: { start?: boolean } = {}) =>
    vms.create({ name, diskBytes: 64 * MIB, ...extra }, conn, (ev) => events.push(ev));
  const pathsOf = (name: string) => vmPaths(layout, vms.show(name).id);
  /** Nothing of any VM is left: no row, no VM dir, no sockets dir, no live VMM process. */
  const nothingLeft = () => {
    expect(store.listVms()).toEqual([]);
    expect(existsSync(layout.vmsDir) ? readdirSync(layout.vmsDir) : []).toEqual([]);
    expect(existsSync(layout.vmSocketsDir) ? readdirSync(layout.vmSocketsDir) : []).toEqual([]);
    expect(driver.alive()).toEqual([]);
  };
  return { root, layout, store, driver, guest, vms, events, create, pathsOf, nothingLeft };
}

async function failure(p: Promise<unknown>): Promise<BangerError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(BangerError);
  return e as BangerError;
}

describe('lifecycle against a fake driver: create and start', () => {
  it('create runs image → disks → config → accel → boot → ready, and persists the driver handle in runtime.json', async () => {
    const { vms, driver, events, create, pathsOf } = setup();
    const res = await create('box');
    expect(res.vm.state).toBe('running');
    expect(events.filter((e) => e.level !== 'warn').map((e) => e.stage).filter((s, i, a) => a.indexOf(s) === i)).toEqual(
      expect.arrayContaining(['image', 'disks', 'config', 'accel', 'boot', 'ready']),
    );
    const stages = events.map((e) => e.stage);
    expect(stages.indexOf('disks')).toBeLessThan(stages.indexOf('config'));
    expect(stages.indexOf('accel')).toBeLessThan(stages.indexOf('boot'));
    expect(stages.indexOf('boot')).toBeLessThan(stages.indexOf('ready'));
    expect(driver.calls).toEqual(['prepareDisks', 'probeAccel', 'boot', 'agent.wait', 'ssh.wait']);
    // The fake probe says no KVM: auto falls back to TCG with a warning.
    expect(events.some((e) => e.stage === 'accel' && e.level === 'warn')).toBe(true);
    const p = pathsOf('box');
    expect(existsSync(p.overlay) && existsSync(p.workDisk) && existsSync(p.configDisk)).toBe(true);
    const rt = readRuntime(p.runtimeFile)!;
    expect(rt).toMatchObject({ vmm: 'qemu', accel: 'tcg', sshHost: '127.0.0.1', driver: { fakeId: 1 } });
    expect(res.ssh).toMatchObject({ host: '127.0.0.1', port: rt.sshPort, user: 'root', hostKeyAlias: 'box.vm' });
    expect(vms.show('box').runtime).toEqual({ vmm: 'qemu', pid: 100_001, accel: 'tcg', sshHost: '127.0.0.1', sshPort: rt.sshPort, startedAt: rt.startedAt });
  });

  it('create --no-start makes the disks only; start boots it; a second start is a no-op', async () => {
    const { vms, driver, create, pathsOf } = setup();
    const res = await create('box', { start: false });
    expect(res.vm.state).toBe('stopped');
    expect(res.ssh).toBeNull();
    expect(driver.calls).toEqual(['prepareDisks']);
    expect(existsSync(pathsOf('box').workDisk)).toBe(true);
    expect(existsSync(pathsOf('box').runtimeFile)).toBe(false);
    const started = await vms.start('box');
    expect(started.vm.state).toBe('running');
    expect(driver.alive()).toHaveLength(1);
    const again = await vms.start('box');
    expect(again.bootMs).toBe(0);
    expect(driver.processes.size).toBe(1);
  });

  it('a start that fails at boot leaves the VM stopped with lastError, no process, no runtime.json, disks kept', async () => {
    const { vms, driver, create, pathsOf } = setup();
    await create('box', { start: false });
    driver.faults = { bootAfterStart: true };
    const e = await failure(vms.start('box'));
    expect(e.message).toMatch(/VMM started but boot failed/);
    const v = vms.show('box');
    expect(v.state).toBe('stopped');
    expect(v.lastError).toMatch(/boot failed/);
    expect(v.runtime).toBeNull();
    expect(driver.alive()).toEqual([]);
    expect(existsSync(pathsOf('box').runtimeFile)).toBe(false);
    expect(existsSync(pathsOf('box').workDisk)).toBe(true);
  });

  it('restart stops (keeping the disks) and boots a new VMM process', async () => {
    const { vms, driver, create } = setup();
    await create('box');
    const res = await vms.restart('box');
    expect(res.vm.state).toBe('running');
    expect([...driver.processes.values()].map((p) => p.alive)).toEqual([false, true]);
    expect(vms.show('box').runtime?.pid).toBe(100_002);
  });
});

describe('lifecycle against a fake driver: the stop chain (agent → ssh → VMM power button → SIGTERM → SIGKILL)', () => {
  const cases: Array<{ title: string; guest: FakeGuestBehaviour; faults?: FakeFaults; report: object; calls: string[] }> = [
    {
      title: 'the agent syncs and shuts the guest down',
      guest: { agent: 'ok', ssh: 'ok' },
      report: { asked: 'agent', synced: true, ended: 'exited' },
      calls: ['agent.connect', 'agent.sync', 'agent.shutdown'],
    },
    {
      title: 'guest-shutdown fails: systemctl poweroff through the agent',
      guest: { agent: 'no-shutdown', ssh: 'ok' },
      report: { asked: 'agent', synced: true, ended: 'exited' },
      calls: ['agent.connect', 'agent.sync', 'agent.shutdown', 'agent.exec /bin/systemctl --no-block poweroff'],
    },
    {
      title: 'no agent: SSH syncs and powers off',
      guest: { agent: 'down', ssh: 'ok' },
      report: { asked: 'ssh', synced: true, ended: 'exited' },
      calls: ['agent.connect', 'ssh.exec sync'],
    },
    {
      title: "no agent, no SSH: the VMM's power button",
      guest: { agent: 'down', ssh: 'down' },
      report: { asked: 'qmp', synced: false, ended: 'exited' },
      calls: ['agent.connect', 'ssh.exec sync', 'powerdown'],
    },
    {
      title: 'the guest ignores the power button: SIGTERM',
      guest: { agent: 'down', ssh: 'down' },
      faults: { powerdownIgnored: true },
      report: { asked: 'qmp', synced: false, ended: 'SIGTERM' },
      calls: ['agent.connect', 'ssh.exec sync', 'powerdown', 'signal SIGTERM'],
    },
    {
      title: 'nothing polite works and the VMM ignores SIGTERM: SIGKILL',
      guest: { agent: 'down', ssh: 'down' },
      faults: { powerdownFails: true, ignores: ['SIGTERM'] },
      report: { asked: 'none', synced: false, ended: 'SIGKILL' },
      calls: ['agent.connect', 'ssh.exec sync', 'powerdown', 'signal SIGTERM', 'signal SIGKILL'],
    },
    {
      title: 'the agent syncs but the guest never powers off: SIGTERM after the window',
      guest: { agent: 'ok', ssh: 'ok', hangsOnPoweroff: true },
      report: { asked: 'agent', synced: true, ended: 'SIGTERM' },
      calls: ['agent.connect', 'agent.sync', 'agent.shutdown', 'signal SIGTERM'],
    },
  ];

  it.each(cases)('$title', async ({ guest: behaviour, faults, report, calls }) => {
    const { vms, driver, guest, create, pathsOf } = setup();
    await create('box');
    guest.behaviour = behaviour;
    driver.faults = faults ?? {};
    driver.calls.length = 0;
    const p = pathsOf('box');
    const res = await vms.stop('box');
    expect(res.report).toMatchObject(report);
    expect(driver.calls).toEqual(calls);
    expect(driver.alive()).toEqual([]);
    expect(res.vm.state).toBe('stopped');
    expect(res.vm.runtime).toBeNull();
    expect(existsSync(p.runtimeFile)).toBe(false);
    expect(existsSync(p.socketsDir)).toBe(false);
    expect(existsSync(p.workDisk) && existsSync(p.overlay)).toBe(true); // the disks stay
  });

  it('stopping a VM whose VMM is already gone asks nothing and reports it', async () => {
    const { vms, driver, create } = setup();
    await create('box');
    driver.guestPoweredOff();
    driver.calls.length = 0;
    const res = await vms.stop('box');
    expect(res.report).toMatchObject({ asked: 'none', ended: 'already gone' });
    expect(driver.calls).toEqual([]);
    expect(res.vm.state).toBe('stopped');
  });
});

describe('lifecycle against a fake driver: kill and delete', () => {
  it('kill sends SIGKILL by default; the VM ends stopped with its runtime released', async () => {
    const { vms, driver, create, pathsOf } = setup();
    await create('box');
    driver.calls.length = 0;
    const v = await vms.kill('box');
    expect(driver.calls).toEqual(['signal SIGKILL']);
    expect(v.state).toBe('stopped');
    expect(v.runtime).toBeNull();
    expect(existsSync(pathsOf('box').runtimeFile)).toBe(false);
    expect(driver.alive()).toEqual([]);
  });

  it('kill TERM of a VMM that survives it escalates to SIGKILL', async () => {
    const { vms, driver, create } = setup();
    await create('box');
    driver.faults = { ignores: ['SIGTERM'] };
    driver.calls.length = 0;
    await vms.kill('box', 'TERM');
    expect(driver.calls).toEqual(['signal SIGTERM', 'signal SIGKILL']);
    expect(driver.alive()).toEqual([]);
  });

  it('delete of a running VM needs force; with it the VMM is stopped and every file and the row go', async () => {
    const { vms, driver, create, nothingLeft } = setup();
    await create('box');
    const e = await failure(vms.delete('box'));
    expect(e.code).toBe('conflict');
    expect(driver.alive()).toHaveLength(1);
    expect(vms.show('box').state).toBe('running');
    driver.calls.length = 0;
    await vms.delete('box', true);
    expect(driver.calls).toEqual(['signal SIGTERM']);
    nothingLeft();
  });

  it('delete of a stopped VM signals nothing', async () => {
    const { vms, driver, create, nothingLeft } = setup();
    await create('box');
    await vms.stop('box');
    driver.calls.length = 0;
    await vms.delete('box');
    expect(driver.calls).toEqual([]);
    nothingLeft();
  });
});

describe('lifecycle against a fake driver: a failed create rolls back everything the earlier steps did', () => {
  const cases: Array<{ at: string; opts: SetupOptions; message: RegExp; signalled?: boolean }> = [
    { at: 'image', opts: { imageFails: true }, message: /image build failed/ },
    { at: 'disks (after the overlay was written)', opts: { faults: { prepareDisks: true } }, message: /overlay failed/ },
    { at: 'config (after the disks)', opts: { configDiskFails: true }, message: /config disk failed/ },
    { at: 'accel', opts: { faults: { probeAccel: true } }, message: /accelerator probe failed/ },
    { at: 'boot, before the VMM started', opts: { faults: { bootBeforeStart: true } }, message: /refused its arguments/ },
    { at: 'boot, after the VMM started (found through the driver: findOrphan)', opts: { faults: { bootAfterStart: true } }, message: /started but boot failed/, signalled: true },
    { at: 'qemu-started (the VMM runs, runtime.json not written yet)', opts: { failAt: 'qemu-started' }, message: /failure at qemu-started/, signalled: true },
    { at: 'ready: the guest agent never answers', opts: { guest: { agent: 'down', ssh: 'ok' } }, message: /agent .* unreachable/, signalled: true },
    { at: 'ready: SSH never answers', opts: { guest: { agent: 'ok', ssh: 'down' } }, message: /ssh unreachable/, signalled: true },
  ];

  it.each(cases)('$at: no row, no file, no process', async ({ opts, message, signalled }) => {
    const { driver, create, nothingLeft } = setup(opts);
    const e = await failure(create('box'));
    expect(e.message).toMatch(message);
    nothingLeft();
    // A VMM that had started was stopped by the boot step's rollback.
    expect([...driver.processes.values()].some((p) => p.signals.includes('SIGTERM'))).toBe(signalled === true);
  });
});

describe('lifecycle against a fake driver: a daemon restart (reconcile)', () => {
  it('a running VM whose VMM is alive is adopted; one whose VMM died is demoted', async () => {
    const { vms, driver, create, pathsOf } = setup();
    await create('alive');
    await create('dead');
    const deadProc = [...driver.processes.values()].find((p) => p.name === 'dead')!;
    deadProc.alive = false;
    await vms.reconcile();
    expect(vms.show('alive').state).toBe('running');
    expect(vms.show('alive').runtime?.pid).toBe(100_001);
    expect(vms.show('dead').state).toBe('stopped');
    expect(existsSync(pathsOf('dead').runtimeFile)).toBe(false);
  });
});
