import { describe, it, expect } from 'vitest';
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { migrate, pendingMigrations, Store } from './store.js';
import { MIGRATIONS } from './migrations.js';
import type { VmRecord } from '../model/types.js';
import { BangerError } from '../errors/errors.js';

const vm = (over: Partial<VmRecord> = {}): VmRecord => ({
  id: 'abc123',
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
    expect(s.findVmByName('box')).toMatchObject({ id: 'abc123', ephemeral: true, state: 'creating' });
    s.setVmState('abc123', 'running');
    expect(s.findVmById('abc123')?.state).toBe('running');
    s.deleteVm('abc123');
    expect(s.listVms()).toEqual([]);
  });

  it('a duplicate name is already_exists', () => {
    const s = open();
    s.insertVm(vm());
    try {
      s.insertVm(vm({ id: 'other' }));
      expect.fail('should throw');
    } catch (e) {
      expect((e as BangerError).code).toBe('already_exists');
    }
    expect(s.listVms()).toHaveLength(1);
  });

  it('stores images', () => {
    const s = open();
    s.upsertImage({ name: 'bookworm', source: 'x', kernelVersion: '6.1', rootfsBytes: 10, packages: ['git'], createdAt: 'now' });
    expect(s.findImage('bookworm')?.packages).toEqual(['git']);
    s.insertVm(vm());
    expect(s.vmsUsingImage('bookworm').map((v) => v.name)).toEqual(['box']);
    s.deleteImage('bookworm');
    expect(s.listImages()).toEqual([]);
  });
});
