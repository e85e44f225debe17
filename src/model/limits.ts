/**
 * Bounds on VM resources that do not depend on the host (the daemon adds
 * the host's CPUs and memory). Shared by the CLI (checked before anything is
 * printed or created) and the daemon (checked again at its boundary).
 */
import { formatSize } from './sizes.js';

/**
 * Host-independent ceilings on a VM's vCPUs and memory: a request or a row
 * past them is malformed whatever the host (the daemon then checks the host).
 */
/** The least memory a VM may have (a Debian guest with systemd needs about this much to boot). */
export const MIN_MEMORY_MIB = 256;
export const MAX_VCPU = 1024;
/** 1 PiB, in MiB. */
export const MAX_MEMORY_MIB = 1024 * 1024 * 1024;

/** The smallest work disk we make (ext4 needs room for its journal and metadata). */
export const MIN_DISK_BYTES = 64 * 1024 * 1024;

/**
 * The largest work disk: 2 TiB. The disk is a sparse file, so its size is
 * not reserved up front, which is also why the host's free space is no
 * useful bound (it changes, and a sparse disk is meant to be larger than
 * what it holds). The cap is there to catch a typo (`--disk-size 8000G`
 * for 8G) before mkfs lays out metadata for a disk the host could never
 * back: 2 TiB is far more than a throwaway VM fills, and well under ext4's
 * 16 TiB limit for one file on the host.
 */
export const MAX_DISK_BYTES = 2 * 1024 ** 4;

export const DISK_SIZE_RANGE = `${formatSize(MIN_DISK_BYTES)} to ${formatSize(MAX_DISK_BYTES)}`;

/** Why a work disk size is refused, or undefined when it is fine. */
export function diskSizeProblem(bytes: number): string | undefined {
  if (!Number.isSafeInteger(bytes) || bytes < MIN_DISK_BYTES) return `must be at least ${formatSize(MIN_DISK_BYTES)} (got ${bytes} bytes)`;
  if (bytes > MAX_DISK_BYTES) return `must be at most ${formatSize(MAX_DISK_BYTES)} (got ${formatSize(bytes)})`;
  return undefined;
}

export const DISK_SIZE_HINT =
  `a work disk is ${DISK_SIZE_RANGE}, e.g. 8G; it is a sparse file (only what the guest writes uses host space), and the ${formatSize(MAX_DISK_BYTES)} cap catches typos like 8000G`;
