/** Per-VM runtime.json: what is true now (pid + start time, sockets, port). Never in SQLite. */
import type { VmRuntime } from '../model/types.js';
import { readJsonFile, writeFileAtomic } from '../system/fs.js';
import { rmSync } from 'node:fs';

export function readRuntime(path: string): VmRuntime | undefined {
  const r = readJsonFile<VmRuntime>(path);
  if (!r || typeof r.pid !== 'number' || typeof r.pidStartTime !== 'string') return undefined;
  return r;
}

export function writeRuntime(path: string, rt: VmRuntime): void {
  writeFileAtomic(path, JSON.stringify(rt, null, 2) + '\n');
}

export function removeRuntime(path: string): void {
  rmSync(path, { force: true });
}
