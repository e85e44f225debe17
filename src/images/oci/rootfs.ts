/**
 * The root tree layers are applied onto, and the only way layers.ts and
 * whiteouts.ts touch it: every path is resolved inside the root component
 * by component with lstat, and a symlink is never followed — not in a
 * parent (the operation is refused), not at the final component (it is the
 * thing replaced or removed, never what it points to). Entry names are
 * normalised here: a leading `/` is dropped (layer paths are relative to
 * the image's root), `.` and empty components go, a `..` component is
 * refused.
 *
 * Sound because the applier is the tree's only writer while it runs and
 * works sequentially: a component checked here is not swapped for a symlink
 * before it is used. Directories verified (or made) here are remembered,
 * and forgotten when something under them is removed.
 */
import { lstat, mkdir, readdir, rmdir, unlink, chmod } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join } from 'node:path';

/** Longest name of one component (NAME_MAX). */
export const COMPONENT_MAX = 255;

/** hostile: it would reach outside the root; limit: past a bound; corrupt: no sound tar has it. */
export type PathProblemKind = 'hostile' | 'limit' | 'corrupt';

export class PathProblem extends Error {
  constructor(
    message: string,
    readonly kind: PathProblemKind,
  ) {
    super(message);
    this.name = 'PathProblem';
  }
}

/**
 * The components of an entry name inside the root ([] is the root itself).
 * Throws PathProblem for `..`, NUL, an over-long name or component.
 */
export function entryParts(name: string, maxPathBytes: number): string[] {
  if (name.includes('\0')) throw new PathProblem('the name holds a NUL byte', 'corrupt');
  const parts = name.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) throw new PathProblem('the name has a ".." component (it would leave the image\'s root)', 'hostile');
  const bytes = Buffer.byteLength(parts.join('/'));
  if (bytes > maxPathBytes) throw new PathProblem(`the name is ${bytes} bytes long (at most ${maxPathBytes})`, 'limit');
  const long = parts.find((c) => Buffer.byteLength(c) > COMPONENT_MAX);
  if (long !== undefined) throw new PathProblem(`a component of the name is longer than ${COMPONENT_MAX} bytes`, 'limit');
  return parts;
}

export async function lstatOrUndefined(abs: string): Promise<Stats | undefined> {
  try {
    return await lstat(abs);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Why a parent could not be resolved: a component is a symlink, is not a directory, or (when not creating) is missing. */
export type Blocked = { blocked: 'symlink' | 'not-dir' | 'missing'; at: string };

export class RootFs {
  /** Relative paths ('' = the root) known to be real directories. */
  private readonly dirs = new Set<string>(['']);

  /** `root` must be an absolute, resolved path of an existing directory (the caller realpaths it). */
  constructor(
    readonly root: string,
    private readonly owner: boolean,
  ) {}

  abs(parts: readonly string[]): string {
    return parts.length === 0 ? this.root : join(this.root, ...parts);
  }

  /**
   * The absolute path of the directory `parts`, every component a real
   * directory (missing ones made 0755 when `create`), or why not.
   */
  async dir(parts: readonly string[], create: boolean): Promise<string | Blocked> {
    let rel = '';
    for (const c of parts) {
      rel = rel === '' ? c : `${rel}/${c}`;
      if (this.dirs.has(rel)) continue;
      const abs = join(this.root, rel);
      const st = await lstatOrUndefined(abs);
      if (st === undefined) {
        if (!create) return { blocked: 'missing', at: rel };
        await mkdir(abs, 0o700);
        await chmod(abs, 0o755); // what container runtimes give a parent the layer does not list; umask-independent
      } else if (st.isSymbolicLink()) {
        return { blocked: 'symlink', at: rel };
      } else if (!st.isDirectory()) {
        return { blocked: 'not-dir', at: rel };
      }
      this.dirs.add(rel);
    }
    return this.abs(parts);
  }

  /** Records that `rel` is now a real directory (made by the caller). */
  knowDir(rel: string): void {
    this.dirs.add(rel);
  }

  /**
   * Removes whatever is at `parts` (a file, a symlink — not its target — or
   * a whole tree), whose parent the caller resolved with dir(). Returns what
   * was there.
   */
  async remove(parts: readonly string[]): Promise<Stats | undefined> {
    const abs = this.abs(parts);
    const st = await lstatOrUndefined(abs);
    if (st === undefined) return undefined;
    if (st.isDirectory()) {
      await this.removeTree(abs, st);
      this.forgetUnder(parts.join('/'));
    } else {
      await unlink(abs);
    }
    return st;
  }

  /** Removes everything inside the directory `parts` (resolved by the caller), keeping it. */
  async empty(parts: readonly string[]): Promise<void> {
    const abs = this.abs(parts);
    await this.writable(abs);
    for (const name of await readdir(abs)) await this.remove([...parts, name]);
  }

  private async removeTree(abs: string, st: Stats): Promise<void> {
    await this.writable(abs, st);
    for (const name of await readdir(abs)) {
      const child = join(abs, name);
      const cst = await lstat(child);
      if (cst.isDirectory()) await this.removeTree(child, cst);
      else await unlink(child);
    }
    await rmdir(abs);
  }

  /** Not root: a directory of ours left without owner rwx (a layer's 0555) is opened up before its entries go. */
  private async writable(abs: string, st?: Stats): Promise<void> {
    if (this.owner) return;
    const s = st ?? (await lstat(abs));
    if ((s.mode & 0o700) !== 0o700) await chmod(abs, (s.mode & 0o7777) | 0o700);
  }

  private forgetUnder(rel: string): void {
    const prefix = `${rel}/`;
    for (const d of this.dirs) if (d === rel || d.startsWith(prefix)) this.dirs.delete(d);
  }
}
