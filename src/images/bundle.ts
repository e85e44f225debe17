/**
 * Image bundles (issue 13): one tar holding an image as content-addressed
 * blobs and a manifest that names them,
 *
 *   manifest.json          {"kind": "banger-image-bundle", "version": 1, "image": {...},
 *                           "files": [{"role": "rootfs", "digest": "sha256:…", "size": N}, …]}
 *   manifest.json.sig      optional: the manifest signed (src/release/verify.ts's format)
 *   blobs/sha256/HEX       rootfs.ext4, vmlinuz, initrd.img, each named by its sha256
 *
 * The bundle's digest is the sha256 of its manifest's bytes (the manifest
 * pins every blob). Reading one checks the signature when there is one (or
 * when one is required) before the manifest is parsed, accepts exactly the
 * entries the manifest names, and checks every blob's size and sha256
 * before any of it is used: a caller publishes only what `readBundle`
 * returned.
 */
import { existsSync, lstatSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { BangerError } from '../errors/errors.js';
import { imageNameSchema } from '../model/name-schemas.js';
import { signBlob } from '../release/sign.js';
import { MAX_SIGNATURE_BYTES, sha256File, sha256Hex, verifyBlobSignature } from '../release/verify.js';
import type { RunOptions, RunResult } from '../system/runner.js';

type Run = (argv: string[], opts?: RunOptions) => Promise<RunResult>;

export const BUNDLE_KIND = 'banger-image-bundle';
/** What each role is called in an image directory. */
export const BUNDLE_FILES = { rootfs: 'rootfs.ext4', kernel: 'vmlinuz', initrd: 'initrd.img' } as const;
export type BundleRole = keyof typeof BUNDLE_FILES;
const ROLES = Object.keys(BUNDLE_FILES) as BundleRole[];
const MAX_MANIFEST_BYTES = 64 * 1024;
/** Largest blob a bundle may hold (a rootfs; sparse on disk). */
const MAX_BLOB_BYTES = 1024 ** 4;

const digestSchema = z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be sha256:<64 hex>');

const manifestSchema = z
  .object({
    kind: z.literal(BUNDLE_KIND),
    version: z.literal(1),
    image: z
      .object({
        name: imageNameSchema,
        kernelVersion: z.string().max(256),
        packages: z.array(z.string().max(1024)).max(10_000),
        source: z.string().max(4096),
      })
      .strict(),
    files: z
      .array(z.object({ role: z.enum(['rootfs', 'kernel', 'initrd']), digest: digestSchema, size: z.number().int().min(0).max(MAX_BLOB_BYTES) }).strict())
      .length(ROLES.length),
  })
  .strict();

export type BundleManifest = z.output<typeof manifestSchema>;

const blobName = (digest: string) => `blobs/sha256/${digest.slice('sha256:'.length)}`;

/** Writes the image directory `dir` as a bundle at `out` (which must not exist); returns the bundle's digest. */
export async function writeBundle(
  run: Run,
  o: { dir: string; out: string; image: BundleManifest['image']; workDir: string; signKeyPem?: string },
): Promise<{ digest: string; manifest: BundleManifest }> {
  if (existsSync(o.out)) throw new BangerError('already_exists', `${o.out} exists`, 'choose another file, or remove it first');
  const files: BundleManifest['files'] = [];
  for (const role of ROLES) {
    const path = join(o.dir, BUNDLE_FILES[role]);
    files.push({ role, digest: `sha256:${await sha256File(path)}`, size: lstatSync(path).size });
  }
  const manifest: BundleManifest = { kind: BUNDLE_KIND, version: 1, image: o.image, files };
  const bytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
  const meta = join(o.workDir, 'bundle-meta');
  rmSync(meta, { recursive: true, force: true });
  mkdirSync(meta, { recursive: true });
  const partial = `${o.out}.partial-${process.pid}`;
  try {
    writeFileSync(join(meta, 'manifest.json'), bytes);
    const metaNames = ['manifest.json'];
    if (o.signKeyPem !== undefined) {
      writeFileSync(join(meta, 'manifest.json.sig'), signBlob(bytes, o.signKeyPem));
      metaNames.push('manifest.json.sig');
    }
    // Each image file goes in under its digest (tar's --transform renames members as they are written).
    const transforms = files.flatMap((f) => ['--transform', `s,^${BUNDLE_FILES[f.role].replace('.', '\\.')}$,${blobName(f.digest)},`]);
    await run(
      ['tar', '-cf', partial, '--sparse', '--owner=0', '--group=0', '--numeric-owner', '-C', meta, ...metaNames, '-C', o.dir, ...transforms, ...ROLES.map((r) => BUNDLE_FILES[r])],
      { timeoutMs: 60 * 60_000 },
    );
    renameSync(partial, o.out);
  } catch (e) {
    rmSync(partial, { force: true });
    throw e;
  } finally {
    rmSync(meta, { recursive: true, force: true });
  }
  return { digest: `sha256:${sha256Hex(bytes)}`, manifest };
}

function refuse(file: string, why: string): BangerError {
  return new BangerError('verification_failed', `${file}: ${why}`, 'the bundle is corrupt, tampered with or not a banger image bundle; nothing was imported');
}

/** True when the tar at `file` looks like a bundle (its member list names a bundle manifest). */
export async function isBundle(run: Run, file: string): Promise<boolean> {
  const r = await run(['tar', '-tf', file], { allowFailure: true, maxStdoutBytes: 64 * 1024, timeoutMs: 120_000 });
  return r.code === 0 && r.stdout.split('\n').includes('manifest.json') && r.stdout.includes('blobs/sha256/');
}

/**
 * Reads a bundle into `stageDir` (created; the caller removes it on
 * failure): the image files under their names (BUNDLE_FILES), every one
 * checked. With `requireSignature` an unsigned bundle is refused; a
 * signature, when there is one, is checked with `key`.
 */
export async function readBundle(run: Run, file: string, stageDir: string, o: { key: KeyObject; requireSignature?: boolean }): Promise<{ manifest: BundleManifest; digest: string; signed: boolean }> {
  const list = await run(['tar', '-tf', file], { allowFailure: true, maxStdoutBytes: 64 * 1024, timeoutMs: 120_000 });
  if (list.code !== 0) throw refuse(file, 'not a readable tar');
  const entries = list.stdout.split('\n').filter(Boolean);
  if (entries.length > 8 || !entries.includes('manifest.json')) throw refuse(file, 'no bundle manifest');
  const signed = entries.includes('manifest.json.sig');
  if (!signed && o.requireSignature) throw refuse(file, 'the bundle is not signed');
  const read = async (name: string, max: number) => {
    const r = await run(['tar', '-xOf', file, name], { maxStdoutBytes: max + 1, timeoutMs: 120_000, allowFailure: true });
    if (r.code !== 0 || Buffer.byteLength(r.stdout, 'utf8') > max) throw refuse(file, `${name} is unreadable or too large`);
    // (Text: a manifest whose bytes are not UTF-8 changes here and then fails its signature.)
    return Buffer.from(r.stdout, 'utf8');
  };
  const bytes = await read('manifest.json', MAX_MANIFEST_BYTES);
  if (signed) verifyBlobSignature(`${file}: manifest.json`, bytes, await read('manifest.json.sig', MAX_SIGNATURE_BYTES), o.key);
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw refuse(file, 'manifest.json is not JSON');
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw refuse(file, `manifest.json: ${issue.path.join('.') || 'manifest'}: ${issue.message}`.slice(0, 300));
  }
  const manifest = parsed.data;
  if (new Set(manifest.files.map((f) => f.role)).size !== ROLES.length) throw refuse(file, 'manifest.json does not name each of rootfs, kernel and initrd once');
  const want = new Set(['manifest.json', ...(signed ? ['manifest.json.sig'] : []), ...manifest.files.map((f) => blobName(f.digest))]);
  const extra = entries.filter((e) => !want.has(e) && e !== 'blobs/' && e !== 'blobs/sha256/');
  if (extra.length) throw refuse(file, `it holds what its manifest does not name: ${extra.slice(0, 3).join(', ').slice(0, 200)}`);
  const missing = [...want].filter((w) => !entries.includes(w));
  if (missing.length) throw refuse(file, `it lacks ${missing.slice(0, 3).join(', ')}`);

  mkdirSync(stageDir, { recursive: true, mode: 0o700 });
  const blobs = manifest.files.map((f) => blobName(f.digest));
  await run(['tar', '-xf', file, '-C', stageDir, '--no-same-owner', '--no-same-permissions', ...blobs], { timeoutMs: 60 * 60_000 });
  for (const f of manifest.files) {
    const path = join(stageDir, blobName(f.digest));
    const st = lstatSync(path);
    if (!st.isFile()) throw refuse(file, `${blobName(f.digest)} is not a regular file`);
    if (st.size !== f.size) throw refuse(file, `${f.role} is ${st.size} bytes, the manifest says ${f.size}`);
    const actual = `sha256:${await sha256File(path)}`;
    if (actual !== f.digest) throw refuse(file, `${f.role}'s sha256 is ${actual}, the manifest says ${f.digest}`);
    renameSync(path, join(stageDir, BUNDLE_FILES[f.role]));
  }
  rmSync(join(stageDir, 'blobs'), { recursive: true, force: true });
  return { manifest, digest: `sha256:${sha256Hex(bytes)}`, signed };
}
