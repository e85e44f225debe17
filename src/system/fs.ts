/** Small filesystem helpers: atomic writes and private directories. */
import { closeSync, constants, mkdirSync, openSync, renameSync, writeFileSync, rmSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { randomHex } from '../model/random.js';

/**
 * Writes via a temp file in the same directory + rename: readers never see a
 * torn file, and no link is ever followed (the temp file is a fresh name
 * opened O_CREAT|O_EXCL|O_NOFOLLOW, so a planted name fails instead of being
 * written through; rename replaces a link at `path` itself, never its target).
 */
export function writeFileAtomic(path: string, data: string | Buffer, mode = 0o600): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomHex(4)}.tmp`);
  try {
    const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
    try {
      writeFileSync(fd, data);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

export function ensureDir(path: string, mode = 0o700): void {
  mkdirSync(path, { recursive: true, mode });
}

export function readJsonFile<T>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export function exists(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

export function removePath(path: string): void {
  rmSync(path, { recursive: true, force: true });
}
