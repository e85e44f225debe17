/**
 * Paths inside an image's root tree, resolved as the guest would see them.
 *
 * A pulled or imported tree is hostile: `etc` may be a symlink to the host's
 * `/etc`, `root` to `/`, `usr/lib` to `../../../home`. Every path banger
 * touches in a tree is resolved here first, the way a chroot would: a
 * symlink is followed, but an absolute target starts again at the tree's
 * root and `..` stops at it. The result is a host path under the root whose
 * existing components are real directories, so writing, creating or
 * deleting there stays inside the tree (nothing else changes the tree while
 * banger works on it).
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';

/** Symlinks followed in one resolution before giving up (Linux's own limit). */
const MAX_HOPS = 40;

export interface ResolveOptions {
  /** Follow a symlink in the last component too (default false: the link itself is the result). */
  followLast?: boolean;
}

/** `rel` (relative or absolute, as the guest would write it) as a host path under `root`. */
export function resolveInRoot(root: string, rel: string, opts: ResolveOptions = {}): string {
  const resolved: string[] = [];
  const queue = split(rel);
  let hops = 0;
  let missing = false;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === '..') {
      resolved.pop();
      continue;
    }
    if (missing) {
      resolved.push(c);
      continue;
    }
    const here = join(root, ...resolved, c);
    let isLink = false;
    try {
      isLink = lstatSync(here).isSymbolicLink();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
      missing = true;
    }
    if (isLink && (queue.length > 0 || opts.followLast === true)) {
      if (++hops > MAX_HOPS) {
        throw new BangerError('operation_failed', `too many symbolic links resolving /${split(rel).join('/')} in the image`, 'the image has a symlink loop there');
      }
      const target = readlinkSync(here, 'utf8');
      if (target.startsWith('/')) resolved.length = 0;
      queue.unshift(...split(target));
      continue;
    }
    resolved.push(c);
  }
  return join(root, ...resolved);
}

/** True when `rel` names something in the tree (symlinks followed inside it). */
export function existsInRoot(root: string, rel: string): boolean {
  try {
    lstatSync(resolveInRoot(root, rel, { followLast: true }));
    return true;
  } catch {
    return false;
  }
}

/**
 * A regular file of the tree as text, at most `maxBytes` (default 4 MiB);
 * undefined when there is none. A FIFO, device or directory there is an
 * error (reading a FIFO would block forever).
 */
export function readInRoot(root: string, rel: string, maxBytes = 4 * 1024 * 1024): string | undefined {
  const path = resolveInRoot(root, rel, { followLast: true });
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw e;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new BangerError('operation_failed', `/${split(rel).join('/')} in the image is not a regular file`, 'fix the image: banger reads that file');
    if (st.size > maxBytes) throw new BangerError('operation_failed', `/${split(rel).join('/')} in the image is larger than ${maxBytes} bytes`, 'fix the image: banger reads that file');
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

function split(p: string): string[] {
  return p.split('/').filter((c) => c !== '' && c !== '.');
}
