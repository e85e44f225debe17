/**
 * `image export` and the bundle half of `image import` (src/images/bundle.ts):
 * an image written as a bundle, and a bundle read back as an image, checked
 * entirely before it is published (ImageService.create publishes a
 * directory in one rename, under the image's lock).
 */
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { validateImageName } from '../model/names.js';
import type { ImageRecord } from '../model/types.js';
import { within, type Layout } from '../paths/paths.js';
import { RELEASE_PUBLIC_KEY } from '../release/keys.js';
import { parsePublicKey } from '../release/verify.js';
import { randomHex } from '../model/random.js';
import type { ImageExportResult } from '../rpc/methods.js';
import type { Runner } from '../system/runner.js';
import { publishDir } from '../images/publish.js';
import { readBundle, writeBundle } from '../images/bundle.js';
import type { ImageService } from './image-service.js';

/** A PEM key file is a few KiB at most. */
const MAX_KEY_BYTES = 16 * 1024;

interface Deps {
  layout: Layout;
  runner: Runner;
}

function readKeyFile(path: string, what: string, field: string): string {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw new BangerError('not_found', `${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`, 'pass a PEM file', { field });
  }
  if (size > MAX_KEY_BYTES) throw new BangerError('bad_request', `${what} ${path} is larger than ${MAX_KEY_BYTES} bytes`, 'pass a PEM file', { field });
  return readFileSync(path, 'utf8');
}

export async function exportImageBundle(images: ImageService, deps: Deps, p: { name: string; path: string; sign?: string }): Promise<ImageExportResult> {
  const img = images.show(p.name);
  if (!existsSync(dirname(p.path))) throw new BangerError('not_found', `${dirname(p.path)} does not exist`, 'write the bundle into an existing directory', { field: 'path' });
  const signKeyPem = p.sign === undefined ? undefined : readKeyFile(p.sign, 'the signing key', 'sign');
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
  const key = parsePublicKey(p.pubkey === undefined ? RELEASE_PUBLIC_KEY : readKeyFile(p.pubkey, 'the public key', 'pubkey'), p.pubkey ?? 'the embedded key');
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
