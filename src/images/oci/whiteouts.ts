/**
 * OCI whiteouts (image-spec layer.md, "Whiteouts"): an entry `DIR/.wh.NAME`
 * deletes `DIR/NAME` (a file, a symlink — never its target — or a whole
 * tree) from the layers below; `DIR/.wh..wh..opq` empties DIR of what the
 * layers below put there. Neither is extracted, and other `.wh..wh.` names
 * (aufs's `.wh..wh.plnk`, `.wh..wh.aufs`) are skipped.
 *
 * A whiteout only ever touches lower layers: layers.ts collects a layer's
 * markers in a first pass over its tar and applies them here before the
 * second pass extracts the layer, so what the same layer puts in an opaque
 * directory stays whatever the order of the entries in the tar.
 *
 * DIR is resolved inside the root with lstat and never through a symlink:
 * a marker under a symlinked directory deletes nothing (and says so).
 */
import { PathProblem, type RootFs } from './rootfs.js';

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';
const META_PREFIX = '.wh..wh.';

export type Marker =
  | { kind: 'whiteout'; dir: string[]; name: string }
  | { kind: 'opaque'; dir: string[] }
  /** Another `.wh..wh.` name: skipped. */
  | { kind: 'meta' };

/** The marker an entry's (normalised) components name, or undefined for an ordinary entry. */
export function markerOf(parts: readonly string[]): Marker | undefined {
  const base = parts[parts.length - 1];
  if (base === undefined || !base.startsWith(WHITEOUT_PREFIX)) return undefined;
  const dir = parts.slice(0, -1);
  if (base === OPAQUE_MARKER) return { kind: 'opaque', dir };
  if (base.startsWith(META_PREFIX)) return { kind: 'meta' };
  const name = base.slice(WHITEOUT_PREFIX.length);
  // `.wh...` would name DIR's parent, `.wh..` DIR itself, `.wh.` nothing.
  if (name === '..' || name === '.') throw new PathProblem(`the whiteout ${JSON.stringify(base)} names ${name === '..' ? 'the parent directory' : 'its own directory'}`, 'hostile');
  if (name === '') throw new PathProblem('a whiteout without a name', 'corrupt');
  return { kind: 'whiteout', dir, name };
}

/** A layer's markers, from its first pass. */
export interface WhiteoutPlan {
  opaque: string[][];
  whiteouts: { dir: string[]; name: string }[];
}

export interface WhiteoutEffects {
  /** Something at `rel` was deleted (a directory: with all under it). */
  removed(rel: string, wasDir: boolean): void;
  /** Everything under `rel` was deleted, `rel` kept. */
  emptied(rel: string): void;
  warn(message: string): void;
}

/** Applies a layer's markers to the tree (its lower layers). */
export async function applyWhiteouts(fs: RootFs, plan: WhiteoutPlan, fx: WhiteoutEffects): Promise<void> {
  for (const dir of plan.opaque) {
    const abs = await fs.dir(dir, false);
    const rel = dir.join('/');
    if (typeof abs !== 'string') {
      if (abs.blocked === 'symlink') fx.warn(`opaque marker in ${rel}/ ignored: ${abs.at} is a symlink, and nothing is deleted through one`);
      continue;
    }
    await fs.empty(dir);
    fx.emptied(rel);
  }
  for (const w of plan.whiteouts) {
    const abs = await fs.dir(w.dir, false);
    const rel = [...w.dir, w.name].join('/');
    if (typeof abs !== 'string') {
      if (abs.blocked === 'symlink') fx.warn(`whiteout of ${rel} ignored: ${abs.at} is a symlink, and nothing is deleted through one`);
      continue;
    }
    const st = await fs.remove([...w.dir, w.name]);
    if (st !== undefined) fx.removed(rel, st.isDirectory());
  }
}
