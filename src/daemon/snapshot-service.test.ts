/**
 * Warm-clone snapshots (src/daemon/snapshot-service.ts) against the fake VMM
 * driver and fake guest (test/support/fake-driver.ts), with real files in a
 * temp dir and the real config and work disks (mkfs.ext4). No VM, no QEMU.
 */
import { describe, it, expect, afterEach, vi } from 'vitest';
import { createHash } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, fstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { BangerError } from '../errors/errors.js';
import type { ImageRecord, ProgressEvent, VmRecord } from '../model/types.js';
import { resolveLayout, snapshotPaths, snapshotsDir, templateSocketsDir } from '../paths/paths.js';
import { createRunner } from '../system/runner.js';
import { SnapshotUnusable } from '../vmm/driver.js';
import { CLONE_CONTRACT, TEMPLATE_PREP_SCRIPT } from '../guest/clone-identity.js';
import { SnapshotService, snapshotKey, TEMPLATE_HOSTNAME, type CloneSource, type Shape } from './snapshot-service.js';
import { FAKE_PID_FILE, FakeDriver, fakeGuest, type FakeGuestBehaviour } from '../../test/support/fake-driver.js';

const GIB = 1024 ** 3;
const IMAGE = 'bookworm';
const SHAPE: Shape = { vcpu: 2, memoryMib: 1024 };
const KEY = snapshotKey('qemu', 'tcg', SHAPE);
const OVERLAY_BYTES = 4 * GIB;

const roots: string[] = [];
afterEach(() => {
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function setup(opts: { guest?: FakeGuestBehaviour; snapshots?: boolean } = {}) {
  const root = mkdtempSync(join(tmpdir(), 'snapshots-'));
  roots.push(root);
  const layout = resolveLayout({ BANGER_STATE_DIR: join(root, 's'), BANGER_CACHE_DIR: join(root, 'c'), BANGER_RUNTIME_DIR: join(root, 'r'), BANGER_CONFIG_DIR: join(root, 'cfg') });
  mkdirSync(layout.stateDir, { recursive: true });
  const driver = new FakeDriver({ snapshots: opts.snapshots ?? true });
  const guest = fakeGuest(driver, opts.guest ?? { agent: 'ok', ssh: 'ok' });
  const logs: Array<{ level: number; msg: string } & Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as (typeof logs)[number]) });
  const image: ImageRecord = { name: IMAGE, source: 'test', sourceKind: 'debian', sourceRef: 'test', kernelVersion: '6.1', kernel: null, rootfsBytes: 1000, packages: [], createdAt: '2026-01-01T00:00:00.000Z' };
  const svc = new SnapshotService({
    layout,
    runner: createRunner(),
    log,
    guest,
    image: (name) => {
      if (name !== image.name) throw new BangerError('not_found', `no image ${name}`);
      return image;
    },
    systemOverlayBytes: OVERLAY_BYTES,
    bootTimeoutMs: 1000,
  });
  const events: ProgressEvent[] = [];
  const build = (shape: Shape = SHAPE, signal?: AbortSignal) => svc.build(IMAGE, driver, 'tcg', shape, (ev) => events.push(ev), signal);
  const paths = (key = KEY) => snapshotPaths(layout, IMAGE, key);
  const dir = () => snapshotsDir(layout, IMAGE);
  const entries = () => (existsSync(dir()) ? readdirSync(dir()).sort() : []);
  const templatesDir = join(layout.runtimeDir, 'templates');
  /** A failed or aborted build leaves nothing: no snapshot or build dir, no template sockets dir, no VMM process. */
  const nothingLeft = () => {
    expect(entries()).toEqual([]);
    expect(existsSync(templatesDir) ? readdirSync(templatesDir) : []).toEqual([]);
    expect(driver.alive()).toEqual([]);
  };
  const vm = (over: Partial<VmRecord> = {}): VmRecord => ({
    id: 'abcdef012345',
    name: 'box',
    image: IMAGE,
    vcpu: SHAPE.vcpu,
    memoryMib: SHAPE.memoryMib,
    systemOverlayBytes: OVERLAY_BYTES,
    diskBytes: 64 * 1024 * 1024,
    vmm: 'qemu',
    network: 'user',
    state: 'creating',
    ephemeral: false,
    nat: false,
    ip: null,
    kernel: null,
    lastError: null,
    createdAt: 'now',
    updatedAt: 'now',
    ...over,
  });
  const held: CloneSource[] = [];
  /** select() that must give a CloneSource (released after the test). */
  const selected = async (over: Partial<VmRecord> = {}): Promise<CloneSource> => {
    const r = await svc.select(vm(over), driver, 'tcg');
    if ('reason' in r) throw new Error(`expected a clone source, got: ${r.reason}`);
    held.push(r);
    return r;
  };
  const releaseAll = () => {
    for (const h of held.splice(0)) h.release();
  };
  const warnings = () => logs.filter((l) => l.level === 40).map((l) => l.msg);
  return { root, layout, driver, guest, svc, image, logs, warnings, events, build, paths, dir, entries, templatesDir, nothingLeft, vm, selected, releaseAll };
}

type Setup = ReturnType<typeof setup>;

async function failure(p: Promise<unknown>): Promise<BangerError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(BangerError);
  return e as BangerError;
}

const readJson = (path: string) => JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;

describe('SnapshotService.build', () => {
  it('boots a template with a NIC but no backend, prepares it, saves it, and publishes the snapshot under its key', async () => {
    const s = setup();
    const info = await s.build();
    expect(info).toMatchObject({ key: KEY, vmm: 'qemu', accel: 'tcg', vcpu: 2, memoryMib: 1024, current: true });

    // The template: booted cold, no network backend, the shape asked for.
    expect(s.driver.starts).toHaveLength(1);
    const { op, spec } = s.driver.starts[0]!;
    expect(op).toBe('boot');
    expect(spec).toMatchObject({ name: TEMPLATE_HOSTNAME, vcpu: 2, memoryMib: 1024, accel: 'tcg' });
    expect(spec.network.mode).toBe('none');
    expect(s.driver.calls).toEqual(['prepareDisks', 'boot', 'agent.wait', 'agent.connect', 'agent.exec /bin/sh -s', 'saveSnapshot']);
    // Prepared with the template prep script on stdin.
    expect(s.guest.execs).toHaveLength(1);
    expect(s.guest.execs[0]).toMatchObject({ path: '/bin/sh', args: ['-s'], input: TEMPLATE_PREP_SCRIPT });

    // Published: the key's dir holds the manifest, the state and the root disk, and nothing else.
    expect(s.entries()).toEqual([KEY]);
    const p = s.paths();
    expect(readdirSync(p.dir)).toEqual(expect.arrayContaining(['root.qcow2', 'snapshot.json', 'state']));
    const m = readJson(p.manifest);
    const state = readFileSync(p.state);
    const root = readFileSync(p.root);
    expect(m).toMatchObject({
      format: 1,
      key: KEY,
      image: { name: IMAGE, createdAt: s.image.createdAt, rootfsBytes: s.image.rootfsBytes },
      vmm: 'qemu',
      vmmVersion: 'fake 1.0.0',
      contract: CLONE_CONTRACT,
      accel: 'tcg',
      mac: spec.network.mac,
      vcpu: 2,
      memoryMib: 1024,
      rootBytes: OVERLAY_BYTES,
      state: { bytes: state.length, sha256: sha256(state) },
      root: { bytes: root.length, sha256: sha256(root) },
    });
    expect(m.mac).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    // It passes the manifest's schema: it is listed as current and selected.
    expect(await s.svc.list(IMAGE, s.driver)).toEqual([expect.objectContaining({ key: KEY, current: true, bytes: state.length + root.length })]);
    const src = await s.selected();
    expect(src.manifest).toEqual(m);
    s.releaseAll();

    // The template's own files went; its process ended with the save; its sockets dir is gone.
    expect(existsSync(join(p.dir, 'config.img'))).toBe(false);
    expect(existsSync(join(p.dir, 'work.ext4'))).toBe(false);
    expect(existsSync(join(p.dir, 'console.log'))).toBe(false);
    expect(s.entries().filter((e) => e.startsWith('.build-'))).toEqual([]);
    expect(s.driver.alive()).toEqual([]);
    expect(readdirSync(s.templatesDir)).toEqual([]);
    expect(s.events.every((e) => e.stage === 'snapshot')).toBe(true);
  });

  it('a second build of the key replaces the snapshot whole (no .build-* dir left)', async () => {
    const s = setup();
    await s.build();
    const before = readJson(s.paths().manifest);
    s.driver.vmmVersion = 'fake 2.0.0';
    await s.build();
    expect(s.entries()).toEqual([KEY]);
    const after = readJson(s.paths().manifest);
    expect(after.vmmVersion).toBe('fake 2.0.0');
    expect(after.mac).not.toBe(before.mac);
    expect(s.driver.alive()).toEqual([]);
  });

  it('two concurrent builds of the same key share one build', async () => {
    const s = setup();
    const a = s.build();
    const b = s.build();
    expect(b).toBe(a);
    const [ia, ib] = await Promise.all([a, b]);
    expect(ib).toEqual(ia);
    expect(s.driver.starts).toHaveLength(1);
    expect(s.driver.calls.filter((c) => c === 'saveSnapshot')).toHaveLength(1);
    expect(s.events.some((e) => /already being made/.test(e.message))).toBe(true);
    expect(s.entries()).toEqual([KEY]);
    // Once it ended, a new build is a new build.
    await s.build();
    expect(s.driver.starts).toHaveLength(2);
  });

  it('builds of different keys run on their own', async () => {
    const s = setup();
    await Promise.all([s.build(), s.build({ vcpu: 1, memoryMib: 512 })]);
    expect(s.entries()).toEqual([KEY, snapshotKey('qemu', 'tcg', { vcpu: 1, memoryMib: 512 })].sort());
    expect(s.driver.starts).toHaveLength(2);
    expect(s.driver.alive()).toEqual([]);
  });

  const failures: Array<{ title: string; arrange: (s: Setup) => void; message: RegExp; killed: boolean }> = [
    { title: 'the VMM refuses to start', arrange: (s) => (s.driver.faults = { bootBeforeStart: true }), message: /refused its arguments/, killed: false },
    { title: 'the VMM started but its boot failed (found through findOrphan)', arrange: (s) => (s.driver.faults = { bootAfterStart: true }), message: /started but boot failed/, killed: true },
    { title: 'the guest agent never answers', arrange: (s) => (s.guest.behaviour = { agent: 'down', ssh: 'ok' }), message: /agent .* unreachable/, killed: true },
    {
      title: 'the prep script exits non-zero',
      arrange: (s) => (s.guest.behaviour = { agent: 'ok', ssh: 'ok', exec: (c) => (c.input === TEMPLATE_PREP_SCRIPT ? { exitCode: 1, stderr: 'system is starting\n' } : undefined) }),
      message: /not ready to be saved: system is starting/,
      killed: true,
    },
    { title: 'the save fails (the VMM still runs)', arrange: (s) => (s.driver.faults = { saveFails: true }), message: /migration failed/, killed: true },
    { title: "the VMM's version is unknown", arrange: (s) => (s.driver.faults = { versionFails: true }), message: /no version/, killed: false },
  ];

  it.each(failures)('a failed build leaves nothing: $title', async ({ arrange, message, killed }) => {
    const s = setup();
    arrange(s);
    const e = await failure(s.build());
    expect(e.message).toMatch(message);
    s.nothingLeft();
    expect([...s.driver.processes.values()].some((p) => p.signals.includes('SIGKILL'))).toBe(killed);
  });

  it('a failed build does not touch the current snapshot of the key', async () => {
    const s = setup();
    await s.build();
    const before = readFileSync(s.paths().manifest, 'utf8');
    s.driver.faults = { saveFails: true };
    await failure(s.build());
    expect(s.entries()).toEqual([KEY]);
    expect(readFileSync(s.paths().manifest, 'utf8')).toBe(before);
    expect(s.driver.alive()).toEqual([]);
  });

  it("the caller's signal aborts a build under way: interrupted, the template killed, nothing left", async () => {
    const ac = new AbortController();
    const s = setup({
      guest: {
        agent: 'ok',
        ssh: 'ok',
        exec: () => {
          ac.abort(); // while the template is being prepared
          return undefined;
        },
      },
    });
    const e = await failure(s.build(SHAPE, ac.signal));
    expect(e.code).toBe('interrupted');
    expect(s.driver.calls).not.toContain('saveSnapshot');
    s.nothingLeft();
    expect(s.driver.processes.get(1)?.signals).toEqual(['SIGKILL']);
  });

  it('abortBuilds(image) stops the builds of that image and waits for them', async () => {
    const s = setup();
    const p = s.build();
    const settled = p.then(
      () => 'built',
      (e: unknown) => (e instanceof BangerError ? `${e.code}: ${e.message}` : 'other'),
    );
    await s.svc.abortBuilds(IMAGE, `image ${IMAGE} is being deleted`);
    // The error says why, whatever step the build was in.
    expect(await settled).toBe(`interrupted: the snapshot ${KEY} of ${IMAGE} was not made: image ${IMAGE} is being deleted`);
    s.nothingLeft();
  });

  it('abortBuilds of another image leaves a build alone', async () => {
    const s = setup();
    const p = s.build();
    await s.svc.abortBuilds('other-image', 'image other-image is being deleted');
    await p;
    expect(s.entries()).toEqual([KEY]);
  });

  it('a signal aborted before the build starts: interrupted, no template is booted', async () => {
    const s = setup();
    const ac = new AbortController();
    ac.abort();
    const e = await failure(s.build(SHAPE, ac.signal));
    expect(e.code).toBe('interrupted');
    expect(e.message).toMatch(/was not made: the client that asked for it went away$/);
    expect(s.driver.starts).toEqual([]);
    s.nothingLeft();
  });
});

describe('SnapshotService.select', () => {
  it('gives the current snapshot with its files open; copyRoot makes a verified copy; release closes them', async () => {
    const s = setup();
    await s.build();
    const p = s.paths();
    const src = await s.selected();
    expect(src.key).toBe(KEY);
    expect(src.manifest.key).toBe(KEY);
    expect(src.state).toMatchObject({ file: p.state, bytes: readFileSync(p.state).length, sha256: sha256(readFileSync(p.state)) });
    expect(typeof src.state.fd).toBe('number');
    expect(fstatSync(src.state.fd!).size).toBe(src.state.bytes);
    const dest = join(s.root, 'copy.qcow2');
    src.copyRoot(dest);
    expect(readFileSync(dest)).toEqual(readFileSync(p.root));
    src.release();
    expect(() => fstatSync(src.state.fd!)).toThrow(/EBADF/);
    src.release(); // twice is harmless
    s.releaseAll();
    expect(existsSync(p.dir)).toBe(true);
  });

  it('no driver capability, no snapshot, or a smaller root disk: a reason, and the snapshot stays', async () => {
    const s = setup();
    const r0 = await s.svc.select(s.vm(), s.driver, 'tcg');
    expect(r0).toEqual({ reason: expect.stringMatching(/no snapshot qemu-tcg-2c-1024m of image bookworm/) as string });
    await s.build();
    const noSnap = new FakeDriver({ snapshots: false });
    expect(await s.svc.select(s.vm(), noSnap, 'tcg')).toEqual({ reason: expect.stringMatching(/has no snapshots/) as string });
    expect(await s.svc.select(s.vm({ systemOverlayBytes: OVERLAY_BYTES - 1 }), s.driver, 'tcg')).toEqual({ reason: expect.stringMatching(/root disk is smaller/) as string });
    // Another shape or accelerator is another key.
    expect(await s.svc.select(s.vm({ vcpu: 1 }), s.driver, 'tcg')).toEqual({ reason: expect.stringMatching(/no snapshot qemu-tcg-1c-1024m/) as string });
    expect(await s.svc.select(s.vm(), s.driver, 'kvm')).toEqual({ reason: expect.stringMatching(/no snapshot qemu-kvm-2c-1024m/) as string });
    expect(s.entries()).toEqual([KEY]);
  });

  const stale: Array<{ title: string; mutate: (s: Setup) => void; reason: RegExp }> = [
    { title: 'the image was rebuilt (createdAt)', mutate: (s) => (s.image.createdAt = '2026-02-02T00:00:00.000Z'), reason: /image bookworm was rebuilt/ },
    { title: 'the image was rebuilt (rootfs size)', mutate: (s) => (s.image.rootfsBytes += 1), reason: /image bookworm was rebuilt/ },
    { title: 'the VMM version changed', mutate: (s) => (s.driver.vmmVersion = 'fake 1.0.1'), reason: /made by fake 1\.0\.0, this is fake 1\.0\.1/ },
    {
      title: 'the clone contract changed',
      mutate: (s) => editManifest(s, (m) => (m.contract = 'clone-1-000000000000')),
      reason: /clone contract clone-1-000000000000, this is clone-1-/,
    },
    { title: 'the manifest names another VMM', mutate: (s) => editManifest(s, (m) => (m.vmm = 'firecracker')), reason: /made by firecracker/ },
    { title: 'the manifest is not JSON', mutate: (s) => writeFileSync(s.paths().manifest, '{"format": 1,'), reason: /snapshot\.json is not JSON/ },
    {
      title: 'the manifest is not a manifest (an unknown field)',
      mutate: (s) => editManifest(s, (m) => (m.extra = true)),
      reason: /snapshot\.json is not a snapshot manifest/,
    },
    { title: 'the manifest has a bad sha256', mutate: (s) => editManifest(s, (m) => ((m.state as Record<string, unknown>).sha256 = 'x'.repeat(64))), reason: /not a snapshot manifest/ },
    {
      title: 'the manifest is oversized (valid JSON past 64 KiB)',
      mutate: (s) => writeFileSync(s.paths().manifest, readFileSync(s.paths().manifest, 'utf8') + ' '.repeat(64 * 1024)),
      reason: /snapshot\.json is too large/,
    },
    { title: 'the manifest is missing', mutate: (s) => rmSync(s.paths().manifest), reason: /no snapshot\.json \(ENOENT\)/ },
    { title: 'the state file is missing', mutate: (s) => rmSync(s.paths().state), reason: /is incomplete \(ENOENT/ },
    { title: 'the root disk is missing', mutate: (s) => rmSync(s.paths().root), reason: /is incomplete \(ENOENT/ },
  ];

  it("the VMM's version cannot be read now: a cold boot, and the snapshot is kept (it may well be current)", async () => {
    const s = setup();
    await s.build();
    s.driver.faults = { versionFails: true };
    const r = await s.svc.select(s.vm(), s.driver, 'tcg');
    expect((r as { reason: string }).reason).toMatch(/version is unknown/);
    expect(existsSync(s.paths().dir)).toBe(true);
  });

  it.each(stale)('a stale snapshot is dropped with a reason: $title', async ({ mutate, reason }) => {
    const s = setup();
    await s.build();
    mutate(s);
    const r = await s.svc.select(s.vm(), s.driver, 'tcg');
    expect('reason' in r).toBe(true);
    expect((r as { reason: string }).reason).toMatch(reason);
    expect((r as { reason: string }).reason).toMatch(/qemu-tcg-2c-1024m of image bookworm/);
    expect(existsSync(s.paths().dir)).toBe(false);
    expect(s.entries()).toEqual([]);
    expect(s.warnings()).toContain('removing snapshot');
  });

  it('a state file replaced after selection does not reach the clone: the descriptor opened at selection is read', async () => {
    const s = setup();
    await s.build();
    const p = s.paths();
    const original = readFileSync(p.state);
    const src = await s.selected();
    writeFileSync(join(s.root, 'other'), 'another state entirely\n');
    renameSync(join(s.root, 'other'), p.state);
    const dir = join(s.root, 'clone');
    mkdirSync(dir);
    const files = { dir, socketsDir: dir, overlay: join(dir, 'root.qcow2'), configDisk: join(dir, 'config.img'), workDisk: join(dir, 'work.ext4'), consoleLog: join(dir, 'console.log') };
    const h = await s.driver.restore({ ...s.driver.starts[0]!.spec, name: 'clone', files }, src.state);
    expect(s.driver.isAlive(h)).toBe(true);
    // The fake read the selected file (it checks size and sha256 against the manifest's).
    expect(src.state.sha256).toBe(sha256(original));
    s.releaseAll();
    s.driver.signal(h, 'SIGKILL');
  });
});

function editManifest(s: Setup, edit: (m: Record<string, unknown>) => void): void {
  const m = readJson(s.paths().manifest);
  edit(m);
  writeFileSync(s.paths().manifest, JSON.stringify(m));
}

describe('CloneSource.copyRoot', () => {
  async function prepared() {
    const s = setup();
    await s.build();
    const src = await s.selected();
    return { s, src, p: s.paths(), dest: join(s.root, 'vm-root.qcow2') };
  }

  it('refuses a truncated root disk with SnapshotUnusable and leaves no file at dest', async () => {
    const { s, src, p, dest } = await prepared();
    truncateSync(p.root, readFileSync(p.root).length - 1);
    expect(() => src.copyRoot(dest)).toThrow(SnapshotUnusable);
    expect(() => src.copyRoot(dest)).toThrow(/truncated or replaced/);
    expect(existsSync(dest)).toBe(false);
    s.releaseAll();
  });

  it('refuses a grown root disk', async () => {
    const { s, src, p, dest } = await prepared();
    appendFileSync(p.root, 'x');
    expect(() => src.copyRoot(dest)).toThrow(SnapshotUnusable);
    expect(existsSync(dest)).toBe(false);
    s.releaseAll();
  });

  it('refuses a modified root disk of the same size (sha256) and leaves no file at dest', async () => {
    const { s, src, p, dest } = await prepared();
    const b = readFileSync(p.root);
    b[0] = b[0]! ^ 0xff;
    writeFileSync(p.root, b); // same inode: the descriptor opened at selection sees it
    expect(() => src.copyRoot(dest)).toThrow(SnapshotUnusable);
    expect(() => src.copyRoot(dest)).toThrow(/sha256/);
    expect(existsSync(dest)).toBe(false);
    s.releaseAll();
  });

  it('copies the root disk selected even when the file was replaced meanwhile', async () => {
    const { s, src, p, dest } = await prepared();
    const original = readFileSync(p.root);
    writeFileSync(join(s.root, 'new-root'), 'a new root disk\n');
    renameSync(join(s.root, 'new-root'), p.root);
    src.copyRoot(dest);
    expect(readFileSync(dest)).toEqual(original);
    s.releaseAll();
  });

  it('never writes over an existing file', async () => {
    const { s, src, dest } = await prepared();
    writeFileSync(dest, 'mine');
    expect(() => src.copyRoot(dest)).toThrow(/EEXIST/);
    expect(readFileSync(dest, 'utf8')).toBe('mine');
    s.releaseAll();
  });
});

describe('SnapshotService.list', () => {
  it('lists snapshots (not builds or other dirs), marking stale ones with a reason and removing nothing', async () => {
    const s = setup();
    expect(await s.svc.list(IMAGE, s.driver)).toEqual([]);
    await s.build();
    const small = snapshotKey('qemu', 'tcg', { vcpu: 1, memoryMib: 512 });
    await s.build({ vcpu: 1, memoryMib: 512 });
    mkdirSync(join(s.dir(), '.build-0123456789ab'));
    mkdirSync(join(s.dir(), 'junk'));
    const listed = await s.svc.list(IMAGE, s.driver);
    // In key order.
    expect(listed.map((i) => [i.key, i.current])).toEqual([
      [small, true],
      [KEY, true],
    ]);
    expect(listed[1]).not.toHaveProperty('reason');

    s.driver.vmmVersion = 'fake 9';
    writeFileSync(snapshotPaths(s.layout, IMAGE, small).manifest, 'nope');
    const stale = await s.svc.list(IMAGE, s.driver);
    expect(stale).toEqual([
      expect.objectContaining({ key: small, current: false, reason: 'snapshot.json is not JSON' }),
      expect.objectContaining({ key: KEY, current: false, reason: 'made by fake 1.0.0, this is fake 9' }),
    ]);
    expect(s.entries()).toEqual(['.build-0123456789ab', KEY, 'junk', small].sort());

    s.driver.vmmVersion = 'fake 1.0.0';
    s.image.createdAt = 'later';
    expect((await s.svc.list(IMAGE, s.driver))[1]).toMatchObject({ key: KEY, current: false, reason: 'image bookworm was rebuilt' });
  });
});

describe('SnapshotService.reconcile', () => {
  it('kills an interrupted template (findOrphan), removes .build-* dirs and their sockets; leaves snapshots and non-image dirs alone', async () => {
    const s = setup();
    await s.build();
    const buildId = '0123456789ab';
    // What a daemon that died mid-build leaves: the build dir, the template's sockets dir, its VMM running.
    const bp = snapshotPaths(s.layout, IMAGE, `.build-${buildId}`);
    mkdirSync(bp.dir);
    const sockets = templateSocketsDir(s.layout, buildId);
    mkdirSync(sockets, { recursive: true });
    const files = { dir: bp.dir, socketsDir: sockets, overlay: bp.root, configDisk: join(bp.dir, 'config.img'), workDisk: join(bp.dir, 'work.ext4'), consoleLog: join(bp.dir, 'console.log') };
    await s.driver.boot({ ...s.driver.starts[0]!.spec, files });
    const orphan = s.driver.alive();
    expect(orphan).toHaveLength(1);
    // A build dir with no process left.
    const dead = snapshotPaths(s.layout, IMAGE, '.build-ba9876543210');
    mkdirSync(dead.dir);
    writeFileSync(join(dead.dir, FAKE_PID_FILE), '999\n');
    // Not ours: an image dir whose name is no image name, a dir in snapshots that is neither a key nor a build, a file.
    const foreign = join(s.layout.imagesDir, 'Not An Image', 'snapshots', `.build-${buildId}`);
    mkdirSync(foreign, { recursive: true });
    mkdirSync(join(s.dir(), 'keep-me'));
    writeFileSync(join(s.dir(), '.build-notes'), 'x');

    s.svc.reconcile([s.driver]);

    expect(orphan[0]!.signals).toEqual(['SIGKILL']);
    expect(s.driver.alive()).toEqual([]);
    expect(existsSync(bp.dir)).toBe(false);
    expect(existsSync(dead.dir)).toBe(false);
    expect(existsSync(sockets)).toBe(false);
    expect(s.entries()).toEqual(['.build-notes', KEY, 'keep-me'].sort());
    expect(existsSync(foreign)).toBe(true);
    // The finished snapshot is still current.
    expect((await s.selected()).key).toBe(KEY);
    s.releaseAll();
  });

  it('with no images dir, does nothing', () => {
    const s = setup();
    expect(() => s.svc.reconcile([s.driver])).not.toThrow();
    expect(existsSync(s.layout.imagesDir)).toBe(false);
  });
});

describe('SnapshotService.scheduleBuild', () => {
  const until = (fn: () => void) => vi.waitFor(fn, { timeout: 15_000, interval: 20 });

  it('runs background builds one at a time', async () => {
    let maxAlive = 0;
    const s = setup({
      guest: {
        agent: 'ok',
        ssh: 'ok',
        exec: async () => {
          maxAlive = Math.max(maxAlive, s.driver.alive().length);
          await new Promise((r) => setTimeout(r, 50)); // room for a second template to start, if one could
          maxAlive = Math.max(maxAlive, s.driver.alive().length);
          return undefined;
        },
      },
    });
    const small = { vcpu: 1, memoryMib: 512 };
    s.svc.scheduleBuild(IMAGE, s.driver, 'tcg', SHAPE);
    s.svc.scheduleBuild(IMAGE, s.driver, 'tcg', small);
    await until(() => expect(s.entries()).toEqual([KEY, snapshotKey('qemu', 'tcg', small)].sort()));
    expect(maxAlive).toBe(1);
    expect(s.driver.calls.filter((c) => c === 'boot' || c === 'saveSnapshot')).toEqual(['boot', 'saveSnapshot', 'boot', 'saveSnapshot']);
    expect(s.driver.alive()).toEqual([]);
  });

  it('does not retry a key whose background build failed; other keys still build', async () => {
    const s = setup();
    s.driver.faults = { saveFails: true };
    s.svc.scheduleBuild(IMAGE, s.driver, 'tcg', SHAPE);
    await until(() => expect(s.warnings()).toContain('background snapshot failed; new VMs of this shape boot cold'));
    s.nothingLeft();
    s.driver.faults = {};
    s.svc.scheduleBuild(IMAGE, s.driver, 'tcg', SHAPE);
    const small = { vcpu: 1, memoryMib: 512 };
    s.svc.scheduleBuild(IMAGE, s.driver, 'tcg', small);
    await until(() => expect(s.entries()).toEqual([snapshotKey('qemu', 'tcg', small)]));
    expect(s.driver.starts).toHaveLength(2); // the failed one, then the small one: the failed key was not tried again
    // An explicit build (banger image snapshot) still makes it.
    await s.build();
    expect(s.entries()).toContain(KEY);
  });

  it('skips a key that has a snapshot, and a driver without snapshots', async () => {
    const s = setup();
    await s.build();
    s.svc.scheduleBuild(IMAGE, s.driver, 'tcg', SHAPE);
    s.svc.scheduleBuild(IMAGE, new FakeDriver({ snapshots: false }), 'tcg', { vcpu: 1, memoryMib: 512 });
    const small = { vcpu: 1, memoryMib: 256 };
    s.svc.scheduleBuild(IMAGE, s.driver, 'tcg', small); // queued after the others: once it is done, they were looked at
    await until(() => expect(s.entries()).toContain(snapshotKey('qemu', 'tcg', small)));
    expect(s.driver.starts).toHaveLength(2);
    expect(s.entries()).toEqual([KEY, snapshotKey('qemu', 'tcg', small)].sort());
  });

  it('joins a build of the key already under way instead of queueing another', async () => {
    const s = setup();
    const p = s.build();
    s.svc.scheduleBuild(IMAGE, s.driver, 'tcg', SHAPE);
    await p;
    await new Promise((r) => setTimeout(r, 100));
    expect(s.driver.starts).toHaveLength(1);
  });
});

describe('the file descriptors of a selection', () => {
  it('are not leaked by a select that finds the root disk missing', async () => {
    const s = setup();
    await s.build();
    rmSync(s.paths().root);
    const before = readdirSync('/proc/self/fd').length;
    const r = await s.svc.select(s.vm(), s.driver, 'tcg');
    expect('reason' in r).toBe(true);
    expect(readdirSync('/proc/self/fd').length).toBe(before);
  });

  it('a released selection closes exactly its two descriptors', async () => {
    const s = setup();
    await s.build();
    const before = readdirSync('/proc/self/fd').length;
    const src = await s.selected();
    expect(readdirSync('/proc/self/fd').length).toBe(before + 2);
    src.release();
    expect(readdirSync('/proc/self/fd').length).toBe(before);
    expect(() => closeSync(src.state.fd!)).toThrow(/EBADF/);
  });
});
