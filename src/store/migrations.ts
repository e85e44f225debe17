/**
 * Numbered schema migrations. Append only: a released migration never
 * changes. `bangerd --check-migrations` lists the pending ones.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'images and vms',
    sql: `
      CREATE TABLE images (
        name TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        kernel_version TEXT NOT NULL,
        rootfs_bytes INTEGER NOT NULL,
        packages TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE TABLE vms (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        image TEXT NOT NULL,
        vcpu INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL,
        system_overlay_bytes INTEGER NOT NULL,
        vmm TEXT NOT NULL,
        network TEXT NOT NULL,
        state TEXT NOT NULL,
        ephemeral INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'per-VM work disk size',
    sql: `ALTER TABLE vms ADD COLUMN disk_bytes INTEGER NOT NULL DEFAULT 0;`,
  },
  {
    version: 3,
    name: 'egress flag and workspaces',
    sql: `
      ALTER TABLE vms ADD COLUMN nat INTEGER NOT NULL DEFAULT 0;
      CREATE TABLE workspaces (
        vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
        host_path TEXT NOT NULL,
        guest_path TEXT NOT NULL,
        include_untracked INTEGER NOT NULL,
        tree TEXT NOT NULL,
        commit_sha TEXT NOT NULL,
        head TEXT,
        branch TEXT,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        mode TEXT NOT NULL,
        prepared_at TEXT NOT NULL
      );
    `,
  },
  {
    version: 4,
    name: 'bridge addresses',
    sql: `
      ALTER TABLE vms ADD COLUMN ip TEXT;
      CREATE UNIQUE INDEX vms_ip ON vms(ip) WHERE ip IS NOT NULL;
    `,
  },
  {
    version: 5,
    name: 'image source kind and reference',
    sql: `
      ALTER TABLE images ADD COLUMN source_kind TEXT NOT NULL DEFAULT 'debian';
      ALTER TABLE images ADD COLUMN source_ref TEXT NOT NULL DEFAULT '';
      UPDATE images SET source_ref = source WHERE source_ref = '';
    `,
  },
  {
    version: 6,
    name: 'catalog kernels of images and VMs',
    sql: `
      ALTER TABLE images ADD COLUMN kernel TEXT;
      ALTER TABLE vms ADD COLUMN kernel TEXT;
    `,
  },
];
