/**
 * The per-VM work disk: a persistent, sparse, raw ext4 image (label
 * `banger-work`) that the guest mounts at /root (through the image's
 * /etc/fstab, see src/images/build.ts and src/images/guest-files.ts). It is
 * made fresh for each VM, survives stop/start, and is deleted with the VM.
 *
 * Nothing here mounts anything on the host: the filesystem is made with
 * mkfs.ext4 on a plain file and grown offline with e2fsck + resize2fs on
 * that file. Growing must only happen while the VM is stopped (no QEMU has
 * the file open); callers hold the VM's lock and check that.
 *
 * Sizes are rounded up to whole MiB (WORK_DISK_ALIGN) so the disk is a whole
 * number of sectors and filesystem blocks; create and grow round the same
 * way, so asking for the size a disk was created with is never a "shrink".
 */
import { linkSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BangerError } from '../errors/errors.js';
import { formatSize } from '../model/sizes.js';
import { DISK_SIZE_HINT, MAX_DISK_BYTES, MIN_DISK_BYTES } from '../model/limits.js';
import { tail, type Runner } from '../system/runner.js';
import { toolPath } from '../system/which.js';

/** The filesystem label the guest looks for (fstab: LABEL=banger-work). */
export const WORK_DISK_LABEL = 'banger-work';
/** Where the guest mounts the work disk. */
export const WORK_DISK_MOUNT = '/root';
/** Sizes are rounded up to a multiple of this. */
export const WORK_DISK_ALIGN = 1024 * 1024;
/** Smallest work disk (an ext4 journal plus some room to work in). */
export const MIN_WORK_DISK_BYTES = MIN_DISK_BYTES;
/** Largest work disk: 2 TiB (src/model/limits.ts says why; the CLI and the daemon check the same bound). */
export const MAX_WORK_DISK_BYTES = MAX_DISK_BYTES;

/** mkfs.ext4 options after the tool name and before the file (exported for tests and docs). */
export const WORK_DISK_MKFS_OPTIONS = [
  '-q',
  '-F',
  '-L',
  WORK_DISK_LABEL,
  '-m',
  '0',
  // The daemon runs as the user: without root_owner the filesystem's root
  // directory (the guest's /root) would belong to the user's uid, and sshd's
  // StrictModes would then refuse /root/.ssh/authorized_keys.
  // lazy_*_init: mkfs writes a few MiB instead of zeroing every inode table
  // and the journal (the guest kernel zeroes inode tables in the background).
  '-E',
  'root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1',
] as const;

/** The file size used for a requested size (rounded up to WORK_DISK_ALIGN). */
export function workDiskFileBytes(requested: number): number {
  return Math.ceil(requested / WORK_DISK_ALIGN) * WORK_DISK_ALIGN;
}

function checkSize(bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes < MIN_WORK_DISK_BYTES || bytes > MAX_WORK_DISK_BYTES) {
    // The field, not a flag: the CLI names its flag (--disk-size), config errors name disk_size.
    throw new BangerError(
      'bad_request',
      `${Number.isFinite(bytes) && bytes > 0 ? formatSize(bytes) : String(bytes)} is not a usable work disk size (${formatSize(MIN_WORK_DISK_BYTES)} to ${formatSize(MAX_WORK_DISK_BYTES)})`,
      DISK_SIZE_HINT,
      { field: 'diskBytes' },
    );
  }
  return workDiskFileBytes(bytes);
}

/** The work disk's current size in bytes (its file size). */
export function workDiskBytes(path: string): number {
  try {
    return statSync(path).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new BangerError('not_found', `work disk ${path} does not exist`, 'the VM\'s work disk is gone; delete and re-create the VM');
    }
    throw e;
  }
}

/**
 * Creates a fresh work disk at `path`: a sparse file of `bytes` (rounded up
 * to whole MiB) with an empty ext4 filesystem labelled banger-work whose
 * root directory belongs to root. Built at a temporary name beside `path`
 * and published only when complete; never replaces an existing file (a work
 * disk holds the user's data): an existing `path` is `already_exists`.
 * On any failure nothing is left behind.
 */
export async function createWorkDisk(runner: Runner, path: string, bytes: number): Promise<void> {
  const size = checkSize(bytes);
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    writeFileSync(tmp, '', { mode: 0o600, flag: 'wx' });
    truncateSync(tmp, size);
    await runner.run([toolPath('mkfs.ext4'), ...WORK_DISK_MKFS_OPTIONS, tmp], { timeoutMs: 120_000 });
    // link(2) publishes atomically and, unlike rename(2), refuses to replace
    // an existing file.
    try {
      linkSync(tmp, path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new BangerError(
          'already_exists',
          `work disk ${path} already exists; not replacing it`,
          'a work disk holds the VM\'s data: delete the VM to get a fresh one',
        );
      }
      throw e;
    }
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Grows the work disk at `path` to `newBytes` (rounded up to whole MiB),
 * offline: e2fsck -fy (resize2fs wants a freshly checked filesystem; exit 1,
 * "errors corrected", is fine), then the file is extended (sparse) and
 * resize2fs grows the filesystem to fill it. Equal size: nothing happens.
 * A smaller size is refused (bad_request) and the file is left untouched.
 *
 * The VM must be stopped. If resize2fs fails, the file stays extended (a
 * filesystem smaller than its disk is valid; running this again finishes
 * the job) rather than being cut back under a half-grown filesystem.
 */
export async function growWorkDisk(runner: Runner, path: string, newBytes: number): Promise<void> {
  const current = workDiskBytes(path);
  const wanted = checkSizeForGrow(newBytes, current);
  if (wanted === current) return;
  const fsck = await runner.run([toolPath('e2fsck'), '-fy', path], { timeoutMs: 30 * 60_000, allowFailure: true });
  if (fsck.code !== 0 && fsck.code !== 1) {
    throw new BangerError(
      'operation_failed',
      `e2fsck of the work disk ${path} exited with code ${fsck.code}${fsck.timedOut ? ' (timed out)' : ''}; not resizing it:\n${tail(fsck.stdout + fsck.stderr)}`,
      `the disk was not resized; inspect it with e2fsck -f ${path}`,
    );
  }
  truncateSync(path, wanted);
  await runner.run([toolPath('resize2fs'), path], { timeoutMs: 30 * 60_000 });
}

function checkSizeForGrow(newBytes: number, current: number): number {
  if (!Number.isSafeInteger(newBytes) || newBytes <= 0) return checkSize(newBytes);
  const wanted = workDiskFileBytes(newBytes);
  if (wanted < current) {
    throw new BangerError(
      'bad_request',
      `${formatSize(newBytes)} is smaller than the work disk's current size ${formatSize(current)} (${current} bytes); work disks only grow`,
      `pass a size of at least ${formatSize(current)}, or leave it out to keep the current size`,
      { field: 'diskBytes' },
    );
  }
  return wanted === current ? current : checkSize(newBytes);
}
