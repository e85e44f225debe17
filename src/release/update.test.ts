/**
 * The update's file work against a real HTTP server and real tar: staging
 * refuses a tree that is not a banger package of the manifest's version (a
 * link out, another version) and leaves nothing; the swap and its rollback
 * move `current`; one update at a time. Needs root (the install is
 * root-owned), as `banger update` does.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, type Server } from 'node:http';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../errors/errors.js';
import { activateStaged, installLayout, pruneVersions, rollBackTo } from '../install/package.js';
import { createRunner } from '../system/runner.js';
import { installArtifactName } from './publish.js';
import { lockUpdates, stageRelease, UPDATE_LOCK, type Release } from './update.js';
import { sha256Hex } from './verify.js';

const isRoot = process.getuid?.() === 0;
const runner = createRunner();
let root: string;
let server: Server;
let base: string;
const files = new Map<string, Buffer>();

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'banger-update-'));
  chmodSync(root, 0o755);
  server = createServer((req, res) => {
    const body = files.get(req.url ?? '');
    if (!body) {
      res.writeHead(404);
      return res.end();
    }
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(() => {
  server.close();
  server.closeAllConnections();
  rmSync(root, { recursive: true, force: true });
});

/** A package tree of `version`, tarred and served; returns the release naming it. */
async function release(name: string, version: string, tweak: (dir: string) => void = () => undefined): Promise<Release> {
  const tree = join(root, `tree-${name}`);
  for (const d of ['bin', 'dist/src/daemon']) mkdirSync(join(tree, d), { recursive: true });
  writeFileSync(join(tree, 'package.json'), JSON.stringify({ name: 'banger', version }));
  for (const b of ['banger', 'bangerd', 'banger-helper']) writeFileSync(join(tree, 'bin', `${b}.js`), '');
  writeFileSync(join(tree, 'dist/src/daemon/main.js'), '');
  tweak(tree);
  const art = join(root, `${name}.tar.gz`);
  await runner.run(['tar', '-czf', art, '-C', tree, '.']);
  const bytes = readFileSync(art);
  const artName = installArtifactName(version);
  files.set(`/${name}/${artName}`, bytes);
  return { url: new URL(`${base}/${name}/manifest.json`), manifest: { version, artifacts: [{ name: artName, url: artName, sha256: sha256Hex(bytes) }] } };
}

function installed(name: string, version: string) {
  const layout = installLayout(join(root, name));
  mkdirSync(join(layout.libDir, version), { recursive: true });
  symlinkSync(version, layout.current);
  return layout;
}

const codeOf = async (p: Promise<unknown>) => p.then(() => 'no error', (e: unknown) => (isBangerError(e) ? `${e.code}: ${e.message}` : String(e)));

describe.skipIf(!isRoot)('staging', () => {
  it('stages a good tree root-owned, and the swap and rollback move current', async () => {
    const layout = installed('p1', '1.0.0');
    const r = await release('good', '1.1.0');
    const staged = await stageRelease(layout, r, r.manifest.artifacts[0]!, runner);
    expect(JSON.parse(readFileSync(join(staged.dir, 'package.json'), 'utf8'))).toMatchObject({ version: '1.1.0' });
    expect(readdirSync(layout.libDir).filter((n) => n.startsWith('.download'))).toEqual([]);
    const { previous } = activateStaged(layout, staged.dir, '1.1.0');
    expect(previous).toBe('1.0.0');
    expect(readlinkSync(layout.current)).toBe('1.1.0');
    rollBackTo(layout, '1.0.0');
    expect(readlinkSync(layout.current)).toBe('1.0.0');
    expect(pruneVersions(layout, ['1.0.0'])).toEqual(['1.1.0']);
    expect(readdirSync(layout.libDir).sort()).toEqual(['1.0.0', 'current']);
  });

  it('refuses a tree with a link out of it, or of another version, and leaves nothing', async () => {
    const layout = installed('p2', '1.0.0');
    const out = await release('linkout', '1.1.0', (d) => symlinkSync('/etc/shadow', join(d, 'bin', 'evil')));
    expect(await codeOf(stageRelease(layout, out, out.manifest.artifacts[0]!, runner))).toContain('bin/evil links out of the tree');
    const other = await release('other', '1.1.0', (d) => writeFileSync(join(d, 'package.json'), JSON.stringify({ name: 'banger', version: '6.6.6' })));
    expect(await codeOf(stageRelease(layout, other, other.manifest.artifacts[0]!, runner))).toContain('package.json says banger 6.6.6');
    const gone = { ...out, manifest: { ...out.manifest, artifacts: [{ ...out.manifest.artifacts[0]!, url: 'missing.tar.gz' }] } };
    expect(await codeOf(stageRelease(layout, gone, gone.manifest.artifacts[0]!, runner))).toMatch(/^not_found/);
    expect(readdirSync(layout.libDir).sort()).toEqual(['1.0.0', 'current']);
  });

  it('refuses an artifact whose sha256 is not the manifest\'s, before extracting', async () => {
    const layout = installed('p3', '1.0.0');
    const r = await release('sha', '1.1.0');
    const a = { ...r.manifest.artifacts[0]!, sha256: sha256Hex('something else') };
    expect(await codeOf(stageRelease(layout, r, a, runner))).toMatch(/^verification_failed: .*does not match the signed manifest/);
    expect(readdirSync(layout.libDir).sort()).toEqual(['1.0.0', 'current']);
  });
});

describe.skipIf(!isRoot)('lockUpdates', () => {
  it('one update at a time; a dead holder is taken over', () => {
    const layout = installed('p4', '1.0.0');
    const release1 = lockUpdates(layout);
    expect(() => lockUpdates(layout)).toThrow(`another banger update (pid ${process.pid}) is running`);
    release1();
    writeFileSync(join(layout.libDir, UPDATE_LOCK), '999999999\n');
    const release2 = lockUpdates(layout);
    expect(readFileSync(join(layout.libDir, UPDATE_LOCK), 'utf8')).toBe(`${process.pid}\n`);
    release2();
    expect(existsSync(join(layout.libDir, UPDATE_LOCK))).toBe(false);
  });
});
