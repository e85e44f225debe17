/**
 * The root-owned install behind `sudo banger system install`: the built
 * package copied out of the user's checkout into
 *
 *   PREFIX/lib/banger/VERSION/   package.json, bin/, dist/src (runtime .js only), docs/ARCHITECTURE.md,
 *                                node_modules (production dependencies only)
 *   PREFIX/lib/banger/current    → VERSION (what the units run)
 *   PREFIX/bin/banger, bangerd, banger-helper: sh wrappers that exec the node the install was made
 *     with on PREFIX/lib/banger/current/bin/*.js (not `#!/usr/bin/env node`: `sudo banger update`
 *     must not run whichever node is first on PATH, which may be the user's own)
 *
 * Every file and directory is root:root and not writable by group or other,
 * and every directory above the install is checked the same way, so nobody
 * but root can change what the root helper runs. PREFIX is /usr/local unless
 * `--prefix` or $BANGER_PREFIX says otherwise (tests install into a temp
 * dir). Install keeps the version `current` pointed at before (the update
 * issue rolls back to it) and prunes any older one.
 */
import { chmodSync, copyFileSync, existsSync, lchownSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { BangerError } from '../errors/errors.js';

export const DEFAULT_PREFIX = '/usr/local';
export const PREFIX_ENV = 'BANGER_PREFIX';
export const BIN_NAMES = ['banger', 'bangerd', 'banger-helper'] as const;
/** A file the built package must have (the helper's entry point). */
const BUILT_MARKER = 'dist/src/helper/main.js';

export interface InstallLayout {
  prefix: string;
  /** PREFIX/lib/banger: one directory per version, and `current`. */
  libDir: string;
  current: string;
  binDir: string;
}

export interface Owner {
  uid: number;
  gid: number;
}
const ROOT: Owner = { uid: 0, gid: 0 };

export function installLayout(prefix?: string): InstallLayout {
  const p = resolve(prefix ?? (process.env[PREFIX_ENV] || DEFAULT_PREFIX));
  const libDir = join(p, 'lib', 'banger');
  return { prefix: p, libDir, current: join(libDir, 'current'), binDir: join(p, 'bin') };
}

const within = (root: string, p: string) => p === root || p.startsWith(root.endsWith(sep) ? root : root + sep);

/**
 * Why `path` is not safe for root to run from, or undefined when it is: the
 * path and every directory above it must be owned by root and not writable
 * by group or other (a sticky directory such as /tmp is allowed above it:
 * others cannot rename what root put there), and the directories (and the
 * file, with `needExec`) usable by other: the daemon runs as the owner user
 * from the same place.
 */
export function untrustedReason(path: string, needExec = false): string | undefined {
  let p: string;
  try {
    p = realpathSync(path);
  } catch {
    return `${path} does not exist`;
  }
  for (let cur = p, first = true; ; cur = dirname(cur), first = false) {
    const st = lstatSync(cur);
    if (st.uid !== 0) return `${cur} is owned by uid ${st.uid}, not root`;
    const writable = (st.mode & 0o022) !== 0;
    if (writable && (first || !st.isDirectory() || (st.mode & 0o1000) === 0)) return `${cur} is writable by ${st.mode & 0o002 ? 'everyone' : 'its group'} (mode ${(st.mode & 0o7777).toString(8)})`;
    if ((st.isDirectory() || needExec) && (st.mode & 0o001) === 0) return `${cur} is not ${st.isDirectory() ? 'traversable' : 'executable'} by other users (mode ${(st.mode & 0o7777).toString(8)})`;
    if (cur === dirname(cur)) return undefined;
  }
}

/**
 * The node binary the units run, as a real path: root-owned all the way up,
 * not writable by anyone else, and not under a user's home (a node from nvm
 * or a checkout would let that user run code as root).
 */
export function checkNode(node: string, homes: string[]): string {
  const hint = 'install Node.js 24 (or 20.19+, 22.13+, 26) system-wide, root-owned: e.g. `sudo BANGER_NODE=24 scripts/banger --version` fetches Node 24 into /var/cache/banger, or /usr/bin/node from your distribution; run the install with it, or pass --node PATH';
  let real: string;
  try {
    real = realpathSync(node);
  } catch {
    throw new BangerError('not_found', `node ${node} does not exist`, hint);
  }
  const home = [...homes, '/home'].find((h) => h !== '' && h !== '/' && within(resolve(h), real));
  if (home !== undefined) throw new BangerError('bad_request', `node ${real} is under the user directory ${home}: the root helper cannot run code a user can change`, hint);
  const why = untrustedReason(real, true);
  if (why !== undefined) throw new BangerError('bad_request', `node ${real} is not safe for root to run: ${why}`, hint);
  return real;
}

interface PackageJson {
  name?: unknown;
  version?: unknown;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

function readPackageJson(dir: string): PackageJson | undefined {
  try {
    const v: unknown = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as PackageJson) : undefined;
  } catch {
    return undefined;
  }
}

/** A version that can name a directory: semver-shaped, no slash, never `.`/`..`. */
export function checkVersion(v: unknown): string {
  if (typeof v !== 'string' || !/^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]{1,64})?$/.test(v)) {
    throw new BangerError('bad_request', `package.json has version ${JSON.stringify(v)}, which is not a version banger can install`, 'install from a banger build whose package.json version is like 1.2.3');
  }
  return v;
}

/**
 * The production dependencies, as package directories relative to `root`,
 * found the way Node resolves them (nested node_modules first, then up).
 * Dev dependencies are never reached. A missing optional or peer dependency
 * is skipped; a missing required one is an error.
 */
export function productionPackages(root: string): string[] {
  const found = new Set<string>();
  const resolveDep = (from: string, name: string): string | undefined => {
    for (let dir = from; within(root, dir); dir = dirname(dir)) {
      const cand = join(dir, 'node_modules', name);
      if (existsSync(join(cand, 'package.json'))) return cand;
      if (dir === root) break;
    }
    return undefined;
  };
  const visit = (dir: string) => {
    const pkg = readPackageJson(dir);
    if (!pkg) return;
    const deps: Array<[string, boolean]> = [
      ...Object.keys(pkg.dependencies ?? {}).map((n): [string, boolean] => [n, true]),
      ...Object.keys(pkg.optionalDependencies ?? {}).map((n): [string, boolean] => [n, false]),
      ...Object.keys(pkg.peerDependencies ?? {}).map((n): [string, boolean] => [n, false]),
    ];
    for (const [name, required] of deps) {
      if (!/^(@[a-z0-9_~-][a-z0-9._~-]*\/)?[a-z0-9_~-][a-z0-9._~-]*$/i.test(name)) throw new BangerError('bad_request', `${dir}/package.json names a dependency ${JSON.stringify(name)}`, 'reinstall the dependencies: `npm ci`');
      const at = resolveDep(dir, name);
      if (at === undefined) {
        if (required) throw new BangerError('not_found', `dependency ${name} (of ${relative(root, dir) || 'banger'}) is not installed`, 'install the dependencies first: `npm ci`');
        continue;
      }
      const rel = relative(root, at);
      if (found.has(rel)) continue;
      found.add(rel);
      visit(at);
    }
  };
  visit(root);
  return [...found].sort();
}

/** Which files of the checkout the install needs (relative paths, '/'-separated dirs walked with a filter). */
function wanted(rel: string, isDir: boolean, nativeBuildDirs: Set<string>): boolean {
  const parts = rel.split(sep);
  if (parts[0] === 'bin') return isDir ? parts.length === 1 : parts.length === 2 && (BIN_NAMES as readonly string[]).includes(parts[1]!.replace(/\.js$/, '')) && parts[1]!.endsWith('.js');
  if (parts[0] === 'dist') {
    // Only the runtime: dist/src, its .js files, no tests (smoke, bench and unit tests are under dist/test or *.test.js).
    if (parts.length === 1) return true;
    if (parts[1] !== 'src') return false;
    return isDir || (rel.endsWith('.js') && !rel.endsWith('.test.js'));
  }
  if (parts[0] === 'node_modules') {
    if (parts.includes('.bin')) return false;
    // node-gyp's build/ holds the checkout's absolute paths (Makefiles, config.gypi, .d files): keep only the addons.
    for (const b of nativeBuildDirs) {
      if (within(b, rel) && rel !== b) {
        const inner = relative(b, rel).split(sep);
        if (isDir) return inner.length === 1 && (inner[0] === 'Release' || inner[0] === 'Debug');
        return inner.length === 2 && inner[1]!.endsWith('.node');
      }
    }
    return true;
  }
  return false;
}

function chownTo(path: string, owner: Owner): void {
  lchownSync(path, owner.uid, owner.gid);
}

/**
 * Copies `rel` (a file or a directory, walked with `wanted`) from `src` into
 * `dst`: dirs 0755, files 0644 (0755 when the source is executable), all
 * owned by `owner`. Symlinks are kept only when they stay inside the tree
 * being copied; a package's own nested node_modules is not walked (each
 * production package is copied on its own).
 */
function copyInto(src: string, dst: string, rel: string, owner: Owner, nativeBuildDirs: Set<string>, nested: boolean): void {
  const from = join(src, rel);
  const to = join(dst, rel);
  const st = lstatSync(from);
  if (st.isSymbolicLink()) {
    const target = readlinkSync(from);
    const resolved = resolve(dirname(from), target);
    if (isAbsolute(target) || !within(src, resolved)) throw new BangerError('bad_request', `${from} is a link out of the package (${target})`, 'reinstall the dependencies (`npm ci`) and build again');
    symlinkSync(target, to);
    chownTo(to, owner);
    return;
  }
  if (st.isDirectory()) {
    mkdirSync(to, { recursive: true });
    chmodSync(to, 0o755);
    chownTo(to, owner);
    const names = readdirSync(from).sort();
    if (names.includes('binding.gyp')) nativeBuildDirs.add(join(rel, 'build'));
    for (const name of names) {
      const child = join(rel, name);
      if (nested && name === 'node_modules') continue;
      const cst = lstatSync(join(src, child));
      if (wanted(child, cst.isDirectory(), nativeBuildDirs)) copyInto(src, dst, child, owner, nativeBuildDirs, nested);
    }
    return;
  }
  if (!st.isFile()) return; // sockets, fifos: nothing to run
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(from, to);
  chmodSync(to, st.mode & 0o111 ? 0o755 : 0o644);
  chownTo(to, owner);
}

/** Makes `dir` (and missing parents) root-owned 0755; an existing parent is left as it is. */
function ensureOwnedDir(dir: string, owner: Owner): void {
  if (!existsSync(dir)) {
    ensureOwnedDir(dirname(dir), owner);
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    chownTo(dir, owner);
  }
}

/** Points `link` at `target` atomically (a temp link renamed over it). Refuses to replace anything but a link. */
function setLink(link: string, target: string, owner: Owner): void {
  if (existsSync(link) || isLink(link)) {
    if (!isLink(link)) throw new BangerError('conflict', `${link} exists and is not a link`, `move it away (it is not banger's), then run \`sudo banger system install\` again`);
  }
  const tmp = `${link}.banger-tmp-${process.pid}`;
  rmSync(tmp, { force: true });
  symlinkSync(target, tmp);
  chownTo(tmp, owner);
  renameSync(tmp, link);
}

const WRAPPER_MARK = '# banger: the root-owned install, run by the node it was installed with';

/** PREFIX/bin/NAME: runs `script` with `node` (both absolute, root-owned; checked by the install). */
export function binWrapper(node: string, script: string): string {
  const q = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;
  return `#!/bin/sh\n${WRAPPER_MARK}\nexec ${q(node)} ${q(script)} "$@"\n`;
}

/** Whether `p` is a bin wrapper banger wrote for the install in `libDir`. */
function isWrapperFor(p: string, libDir: string): boolean {
  try {
    const st = lstatSync(p);
    if (!st.isFile() || st.size > 4096) return false;
    const text = readFileSync(p, 'utf8');
    return text.split('\n')[1] === WRAPPER_MARK && text.includes(`'${libDir}/`);
  } catch {
    return false;
  }
}

/** Writes a bin wrapper atomically (0755, owner's) over a link or an earlier wrapper; refuses to replace anything else. */
function setWrapper(path: string, text: string, owner: Owner, libDir: string): void {
  if ((existsSync(path) || isLink(path)) && !isLink(path) && !isWrapperFor(path, libDir)) {
    throw new BangerError('conflict', `${path} exists and is not banger's`, `move it away, then run \`sudo banger system install\` again`);
  }
  const tmp = `${path}.banger-tmp-${process.pid}`;
  rmSync(tmp, { force: true });
  writeFileSync(tmp, text, { mode: 0o755, flag: 'wx' });
  chmodSync(tmp, 0o755);
  chownTo(tmp, owner);
  renameSync(tmp, path);
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

export interface InstalledPackage {
  version: string;
  /** The real directory `current` points at. */
  dir: string;
}

/** What `current` points at, if anything is installed under this layout. */
export function installedPackage(layout: InstallLayout): InstalledPackage | undefined {
  if (!isLink(layout.current)) return undefined;
  try {
    const dir = realpathSync(layout.current);
    const version = readPackageJson(dir)?.version;
    return { version: typeof version === 'string' ? version : readlinkSync(layout.current), dir };
  } catch {
    return undefined;
  }
}

export interface PackageInstall {
  version: string;
  dir: string;
  previous?: string;
  links: string[];
  /** Versions removed (older than the previous one). */
  pruned: string[];
}

/**
 * Copies the built package at `source` into the layout, root-owned, and
 * points `current` and the bin links at it. Staged in a sibling directory
 * and renamed into place, so a failed copy leaves the installed version as it
 * was. Installing the version `current` already is (from the installed copy
 * itself) only re-points the links.
 */
export function installPackage(source: string, layout: InstallLayout, node: string, owner: Owner = ROOT): PackageInstall {
  const src = realpathSync(source);
  const pkg = readPackageJson(src);
  if (pkg?.name !== 'banger') throw new BangerError('not_found', `${src} is not a banger package (no package.json named banger)`, 'run the install from a banger checkout or install');
  const version = checkVersion(pkg.version);
  if (!existsSync(join(src, BUILT_MARKER))) throw new BangerError('not_found', `${src} is not built (${BUILT_MARKER} is missing)`, 'build it first: `npm run build`, then `sudo banger system install` again');
  const modules = productionPackages(src);

  ensureOwnedDir(layout.libDir, owner);
  const why = untrustedReason(layout.libDir);
  if (why !== undefined) throw new BangerError('bad_request', `cannot install into ${layout.libDir}: ${why}`, 'choose a prefix only root can write to (the default is /usr/local), or fix its owner and mode');
  const before = isLink(layout.current) ? readlinkSync(layout.current) : undefined;
  const previous = before !== undefined && /^[^/\\]+$/.test(before) && before !== version ? before : undefined;
  const dir = join(layout.libDir, version);
  const same = existsSync(dir) && realpathSync(dir) === src;
  if (!same) {
    const stage = join(layout.libDir, `.staging-${version}-${process.pid}`);
    rmSync(stage, { recursive: true, force: true });
    try {
      copyPackageTree(src, stage, owner, modules);
      const old = join(layout.libDir, `.old-${version}-${process.pid}`);
      if (existsSync(dir)) renameSync(dir, old);
      try {
        renameSync(stage, dir);
      } catch (e) {
        if (existsSync(old)) renameSync(old, dir);
        throw e;
      }
      rmSync(old, { recursive: true, force: true });
    } finally {
      rmSync(stage, { recursive: true, force: true });
    }
  }
  setLink(layout.current, version, owner);
  ensureOwnedDir(layout.binDir, owner);
  const links = BIN_NAMES.map((n) => {
    const l = join(layout.binDir, n);
    setWrapper(l, binWrapper(node, join(layout.current, 'bin', `${n}.js`)), owner, layout.libDir);
    return l;
  });
  // Keep this version and the one before it (for a rollback); older ones go,
  // but only when `current` moved (a reinstall of the same version prunes nothing but leftovers).
  const keep = new Set([version, 'current', ...(previous ? [previous] : [])]);
  const pruned: string[] = [];
  for (const name of readdirSync(layout.libDir)) {
    if (keep.has(name) || (previous === undefined && !name.startsWith('.'))) continue;
    rmSync(join(layout.libDir, name), { recursive: true, force: true });
    if (!name.startsWith('.')) pruned.push(name);
  }
  return { version, dir, ...(previous ? { previous } : {}), links, pruned };
}

/**
 * Copies what runs of the built package at `src` into `stage` (created here,
 * 0755): package.json, bin, dist (runtime files), docs/ARCHITECTURE.md and
 * the production node_modules, all owned by `owner`. The install's tree and
 * a release's install artifact (src/release) are this.
 */
export function copyPackageTree(src: string, stage: string, owner: Owner, modules = productionPackages(src)): void {
  const native = new Set<string>();
  mkdirSync(stage, { mode: 0o755 });
  chmodSync(stage, 0o755);
  chownTo(stage, owner);
  copyInto(src, stage, 'package.json', owner, native, false);
  copyInto(src, stage, 'bin', owner, native, false);
  copyInto(src, stage, 'dist', owner, native, false);
  if (existsSync(join(src, 'docs', 'ARCHITECTURE.md'))) {
    ensureOwnedDir(join(stage, 'docs'), owner);
    copyInto(src, stage, join('docs', 'ARCHITECTURE.md'), owner, native, false);
  }
  for (const m of modules) {
    ensureOwnedDir(dirname(join(stage, m)), owner);
    copyInto(src, stage, m, owner, native, true);
  }
  for (const n of BIN_NAMES) if (!existsSync(join(stage, 'bin', `${n}.js`))) throw new BangerError('not_found', `${src}/bin/${n}.js is missing`, 'run the install from a complete banger checkout');
}

/**
 * `banger update`'s swap: the staged tree (a sibling of the versions,
 * src/release/update.ts) becomes PREFIX/lib/banger/VERSION and `current`
 * points at it. Returns the version `current` pointed at before, kept for a
 * rollback. A directory already named VERSION is replaced only once the new
 * one is in place.
 */
export function activateStaged(layout: InstallLayout, staged: string, version: string): { previous: string } {
  checkVersion(version);
  const previous = isLink(layout.current) ? readlinkSync(layout.current) : undefined;
  if (previous === undefined || !/^[^/\\]+$/.test(previous)) throw new BangerError('not_found', `${layout.current} is not a link to an installed version`, 'install banger first: `sudo banger system install`');
  if (previous === version) throw new BangerError('already_exists', `${version} is the installed version`, 'nothing to do');
  const dir = join(layout.libDir, version);
  const old = join(layout.libDir, `.old-${version}-${process.pid}`);
  if (existsSync(dir)) renameSync(dir, old);
  try {
    renameSync(staged, dir);
  } catch (e) {
    if (existsSync(old)) renameSync(old, dir);
    throw e;
  }
  rmSync(old, { recursive: true, force: true });
  setLink(layout.current, version, ROOT);
  return { previous };
}

/** Points `current` back at `previous` (a failed update's rollback). */
export function rollBackTo(layout: InstallLayout, previous: string): void {
  checkVersion(previous);
  if (!existsSync(join(layout.libDir, previous))) throw new BangerError('not_found', `the previous version ${previous} is gone from ${layout.libDir}`, 'reinstall it: `sudo banger system install` from its checkout');
  setLink(layout.current, previous, ROOT);
}

/** Removes every version directory but `keep` (and leftovers of interrupted runs). Returns the versions removed. */
export function pruneVersions(layout: InstallLayout, keep: string[]): string[] {
  const pruned: string[] = [];
  for (const name of readdirSync(layout.libDir)) {
    if (name === 'current' || keep.includes(name)) continue;
    rmSync(join(layout.libDir, name), { recursive: true, force: true });
    if (!name.startsWith('.')) pruned.push(name);
  }
  return pruned;
}

/** Removes the bin wrappers of the install (and links into it, from earlier installs), then the whole PREFIX/lib/banger. Returns what it removed. */
export function uninstallPackage(layout: InstallLayout): string[] {
  const removed: string[] = [];
  for (const n of BIN_NAMES) {
    const l = join(layout.binDir, n);
    if ((isLink(l) && within(layout.libDir, resolve(layout.binDir, readlinkSync(l)))) || isWrapperFor(l, layout.libDir)) {
      rmSync(l);
      removed.push(l);
    }
  }
  if (existsSync(layout.libDir) || isLink(layout.libDir)) {
    rmSync(layout.libDir, { recursive: true, force: true });
    removed.push(layout.libDir);
  }
  return removed;
}
