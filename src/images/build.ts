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
import { DEFAULT_RECIPE, MAX_EXTRA_PACKAGES, PACKAGE_NAME, SUITES, debianSource, type DebianRecipe } from './source-debian.js';
import { lineSplitter } from './work-dir.js';

export { MASKED_UNITS } from './tuning.js';
export { DEFAULT_RECIPE, DEV_PACKAGES, IMAGE_PACKAGES, MINIMAL_RECIPE, SUITE, SUITES, mmdebstrapArgv, recipePackages, type DebianRecipe } from './source-debian.js';
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
  /** Suite and packages (default: bookworm with the development packages). */
  recipe?: DebianRecipe;
  /** Apply the boot tuning (tuning.ts; default true). False keeps Debian's defaults, for comparing boots. */
  tuned?: boolean;
  onProgress?: (stage: string, message: string) => void;
  signal?: AbortSignal;
}

export interface BuildResult {
  kernelVersion: string;
  rootfsBytes: number;
  packages: string[];
  /** The recipe in words, with the mirror (the image's source reference). */
  sourceRef: string;
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
  const recipe = opts.recipe ?? DEFAULT_RECIPE;
  checkRecipe(recipe);
  const r = await runPipeline(deps, { ...opts, source: debianSource(opts.mirror, recipe), kernel: treeKernel() });
  return { kernelVersion: r.kernelVersion, rootfsBytes: r.rootfsBytes, packages: r.packages, sourceRef: r.sourceRef };
}

/** A recipe from outside (RPC params are checked too; this guards every caller). */
export function checkRecipe(r: DebianRecipe): void {
  if (!(SUITES as readonly string[]).includes(r.suite)) {
    throw new BangerError('bad_request', `suite must be one of ${SUITES.join(', ')}, got ${JSON.stringify(r.suite).slice(0, 40)}`, undefined, { field: 'suite' });
  }
  if (r.packages.length > MAX_EXTRA_PACKAGES) {
    throw new BangerError('bad_request', `at most ${MAX_EXTRA_PACKAGES} extra packages, got ${r.packages.length}`, undefined, { field: 'packages' });
  }
  const bad = r.packages.find((p) => !PACKAGE_NAME.test(p));
  if (bad !== undefined) {
    throw new BangerError('bad_request', `${JSON.stringify(bad).slice(0, 110)} is not a Debian package name (lower-case letters, digits, + - .)`, 'list packages as p1,p2', { field: 'packages' });
  }
}

// Exported for tests.
export const _internal = { compareVersions, lineSplitter };
