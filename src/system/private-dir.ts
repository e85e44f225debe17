/**
 * Private directories and files that must not follow links.
 *
 * The runtime dir may fall back to `/tmp/banger-<uid>`, a name anyone on the
 * host can create first. Before the CLI connects to a socket there or the
 * daemon writes a pid, lock or socket into it, it must be a real directory
 * (not a symlink), owned by us, and writable by nobody else; otherwise a
 * planted `bangerd.sock` would answer the CLI and a planted
 * `bangerd.pid -> ~/victim` would make the daemon overwrite the victim.
 * The CLI and the daemon both call `ensurePrivateDir` (one check, one message).
 */
import { closeSync, constants, lstatSync, mkdirSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { BangerError } from '../errors/errors.js';

export interface PrivateDirOptions {
  /** What the directory is, for messages ("runtime dir", "state dir"). */
  what: string;
  /**
   * Accept a symlink to a directory that passes the checks (the state dir may
   * be linked to another disk by its owner). The runtime dir never is.
   */
  followSymlink?: boolean;
  /** The variable that points banger elsewhere, for hints (default BANGER_RUNTIME_DIR). */
  envVar?: string;
  /** The uid that must own it (default: ours). */
  uid?: number;
}

function myUid(): number {
  return process.getuid?.() ?? 0;
}

/**
 * Why `path` is not safe to use as a private directory; undefined when it is.
 * `st` is its lstat (or stat when following links).
 */
function problem(path: string, st: Stats, isLink: boolean, uid: number, envVar: string): { message: string; hint: string } | undefined {
  const octal = (st.mode & 0o7777).toString(8).padStart(4, '0');
  if (isLink) {
    return {
      message: `${path} is a symbolic link, not a directory`,
      hint: `remove the link (\`rm ${path}\`) if you did not make it, or set ${envVar} to a directory only you can write`,
    };
  }
  if (!st.isDirectory()) {
    return { message: `${path} is not a directory`, hint: `move it out of the way, or set ${envVar} to another directory` };
  }
  if (st.uid !== uid) {
    return {
      message: `${path} is owned by uid ${st.uid}, not by you (uid ${uid}): another user may have created it`,
      hint: `set ${envVar} to a directory that belongs to you (mode 0700)`,
    };
  }
  if ((st.mode & 0o022) !== 0) {
    return {
      message: `${path} is writable by others (mode ${octal}): anyone could plant a socket or pid file there`,
      hint: `check what is inside, then \`chmod 700 ${path}\` (or remove it and let banger recreate it)`,
    };
  }
  return undefined;
}

/**
 * Checks an existing directory. Returns false when it does not exist, true
 * when it is safe; throws a coded error (with a hint) when it is not.
 */
export function checkPrivateDir(path: string, opts: PrivateDirOptions): boolean {
  const uid = opts.uid ?? myUid();
  let st: Stats;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  let isLink = st.isSymbolicLink();
  if (isLink && opts.followSymlink) {
    try {
      st = statSync(path);
      isLink = false;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      // a dangling link: refused below as a link
    }
  }
  const p = problem(path, st, isLink, uid, opts.envVar ?? 'BANGER_RUNTIME_DIR');
  if (p) throw new BangerError('operation_failed', `unsafe ${opts.what}: ${p.message}`, p.hint);
  return true;
}

/** Creates `path` (mode 0700, parents too) when missing, then checks it as `checkPrivateDir` does. */
export function ensurePrivateDir(path: string, opts: PrivateDirOptions): void {
  if (checkPrivateDir(path, opts)) return;
  try {
    mkdirSync(path, { recursive: true, mode: 0o700 });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; // created meanwhile: checked below
  }
  checkPrivateDir(path, opts);
}

/**
 * Reads a small file without following a link. Undefined when it is missing
 * or is a link (a link where banger writes a plain file is not banger's).
 */
export function readFileNoFollow(path: string, max = 4096): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ELOOP') return undefined;
    throw e;
  }
  try {
    const buf = Buffer.alloc(max);
    const n = readSync(fd, buf, 0, max, 0);
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** The runtime dir (socket, pid, lock): created 0700, never a link, ours alone. */
export function ensureRuntimeDir(runtimeDir: string): void {
  ensurePrivateDir(runtimeDir, { what: 'runtime dir', envVar: 'BANGER_RUNTIME_DIR' });
}

/** The runtime dir when it exists (false when it does not); throws when it is unsafe. */
export function checkRuntimeDir(runtimeDir: string): boolean {
  return checkPrivateDir(runtimeDir, { what: 'runtime dir', envVar: 'BANGER_RUNTIME_DIR' });
}

/** The state dir (it holds the SSH key): created 0700, ours alone; its owner may link it elsewhere. */
export function ensureStateDir(stateDir: string): void {
  ensurePrivateDir(stateDir, { what: 'state dir', envVar: 'BANGER_STATE_DIR', followSymlink: true });
}
