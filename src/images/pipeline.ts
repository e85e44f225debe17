/**
 * The image pipeline every image goes through, whatever its source:
 *
 *   source (fills the root tree) → guest integration → kernel, initrd,
 *   modules → ext4 → manifest → atomic publish
 *
 * Sources differ only in how the root tree is made (mmdebstrap, an OCI
 * registry or archive, a VM's disk) and which kernel the image boots: its
 * own (the Debian build makes its initrd inside the tree) or banger's (files
 * taken from the default image, its modules added to the tree).
 *
 * Everything happens under `workDir`, which is always removed (after killing
 * what still runs in it and unmounting what is mounted below it); the
 * finished directory is renamed to `outDir` only when complete.
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { toolPath } from '../system/which.js';
import type { GuestInstall } from './guest-contract.js';
import { BangerError, messageOf } from '../errors/errors.js';
import type { ImageSourceKind } from '../model/types.js';
import type { RunOptions, RunResult, Runner } from '../system/runner.js';
import { applyXattrs, diskUsage, makeExt4, rootfsSize, setOwners, type OwnerMeta, type Xattr } from './ext4.js';
import { customiseRootfs } from './integrate.js';
import { publishDir } from './publish.js';
import { cleanupWorkDir, isInside, killBuildProcesses, settledOrAbandoned } from './work-dir.js';

export type SourceKind = ImageSourceKind;

export type Run = (argv: string[], opts?: RunOptions) => Promise<RunResult>;

/** What each stage gets: where the tree and the image being assembled are, and how to run, report and stop. */
export interface StageContext {
  name: string;
  workDir: string;
  /** The image's root tree. */
  rootDir: string;
  /** The image directory being assembled (vmlinuz, initrd.img, rootfs.ext4, image.json). */
  stageDir: string;
  /** The runner, stopped by the pipeline's signal (and given up on 15 s after it). */
  run: Run;
  progress: (stage: string, message: string) => void;
  checkAbort: () => void;
  signal?: AbortSignal;
}

export interface SourceResult {
  /** Packages the source installed (listed in image show). */
  packages: string[];
  /** Source-specific manifest fields (suite and mirror, digest, ...). */
  manifest?: Record<string, unknown>;
  /** The reference once it is known in full (a tag resolved to its digest); default the source's `ref`. */
  ref?: string;
  /** Extended attributes the tree could not carry (set on the ext4 image afterwards). */
  xattrs?: Xattr[];
  /** Owners and modes the tree could not carry (made without root): set on the ext4 with debugfs. */
  owners?: OwnerMeta[];
  /** Packages the tree needs before it can boot as a guest: installed into the ext4 by the pipeline's installer. */
  install?: GuestInstall;
}

/**
 * Installs a guest install's packages into the image file `image` (ext4,
 * labelled `label` while it is worked on) — in a throwaway build VM: only
 * the daemon can boot one, so it hands this in.
 */
export type GuestInstaller = (req: { image: string; label: string; install: GuestInstall; what: string }, ctx: StageContext) => Promise<void>;

/** Where the root tree comes from. */
export interface ImageSource {
  kind: SourceKind;
  /** The reference shown in image list/show: a suite and mirror, an image reference with its digest, a file, a VM. */
  ref: string;
  fill(ctx: StageContext): Promise<SourceResult>;
}

/** Which kernel the image boots: puts vmlinuz and initrd.img in ctx.stageDir (and modules in the tree); returns its version. */
export interface KernelStage {
  /** 'tree': the tree's own kernel (the initrd is made inside it); 'banger': banger's kernel, modules added; 'catalog': a catalog kernel's. */
  kind: 'tree' | 'banger' | 'catalog';
  /** The catalog kernel's name (kind 'catalog'): the image record and image.json name it. */
  catalog?: string;
  install(ctx: StageContext): Promise<string>;
}

export interface PipelineDeps {
  runner: Runner;
  log?: (msg: string) => void;
}

export interface PipelineOptions {
  name: string;
  /** Final image directory (imagePaths(...).dir). Must not overlap workDir. */
  outDir: string;
  /** Scratch directory under layout.buildDir; created here and always removed. */
  workDir: string;
  source: ImageSource;
  kernel: KernelStage;
  /** Apply the boot tuning (tuning.ts; default true). */
  tuned?: boolean;
  /** For sources whose tree lacks the guest contract's packages. */
  installer?: GuestInstaller;
  onProgress?: (stage: string, message: string) => void;
  signal?: AbortSignal;
}

export interface PipelineResult {
  kernelVersion: string;
  rootfsBytes: number;
  packages: string[];
  sourceKind: SourceKind;
  sourceRef: string;
}

const MiB = 1024 * 1024;
/** Extra ext4 room for a guest install's packages. */
const INSTALL_HEADROOM = 512 * MiB;

export async function runPipeline(deps: PipelineDeps, opts: PipelineOptions): Promise<PipelineResult> {
  const { runner } = deps;
  const progress = (stage: string, message: string) => {
    deps.log?.(`${stage}: ${message}`);
    opts.onProgress?.(stage, message);
  };
  const checkAbort = () => {
    if (opts.signal?.aborted) throw new BangerError('interrupted', `image build of ${opts.name} was cancelled`);
  };
  const workDir = resolve(opts.workDir);
  const outDir = resolve(opts.outDir);
  if (isInside(outDir, workDir) || isInside(workDir, outDir) || outDir === workDir) {
    throw new BangerError('internal', `image build: outDir ${outDir} and workDir ${workDir} overlap`);
  }
  checkAbort();
  mkdirSync(workDir, { recursive: true, mode: 0o700 });
  // The runner's abort kills the program it started, but its forks (apt-get
  // and dpkg in a chroot, update-initramfs' children) would live on, keep the
  // output pipes open (so the run never settles) and keep /proc, /sys,
  // /dev/pts mounted in the tree. Kill the whole build tree.
  const onAbort = () => {
    killBuildProcesses(workDir);
    setTimeout(() => killBuildProcesses(workDir), 500).unref();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  /** runner.run that gives up 15 s after an abort and then reports `interrupted`. */
  const run: Run = async (argv, runOpts = {}) => {
    try {
      const p = runner.run(argv, { ...runOpts, signal: opts.signal });
      p.catch(() => undefined);
      return await settledOrAbandoned(p, opts.signal, 15_000);
    } catch (e) {
      checkAbort();
      throw e;
    }
  };
  const ctx: StageContext = {
    name: opts.name,
    workDir,
    rootDir: join(workDir, 'rootfs'),
    stageDir: join(workDir, 'image'),
    run,
    progress,
    checkAbort,
    signal: opts.signal,
  };
  try {
    mkdirSync(ctx.stageDir, { mode: 0o755 });

    // 1. Source: the root tree.
    const filled = await opts.source.fill(ctx);
    checkAbort();

    // 2. Guest integration (plain file operations on the tree).
    const tuned = opts.tuned !== false;
    progress(
      'customise',
      `guest config unit, SSH, machine-id, fstab, root skeleton for the work disk${tuned ? ', boot tuning (masked units and generators, SSH login)' : '; no boot tuning (distribution defaults)'}`,
    );
    customiseRootfs(ctx.rootDir, { tuned, initramfs: opts.kernel.kind === 'tree' });

    // 3. Kernel, initrd, modules.
    const kernelVersion = await opts.kernel.install(ctx);
    checkAbort();
    for (const f of ['vmlinuz', 'initrd.img']) chmodSync(join(ctx.stageDir, f), 0o644);

    // 4. ext4.
    const usage = diskUsage(ctx.rootDir);
    // Room for the packages a guest install adds (systemd, sshd and friends: ~150-250 MiB).
    const rootfsBytes = rootfsSize(usage.bytes + (filled.install ? INSTALL_HEADROOM : 0));
    progress(
      'rootfs',
      `mkfs.ext4 -d: ${(usage.bytes / MiB).toFixed(0)} MiB in ${usage.inodes} files → ${(rootfsBytes / MiB).toFixed(0)} MiB image`,
    );
    const img = join(ctx.stageDir, 'rootfs.ext4');
    await makeExt4(run, ctx.rootDir, img, rootfsBytes);
    checkAbort();
    if (filled.owners) {
      progress('rootfs', `owners and modes of ${filled.owners.length} entries set with debugfs (made without root)`);
      for (const w of await setOwners(run, img, ctx.rootDir, filled.owners, join(workDir, 'owners'))) progress('rootfs', `warning: ${w}`);
      checkAbort();
    }
    let packages = filled.packages;
    if (filled.install) {
      if (!opts.installer) throw new BangerError('internal', `image ${opts.name} needs packages installed and no installer was given`);
      const label = `bgi-${randomBytes(4).toString('hex')}`;
      await run([toolPath('tune2fs'), '-L', label, img], { timeoutMs: 60_000 });
      progress('integrate', `installing ${filled.install.packages.join(' ')} (missing: ${filled.install.lacks}) in a build VM`);
      await opts.installer({ image: img, label, install: filled.install, what: `image ${opts.name}` }, ctx);
      checkAbort();
      packages = [...packages, ...filled.install.packages];
    }
    if (filled.xattrs && filled.xattrs.length > 0) {
      progress('rootfs', `${filled.xattrs.length} extended attribute(s) (file capabilities) set with debugfs`);
      for (const w of await applyXattrs(run, img, filled.xattrs, join(workDir, 'xattrs'))) progress('rootfs', `warning: ${w}`);
      checkAbort();
    }
    const ref = filled.ref ?? opts.source.ref;

    // 5. Manifest.
    writeFileSync(
      join(ctx.stageDir, 'image.json'),
      JSON.stringify(
        {
          name: opts.name,
          ...filled.manifest,
          source: { kind: opts.source.kind, ref },
          kernelVersion,
          ...(opts.kernel.catalog ? { kernel: opts.kernel.catalog } : {}),
          rootfsBytes,
          tuned,
          packages,
          builtAt: new Date().toISOString(),
        },
        null,
        2,
      ) + '\n',
      { mode: 0o644 },
    );

    // 6. Publish atomically.
    checkAbort();
    progress('install', `installing into ${outDir}`);
    await publishDir(run, ctx.stageDir, outDir);
    progress('done', `image ${opts.name}: kernel ${kernelVersion}, rootfs ${(rootfsBytes / MiB).toFixed(0)} MiB`);
    return { kernelVersion, rootfsBytes, packages, sourceKind: opts.source.kind, sourceRef: ref };
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    try {
      await cleanupWorkDir(runner, workDir);
    } catch (e) {
      deps.log?.(`cleanup of ${workDir} failed: ${messageOf(e)}`);
    }
  }
}
