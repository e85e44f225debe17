/**
 * The VM lifecycle (create, start, stop chain, kill, delete, restart, and
 * rollback of a failure at each boot step) against a fake VMM driver and
 * fake guest channels (test/support/fake-driver.ts), with the real Store,
 * NetworkService (user networking), config and work disks (mkfs.ext4) and
 * step runner. No VM, no QEMU.
 */
import { describe, it, expect, vi } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { BangerError } from '../errors/errors.js';
import { DEFAULT_CONFIG, type Config } from '../config/config.js';
import { silentLogger } from '../log/log.js';
import type { ImageRecord, ProgressEvent } from '../model/types.js';
import { imagePaths, resolveLayout, snapshotPaths, vmPaths, type ImagePaths } from '../paths/paths.js';
import type { Connection } from '../rpc/server.js';
import { createRunner, type Runner } from '../system/runner.js';
import { Store } from '../store/store.js';
import type { ImageService } from './image-service.js';
import { NetworkService, type BridgeAttachment } from './network-service.js';
import { readRuntime } from './runtime-file.js';
import { VmService } from './vm-service.js';
import type { LocalKernel } from '../images/kernels.js';
import { SnapshotService, snapshotKey } from './snapshot-service.js';
import { CLONE_SCRIPT } from '../guest/clone-identity.js';
import { FAKE_HOST_KEY, FakeDriver, fakeGuest, type FakeFaults, type FakeGuestBehaviour } from '../../test/support/fake-driver.js';

const MIB = 1024 * 1024;
const conn: Connection = { id: 'c', closed: false, onClose: () => undefined };

interface SetupOptions {
  faults?: FakeFaults;
  /** Console silence that counts as a stalled boot (the fake VMM never writes a console). */
  stallMs?: number;
  guest?: FakeGuestBehaviour;
  /** The image step fails. */
  imageFails?: boolean;
  /** mkfs of the config disk fails (the config step). */
  configDiskFails?: boolean;
  /** Throw as this step (or fault point, e.g. 'qemu-started') starts. */
  failAt?: string;
  /** Warm clones: the driver has snapshots and VmService a SnapshotService. */
  snapshots?: boolean;
  /** Over the test config (user networking, otherwise the defaults). */
  config?: Partial<Config>;
  /** Bridge networking through a stand-in for the root helper: every VM gets BRIDGE. */
  bridge?: boolean;
  /** Catalog kernels: what `ensure` does (default: the kernel is there, in STATE/kernels/NAME). */
  kernelFails?: boolean;
}

/** What the stand-in root helper attaches a bridge VM to. */
const BRIDGE: BridgeAttachment = { tap: 'bgr0t5', ip: '10.77.0.5', mac: '52:54:00:4d:00:05', prefixLength: 24, gateway: '10.77.0.1', dns: ['10.77.0.1'] };

function setup(opts: SetupOptions = {}) {
  const root = mkdtempSync(join(tmpdir(), 'lifecycle-'));
  const layout = resolveLayout({ BANGER_STATE_DIR: join(root, 's'), BANGER_CACHE_DIR: join(root, 'c'), BANGER_RUNTIME_DIR: join(root, 'r'), BANGER_CONFIG_DIR: join(root, 'cfg') });
  mkdirSync(layout.stateDir, { recursive: true });
  const store = Store.open(layout.dbPath);
  const log = silentLogger();
  const driver = new FakeDriver({ snapshots: opts.snapshots === true });
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
  const image: ImageRecord = { name: 'bookworm', source: 'test', sourceKind: 'debian', sourceRef: 'test', kernelVersion: '6.1', kernel: null, rootfsBytes: 1, packages: [], createdAt: 'now' };
  // Only what VmService asks of images: ensure (the image step) and show.
  const created: ImageRecord[] = [];
  const images = {
    ensure: () => (opts.imageFails ? Promise.reject(new BangerError('operation_failed', 'fake: image build failed')) : Promise.resolve(image)),
    show: () => image,
    // vm commit: the real lock and checks are ImageService's (image-service.test.ts); here make() runs as it would.
    create: async (name: string, _force: boolean, make: (paths: ImagePaths, workDir: string) => Promise<ImageRecord>) => {
      const r = await make(imagePaths(layout, name), join(layout.buildDir, `${name}-work`));
      created.push(r);
      return r;
    },
  } as unknown as ImageService;
  const network = opts.bridge
    ? ({
        resolveMode: () => Promise.resolve({ mode: 'bridge', why: 'test' }),
        allocateIp: () => Promise.resolve(BRIDGE.ip),
        attach: () => Promise.resolve(BRIDGE),
        detach: () => Promise.resolve(),
        reconcile: () => Promise.resolve(),
      } as unknown as NetworkService)
    : new NetworkService({ store, log, helperSocket: join(root, 'no-helper.sock'), configured: 'user', dnsPort: 10053 });
  const config: Config = { ...DEFAULT_CONFIG, network: 'user', ...opts.config };
  const snapshots = opts.snapshots
    ? new SnapshotService({ layout, runner, log, guest, image: () => image, systemOverlayBytes: config.systemOverlayBytes, bootTimeoutMs: 1000 })
    : undefined;
  const onStepStart = (name: string) => {
    if (name === opts.failAt) throw new BangerError('operation_failed', `fake: failure at ${name}`);
  };
  const ensured: string[] = [];
  const kernels = {
    ensure: async (name: string): Promise<LocalKernel> => {
      ensured.push(name);
      if (opts.kernelFails) throw new BangerError('not_found', 'no kernel catalog is configured');
      const dir = join(layout.kernelsDir, name);
      mkdirSync(dir, { recursive: true });
      for (const f of ['vmlinuz', 'initrd.img']) writeFileSync(join(dir, f), `${name} ${f}`);
      return { name, version: '6.12.8', arch: 'x86_64', sha256: { kernel: '0'.repeat(64), initrd: '1'.repeat(64) }, source: 'test', pulledAt: 'now', dir };
    },
  };
  const vms = new VmService({
    store, runner, layout, log, images, network, onStepStart, config, snapshots, kernels,
    drivers: (vmm) => (vmm === 'qemu' ? driver : undefined),
    guest,
    bootTimeoutMs: 1000,
    bootStallMs: opts.stallMs,
  });
  const events: ProgressEvent[] = [];
  const create = (name: string, extra: { start?: boolean; cold?: boolean; kernel?: string } = {}) =>
    vms.create({ name, diskBytes: 64 * MIB, ...extra }, conn, (ev) => events.push(ev));
  const pathsOf = (name: string) => vmPaths(layout, vms.show(name).id);
  /** Nothing of any VM is left: no row, no VM dir, no sockets dir, no live VMM process. */
  const nothingLeft = () => {
    expect(store.listVms()).toEqual([]);
    expect(existsSync(layout.vmsDir) ? readdirSync(layout.vmsDir) : []).toEqual([]);
    expect(existsSync(layout.vmSocketsDir) ? readdirSync(layout.vmSocketsDir) : []).toEqual([]);
    expect(driver.alive()).toEqual([]);
  };
  return { root, layout, store, driver, guest, vms, events, create, pathsOf, nothingLeft, snapshots, created, ensured };
}

/** The snapshot a VM of the default shape clones (the fake probe says no KVM: TCG). */
const KEY = snapshotKey('qemu', 'tcg', { vcpu: DEFAULT_CONFIG.vcpu, memoryMib: DEFAULT_CONFIG.memoryMib });

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
    const { vms, driver, events, create, pathsOf, layout } = setup();
    const res = await create('box');
    expect(res.vm.state).toBe('running');
    expect(events.filter((e) => e.level !== 'warn').map((e) => e.stage).filter((s, i, a) => a.indexOf(s) === i)).toEqual(
      expect.arrayContaining(['image', 'disks', 'config', 'accel', 'boot', 'ready']),
    );
    const stages = events.map((e) => e.stage);
    expect(stages.indexOf('disks')).toBeLessThan(stages.indexOf('config'));
    expect(stages.indexOf('accel')).toBeLessThan(stages.indexOf('boot'));
    expect(stages.indexOf('boot')).toBeLessThan(stages.indexOf('ready'));
    // Ready: the agent answers, then tells that sshd listens (no SSH login); its host key is pinned.
    expect(driver.calls).toEqual(['prepareDisks', 'probeAccel', 'boot', 'agent.wait', 'sshd.wait']);
    expect(readFileSync(layout.knownHosts, 'utf8')).toBe(`box.vm ssh-ed25519 ${FAKE_HOST_KEY}\n`);
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
    { at: 'ready: the agent cannot tell about sshd, and SSH never answers', opts: { guest: { agent: 'ok', sshd: 'unsure', ssh: 'down' } }, message: /ssh unreachable/, signalled: true },
    { at: 'ready: the look at sshd through the agent fails', opts: { guest: { agent: 'ok', sshd: 'down', ssh: 'ok' } }, message: /agent .* unreachable/, signalled: true },
  ];

  it('ready: when the agent cannot tell about sshd (the guest unit failed), an SSH login decides', async () => {
    const { driver, create, layout } = setup({ guest: { agent: 'ok', sshd: 'unsure', ssh: 'ok' } });
    const res = await create('box');
    expect(res.vm.state).toBe('running');
    expect(driver.calls.slice(-3)).toEqual(['agent.wait', 'sshd.wait', 'ssh.wait']);
    // Nothing pinned from the agent (the login pins, as ssh.ts does).
    expect(existsSync(layout.knownHosts) ? readFileSync(layout.knownHosts, 'utf8') : '').toBe('');
  });

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

describe('lifecycle against a fake driver: warm clones', () => {
  type S = ReturnType<typeof setup>;
  /** Makes the current snapshot of the default shape, then forgets the calls it made. */
  async function withSnapshot(s: S) {
    await s.snapshots!.build('bookworm', s.driver, 'tcg', { vcpu: DEFAULT_CONFIG.vcpu, memoryMib: DEFAULT_CONFIG.memoryMib }, () => undefined);
    const sp = snapshotPaths(s.layout, 'bookworm', KEY);
    const manifest = JSON.parse(readFileSync(sp.manifest, 'utf8')) as { mac: string; state: { sha256: string }; rootBytes: number };
    s.driver.calls.length = 0;
    s.driver.starts.length = 0;
    s.driver.diskSpecs.length = 0;
    s.guest.execs.length = 0;
    return { sp, manifest, root: readFileSync(sp.root) };
  }
  const until = (fn: () => void) => vi.waitFor(fn, { timeout: 15_000, interval: 20 });
  const fds = () => readdirSync('/proc/self/fd').length;
  const calls = (s: S) => s.driver.calls.map((c) => (c.startsWith('agent.exec ') ? 'agent.exec' : c));

  it('a current snapshot: restore instead of boot, the identity script through the agent, the root disk a verified copy', async () => {
    const s = setup({ snapshots: true });
    const { sp, manifest, root } = await withSnapshot(s);
    const fdsBefore = fds();
    const t0 = Date.now();
    const res = await s.create('box');
    expect(res.vm.state).toBe('running');
    expect(res.clonedFrom).toBe(KEY);
    // The identity (agent), and no SSH wait: the host key handed to the clone is pinned under its name.
    expect(calls(s)).toEqual(['probeAccel', 'prepareDisks', 'restore', 'agent.connect', 'agent.exec']);
    // restore got the VM's own files, user networking with the snapshot's MAC, and the state selected.
    expect(s.driver.starts).toHaveLength(1);
    const start = s.driver.starts[0]!;
    const p = s.pathsOf('box');
    expect(start.op).toBe('restore');
    expect(start.spec.files.dir).toBe(p.dir);
    expect(start.spec.network).toMatchObject({ mode: 'user', mac: manifest.mac, restrict: true });
    expect(start.state).toMatchObject({ file: sp.state, sha256: manifest.state.sha256 });
    expect(typeof start.state?.fd).toBe('number');
    // The clone takes its identity: CLONE_SCRIPT on stdin, fresh args, the MAC it runs with.
    expect(s.guest.execs).toHaveLength(1);
    const exec = s.guest.execs[0]!;
    expect(exec.path).toBe('/bin/sh');
    expect(exec.input).toBe(CLONE_SCRIPT);
    expect(exec.args.slice(0, 2)).toEqual(['-s', '--']);
    // time machine-id entropy MAC hostname NET GROW HOSTKEY HOSTKEY_PUB key
    expect(exec.args).toHaveLength(12);
    expect(Number(exec.args[2]) * 1000).toBeGreaterThanOrEqual(Math.floor(t0 / 1000) * 1000);
    expect(exec.args.slice(5, 9)).toEqual([manifest.mac, 'box', '-', '0']);
    expect(exec.args[9]).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
    const pub = /^ssh-ed25519 (\S+) root@box$/.exec(exec.args[10]!);
    expect(pub).not.toBeNull();
    expect(readFileSync(s.layout.knownHosts, 'utf8')).toBe(`box.vm ssh-ed25519 ${pub![1]}\n`);
    expect(exec.args[11]).toMatch(/^ssh-ed25519 .* banger$/);
    // The root disk: a copy of the snapshot's, only grown by the driver.
    expect(readFileSync(p.overlay)).toEqual(root);
    expect(s.driver.diskSpecs).toEqual([expect.objectContaining({ fromSnapshot: true, rootBytes: DEFAULT_CONFIG.systemOverlayBytes })]);
    expect(existsSync(p.workDisk)).toBe(true);
    expect(readRuntime(p.runtimeFile)).toMatchObject({ vmm: 'qemu', accel: 'tcg' });
    // The snapshot stays, and the selection's descriptors were closed.
    expect(existsSync(sp.dir)).toBe(true);
    expect(fds()).toBe(fdsBefore);
    expect(s.driver.alive()).toHaveLength(1);
  });

  it('cold: true boots cold even with a current snapshot', async () => {
    const s = setup({ snapshots: true });
    const { sp } = await withSnapshot(s);
    const res = await s.create('box', { cold: true });
    expect(res.vm.state).toBe('running');
    expect(res.clonedFrom).toBeNull();
    expect(s.driver.calls).toContain('boot');
    expect(s.driver.calls).not.toContain('restore');
    expect(s.guest.execs).toEqual([]);
    expect(readFileSync(s.pathsOf('box').overlay, 'utf8')).toMatch(/^overlay of /);
    expect(existsSync(sp.dir)).toBe(true);
  });

  it('config warm_clones = false: cold boot, and no snapshot is made after it', async () => {
    const s = setup({ snapshots: true, config: { warmClones: false } });
    const res = await s.create('box');
    expect(res.clonedFrom).toBeNull();
    await new Promise((r) => setTimeout(r, 300));
    expect(s.driver.starts.map((x) => x.op)).toEqual(['boot']);
    expect(s.driver.calls).not.toContain('saveSnapshot');
    expect(existsSync(snapshotPaths(s.layout, 'bookworm', KEY).dir)).toBe(false);
    // And a snapshot that is there is not used.
    await withSnapshot(s);
    expect((await s.create('box2')).clonedFrom).toBeNull();
    expect(s.driver.calls).not.toContain('restore');
  });

  it('after a cold create the shape\'s snapshot is made in the background; the next create is a clone', async () => {
    const s = setup({ snapshots: true });
    const first = await s.create('box');
    expect(first.clonedFrom).toBeNull();
    await until(() => expect(existsSync(snapshotPaths(s.layout, 'bookworm', KEY).manifest)).toBe(true));
    expect(s.driver.calls).toContain('saveSnapshot');
    expect(s.driver.alive().map((p) => p.name)).toEqual(['box']); // the template is gone
    const second = await s.create('box2');
    expect(second.clonedFrom).toBe(KEY);
    expect(s.driver.starts.map((x) => x.op)).toEqual(['boot', 'boot', 'restore']);
  });

  const unusable: Array<{ title: string; spoil: (s: S, sp: ReturnType<typeof snapshotPaths>) => void; restored: boolean }> = [
    { title: 'restore finds it unusable', spoil: (s) => (s.driver.faults = { restoreUnusable: true }), restored: true },
    { title: 'its state file is corrupt (same size)', spoil: (_s, sp) => writeFileSync(sp.state, Buffer.alloc(readFileSync(sp.state).length, 0x41)), restored: true },
    { title: 'its root disk is corrupt (copyRoot)', spoil: (_s, sp) => writeFileSync(sp.root, Buffer.alloc(readFileSync(sp.root).length, 0x41)), restored: false },
  ];

  it.each(unusable)('an unusable snapshot ($title): a warning, the snapshot dropped, a cold boot, no leftover', async ({ spoil, restored }) => {
    const s = setup({ snapshots: true });
    const { sp, manifest } = await withSnapshot(s);
    spoil(s, sp);
    const res = await s.create('box');
    expect(res.vm.state).toBe('running');
    expect(res.clonedFrom).toBeNull();
    const warn = s.events.find((e) => e.level === 'warn' && e.stage === 'boot');
    expect(warn?.message).toMatch(new RegExp(`snapshot ${KEY} of bookworm is unusable .*; booting cold`));
    expect(existsSync(sp.dir)).toBe(false); // dropped (a new one is made in the background)
    expect(s.driver.starts.map((x) => x.op)).toEqual(restored ? ['restore', 'boot'] : ['boot']);
    expect(s.guest.execs.filter((e) => e.input === CLONE_SCRIPT)).toEqual([]);
    const p = s.pathsOf('box');
    expect(readFileSync(p.overlay, 'utf8')).toMatch(/^overlay of /); // the cold root disk, not the snapshot's
    expect(readRuntime(p.runtimeFile)?.driver).toMatchObject({ fakeId: s.driver.alive().find((x) => x.name === 'box')!.id });
    // The background build makes the snapshot again; then only the VM runs.
    s.driver.faults = {};
    await until(() => expect(existsSync(sp.manifest)).toBe(true));
    expect((JSON.parse(readFileSync(sp.manifest, 'utf8')) as { mac: string }).mac).not.toBe(manifest.mac);
    expect(s.driver.alive().map((x) => x.name)).toEqual(['box']);
  });

  it('a failure at the identity step rolls back: no process, no VM files, no row (the snapshot stays)', async () => {
    const s = setup({ snapshots: true });
    const { sp } = await withSnapshot(s);
    s.guest.behaviour = { agent: 'ok', ssh: 'ok', exec: (c) => (c.input === CLONE_SCRIPT ? { exitCode: 1, stderr: 'banger-clone: cannot set the clock\n' } : undefined) };
    const e = await failure(s.create('box'));
    expect(e.message).toMatch(/could not take its own identity: banger-clone: cannot set the clock/);
    s.nothingLeft();
    expect(s.driver.starts.map((x) => x.op)).toEqual(['restore']);
    expect([...s.driver.processes.values()].find((p) => p.name === 'box')?.signals).toEqual(['SIGTERM']);
    expect(existsSync(sp.dir)).toBe(true);
  });

  it('every clone gets a host key of its own, and a failed identity step pins none', async () => {
    const s = setup({ snapshots: true });
    await withSnapshot(s);
    await s.create('box');
    await s.create('box2');
    const pubs = s.guest.execs.map((e) => e.args[10]!.split(' ')[1]);
    expect(new Set(pubs).size).toBe(2);
    expect(readFileSync(s.layout.knownHosts, 'utf8')).toBe(`box.vm ssh-ed25519 ${pubs[0]}\nbox2.vm ssh-ed25519 ${pubs[1]}\n`);
    s.guest.behaviour = { agent: 'ok', ssh: 'ok', exec: (c) => (c.input === CLONE_SCRIPT ? { exitCode: 1, stderr: 'banger-clone: cannot write the host key\n' } : undefined) };
    const e = await failure(s.create('box3'));
    expect(e.message).toMatch(/cannot write the host key/);
    expect(readFileSync(s.layout.knownHosts, 'utf8')).not.toMatch(/box3/);
  });

  it('an agent that cannot be reached at the identity step rolls back too', async () => {
    const s = setup({ snapshots: true });
    await withSnapshot(s);
    s.guest.behaviour = { agent: 'down', ssh: 'ok' };
    const e = await failure(s.create('box'));
    expect(e.message).toMatch(/agent .* unreachable/);
    s.nothingLeft();
  });

  it("bridge networking: the clone runs with the attachment's MAC, not the snapshot's", async () => {
    const s = setup({ snapshots: true, bridge: true });
    const { manifest } = await withSnapshot(s);
    expect(manifest.mac).not.toBe(BRIDGE.mac);
    const res = await s.create('box');
    expect(res.clonedFrom).toBe(KEY);
    expect(s.driver.starts[0]!.spec.network).toEqual({ mode: 'tap', tap: BRIDGE.tap, mac: BRIDGE.mac });
    expect(s.guest.execs[0]!.args[5]).toBe(BRIDGE.mac);
    expect(res.ssh).toMatchObject({ host: BRIDGE.ip, port: 22 });
  });
});

describe('vm commit', () => {
  it("a stopped VM's root disk becomes an image with its identity scrubbed; a running VM is refused", async () => {
    const { vms, create, layout, created, driver } = setup();
    const noop = () => undefined;
    const base = join(layout.imagesDir, 'bookworm');
    mkdirSync(base, { recursive: true });
    for (const f of ['vmlinuz', 'initrd.img']) writeFileSync(join(base, f), f);
    await create('box');
    await expect(vms.commit('box', 'mine', {}, noop)).rejects.toMatchObject({ code: 'conflict', message: expect.stringMatching(/stopped VM/) });
    expect(driver.calls).not.toContain('exportRootDisk');
    await vms.stop('box');
    const img = await vms.commit('box', 'mine', {}, noop);
    expect(img).toMatchObject({ name: 'mine', sourceKind: 'vm', sourceRef: 'box (image bookworm)', kernelVersion: '6.1' });
    expect(created).toHaveLength(1);
    const dir = join(layout.imagesDir, 'mine');
    expect(readdirSync(dir).sort()).toEqual(['image.json', 'initrd.img', 'rootfs.ext4', 'vmlinuz']);
    const debugfs = (cmd: string) => spawnSync('debugfs', ['-R', cmd, join(dir, 'rootfs.ext4')], { encoding: 'utf8' });
    expect(debugfs('ls /etc/ssh').stdout).not.toMatch(/ssh_host_/);
    expect(debugfs('cat /etc/machine-id').stdout).toBe('');
    expect(debugfs('stat /etc/machine-id').stdout).toMatch(/Mode:\s+0444/);
    expect(debugfs('stat /var/lib/systemd/random-seed').stderr).toMatch(/not found/i);
    expect(debugfs('cat /etc/overlay-was').stdout).toMatch(/overlay of/); // the VM's own root disk, not the image
    expect(existsSync(join(layout.buildDir, 'mine-work'))).toBe(false);
    expect(vms.show('box').state).toBe('stopped'); // the VM is kept as it was
  });
});

describe('a catalog kernel (vm create --kernel)', () => {
  it('is ensured (pulled when missing) as its own step, booted instead of the image\'s, and again at each start', async () => {
    const { vms, driver, create, events, ensured, layout, store } = setup();
    const res = await create('box', { kernel: 'generic-6.12' });
    expect(res.vm).toMatchObject({ state: 'running', kernel: 'generic-6.12' });
    expect(store.findVmByName('box')!.kernel).toBe('generic-6.12');
    const stages = events.map((e) => e.stage);
    expect(stages.indexOf('image')).toBeLessThan(stages.indexOf('kernel'));
    expect(stages.indexOf('kernel')).toBeLessThan(stages.indexOf('disks'));
    expect(driver.starts[0]!.spec).toMatchObject({ kernel: join(layout.kernelsDir, 'generic-6.12', 'vmlinuz'), initrd: join(layout.kernelsDir, 'generic-6.12', 'initrd.img') });
    expect(store.kernelUsers('generic-6.12')).toEqual(['VM box']);
    await vms.stop('box');
    const before = ensured.length;
    await vms.start('box');
    expect(ensured.length).toBe(before + 1);
    expect(driver.starts[1]!.spec.kernel).toBe(join(layout.kernelsDir, 'generic-6.12', 'vmlinuz'));
    // A VM without one boots its image's.
    await create('plain');
    expect(driver.starts[2]!.spec.kernel).toBe(join(layout.imagesDir, 'bookworm', 'vmlinuz'));
  });

  it('a kernel that cannot be had fails the create with nothing left (no row, no files, no process)', async () => {
    const { create, nothingLeft } = setup({ kernelFails: true });
    const e = await failure(create('box', { kernel: 'generic-6.12' }));
    expect(e.message).toBe('no kernel catalog is configured');
    nothingLeft();
  });

  it('an invalid kernel name is refused before any side effect, naming the field', async () => {
    const { create, nothingLeft, ensured } = setup();
    const e = await failure(create('box', { kernel: '../etc' }));
    expect(e).toMatchObject({ code: 'bad_request', field: 'kernel' });
    expect(ensured).toEqual([]);
    nothingLeft();
  });

  it('boots cold even with a current snapshot of its image, and makes none', async () => {
    const s = setup({ snapshots: true });
    await s.snapshots!.build('bookworm', s.driver, 'tcg', { vcpu: DEFAULT_CONFIG.vcpu, memoryMib: DEFAULT_CONFIG.memoryMib }, () => undefined);
    s.driver.calls.length = 0;
    const res = await s.create('box', { kernel: 'generic-6.12' });
    expect(res.clonedFrom).toBeNull();
    await new Promise((r) => setTimeout(r, 300));
    expect(s.driver.calls).toContain('boot');
    expect(s.driver.calls).not.toContain('restore');
    expect(s.driver.calls).not.toContain('saveSnapshot');
  });

  it('vm commit of such a VM takes its catalog kernel along and names it', async () => {
    const { vms, create, layout } = setup();
    await create('box', { kernel: 'generic-6.12' });
    await vms.stop('box');
    const img = await vms.commit('box', 'mine', {}, () => undefined);
    expect(img).toMatchObject({ name: 'mine', kernel: 'generic-6.12', kernelVersion: '6.12.8' });
    expect(readFileSync(join(layout.imagesDir, 'mine', 'vmlinuz'), 'utf8')).toBe('generic-6.12 vmlinuz');
    expect(JSON.parse(readFileSync(join(layout.imagesDir, 'mine', 'image.json'), 'utf8'))).toMatchObject({ kernel: 'generic-6.12', kernelVersion: '6.12.8' });
  });
});

describe('a cold boot that stalls early', () => {
  it('is booted once more (nothing of the first attempt left) and the create succeeds, with a warning', async () => {
    const { vms, create, events, driver } = setup({ stallMs: 200, guest: { agent: 'ok', ssh: 'ok', agentStalls: 1 } });
    const r = await create('box', { cold: true });
    expect(r.vm.state).toBe('running');
    expect(events.some((e) => e.level === 'warn' && /stalled early in its boot: no console output for 0 s.*booting once more/.test(e.message))).toBe(true);
    expect(driver.calls.filter((c) => c === 'boot')).toHaveLength(2);
    expect(driver.alive()).toHaveLength(1); // the stalled VMM was stopped
    await vms.delete('box', true);
  });

  it('twice in a row fails the create with the stall, leaving nothing', async () => {
    const { create, nothingLeft } = setup({ stallMs: 200, guest: { agent: 'ok', ssh: 'ok', agentStalls: 2 } });
    await expect(create('box', { cold: true })).rejects.toMatchObject({ code: 'timeout', message: expect.stringMatching(/stalled early/) });
    nothingLeft();
  });
});
