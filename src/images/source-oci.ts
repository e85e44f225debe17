/**
 * The OCI registry source of `banger image pull`: resolves the reference to
 * one platform's image (registry.ts), fetches its layers into the shared,
 * content-addressed blob cache (blob-store.ts: verified, resumable; a layer
 * already there is not downloaded again), and applies them in order onto
 * the tree (layers.ts). The image's reference becomes `REF@DIGEST`, the
 * digest of the platform's manifest.
 */
import { formatSize } from '../model/sizes.js';
import type { ProgressEvent } from '../model/types.js';
import { formatImageRef, type ImageRef } from './oci-ref.js';
import type { BlobStore } from './oci/blob-store.js';
import type { CredentialLookup } from './oci/docker-config.js';
import { applyLayers } from './oci/layers.js';
import { formatPlatform, type Platform } from './oci/manifest.js';
import { RegistryClient } from './oci/registry.js';
import type { ImageSource, SourceResult, StageContext } from './pipeline.js';
import { mkdirSync } from 'node:fs';
import { planGuestContract } from './guest-contract.js';

/**
 * The applier's warnings, with the device nodes and FIFOs a base layer
 * carries (mmdebstrap's /dev) folded into one line.
 */
export function summarise(warnings: string[]): string[] {
  const devices: string[] = [];
  const rest: string[] = [];
  for (const w of warnings) {
    const m = /skipped "([^"]{1,200})", a (device node|FIFO)/.exec(w);
    if (m) devices.push(m[1]!);
    else rest.push(w);
  }
  if (devices.length > 0) {
    rest.unshift(`skipped ${devices.length} device node(s) and FIFO(s) (${devices.slice(0, 4).join(', ')}${devices.length > 4 ? ', …' : ''}): the guest's /dev is a devtmpfs`);
  }
  return rest;
}

export interface OciSourceOptions {
  ref: ImageRef;
  platform: Platform;
  insecure: boolean;
  blobs: BlobStore;
  auth?: CredentialLookup;
  /** A tree that lacks the guest contract's packages may have them installed (the pipeline has an installer). */
  canInstall?: boolean;
  /** Running counts (bytes of a layer) for a terminal. */
  onTransient?: (ev: ProgressEvent) => void;
}

/** What a pull did besides filling the tree (for the pull's summary and the bench). */
export interface PullStats {
  /** Bytes downloaded (0 when every layer was in the cache). */
  downloaded: number;
  layers: number;
  cachedLayers: number;
}

export function ociSource(opts: OciSourceOptions, stats: PullStats = { downloaded: 0, layers: 0, cachedLayers: 0 }): ImageSource {
  const where = formatImageRef(opts.ref);
  return {
    kind: 'oci',
    ref: where,
    async fill(ctx: StageContext): Promise<SourceResult> {
      const client = new RegistryClient(opts.ref, { insecure: opts.insecure, auth: opts.auth, platform: opts.platform, signal: ctx.signal });
      try {
        ctx.progress('pull', `resolving ${where} (${formatPlatform(opts.platform)})`);
        const img = await client.resolve();
        const total = img.layers.reduce((n, l) => n + l.size, 0);
        ctx.progress('pull', `manifest ${img.manifestDigest}: ${img.layers.length} layer(s), ${formatSize(total)}`);
        opts.blobs.ensureDir();
        for (const [i, layer] of img.layers.entries()) {
          const label = `layer ${i + 1}/${img.layers.length} ${layer.digest.slice(7, 19)}`;
          const started = Date.now();
          const r = await client.fetchBlob(layer, opts.blobs, (done, size) => {
            const s = Math.max(0.001, (Date.now() - started) / 1000);
            opts.onTransient?.({ stage: 'pull', message: `${label}: ${formatSize(done)} / ${formatSize(size)}, ${formatSize(done / s)}/s`, transient: true });
          });
          ctx.checkAbort();
          stats.layers++;
          stats.downloaded += r.downloaded;
          if (r.downloaded === 0) {
            stats.cachedLayers++;
            ctx.progress('pull', `${label}: in the cache (${formatSize(layer.size)})`);
          } else {
            const s = Math.max(0.001, (Date.now() - started) / 1000);
            ctx.progress('pull', `${label}: ${formatSize(r.downloaded)} in ${s.toFixed(1)} s (${formatSize(r.downloaded / s)}/s)`);
          }
        }
        return await treeFromLayers(ctx, {
          what: `image ${where}`,
          layers: img.layers,
          blobs: opts.blobs,
          canInstall: opts.canInstall === true,
          ref: `${where.replace(/@sha256:[0-9a-f]{64}$/, '')}@${img.manifestDigest}`,
          oci: { manifestDigest: img.manifestDigest, indexDigest: img.indexDigest, configDigest: img.configDigest, platform: formatPlatform(img.platform) },
        });
      } finally {
        await client.close();
      }
    },
  };
}

/**
 * The part of a registry pull and an archive import that is the same once
 * the layers are in the blob cache: apply them onto the tree, check the
 * guest contract (planning the install of what is missing), and say what
 * the pipeline must carry on to the ext4.
 */
export async function treeFromLayers(
  ctx: StageContext,
  from: { what: string; layers: Array<{ digest: string; mediaType: string }>; blobs: BlobStore; canInstall: boolean; ref: string; oci: Record<string, unknown> },
): Promise<SourceResult> {
  ctx.progress('layers', `applying ${from.layers.length} layer(s)`);
  mkdirSync(ctx.rootDir, { mode: 0o755 });
  const applied = await applyLayers(
    ctx.rootDir,
    from.layers.map((l) => ({ path: from.blobs.path(l.digest), mediaType: l.mediaType, digest: l.digest })),
    { signal: ctx.signal },
  );
  for (const w of summarise(applied.warnings)) ctx.progress('layers', `warning: ${w}`);
  ctx.progress('layers', `${applied.entries} entries, ${formatSize(applied.bytes)}`);
  const { report, install } = planGuestContract(ctx.rootDir, from.what, from.canInstall);
  const distro = report.osRelease?.prettyName ?? report.osRelease?.id ?? 'unknown distribution';
  ctx.progress('integrate', install ? `${distro}: lacks ${install.lacks}; installed at pull time` : `${distro}: systemd, sshd and qemu-guest-agent present`);
  return {
    packages: [],
    ref: from.ref,
    xattrs: applied.xattrs,
    ...(applied.owners ? { owners: applied.owners } : {}),
    ...(install ? { install } : {}),
    manifest: { oci: { ...from.oci, layers: from.layers.map((l) => l.digest) } },
  };
}
