/**
 * `banger image build NAME --from IMAGE --packages p1,p2`: a new image that
 * is an existing Debian-family image plus packages. The base's ext4 is
 * copied (sparse), grown by 1 GiB (`e2fsck -fp`, `resize2fs`: on the file,
 * no mount, no root), and the packages are installed by the pipeline's
 * installer — the same throwaway build VM a pulled image's guest install
 * uses (install-script.ts), with network for that step only. Kernel and
 * initrd are the base's. Published atomically like every image.
 */
import { copyFileSync, mkdirSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BangerError, messageOf } from '../errors/errors.js';
import type { Runner, RunOptions, RunResult } from '../system/runner.js';
import { toolPath } from '../system/which.js';
import { detectFamily, parseOsRelease, OS_RELEASE_MAX } from './distro.js';
import type { GuestInstaller, StageContext } from './pipeline.js';
import { publishDir } from './publish.js';
import { cleanupWorkDir } from './work-dir.js';

export interface DeriveOptions {
  name: string;
  /** The base image's name and directory (rootfs.ext4, vmlinuz, initrd.img). */
  base: { name: string; dir: string; kernelVersion: string; packages: string[] };
  packages: string[];
  outDir: string;
  workDir: string;
  installer: GuestInstaller;
  onProgress?: (stage: string, message: string) => void;
  signal?: AbortSignal;
}

const GROW_BYTES = 1024 * 1024 * 1024;

export async function deriveImage(deps: { runner: Runner; log?: (m: string) => void }, opts: DeriveOptions): Promise<{ rootfsBytes: number; packages: string[]; sourceRef: string }> {
  const progress = (stage: string, message: string) => {
    deps.log?.(`${stage}: ${message}`);
    opts.onProgress?.(stage, message);
  };
  const checkAbort = () => {
    if (opts.signal?.aborted) throw new BangerError('interrupted', `image build of ${opts.name} was cancelled`);
  };
  const run = (argv: string[], o: RunOptions = {}): Promise<RunResult> => deps.runner.run(argv, { ...o, signal: opts.signal });
  const workDir = resolve(opts.workDir);
  const stageDir = join(workDir, 'image');
  mkdirSync(stageDir, { recursive: true, mode: 0o700 });
  try {
    const img = join(stageDir, 'rootfs.ext4');
    const baseRootfs = join(opts.base.dir, 'rootfs.ext4');
    // Debian family only: the packages are Debian packages.
    // debugfs prints nothing for a symlink (Debian's /etc/os-release is one): then /usr/lib's.
    let osText = '';
    for (const p of ['/etc/os-release', '/usr/lib/os-release']) {
      osText = (await run([toolPath('debugfs'), '-R', `cat ${p}`, baseRootfs], { maxStdoutBytes: OS_RELEASE_MAX })).stdout;
      if (osText.trim() !== '') break;
    }
    const osr = parseOsRelease(osText.slice(0, OS_RELEASE_MAX));
    if (detectFamily(osr) !== 'debian') {
      throw new BangerError('bad_request', `image ${opts.base.name} is ${osr.prettyName ?? osr.id}, not Debian or Ubuntu: --packages names Debian packages`, 'use a Debian-family image with --from, or boot the image, install with --nat, stop it and `banger vm commit`', { field: 'from' });
    }
    progress('derive', `copying ${opts.base.name}'s root filesystem and growing it by 1 GiB`);
    await run(['cp', '--sparse=always', baseRootfs, img], { timeoutMs: 30 * 60 * 1000 });
    truncateSync(img, statSync(img).size + GROW_BYTES);
    await run([toolPath('e2fsck'), '-fp', img], { timeoutMs: 10 * 60 * 1000 });
    await run([toolPath('resize2fs'), img], { timeoutMs: 10 * 60 * 1000 });
    const label = `bgi-${randomBytes(4).toString('hex')}`;
    await run([toolPath('tune2fs'), '-L', label, img], { timeoutMs: 60_000 });
    checkAbort();
    const ctx: StageContext = { name: opts.name, workDir, rootDir: join(workDir, 'none'), stageDir, run, progress, checkAbort, signal: opts.signal };
    progress('integrate', `installing ${opts.packages.join(' ')} in a build VM`);
    await opts.installer(
      {
        image: img,
        label,
        what: `image ${opts.name}`,
        install: {
          family: 'debian',
          argv: [['apt-get', 'update'], ['apt-get', 'install', '-y', '--no-install-recommends', ...opts.packages]],
          env: { DEBIAN_FRONTEND: 'noninteractive' },
          packages: opts.packages,
          lacks: '',
        },
      },
      ctx,
    );
    checkAbort();
    for (const f of ['vmlinuz', 'initrd.img']) copyFileSync(join(opts.base.dir, f), join(stageDir, f));
    const rootfsBytes = statSync(img).size;
    const packages = [...new Set([...opts.base.packages, ...opts.packages])];
    const sourceRef = `${opts.base.name} +${opts.packages.join(',')}`;
    writeFileSync(
      join(stageDir, 'image.json'),
      JSON.stringify({ name: opts.name, source: { kind: 'image', ref: sourceRef }, kernelVersion: opts.base.kernelVersion, rootfsBytes, packages, builtAt: new Date().toISOString() }, null, 2) + '\n',
      { mode: 0o644 },
    );
    progress('install', `installing into ${opts.outDir}`);
    await publishDir(run, stageDir, opts.outDir);
    return { rootfsBytes, packages, sourceRef };
  } finally {
    try {
      await cleanupWorkDir(deps.runner, workDir);
    } catch (e) {
      deps.log?.(`cleanup of ${workDir} failed: ${messageOf(e)}`);
    }
  }
}
