/**
 * `banger image pull` and `image import`: an OCI image from a registry
 * (source-oci.ts) or an archive (source-archive.ts) through the image
 * pipeline — the source, guest integration (and install), and
 * banger's kernel (its modules added to the tree), then ext4 and an atomic
 * publish.
 */
import type { ProgressEvent } from '../model/types.js';
import type { Runner } from '../system/runner.js';
import { bangerKernel, catalogKernel } from './kernel.js';
import type { LocalKernel } from './kernels.js';
import type { ImageRef } from './oci-ref.js';
import { BlobStore } from './oci/blob-store.js';
import { credentialsFor } from './oci/docker-config.js';
import type { Platform } from './oci/manifest.js';
import { runPipeline, type GuestInstaller, type PipelineResult } from './pipeline.js';
import { ociSource, type PullStats } from './source-oci.js';
import { archiveSource } from './source-archive.js';

export interface PullDeps {
  runner: Runner;
  log?: (msg: string) => void;
}

export interface PullOptions {
  name: string;
  /** A registry reference, or an archive file (image import). */
  from: { ref: ImageRef; insecure: boolean } | { archive: string };
  platform: Platform;
  /** Final image directory; must not overlap workDir. */
  outDir: string;
  workDir: string;
  /** The shared blob cache (layout.blobsDir). */
  blobsDir: string;
  /** banger's kernel (from an image banger built: the default one), or a catalog kernel (`--kernel`). */
  kernel: { dir: string; kernelVersion: string } | { catalog: LocalKernel };
  tuned?: boolean;
  /** Installs what an image lacks of the guest contract, in a build VM (the daemon's); without it such an image is refused. */
  installer?: GuestInstaller;
  onProgress?: (ev: ProgressEvent) => void;
  signal?: AbortSignal;
}

export interface PullResult extends PipelineResult {
  stats: PullStats;
}

export async function pullOciImage(deps: PullDeps, opts: PullOptions): Promise<PullResult> {
  const stats: PullStats = { downloaded: 0, layers: 0, cachedLayers: 0 };
  const blobs = new BlobStore(opts.blobsDir);
  const canInstall = opts.installer !== undefined;
  const source =
    'archive' in opts.from
      ? archiveSource({ path: opts.from.archive, platform: opts.platform, blobs, canInstall })
      : ociSource(
          {
            ref: opts.from.ref,
            platform: opts.platform,
            insecure: opts.from.insecure,
            blobs,
            auth: credentialsFor(opts.from.ref.registry),
            onTransient: opts.onProgress,
            canInstall,
          },
          stats,
        );
  const r = await runPipeline(deps, {
    name: opts.name,
    outDir: opts.outDir,
    workDir: opts.workDir,
    source,
    kernel: 'catalog' in opts.kernel ? catalogKernel(opts.kernel.catalog) : bangerKernel(opts.kernel),
    tuned: opts.tuned,
    installer: opts.installer,
    signal: opts.signal,
    onProgress: (stage, message) => opts.onProgress?.({ stage: `image:${stage}`, message }),
  });
  return { ...r, stats };
}
