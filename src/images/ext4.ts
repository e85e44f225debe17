/**
 * The ext4 stage: the root tree becomes a sparse ext4 image with
 * `mkfs.ext4 -d` (which copies owners, modes and xattrs from the tree).
 */
import { lstatSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunOptions, RunResult } from '../system/runner.js';
import { toolPath } from '../system/which.js';

export const ROOTFS_LABEL = 'banger-root';

const MiB = 1024 * 1024;

/** Image size: used space plus generous headroom, at least 1 GiB, in 64 MiB steps (sparse). */
export function rootfsSize(usedBytes: number): number {
  const want = Math.max(usedBytes * 1.5 + 256 * MiB, 1024 * MiB);
  return Math.ceil(want / (64 * MiB)) * 64 * MiB;
}

/** Bytes allocated and inode count of a tree (does not cross mount points). */
export function diskUsage(dir: string): { bytes: number; inodes: number } {
  const dev = lstatSync(dir).dev;
  let bytes = 0;
  let inodes = 0;
  const seen = new Set<string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      const st = lstatSync(path);
      if (st.dev !== dev) continue;
      if (st.nlink > 1 && !st.isDirectory()) {
        const key = `${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      inodes++;
      bytes += Math.max(st.blocks * 512, 4096);
      if (st.isDirectory()) walk(path);
    }
  };
  walk(dir);
  return { bytes, inodes };
}

/** Formats `imgPath` (created sparse, `bytes` long) as ext4 holding the tree at `rootDir`. */
export async function makeExt4(run: (argv: string[], opts?: RunOptions) => Promise<RunResult>, rootDir: string, imgPath: string, bytes: number): Promise<void> {
  writeFileSync(imgPath, '', { mode: 0o644 });
  truncateSync(imgPath, bytes);
  await run([toolPath('mkfs.ext4'), '-q', '-F', '-t', 'ext4', '-L', ROOTFS_LABEL, '-m', '0', '-i', '8192', '-d', rootDir, imgPath], {
    timeoutMs: 30 * 60 * 1000,
  });
}
