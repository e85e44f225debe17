/**
 * Writes a release directory (scripts/release build), the layout `banger
 * update` reads (manifest.ts):
 *
 *   OUT/VERSION/ARTIFACT...            the files
 *   OUT/VERSION/manifest.json(.sig)    urls relative to it (ARTIFACT)
 *   OUT/manifest.json(.sig)            the newest version's, urls VERSION/ARTIFACT
 *
 * Serve OUT over http(s) and point `update.manifest_url` (or `--manifest-url`)
 * at OUT/manifest.json. Every file is written to a temp name and renamed, so
 * a reader sees the old manifest or the new one, never half of one; the
 * signature is written before the manifest it signs.
 */
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { parseManifest, VERSION_PATTERN, type ReleaseManifest } from './manifest.js';
import { signBlob } from './sign.js';
import { sha256File } from './verify.js';

/**
 * The name of the install-tree artifact `banger update` installs for this
 * platform: node_modules holds a compiled better-sqlite3, so a build is
 * for one OS, CPU and Node ABI (process.versions.modules).
 */
export function installArtifactName(version: string, platform = process.platform, arch = process.arch, abi = process.versions.modules): string {
  return `banger-${version}-${platform}-${arch}-node${abi}.tar.gz`;
}

function writeAtomic(path: string, data: string | Buffer): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode: 0o644 });
  renameSync(tmp, path);
}

export interface ReleaseInput {
  outDir: string;
  version: string;
  /** Files to publish, named by their base names. */
  files: string[];
  privateKeyPem: string;
  /** Also make it the top manifest (the one `banger update` reads first). Default true. */
  latest?: boolean;
}

/** Writes one version into `outDir`; returns its manifest. */
export async function writeRelease(r: ReleaseInput): Promise<ReleaseManifest> {
  if (!VERSION_PATTERN.test(r.version)) throw new BangerError('bad_request', `${r.version} is not a version`, 'use major.minor.patch[-pre]');
  const dir = join(r.outDir, r.version);
  mkdirSync(dir, { recursive: true });
  const artifacts: ReleaseManifest['artifacts'] = [];
  for (const f of r.files) {
    const name = basename(f);
    copyFileSync(f, join(dir, `${name}.tmp-${process.pid}`));
    renameSync(join(dir, `${name}.tmp-${process.pid}`), join(dir, name));
    artifacts.push({ name, url: name, sha256: await sha256File(join(dir, name)) });
  }
  const versionManifest: ReleaseManifest = { version: r.version, artifacts };
  publishManifest(join(dir, 'manifest.json'), versionManifest, r.privateKeyPem);
  if (r.latest !== false) {
    publishManifest(join(r.outDir, 'manifest.json'), { version: r.version, artifacts: artifacts.map((a) => ({ ...a, url: `${r.version}/${a.url}` })) }, r.privateKeyPem);
  }
  return versionManifest;
}

/** Signs and writes a manifest (the .sig first), checking it parses as `banger update` will parse it. */
export function publishManifest(path: string, m: ReleaseManifest, privateKeyPem: string): void {
  const bytes = Buffer.from(JSON.stringify(m, null, 2) + '\n');
  parseManifest(bytes, path);
  writeAtomic(`${path}.sig`, signBlob(bytes, privateKeyPem));
  writeAtomic(path, bytes);
}
