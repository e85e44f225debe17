/**
 * state.db: VMs and images as rows (durable intent). Transient runtime
 * facts (pid, sockets, forwarded port) are NOT here: they live in each VM's
 * runtime.json and are rebuilt from the OS when the daemon starts.
 */
import Database from 'better-sqlite3';
import { z } from 'zod';
import { BangerError } from '../errors/errors.js';
import { IMAGE_SOURCE_KINDS, NETWORK_MODES, VM_STATES, VMMS, WORKSPACE_MODES, type ImageRecord, type VmRecord, type VmState, type WorkspaceRecord } from '../model/types.js';
import { quoteInput } from '../model/names.js';
import { imageNameSchema, vmIdSchema, vmNameSchema } from '../model/name-schemas.js';
import { MAX_MEMORY_MIB, MAX_VCPU } from '../model/limits.js';
import { MIGRATIONS, type Migration } from './migrations.js';
import { KERNEL_NAME_RE } from '../model/kernel-name.js';

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

/**
 * Rows are validated on read, with the same schemas as the RPC params
 * (src/model/names.ts): state.db is on disk, and a row edited by hand, by a
 * bug or by anything else that can write the file must never make the
 * daemon build a path or run a command from it. A row that fails is left
 * untouched and is not returned as a record: list* skip it, find* treat it
 * as absent, and scan* report it as an InvalidRow (by rowid, since its id
 * or name may be the bad part) for the daemon to log and name in errors.
 */
export interface InvalidRow {
  table: 'vms' | 'images' | 'workspaces';
  rowid: number;
  /** The row's name or id, quoted and cut (it may be the hostile part). */
  label: string;
  /** What failed, e.g. `vcpu: Invalid input: expected number, received string`. */
  problem: string;
}

export interface Scan<T> {
  valid: T[];
  invalid: InvalidRow[];
}

const text = (max: number) => z.string().max(max);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const flag = z.union([z.literal(0), z.literal(1)]).transform((b) => b === 1);
const ipv4 = z.string().regex(/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/, 'not an IPv4 address');
const kernelName = z.string().regex(KERNEL_NAME_RE, 'not a kernel name').nullable();
const gitId = z.string().regex(/^[0-9a-f]{40}([0-9a-f]{24})?$/, 'not a git object id');

const vmRowSchema = z
  .object({
    id: vmIdSchema,
    name: vmNameSchema,
    image: imageNameSchema,
    vcpu: z.number().int().min(1).max(MAX_VCPU),
    memory_mib: z.number().int().min(1).max(MAX_MEMORY_MIB),
    system_overlay_bytes: count,
    disk_bytes: count,
    vmm: z.enum(VMMS),
    network: z.enum(NETWORK_MODES),
    state: z.enum(VM_STATES),
    ephemeral: flag,
    nat: flag,
    ip: ipv4.nullable(),
    kernel: kernelName,
    last_error: text(64 * 1024).nullable(),
    created_at: text(64),
    updated_at: text(64),
  })
  .transform(
    (r): VmRecord => ({
      id: r.id,
      name: r.name,
      image: r.image,
      vcpu: r.vcpu,
      memoryMib: r.memory_mib,
      systemOverlayBytes: r.system_overlay_bytes,
      diskBytes: r.disk_bytes,
      vmm: r.vmm,
      network: r.network,
      state: r.state,
      ephemeral: r.ephemeral,
      nat: r.nat,
      ip: r.ip,
      kernel: r.kernel,
      lastError: r.last_error,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
    }),
  );

const workspaceRowSchema = z
  .object({
    host_path: text(4096).refine((p) => p.startsWith('/'), 'not an absolute path'),
    guest_path: text(4096).refine((p) => p.startsWith('/'), 'not an absolute path'),
    include_untracked: flag,
    tree: gitId,
    commit_sha: gitId,
    head: gitId.nullable(),
    branch: text(1024).nullable(),
    files: count,
    bytes: count,
    mode: z.enum(WORKSPACE_MODES),
    prepared_at: text(64),
  })
  .transform(
    (r): WorkspaceRecord => ({
      hostPath: r.host_path,
      guestPath: r.guest_path,
      includeUntracked: r.include_untracked,
      tree: r.tree,
      commit: r.commit_sha,
      head: r.head,
      branch: r.branch,
      files: r.files,
      bytes: r.bytes,
      mode: r.mode,
      preparedAt: r.prepared_at,
    }),
  );

const imageRowSchema = z
  .object({
    name: imageNameSchema,
    source: text(4096),
    source_kind: z.enum(IMAGE_SOURCE_KINDS),
    source_ref: text(4096),
    kernel_version: text(256),
    kernel: kernelName,
    rootfs_bytes: count,
    packages: text(1024 * 1024).transform((t, ctx): string[] => {
      let v: unknown;
      try {
        v = JSON.parse(t);
      } catch {
        ctx.addIssue({ code: 'custom', message: 'not JSON' });
        return z.NEVER;
      }
      const list = z.array(text(256)).max(10_000).safeParse(v);
      if (!list.success) {
        ctx.addIssue({ code: 'custom', message: 'not a list of package names' });
        return z.NEVER;
      }
      return list.data;
    }),
    created_at: text(64),
  })
  .transform(
    (r): ImageRecord => ({
      name: r.name,
      source: r.source,
      sourceKind: r.source_kind,
      sourceRef: r.source_ref,
      kernelVersion: r.kernel_version,
      kernel: r.kernel,
      rootfsBytes: r.rootfs_bytes,
      packages: r.packages,
      createdAt: r.created_at,
    }),
  );

type Parsed<T> = { ok: true; value: T } | { ok: false; invalid: InvalidRow };

function parseRow<T>(table: InvalidRow['table'], schema: z.ZodType<T>, row: Record<string, unknown>, labelKey: string): Parsed<T> {
  const { rowid, ...fields } = row;
  const r = schema.safeParse(fields);
  if (r.success) return { ok: true, value: r.data };
  const issue = r.error.issues[0];
  const where = issue?.path.length ? `${issue.path.map(String).join('.')}: ` : '';
  const raw = fields[labelKey];
  return {
    ok: false,
    invalid: {
      table,
      rowid: typeof rowid === 'number' ? rowid : -1,
      label: typeof raw === 'string' ? quoteInput(raw) : quoteInput(String(raw)),
      problem: `${where}${issue?.message ?? 'invalid'}`.slice(0, 300),
    },
  };
}

function scanRows<T>(table: InvalidRow['table'], schema: z.ZodType<T>, rows: unknown[], labelKey: string): Scan<T> {
  const out: Scan<T> = { valid: [], invalid: [] };
  for (const row of rows) {
    const p = parseRow(table, schema, row as Record<string, unknown>, labelKey);
    if (p.ok) out.valid.push(p.value);
    else out.invalid.push(p.invalid);
  }
  return out;
}

/** The coded error for an operation on a row that failed validation (nothing was touched). */
export function invalidRowError(row: InvalidRow, dbPath = 'state.db'): BangerError {
  return new BangerError(
    'conflict',
    `the ${row.table === 'vms' ? 'VM' : row.table === 'images' ? 'image' : 'workspace'} row ${row.label} (rowid ${row.rowid}) in state.db is invalid (${row.problem}); banger leaves it and its files alone`,
    `inspect it with \`sqlite3 ${dbPath} "SELECT * FROM ${row.table} WHERE rowid = ${row.rowid}"\` and delete it (\`DELETE FROM ${row.table} WHERE rowid = ${row.rowid}\`) while bangerd is stopped; remove any files it left by hand`,
  );
}

export class Store {
  private constructor(
    readonly db: Db,
    readonly path: string,
  ) {}

  static open(path: string): Store {
    const db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma('busy_timeout = 5000');
    db.pragma('foreign_keys = ON');
    migrate(db);
    return new Store(db, path);
  }

  close(): void {
    this.db.close();
  }

  /** Inserts a VM; a duplicate name is `already_exists` (the UNIQUE constraint decides races). */
  insertVm(vm: VmRecord): void {
    try {
      this.db
        .prepare(
          `INSERT INTO vms (id, name, image, vcpu, memory_mib, system_overlay_bytes, disk_bytes, vmm, network, state, ephemeral, nat, ip, kernel, last_error, created_at, updated_at)
           VALUES (@id, @name, @image, @vcpu, @memoryMib, @systemOverlayBytes, @diskBytes, @vmm, @network, @state, @ephemeral, @nat, @ip, @kernel, @lastError, @createdAt, @updatedAt)`,
        )
        .run({ ...vm, ephemeral: vm.ephemeral ? 1 : 0, nat: vm.nat ? 1 : 0, ip: vm.ip ?? null, kernel: vm.kernel ?? null });
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

  /** Every VM row: the valid ones as records, the others as InvalidRow (see above). */
  scanVms(): Scan<VmRecord> {
    return scanRows('vms', vmRowSchema, this.db.prepare('SELECT rowid, * FROM vms ORDER BY created_at, name').all(), 'name');
  }

  /** The valid VMs (an invalid row is skipped: see scanVms). */
  listVms(): VmRecord[] {
    return this.scanVms().valid;
  }

  /** The VM of that name; undefined when there is none or its row is invalid (invalidVmNamed tells which). */
  findVmByName(name: string): VmRecord | undefined {
    return this.oneVm(this.db.prepare('SELECT rowid, * FROM vms WHERE name = ?').get(name));
  }

  findVmById(id: string): VmRecord | undefined {
    return this.oneVm(this.db.prepare('SELECT rowid, * FROM vms WHERE id = ?').get(id));
  }

  /** The invalid row behind a name, if that is why findVmByName found nothing. */
  invalidVmNamed(name: string): InvalidRow | undefined {
    const r = this.db.prepare('SELECT rowid, * FROM vms WHERE name = ?').get(name);
    if (r === undefined) return undefined;
    const p = parseRow('vms', vmRowSchema, r as Record<string, unknown>, 'name');
    return p.ok ? undefined : p.invalid;
  }

  private oneVm(r: unknown): VmRecord | undefined {
    if (r === undefined) return undefined;
    const p = parseRow('vms', vmRowSchema, r as Record<string, unknown>, 'name');
    return p.ok ? p.value : undefined;
  }

  upsertImage(img: ImageRecord): void {
    this.db
      .prepare(
        `INSERT INTO images (name, source, source_kind, source_ref, kernel_version, kernel, rootfs_bytes, packages, created_at)
         VALUES (@name, @source, @sourceKind, @sourceRef, @kernelVersion, @kernel, @rootfsBytes, @packages, @createdAt)
         ON CONFLICT(name) DO UPDATE SET source=excluded.source, source_kind=excluded.source_kind, source_ref=excluded.source_ref, kernel_version=excluded.kernel_version, kernel=excluded.kernel,
           rootfs_bytes=excluded.rootfs_bytes, packages=excluded.packages, created_at=excluded.created_at`,
      )
      .run({ ...img, kernel: img.kernel ?? null, packages: JSON.stringify(img.packages) });
  }

  /** The image of that name; undefined when there is none or its row is invalid. */
  findImage(name: string): ImageRecord | undefined {
    const r = this.db.prepare('SELECT rowid, * FROM images WHERE name = ?').get(name);
    if (r === undefined) return undefined;
    const p = parseRow('images', imageRowSchema, r as Record<string, unknown>, 'name');
    return p.ok ? p.value : undefined;
  }

  /** The invalid row behind an image name, if that is why findImage found nothing. */
  invalidImageNamed(name: string): InvalidRow | undefined {
    const r = this.db.prepare('SELECT rowid, * FROM images WHERE name = ?').get(name);
    if (r === undefined) return undefined;
    const p = parseRow('images', imageRowSchema, r as Record<string, unknown>, 'name');
    return p.ok ? undefined : p.invalid;
  }

  /** Whether a row of that name exists at all, valid or not. */
  hasImageRow(name: string): boolean {
    return this.db.prepare('SELECT 1 FROM images WHERE name = ?').get(name) !== undefined;
  }

  scanImages(): Scan<ImageRecord> {
    return scanRows('images', imageRowSchema, this.db.prepare('SELECT rowid, * FROM images ORDER BY name').all(), 'name');
  }

  listImages(): ImageRecord[] {
    return this.scanImages().valid;
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

  /** The VM's workspace; null when there is none or its row is invalid (it is then not acted on). */
  findWorkspace(vmId: string): WorkspaceRecord | null {
    const r = this.db.prepare('SELECT rowid, * FROM workspaces WHERE vm_id = ?').get(vmId);
    if (r === undefined) return null;
    const { vm_id: _vmId, ...rest } = r as Record<string, unknown>;
    const p = parseRow('workspaces', workspaceRowSchema, rest, 'host_path');
    return p.ok ? p.value : null;
  }

  /**
   * Names of the VMs whose row names this image, invalid rows included (as
   * "row N"): an image is never deleted or rebuilt from under a row, valid or not.
   */
  vmsUsingImage(name: string): string[] {
    const rows = this.db.prepare('SELECT rowid, * FROM vms WHERE image = ?').all(name);
    return rows.map((r) => {
      const p = parseRow('vms', vmRowSchema, r as Record<string, unknown>, 'name');
      return p.ok ? p.value.name : `invalid row ${p.invalid.rowid}`;
    });
  }

  /**
   * What boots the catalog kernel `name`: "image X" and "VM Y" for each row
   * that names it, invalid rows included (as "row N"), so a kernel is never
   * deleted from under a row.
   */
  kernelUsers(name: string): string[] {
    const images = this.db.prepare('SELECT rowid, * FROM images WHERE kernel = ?').all(name);
    const vms = this.db.prepare('SELECT rowid, * FROM vms WHERE kernel = ?').all(name);
    return [
      ...images.map((r) => {
        const p = parseRow('images', imageRowSchema, r as Record<string, unknown>, 'name');
        return p.ok ? `image ${p.value.name}` : `invalid image row ${p.invalid.rowid}`;
      }),
      ...vms.map((r) => {
        const p = parseRow('vms', vmRowSchema, r as Record<string, unknown>, 'name');
        return p.ok ? `VM ${p.value.name}` : `invalid VM row ${p.invalid.rowid}`;
      }),
    ];
  }
}
