import { describe, it, expect } from 'vitest';
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { invalidRowError, migrate, pendingMigrations, Store } from './store.js';
import { MIGRATIONS } from './migrations.js';
import type { VmRecord } from '../model/types.js';
import { BangerError } from '../errors/errors.js';

const vm = (over: Partial<VmRecord> = {}): VmRecord => ({
  id: 'abc123abc123',
  name: 'box',
  image: 'bookworm',
  vcpu: 1,
  memoryMib: 512,
  systemOverlayBytes: 1 << 30,
  diskBytes: 1 << 30,
  vmm: 'qemu',
  network: 'user',
  state: 'creating',
  ephemeral: false,
  nat: false,
  ip: null,
  kernel: null,
  lastError: null,
  createdAt: '2026-01-01T00:00:00Z',
  updatedAt: '2026-01-01T00:00:00Z',
  ...over,
});

describe('migrations', () => {
  it('are numbered 1..n without gaps', () => {
    expect(MIGRATIONS.map((m) => m.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
  });

  it('reports pending ones, applies them once, then none are pending', () => {
    const db = new Database(':memory:');
    expect(pendingMigrations(db).pending.map((m) => m.version)).toEqual(MIGRATIONS.map((m) => m.version));
    expect(migrate(db)).toEqual(MIGRATIONS.map((m) => m.version));
    expect(migrate(db)).toEqual([]);
    expect(pendingMigrations(db).pending).toEqual([]);
  });

  it('applies only the new one when a migration is added', () => {
    const db = new Database(':memory:');
    migrate(db);
    const next = [...MIGRATIONS, { version: MIGRATIONS.length + 1, name: 'extra', sql: 'CREATE TABLE extra (x INTEGER);' }];
    expect(pendingMigrations(db, next).pending.map((m) => m.name)).toEqual(['extra']);
    expect(migrate(db, next)).toEqual([MIGRATIONS.length + 1]);
  });

  it('refuses a database from a newer banger', () => {
    const db = new Database(':memory:');
    db.pragma('user_version = 999');
    expect(() => migrate(db)).toThrow(/newer than this banger/);
  });

  it('5 gives an image made before it the kind debian and its source text as reference', () => {
    const db = new Database(':memory:');
    migrate(db, MIGRATIONS.slice(0, 4));
    db.prepare(`INSERT INTO images (name, source, kernel_version, rootfs_bytes, packages, created_at) VALUES ('bookworm', 'mmdebstrap bookworm (http://m)', '6.1', 1, '[]', 'now')`).run();
    migrate(db);
    expect(db.prepare('SELECT source_kind, source_ref FROM images').get()).toEqual({ source_kind: 'debian', source_ref: 'mmdebstrap bookworm (http://m)' });
  });

  it('rolls back a failing migration entirely', () => {
    const db = new Database(':memory:');
    migrate(db);
    const bad = [...MIGRATIONS, { version: MIGRATIONS.length + 1, name: 'bad', sql: 'CREATE TABLE t1 (x); SELECT nope FROM nowhere;' }];
    expect(() => migrate(db, bad)).toThrow();
    expect(pendingMigrations(db, bad).pending.map((m) => m.name)).toEqual(['bad']);
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name='t1'").get()).toBeUndefined();
  });
});

describe('Store', () => {
  const open = () => Store.open(join(mkdtempSync(join(tmpdir(), 'store-')), 'state.db'));

  it('stores, finds, updates and deletes VMs', () => {
    const s = open();
    s.insertVm(vm({ ephemeral: true }));
    expect(s.findVmByName('box')).toMatchObject({ id: 'abc123abc123', ephemeral: true, state: 'creating' });
    s.setVmState('abc123abc123', 'running');
    expect(s.findVmById('abc123abc123')?.state).toBe('running');
    s.deleteVm('abc123abc123');
    expect(s.listVms()).toEqual([]);
  });

  it('a duplicate name is already_exists', () => {
    const s = open();
    s.insertVm(vm());
    try {
      s.insertVm(vm({ id: '0123456789ab' }));
      expect.fail('should throw');
    } catch (e) {
      expect((e as BangerError).code).toBe('already_exists');
    }
    expect(s.listVms()).toHaveLength(1);
  });

  it('stores images', () => {
    const s = open();
    s.upsertImage({ name: 'bookworm', source: 'x', sourceKind: 'debian', sourceRef: 'x', kernelVersion: '6.1', kernel: null, rootfsBytes: 10, packages: ['git'], createdAt: 'now' });
    expect(s.findImage('bookworm')?.packages).toEqual(['git']);
    s.insertVm(vm());
    expect(s.vmsUsingImage('bookworm')).toEqual(['box']);
    s.deleteImage('bookworm');
    expect(s.listImages()).toEqual([]);
  });

  it('names what boots a catalog kernel (images and VMs, invalid rows included); a bad kernel name makes the row invalid', () => {
    const s = open();
    s.upsertImage({ name: 'alpine', source: 'x', sourceKind: 'oci', sourceRef: 'x', kernelVersion: '6.12.8', kernel: 'generic-6.12', rootfsBytes: 10, packages: [], createdAt: 'now' });
    expect(s.findImage('alpine')?.kernel).toBe('generic-6.12');
    s.insertVm({ ...vm(), kernel: 'generic-6.12' });
    expect(s.findVmByName('box')?.kernel).toBe('generic-6.12');
    expect(s.kernelUsers('generic-6.12')).toEqual(['image alpine', 'VM box']);
    expect(s.kernelUsers('other')).toEqual([]);
    s.db.prepare("UPDATE vms SET vcpu = 'x' WHERE name = 'box'").run();
    expect(s.kernelUsers('generic-6.12')).toEqual(['image alpine', expect.stringMatching(/^invalid VM row \d+$/)]);
    s.db.prepare("UPDATE images SET kernel = '../x' WHERE name = 'alpine'").run();
    expect(s.findImage('alpine')).toBeUndefined();
  });

  it("stores an image's source kind and reference; an unknown kind makes the row invalid", () => {
    const s = open();
    const ref = 'docker.io/library/debian:bookworm@sha256:' + 'a'.repeat(64);
    s.upsertImage({ name: 'debian-bookworm', source: `pulled ${ref}`, sourceKind: 'oci', sourceRef: ref, kernelVersion: '6.1', kernel: null, rootfsBytes: 10, packages: [], createdAt: 'now' });
    expect(s.findImage('debian-bookworm')).toMatchObject({ sourceKind: 'oci', sourceRef: ref });
    s.db.prepare("UPDATE images SET source_kind = 'ftp' WHERE name = 'debian-bookworm'").run();
    expect(s.findImage('debian-bookworm')).toBeUndefined();
    expect(s.scanImages().invalid[0]?.problem).toMatch(/source_kind/);
  });
});

describe('Store: rows are validated on read', () => {
  const open = () => Store.open(join(mkdtempSync(join(tmpdir(), 'store-')), 'state.db'));

  it('a row with vcpu "many" is not returned as a VM: list skips it, find treats it as absent, scan names it', () => {
    const s = open();
    s.insertVm(vm());
    s.insertVm(vm({ id: '0123456789ab', name: 'good' }));
    s.db.prepare("UPDATE vms SET vcpu = 'many' WHERE name = 'box'").run();
    expect(s.listVms().map((v) => v.name)).toEqual(['good']);
    expect(s.findVmByName('box')).toBeUndefined();
    expect(s.findVmById('abc123abc123')).toBeUndefined();
    const { invalid } = s.scanVms();
    expect(invalid).toHaveLength(1);
    expect(invalid[0]).toMatchObject({ table: 'vms', label: '"box"' });
    expect(invalid[0]!.problem).toMatch(/^vcpu: /);
    expect(s.invalidVmNamed('box')?.rowid).toBe(invalid[0]!.rowid);
    expect(s.invalidVmNamed('good')).toBeUndefined();
    // An image stays "in use" by an invalid row: it is never deleted from under it.
    expect(s.vmsUsingImage('bookworm')).toEqual([`invalid row ${invalid[0]!.rowid}`, 'good']);
  });

  it.each([
    { col: 'id', value: "'../x'" },
    { col: 'id', value: "'ABCDEF012345'" },
    { col: 'name', value: "'../../etc'" },
    { col: 'name', value: `'${'a'.repeat(100_000)}'` },
    { col: 'image', value: "'../victim'" },
    { col: 'state', value: "'sideways'" },
    { col: 'network', value: "'carrier-pigeon'" },
    { col: 'ip', value: "'10.0.0.1; rm -rf /'" },
    { col: 'memory_mib', value: '-5' },
    { col: 'ephemeral', value: '7' },
  ])('a row with a bad $col is invalid, and its label and problem are bounded', ({ col, value }) => {
    const s = open();
    s.insertVm(vm());
    s.db.prepare(`UPDATE vms SET ${col} = ${value}`).run();
    expect(s.listVms()).toEqual([]);
    const [row] = s.scanVms().invalid;
    expect(row?.problem).toMatch(new RegExp(`^${col}: `));
    expect(row!.label.length).toBeLessThan(120);
    expect(row!.problem.length).toBeLessThanOrEqual(300);
  });

  it('an image row with packages that are not JSON is skipped, not thrown', () => {
    const s = open();
    s.upsertImage({ name: 'bookworm', source: 'x', sourceKind: 'debian', sourceRef: 'x', kernelVersion: '6.1', kernel: null, rootfsBytes: 10, packages: ['git'], createdAt: 'now' });
    s.db.prepare("UPDATE images SET packages = '{not json'").run();
    expect(() => s.listImages()).not.toThrow();
    expect(s.listImages()).toEqual([]);
    expect(s.findImage('bookworm')).toBeUndefined();
    expect(s.hasImageRow('bookworm')).toBe(true);
    expect(s.invalidImageNamed('bookworm')?.problem).toMatch(/^packages: not JSON/);
  });

  it('invalidRowError is a coded error naming the row, with a hint that says what to do', () => {
    const s = open();
    s.insertVm(vm());
    s.db.prepare("UPDATE vms SET vcpu = 'many'").run();
    const e = invalidRowError(s.invalidVmNamed('box')!, s.path);
    expect(e.code).toBe('conflict');
    expect(e.message).toMatch(/VM row "box" \(rowid \d+\) in state.db is invalid \(vcpu: /);
    expect(e.hint).toContain('DELETE FROM vms WHERE rowid =');
  });
});
