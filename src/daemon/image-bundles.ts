/**
 * `image export` and the bundle half of `image import` (src/images/bundle.ts):
 * an image written as a bundle, and a bundle read back as an image, checked
 * entirely before it is published (ImageService.create publishes a
 * directory in one rename, under the image's lock).
 */
import { existsSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { validateImageName } from '../model/names.js';
import type { ImageRecord } from '../model/types.js';
import { within, type Layout } from '../paths/paths.js';
import { publicKeyFrom, readKeyFile } from '../release/verify.js';
import { randomHex } from '../model/random.js';
import type { ImageExportResult } from '../rpc/methods.js';
import type { Runner } from '../system/runner.js';
import { publishDir } from '../images/publish.js';
import { downloadFile } from '../release/fetch.js';
import { httpUrl } from '../release/manifest.js';
import { mkdirSync } from 'node:fs';
import { readBundle, writeBundle } from '../images/bundle.js';
import type { ImageService } from './image-service.js';


interface Deps {
  layout: Layout;
  runner: Runner;
}

export async function exportImageBundle(images: ImageService, deps: Deps, p: { name: string; path: string; sign?: string }): Promise<ImageExportResult> {
  const img = images.show(p.name);
  if (!existsSync(dirname(p.path))) throw new BangerError('not_found', `${dirname(p.path)} does not exist`, 'write the bundle into an existing directory', { field: 'path' });
  const signKeyPem = p.sign === undefined ? undefined : readKeyFile({ path: p.sign, what: `the signing key ${p.sign}`, hint: 'pass a PEM private key', field: 'sign' });
  const workDir = within(deps.layout.buildDir, `export-${p.name}-${randomHex(4)}`);
  try {
    const { digest } = await writeBundle(deps.runner.run.bind(deps.runner), {
      dir: within(deps.layout.imagesDir, p.name),
      out: p.path,
      image: { name: img.name, kernelVersion: img.kernelVersion, packages: img.packages, source: img.source },
      workDir,
      signKeyPem,
    });
    return { name: img.name, path: p.path, digest, bytes: statSync(p.path).size, signed: signKeyPem !== undefined };
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

/** The image name a bundle's manifest gives (read once more, checked, by readBundle). */
async function bundleImageName(deps: Deps, file: string): Promise<string> {
  const r = await deps.runner.run(['tar', '-xOf', file, 'manifest.json'], { allowFailure: true, maxStdoutBytes: 64 * 1024 });
  let name: unknown;
  try {
    name = (JSON.parse(r.stdout) as { image?: { name?: unknown } }).image?.name;
  } catch {
    name = undefined;
  }
  if (typeof name !== 'string') throw new BangerError('verification_failed', `${file}: no image name in its manifest`, 'give the image a name with --name', { field: 'name' });
  return validateImageName(name, 'name');
}

export async function importImageBundle(images: ImageService, deps: Deps, p: { path: string; name?: string; force?: boolean; pubkey?: string }): Promise<ImageRecord> {
  const key = publicKeyFrom(p.pubkey === undefined ? undefined : { path: p.pubkey, what: `the public key ${p.pubkey}`, hint: 'pass a PEM public key', field: 'pubkey' });
  const name = p.name ?? (await bundleImageName(deps, p.path));
  return images.create(name, p.force === true, async (paths, workDir) => {
    const stage = join(workDir, 'image');
    try {
      const b = await readBundle(deps.runner.run.bind(deps.runner), p.path, stage, { key });
      const rootfsBytes = statSync(join(stage, 'rootfs.ext4')).size;
      const createdAt = new Date().toISOString();
      // image.json as the build writes it (adopted back if the row is ever lost).
      writeFileSync(
        join(stage, 'image.json'),
        JSON.stringify({ name, kernelVersion: b.manifest.image.kernelVersion, rootfsBytes, packages: b.manifest.image.packages, builtAt: createdAt, source: { kind: 'bundle', ref: b.digest } }, null, 2),
      );
      await publishDir(deps.runner.run.bind(deps.runner), stage, paths.dir);
      return {
        name,
        source: `imported bundle ${b.digest} (${b.signed ? 'signature verified' : 'unsigned'}; was ${b.manifest.image.name}: ${b.manifest.image.source})`.slice(0, 4000),
        sourceKind: 'bundle',
        sourceRef: b.digest,
        kernel: null,
        kernelVersion: b.manifest.image.kernelVersion,
        rootfsBytes,
        packages: b.manifest.image.packages,
        createdAt,
      };
    } finally {
      rmSync(workDir, { recursive: true, force: true });
    }
  });
}

/** The largest bundle `image pull URL` downloads. */
const MAX_BUNDLE_BYTES = 64 * 1024 ** 3;

/**
 * `image pull https://…/x.bundle`: the bundle is downloaded into the build
 * dir, then imported as a file would be (every digest and the signature
 * checked before anything is published), then the download is removed.
 */
export async function pullImageBundle(images: ImageService, deps: Deps, p: { url: string; name?: string; force?: boolean; pubkey?: string }, signal?: AbortSignal): Promise<ImageRecord> {
  const url = httpUrl(p.url, 'the bundle URL');
  const dir = within(deps.layout.buildDir, `pull-${randomHex(6)}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    const file = join(dir, 'bundle.tar');
    await downloadFile(url, file, { what: 'the image bundle', maxBytes: MAX_BUNDLE_BYTES, timeoutMs: 60 * 60_000, signal });
    try {
      return await importImageBundle(images, deps, { path: file, name: p.name, force: p.force, pubkey: p.pubkey });
    } catch (e) {
      // Name what the user gave, not the download's temporary path.
      if (e instanceof BangerError) e.message = e.message.split(file).join(url.href);
      throw e;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
