/**
 * The publish stage: a finished image directory appears at its final path
 * in one rename, so a concurrent reader never sees a torn image.
 */
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { RunOptions, RunResult } from '../system/runner.js';

/**
 * Moves the finished image directory to `outDir`. A rename when both are on
 * one filesystem; otherwise a sparse copy into a sibling of outDir, then a
 * rename. An existing outDir is moved aside first and removed afterwards.
 */
export async function publishDir(
  run: (argv: string[], opts?: RunOptions) => Promise<RunResult>,
  stageDir: string,
  outDir: string,
): Promise<void> {
  mkdirSync(dirname(outDir), { recursive: true, mode: 0o700 });
  const suffix = `${process.pid}-${randomBytes(4).toString('hex')}`;
  let source = stageDir;
  try {
    const probe = join(dirname(outDir), `.${basename(outDir)}.probe-${suffix}`);
    renameSync(stageDir, probe);
    source = probe;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    const copy = join(dirname(outDir), `.${basename(outDir)}.partial-${suffix}`);
    try {
      await run(['cp', '-a', '--sparse=always', stageDir, copy], { timeoutMs: 30 * 60 * 1000 });
    } catch (err) {
      rmSync(copy, { recursive: true, force: true });
      throw err;
    }
    source = copy;
  }
  let aside: string | undefined;
  try {
    if (existsSync(outDir)) {
      aside = join(dirname(outDir), `.${basename(outDir)}.old-${suffix}`);
      renameSync(outDir, aside);
    }
    renameSync(source, outDir);
  } catch (e) {
    rmSync(source, { recursive: true, force: true });
    if (aside && !existsSync(outDir)) renameSync(aside, outDir);
    throw e;
  }
  if (aside) rmSync(aside, { recursive: true, force: true });
}
