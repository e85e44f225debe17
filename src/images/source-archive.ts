/**
 * The archive source of `banger image import FILE`: an OCI image layout or
 * a `docker save` archive, as a directory or a tar (plain, gzip, zstd),
 * read by oci/archive.ts into the shared blob cache (every blob checked
 * against its digest, a legacy layer against its diff_id), then the same
 * steps as a registry pull (source-oci.ts `treeFromLayers`). No registry
 * and no network: offline machines and air-gapped CI get images this way.
 */
import { join, resolve } from 'node:path';
import { formatSize } from '../model/sizes.js';
import { readImageArchive } from './oci/archive.js';
import type { BlobStore } from './oci/blob-store.js';
import { formatPlatform, type Platform } from './oci/manifest.js';
import type { ImageSource, SourceResult, StageContext } from './pipeline.js';
import { treeFromLayers } from './source-oci.js';

export interface ArchiveSourceOptions {
  path: string;
  platform: Platform;
  blobs: BlobStore;
  canInstall?: boolean;
}

export function archiveSource(opts: ArchiveSourceOptions): ImageSource {
  const file = resolve(opts.path);
  return {
    kind: 'oci-archive',
    ref: file,
    async fill(ctx: StageContext): Promise<SourceResult> {
      ctx.progress('import', `reading ${file} (${formatPlatform(opts.platform)})`);
      opts.blobs.ensureDir();
      const img = await readImageArchive(file, {
        blobs: opts.blobs,
        scratchDir: join(ctx.workDir, 'archive'),
        platform: opts.platform,
        signal: ctx.signal,
        onProgress: (m) => ctx.progress('import', m),
      });
      const total = img.layers.reduce((n, l) => n + l.size, 0);
      ctx.progress('import', `${img.format}${img.name ? ` ${img.name}` : ''}: ${img.layers.length} layer(s), ${formatSize(total)}, config ${img.configDigest}`);
      const id = img.manifestDigest ?? img.configDigest;
      return treeFromLayers(ctx, {
        what: `image ${img.name ?? file}`,
        layers: img.layers,
        blobs: opts.blobs,
        canInstall: opts.canInstall === true,
        ref: `${file}${img.name ? ` (${img.name})` : ''}@${id}`,
        oci: { format: img.format, name: img.name, manifestDigest: img.manifestDigest, configDigest: img.configDigest, platform: formatPlatform(opts.platform) },
      });
    },
  };
}
