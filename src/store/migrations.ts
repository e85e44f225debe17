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
];
