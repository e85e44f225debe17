/**
 * Builds the default image: a Debian bookworm tree from mmdebstrap
 * (source-debian.ts) through the image pipeline (pipeline.ts), booting its
 * own kernel with a small initrd made inside the tree (kernel.ts).
 *
 * mmdebstrap runs in root mode, so building needs root (the tree must be
 * owned by root before `mkfs.ext4 -d` copies it).
 */
import { BangerError } from '../errors/errors.js';
import type { Runner } from '../system/runner.js';
import { compareVersions, treeKernel } from './kernel.js';
import { runPipeline } from './pipeline.js';
import { debianSource } from './source-debian.js';
import { lineSplitter } from './work-dir.js';

export { MASKED_UNITS } from './tuning.js';
export { IMAGE_PACKAGES, SUITE, mmdebstrapArgv } from './source-debian.js';
export { INITRD_MODULES, findKernelVersion } from './kernel.js';
export { ROOTFS_LABEL, diskUsage, rootfsSize } from './ext4.js';
export { customiseRootfs } from './integrate.js';
export { cleanupWorkDir, killBuildProcesses, mountsUnder } from './work-dir.js';

export interface BuildDeps {
  runner: Runner;
  log?: (msg: string) => void;
}

export interface BuildOptions {
  name: string;
  /** Final image directory (imagePaths(...).dir). Must not be inside workDir. */
  outDir: string;
  /** Scratch directory under layout.buildDir; created here and always removed. */
  workDir: string;
  mirror: string;
  /** Apply the boot tuning (tuning.ts; default true). False keeps Debian's defaults, for comparing boots. */
  tuned?: boolean;
  onProgress?: (stage: string, message: string) => void;
  signal?: AbortSignal;
}

export interface BuildResult {
  kernelVersion: string;
  rootfsBytes: number;
  packages: string[];
}

export async function buildDebianImage(deps: BuildDeps, opts: BuildOptions): Promise<BuildResult> {
  if (process.getuid?.() !== 0) {
    throw new BangerError(
      'operation_failed',
      'building an image needs root: mmdebstrap must create root-owned files for the image',
      'run the build as root (e.g. `sudo banger image build`)',
    );
  }
  if (!/^https?:\/\/[^\s]+$/.test(opts.mirror)) {
    throw new BangerError('bad_request', `mirror must be an http(s) URL, got ${JSON.stringify(opts.mirror)}`);
  }
  const r = await runPipeline(deps, { ...opts, source: debianSource(opts.mirror), kernel: treeKernel() });
  return { kernelVersion: r.kernelVersion, rootfsBytes: r.rootfsBytes, packages: r.packages };
}

// Exported for tests.
export const _internal = { compareVersions, lineSplitter };
