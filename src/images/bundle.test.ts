/**
 * Image bundles with real tar: a round trip gives back the same files (the
 * sparse rootfs stays sparse), a signature is checked, and every way of
 * tampering (a flipped byte in a blob, a changed manifest, an extra or a
 * missing entry, another key) is refused.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../errors/errors.js';
import { makeKeyPair } from '../release/sign.js';
import { parsePublicKey, sha256File } from '../release/verify.js';
import { createRunner } from '../system/runner.js';
import { isBundle, readBundle, writeBundle, type BundleManifest } from './bundle.js';

const runner = createRunner();
const run = runner.run.bind(runner);
const keys = makeKeyPair();
const key = parsePublicKey(keys.publicKeyPem, 'test');
const image: BundleManifest['image'] = { name: 'bookworm', kernelVersion: '6.1.0-1-amd64', packages: ['openssh-server'], source: 'test' };
let root: string;
let imageDir: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'banger-bundle-'));
  imageDir = join(root, 'image');
  mkdirSync(imageDir);
  // a 64 MiB sparse rootfs with data at both ends
  const fd = openSync(join(imageDir, 'rootfs.ext4'), 'w');
  writeSync(fd, Buffer.from('superblock'), 0, 10, 1024);
  writeSync(fd, Buffer.from('end'), 0, 3, 64 * 1024 * 1024 - 3);
  closeSync(fd);
  writeFileSync(join(imageDir, 'vmlinuz'), Buffer.alloc(300_000, 7));
  writeFileSync(join(imageDir, 'initrd.img'), Buffer.alloc(100_000, 9));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

const codeOf = (p: Promise<unknown>) => p.then(() => 'no error', (e: unknown) => (isBangerError(e) ? `${e.code}: ${e.message}` : String(e)));
let n = 0;
const fresh = () => join(root, `case-${++n}`);

/** A bundle re-packed from `dir` (what an attacker can do with tar). */
async function repack(dir: string, out: string, names: string[]) {
  await run(['tar', '-cf', out, '-C', dir, ...names]);
}

describe('image bundles', () => {
  it('round trip: the same files come back, checked, sparse; the digest is the manifest\'s', async () => {
    const out = join(root, 'rt.bundle');
    const w = await writeBundle(run, { dir: imageDir, out, image, workDir: fresh(), signKeyPem: keys.privateKeyPem });
    expect(w.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await isBundle(run, out)).toBe(true);
    expect(statSync(out).size).toBeLessThan(8 * 1024 * 1024); // the 64 MiB rootfs went in sparse
    const stage = fresh();
    const r = await readBundle(run, out, stage, { key, requireSignature: true });
    expect(r).toMatchObject({ digest: w.digest, signed: true, manifest: { image } });
    for (const f of ['rootfs.ext4', 'vmlinuz', 'initrd.img']) expect(await sha256File(join(stage, f)), f).toBe(await sha256File(join(imageDir, f)));
    expect(statSync(join(stage, 'rootfs.ext4')).blocks * 512).toBeLessThan(8 * 1024 * 1024);
    expect(existsSync(join(stage, 'blobs'))).toBe(false);
  });

  it('an unsigned bundle reads, unless a signature is required', async () => {
    const out = join(root, 'unsigned.bundle');
    await writeBundle(run, { dir: imageDir, out, image, workDir: fresh() });
    expect((await readBundle(run, out, fresh(), { key })).signed).toBe(false);
    expect(await codeOf(readBundle(run, out, fresh(), { key, requireSignature: true }))).toContain('the bundle is not signed');
  });

  it('refuses one flipped byte in a blob, naming the file and the digests', async () => {
    const out = join(root, 'flip.bundle');
    await writeBundle(run, { dir: imageDir, out, image, workDir: fresh() });
    const x = fresh();
    mkdirSync(x);
    await run(['tar', '-xf', out, '-C', x]);
    const m = JSON.parse(readFileSync(join(x, 'manifest.json'), 'utf8')) as BundleManifest;
    const kernel = join(x, 'blobs/sha256', m.files.find((f) => f.role === 'kernel')!.digest.slice(7));
    const bytes = readFileSync(kernel);
    bytes[1000] ^= 1;
    writeFileSync(kernel, bytes);
    const bad = join(root, 'flipped.bundle');
    await repack(x, bad, ['manifest.json', 'blobs']);
    expect(await codeOf(readBundle(run, bad, fresh(), { key }))).toMatch(/^verification_failed: .*kernel's sha256 is sha256:[0-9a-f]+, the manifest says/);
  });

  it('refuses a signed manifest changed afterwards, and a signature by another key', async () => {
    const out = join(root, 'signed.bundle');
    await writeBundle(run, { dir: imageDir, out, image, workDir: fresh(), signKeyPem: keys.privateKeyPem });
    const other = parsePublicKey(makeKeyPair().publicKeyPem, 'other');
    expect(await codeOf(readBundle(run, out, fresh(), { key: other }))).toContain('the signature does not verify');
    const x = fresh();
    mkdirSync(x);
    await run(['tar', '-xf', out, '-C', x]);
    writeFileSync(join(x, 'manifest.json'), readFileSync(join(x, 'manifest.json'), 'utf8').replace('openssh-server', 'openssh-servex'));
    const bad = join(root, 'resigned.bundle');
    await repack(x, bad, ['manifest.json', 'manifest.json.sig', 'blobs']);
    expect(await codeOf(readBundle(run, bad, fresh(), { key }))).toContain('the signature does not verify');
  });

  it('refuses an entry the manifest does not name, a missing blob, and what is not a bundle', async () => {
    const out = join(root, 'entries.bundle');
    await writeBundle(run, { dir: imageDir, out, image, workDir: fresh() });
    const x = fresh();
    mkdirSync(x);
    await run(['tar', '-xf', out, '-C', x]);
    writeFileSync(join(x, 'evil.sh'), 'rm -rf ~\n');
    const extra = join(root, 'extra.bundle');
    await repack(x, extra, ['manifest.json', 'blobs', 'evil.sh']);
    expect(await codeOf(readBundle(run, extra, fresh(), { key }))).toContain('holds what its manifest does not name: evil.sh');
    const m = JSON.parse(readFileSync(join(x, 'manifest.json'), 'utf8')) as BundleManifest;
    rmSync(join(x, 'blobs/sha256', m.files[2]!.digest.slice(7)));
    const missing = join(root, 'missing.bundle');
    await repack(x, missing, ['manifest.json', 'blobs']);
    expect(await codeOf(readBundle(run, missing, fresh(), { key }))).toContain('it lacks blobs/sha256/');
    writeFileSync(join(root, 'not.tar'), 'hello');
    expect(await isBundle(run, join(root, 'not.tar'))).toBe(false);
    expect(await codeOf(readBundle(run, join(root, 'not.tar'), fresh(), { key }))).toContain('not a readable tar');
  });

  it('never overwrites the output', async () => {
    writeFileSync(join(root, 'exists.bundle'), 'mine');
    expect(await codeOf(writeBundle(run, { dir: imageDir, out: join(root, 'exists.bundle'), image, workDir: fresh() }))).toMatch(/^already_exists/);
    expect(readFileSync(join(root, 'exists.bundle'), 'utf8')).toBe('mine');
  });
});
