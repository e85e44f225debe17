/**
 * A release directory as scripts/release writes it reads back as `banger
 * update` reads it: each manifest verifies with the key, parses, and its
 * artifact urls resolve to files whose sha256 is the listed one.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { artifactUrl, parseManifest } from './manifest.js';
import { installArtifactName, writeRelease } from './publish.js';
import { makeKeyPair } from './sign.js';
import { parsePublicKey, sha256File, verifyBlobSignature } from './verify.js';

const dir = mkdtempSync(join(tmpdir(), 'banger-publish-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('writeRelease', () => {
  it('writes per-version and newest manifests that verify, parse and point at the files', async () => {
    const { privateKeyPem, publicKeyPem } = makeKeyPair();
    const key = parsePublicKey(publicKeyPem, 'test');
    const art = join(dir, installArtifactName('1.0.0', 'linux', 'x64', '137'));
    writeFileSync(art, 'tree');
    const out = join(dir, 'out');
    await writeRelease({ outDir: out, version: '1.0.0', files: [art], privateKeyPem });
    await writeRelease({ outDir: out, version: '0.9.0', files: [art], privateKeyPem, latest: false });
    for (const [path, version] of [
      [join(out, 'manifest.json'), '1.0.0'],
      [join(out, '1.0.0', 'manifest.json'), '1.0.0'],
      [join(out, '0.9.0', 'manifest.json'), '0.9.0'],
    ] as const) {
      const bytes = readFileSync(path);
      verifyBlobSignature(path, bytes, readFileSync(`${path}.sig`, 'utf8'), key);
      const m = parseManifest(bytes, path);
      expect(m.version).toBe(version);
      const a = m.artifacts[0]!;
      expect(a.name).toBe('banger-1.0.0-linux-x64-node137.tar.gz');
      // relative urls resolve beside the manifest (a file: URL stands in for the http server here)
      const file = fileURLToPath(new URL(a.url, pathToFileURL(path)));
      expect(await sha256File(file)).toBe(a.sha256);
      expect(() => artifactUrl(a, new URL('https://r.example/banger/manifest.json'))).not.toThrow();
    }
  });

  it('refuses a version that is not one', async () => {
    await expect(writeRelease({ outDir: dir, version: '../x', files: [], privateKeyPem: makeKeyPair().privateKeyPem })).rejects.toThrow('is not a version');
  });
});
