/**
 * `banger image pull`: an OCI image from a registry through the image
 * pipeline — the registry source (source-oci.ts), guest integration, and
 * banger's kernel (its modules added to the tree), then ext4 and an atomic
 * publish.
 */
import type { ProgressEvent } from '../model/types.js';
import type { Runner } from '../system/runner.js';
import { bangerKernel } from './kernel.js';
import type { ImageRef } from './oci-ref.js';
import { BlobStore } from './oci/blob-store.js';
import { credentialsFor } from './oci/docker-config.js';
import type { Platform } from './oci/manifest.js';
import { runPipeline, type PipelineResult } from './pipeline.js';
import { ociSource, type PullStats } from './source-oci.js';

export interface PullDeps {
  runner: Runner;
  log?: (msg: string) => void;
}

export interface PullOptions {
  name: string;
  ref: ImageRef;
  platform: Platform;
  /** Plain HTTP to a registry that is not on loopback. */
  insecure: boolean;
  /** Final image directory; must not overlap workDir. */
  outDir: string;
  workDir: string;
  /** The shared blob cache (layout.blobsDir). */
  blobsDir: string;
  /** banger's kernel: an image banger built (the default one). */
  kernel: { dir: string; kernelVersion: string };
  tuned?: boolean;
  onProgress?: (ev: ProgressEvent) => void;
  signal?: AbortSignal;
}

export interface PullResult extends PipelineResult {
  stats: PullStats;
}

export async function pullOciImage(deps: PullDeps, opts: PullOptions): Promise<PullResult> {
  const stats: PullStats = { downloaded: 0, layers: 0, cachedLayers: 0 };
  const source = ociSource(
    {
      ref: opts.ref,
      platform: opts.platform,
      insecure: opts.insecure,
      blobs: new BlobStore(opts.blobsDir),
      auth: credentialsFor(opts.ref.registry),
      onTransient: opts.onProgress,
    },
    stats,
  );
  const r = await runPipeline(deps, {
    name: opts.name,
    outDir: opts.outDir,
    workDir: opts.workDir,
    source,
    kernel: bangerKernel(opts.kernel),
    tuned: opts.tuned,
    signal: opts.signal,
    onProgress: (stage, message) => opts.onProgress?.({ stage: `image:${stage}`, message }),
  });
  return { ...r, stats };
}
