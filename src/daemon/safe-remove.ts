/**
 * The one recursive remove of the daemon's services: refuses (BangerError
 * internal, nothing removed) unless `target` is strictly inside `root`, both
 * as written and with the symlinks of its parent directories resolved. A
 * symlink at `target` itself is removed as a link; what it points at is
 * never followed.
 */
import { realpathSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { assertWithin } from '../paths/paths.js';

export function removeTreeUnder(root: string, target: string): void {
  assertWithin(root, target);
  let realParent: string;
  let realRoot: string;
  try {
    realParent = realpathSync(dirname(target));
    realRoot = realpathSync(root);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // no parent (or no root): nothing to remove
    throw e;
  }
  assertWithin(realRoot, join(realParent, basename(target)));
  rmSync(target, { recursive: true, force: true });
}
