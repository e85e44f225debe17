/** Per-VM runtime.json: what is true now (pid + start time, sockets, port). Never in SQLite. */
import { z } from 'zod';
import type { VmRuntime } from '../model/types.js';
import { readJsonFile, writeFileAtomic } from '../system/fs.js';
import { rmSync } from 'node:fs';

/**
 * runtime.json is on disk: it is parsed with a schema before any field is
 * used (a pid is signalled, sockets are connected to). A file that does not
 * match reads as "no runtime" (the VM is then treated as not running).
 */
const runtimeSchema = z.object({
  // Never 0, 1 or negative: kill(0|-1|-pid) signals groups, pid 1 is init.
  pid: z.number().int().min(2).max(4_194_304),
  pidStartTime: z.string().regex(/^\d{1,20}$/),
  accel: z.enum(['kvm', 'tcg']),
  sshHost: z.string().min(1).max(255),
  sshPort: z.number().int().min(1).max(65535),
  qmpSocket: z.string().min(1).max(4096),
  qgaSocket: z.string().min(1).max(4096),
  startedAt: z.string().max(64),
});

export function readRuntime(path: string): VmRuntime | undefined {
  const r = runtimeSchema.safeParse(readJsonFile<unknown>(path));
  return r.success ? r.data : undefined;
}

export function writeRuntime(path: string, rt: VmRuntime): void {
  writeFileAtomic(path, JSON.stringify(rt, null, 2) + '\n');
}

export function removeRuntime(path: string): void {
  rmSync(path, { force: true });
}
