/**
 * A release manifest (`manifest.json`, signed by `manifest.json.sig`):
 *
 *   {"version": "0.2.0",
 *    "artifacts": [{"name": "banger-0.2.0-linux-x64-node137.tar.gz", "url": "...", "sha256": "..."}]}
 *
 * An artifact's url may be relative to the manifest's. A release directory
 * (what scripts/release writes) holds the newest version's manifest at its
 * top and each version's under VERSION/, so `--to VERSION` reads
 * `VERSION/manifest.json` beside the top one.
 *
 * Parsed only after its signature verified (verify.ts), and still checked
 * like any peer's input: bounded, names that are plain file names, http(s)
 * urls, sha256 digests.
 */
import { z } from 'zod';
import { BangerError } from '../errors/errors.js';

export const MAX_MANIFEST_BYTES = 256 * 1024;

/** A release version: semver (major.minor.patch, an optional -prerelease), no leading v. */
export const VERSION_PATTERN = /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(-[0-9A-Za-z][0-9A-Za-z.-]{0,63})?$/;
/** An artifact's file name: it becomes a path in the staging directory. */
const ARTIFACT_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

export const versionSchema = z.string().max(100).regex(VERSION_PATTERN, 'must be a version such as 1.2.3 or 1.2.3-rc.1');

const artifactSchema = z
  .object({
    name: z.string().max(128).regex(ARTIFACT_NAME, 'must be a plain file name'),
    url: z.string().min(1).max(2048),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters'),
  })
  .strict();

const manifestSchema = z
  .object({
    version: versionSchema,
    artifacts: z.array(artifactSchema).min(1).max(64),
  })
  .strict();

export type ReleaseManifest = z.output<typeof manifestSchema>;
export type ReleaseArtifact = ReleaseManifest['artifacts'][number];

/** The manifest in `bytes` (already signature-checked), or a coded error naming `source`. */
export function parseManifest(bytes: Buffer, source: string): ReleaseManifest {
  if (bytes.length > MAX_MANIFEST_BYTES) throw new BangerError('operation_failed', `${source} is larger than ${MAX_MANIFEST_BYTES} bytes`, 'this is not a banger release manifest');
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new BangerError('operation_failed', `${source} is not JSON`, 'this is not a banger release manifest');
  }
  const r = manifestSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new BangerError('operation_failed', `${source}: ${issue.path.join('.') || 'manifest'}: ${issue.message}`.slice(0, 400), 'this is not a banger release manifest');
  }
  const names = new Set<string>();
  for (const a of r.data.artifacts) {
    if (names.has(a.name)) throw new BangerError('operation_failed', `${source}: artifact ${a.name} is listed twice`, 'this is not a banger release manifest');
    names.add(a.name);
  }
  return r.data;
}

/** An http(s) URL, or a coded error naming what it is for. */
export function httpUrl(text: string, what: string, base?: URL): URL {
  let u: URL;
  try {
    u = new URL(text, base);
  } catch {
    throw new BangerError('bad_request', `${what} is not a URL`, 'give an http:// or https:// URL');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new BangerError('bad_request', `${what} is ${u.protocol} URL, not http(s)`, 'give an http:// or https:// URL');
  if (u.username || u.password) throw new BangerError('bad_request', `${what} has credentials in it`, 'give a URL without user:password@');
  return u;
}

/** Where an artifact is: its url, resolved against the manifest's. */
export function artifactUrl(a: ReleaseArtifact, manifestUrl: URL): URL {
  return httpUrl(a.url, `the url of artifact ${a.name}`, manifestUrl);
}

/** The manifest of `version` in the release directory whose top manifest is `manifestUrl`. */
export function versionManifestUrl(manifestUrl: URL, version: string): URL {
  if (!VERSION_PATTERN.test(version)) throw new BangerError('bad_request', `${JSON.stringify(version.slice(0, 40))} is not a version`, 'give one such as 1.2.3 (no leading v)');
  return new URL(`${version}/manifest.json`, manifestUrl);
}

/** <0, 0, >0 as a is older than, the same as, or newer than b (semver precedence). */
export function compareVersions(a: string, b: string): number {
  const pa = VERSION_PATTERN.exec(a);
  const pb = VERSION_PATTERN.exec(b);
  if (!pa || !pb) throw new BangerError('internal', `not versions: ${a.slice(0, 40)}, ${b.slice(0, 40)}`);
  for (let i = 1; i <= 3; i++) {
    const d = Number(pa[i]) - Number(pb[i]);
    if (d !== 0) return d;
  }
  const ra = pa[4]?.slice(1);
  const rb = pb[4]?.slice(1);
  if (ra === rb) return 0;
  if (ra === undefined) return 1; // a release is newer than its prereleases
  if (rb === undefined) return -1;
  const xa = ra.split('.');
  const xb = rb.split('.');
  for (let i = 0; i < Math.max(xa.length, xb.length); i++) {
    const x = xa[i];
    const y = xb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d+$/.test(x);
    const ny = /^\d+$/.test(y);
    if (nx && ny && Number(x) !== Number(y)) return Number(x) - Number(y);
    if (nx !== ny) return nx ? -1 : 1;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}
