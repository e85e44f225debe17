/**
 * state.db: VMs and images as rows (durable intent). Transient runtime
 * facts (pid, sockets, forwarded port) are NOT here: they live in each VM's
 * runtime.json and are rebuilt from the OS when the daemon starts.
 */
import Database from 'better-sqlite3';
import { BangerError } from '../errors/errors.js';
import type { ImageRecord, VmRecord, VmState, WorkspaceMode, WorkspaceRecord } from '../model/types.js';
import { MIGRATIONS, type Migration } from './migrations.js';

type Db = Database.Database;

export interface PendingMigrations {
  current: number;
  pending: Migration[];
}

function currentVersion(db: Db): number {
  return db.pragma('user_version', { simple: true }) as number;
}

export function pendingMigrations(db: Db, migrations = MIGRATIONS): PendingMigrations {
  const current = currentVersion(db);
  return { current, pending: migrations.filter((m) => m.version > current) };
}

export function migrate(db: Db, migrations = MIGRATIONS): number[] {
  const applied: number[] = [];
  const latest = migrations.at(-1)?.version ?? 0;
  if (currentVersion(db) > latest) {
    throw new BangerError(
      'bad_version',
      `state.db is at schema version ${currentVersion(db)}, newer than this banger understands (${latest})`,
      'use the newer banger that wrote it',
    );
  }
  for (const m of migrations) {
    if (m.version <= currentVersion(db)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
    applied.push(m.version);
  }
  return applied;
}

interface VmRow {
  id: string;
  name: string;
  image: string;
  vcpu: number;
  memory_mib: number;
  system_overlay_bytes: number;
  disk_bytes: number;
  vmm: string;
  network: string;
  state: string;
  ephemeral: number;
  nat: number;
  ip: string | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
}

interface ImageRow {
  name: string;
  source: string;
  kernel_version: string;
  rootfs_bytes: number;
  packages: string;
  created_at: string;
}

const toVm = (r: VmRow): VmRecord => ({
  id: r.id,
  name: r.name,
  image: r.image,
  vcpu: r.vcpu,
  memoryMib: r.memory_mib,
  systemOverlayBytes: r.system_overlay_bytes,
  diskBytes: r.disk_bytes,
  vmm: r.vmm as VmRecord['vmm'],
  network: r.network as VmRecord['network'],
  state: r.state as VmState,
  ephemeral: r.ephemeral === 1,
  nat: r.nat === 1,
  ip: r.ip,
  lastError: r.last_error,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

interface WorkspaceRow {
  host_path: string;
  guest_path: string;
  include_untracked: number;
  tree: string;
  commit_sha: string;
  head: string | null;
  branch: string | null;
  files: number;
  bytes: number;
  mode: string;
  prepared_at: string;
}

const toWorkspace = (r: WorkspaceRow): WorkspaceRecord => ({
  hostPath: r.host_path,
  guestPath: r.guest_path,
  includeUntracked: r.include_untracked === 1,
  tree: r.tree,
  commit: r.commit_sha,
  head: r.head,
  branch: r.branch,
  files: r.files,
  bytes: r.bytes,
  mode: r.mode as WorkspaceMode,
  preparedAt: r.prepared_at,
});

const toImage = (r: ImageRow): ImageRecord => ({
  name: r.name,
  source: r.source,
  kernelVersion: r.kernel_version,
  rootfsBytes: r.rootfs_bytes,
  packages: JSON.parse(r.packages) as string[],
  createdAt: r.created_at,
});

export class Store {
  private constructor(readonly db: Db) {}

  static open(path: string): Store {
    const db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('busy_timeout = 5000');
    db.pragma('foreign_keys = ON');
    migrate(db);
    return new Store(db);
  }

  close(): void {
    this.db.close();
  }

  /** Inserts a VM; a duplicate name is `already_exists` (the UNIQUE constraint decides races). */
  insertVm(vm: VmRecord): void {
    try {
      this.db
        .prepare(
          `INSERT INTO vms (id, name, image, vcpu, memory_mib, system_overlay_bytes, disk_bytes, vmm, network, state, ephemeral, nat, ip, last_error, created_at, updated_at)
           VALUES (@id, @name, @image, @vcpu, @memoryMib, @systemOverlayBytes, @diskBytes, @vmm, @network, @state, @ephemeral, @nat, @ip, @lastError, @createdAt, @updatedAt)`,
        )
        .run({ ...vm, ephemeral: vm.ephemeral ? 1 : 0, nat: vm.nat ? 1 : 0, ip: vm.ip ?? null });
    } catch (e) {
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' && vm.ip && /vms\.ip/.test(String(e))) {
        throw new BangerError('conflict', `address ${vm.ip} was taken by another VM meanwhile`, 'try again');
      }
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') {
        throw new BangerError('already_exists', `a VM named ${vm.name} already exists`, 'pick another --name, or `banger vm delete -f ' + vm.name + '`');
      }
      throw e;
    }
  }

  setVmState(id: string, state: VmState, lastError: string | null = null): void {
    this.db
      .prepare('UPDATE vms SET state = ?, last_error = ?, updated_at = ? WHERE id = ?')
      .run(state, lastError, new Date().toISOString(), id);
  }

  /** Changes a stopped VM's resources (vm set). */
  updateVmResources(id: string, r: { vcpu: number; memoryMib: number; diskBytes: number }): void {
    this.db
      .prepare('UPDATE vms SET vcpu = ?, memory_mib = ?, disk_bytes = ?, updated_at = ? WHERE id = ?')
      .run(r.vcpu, r.memoryMib, r.diskBytes, new Date().toISOString(), id);
  }

  deleteVm(id: string): void {
    this.db.prepare('DELETE FROM vms WHERE id = ?').run(id);
  }

  listVms(): VmRecord[] {
    return (this.db.prepare('SELECT * FROM vms ORDER BY created_at, name').all() as VmRow[]).map(toVm);
  }

  findVmByName(name: string): VmRecord | undefined {
    const r = this.db.prepare('SELECT * FROM vms WHERE name = ?').get(name) as VmRow | undefined;
    return r ? toVm(r) : undefined;
  }

  findVmById(id: string): VmRecord | undefined {
    const r = this.db.prepare('SELECT * FROM vms WHERE id = ?').get(id) as VmRow | undefined;
    return r ? toVm(r) : undefined;
  }

  upsertImage(img: ImageRecord): void {
    this.db
      .prepare(
        `INSERT INTO images (name, source, kernel_version, rootfs_bytes, packages, created_at)
         VALUES (@name, @source, @kernelVersion, @rootfsBytes, @packages, @createdAt)
         ON CONFLICT(name) DO UPDATE SET source=excluded.source, kernel_version=excluded.kernel_version,
           rootfs_bytes=excluded.rootfs_bytes, packages=excluded.packages, created_at=excluded.created_at`,
      )
      .run({ ...img, packages: JSON.stringify(img.packages) });
  }

  findImage(name: string): ImageRecord | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE name = ?').get(name) as ImageRow | undefined;
    return r ? toImage(r) : undefined;
  }

  listImages(): ImageRecord[] {
    return (this.db.prepare('SELECT * FROM images ORDER BY name').all() as ImageRow[]).map(toImage);
  }

  deleteImage(name: string): void {
    this.db.prepare('DELETE FROM images WHERE name = ?').run(name);
  }

  /** Records a VM's workspace (replacing the previous one). */
  upsertWorkspace(vmId: string, w: WorkspaceRecord): void {
    this.db
      .prepare(
        `INSERT INTO workspaces (vm_id, host_path, guest_path, include_untracked, tree, commit_sha, head, branch, files, bytes, mode, prepared_at)
         VALUES (@vmId, @hostPath, @guestPath, @includeUntracked, @tree, @commit, @head, @branch, @files, @bytes, @mode, @preparedAt)
         ON CONFLICT(vm_id) DO UPDATE SET host_path=excluded.host_path, guest_path=excluded.guest_path,
           include_untracked=excluded.include_untracked, tree=excluded.tree, commit_sha=excluded.commit_sha, head=excluded.head,
           branch=excluded.branch, files=excluded.files, bytes=excluded.bytes, mode=excluded.mode, prepared_at=excluded.prepared_at`,
      )
      .run({ ...w, vmId, includeUntracked: w.includeUntracked ? 1 : 0 });
  }

  findWorkspace(vmId: string): WorkspaceRecord | null {
    const r = this.db.prepare('SELECT * FROM workspaces WHERE vm_id = ?').get(vmId) as WorkspaceRow | undefined;
    return r ? toWorkspace(r) : null;
  }

  vmsUsingImage(name: string): VmRecord[] {
    return (this.db.prepare('SELECT * FROM vms WHERE image = ?').all(name) as VmRow[]).map(toVm);
  }
}
