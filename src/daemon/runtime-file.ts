/**
 * Per-VM runtime.json: what is true now about a booted VM. Never in SQLite.
 * The daemon's part (which VMM, accelerator, where SSH is, when it started)
 * and the driver's part ("driver": the handle its boot returned, opaque
 * here and read back by that driver's parseHandle).
 */
import { rmSync } from 'node:fs';
import { z } from 'zod';
import { VMMS, type Vmm } from '../model/types.js';
import type { VmmHandle } from '../vmm/driver.js';
import { readJsonFile, writeFileAtomic } from '../system/fs.js';

export interface RuntimeRecord {
  vmm: Vmm;
  accel: 'kvm' | 'tcg';
  sshHost: string;
  sshPort: number;
  startedAt: string;
  /** The driver's handle: persisted as is, read only by the driver (after its parseHandle). */
  driver: VmmHandle;
}

/**
 * runtime.json is on disk: it is parsed with a schema before any field is
 * used (and the driver parses its part before a pid is signalled or a socket
 * connected to). A file that does not match reads as "no runtime" (the VM is
 * then treated as not running).
 */
const daemonPart = {
  accel: z.enum(['kvm', 'tcg']),
  sshHost: z.string().min(1).max(255),
  sshPort: z.number().int().min(1).max(65535),
  startedAt: z.string().max(64),
};
const currentSchema = z.object({ vmm: z.enum(VMMS), ...daemonPart, driver: z.record(z.string(), z.unknown()) });
/**
 * Written before the driver split (VMs booted by an older daemon, adopted
 * after an upgrade): one flat object, QEMU's fields (pid, pidStartTime,
 * qmpSocket, qgaSocket) beside the daemon's, and QEMU the only VMM. Every
 * field that is not the daemon's is the driver's part.
 */
const flatSchema = z.object(daemonPart).catchall(z.unknown());

export function readRuntime(path: string): RuntimeRecord | undefined {
  const raw = readJsonFile<unknown>(path);
  if (typeof raw === 'object' && raw !== null && 'driver' in raw) {
    const r = currentSchema.safeParse(raw);
    return r.success ? r.data : undefined;
  }
  const flat = flatSchema.safeParse(raw);
  if (!flat.success) return undefined;
  const { accel, sshHost, sshPort, startedAt, ...driver } = flat.data;
  return { vmm: 'qemu', accel, sshHost, sshPort, startedAt, driver };
}

export function writeRuntime(path: string, rt: RuntimeRecord): void {
  writeFileAtomic(path, JSON.stringify(rt, null, 2) + '\n');
}

export function removeRuntime(path: string): void {
  rmSync(path, { force: true });
}
