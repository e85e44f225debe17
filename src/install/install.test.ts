/**
 * The root-owned install: `system install` copies the built package into a
 * prefix (a temp dir here), root:root and not group/other-writable, the
 * units run from there and nothing refers to the checkout; uninstall removes
 * it all. Needs root (chown); systemctl is never run (systemd: false).
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { chmodSync, chownSync, existsSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { createRunner } from '../system/runner.js';
import { isBangerError } from '../errors/errors.js';
import { VERSION } from '../version.js';
import { installSystem, systemStatus, uninstallSystem, unitExecStart } from './install.js';
import { binWrapper, checkNode, installLayout, installPackage, productionPackages, untrustedReason, type InstallLayout } from './package.js';
import { spawnSync } from 'node:child_process';

const NODE = realpathSync(process.execPath);

const runner = createRunner();
const isRoot = process.getuid?.() === 0;
const USER = 4242; // the checkout's owner: not root
const repo = resolve(import.meta.dirname, '..', '..');

let tmp: string;
let src: string;
let layout: InstallLayout;
let unitDir: string;

const owner = { user: 'root', uid: 0, gid: 0, home: '/root', subnet: '10.213.0.0/24', bridge: 'bgr0', helperSocket: '/run/banger/helper.sock' };

function put(rel: string, text: string, mode = 0o666): void {
  const p = join(src, rel);
  mkdirSync(dirname(p), { recursive: true });
  writeFileSync(p, text);
  chmodSync(p, mode);
}

/** A built checkout as a user leaves it: owned by the user, group/world-writable, with dev deps, tests, maps and build litter. */
function fakeCheckout(version: string): void {
  put('package.json', JSON.stringify({ name: 'banger', version, dependencies: { prod: '1', '@s/scoped': '1' }, devDependencies: { devdep: '1' } }));
  for (const b of ['bangerd', 'banger-helper']) put(`bin/${b}.js`, `#!/usr/bin/env node\nimport "../dist/src/${b}.js";\n`, 0o777);
  put('bin/banger.js', '#!/usr/bin/env node\nconsole.log(process.execPath);\n', 0o777);
  put('bin/dev-tool.sh', 'echo dev\n', 0o777);
  put('dist/src/helper/main.js', 'export {};\n');
  put('dist/src/helper/main.js.map', `{"sources":["${src}/src/helper/main.ts"]}`);
  put('dist/src/cli/main.js', 'export {};\n');
  put('dist/src/cli/main.test.js', 'test\n');
  put('dist/test/smoke/main.js', 'smoke\n');
  put('src/helper/main.ts', 'export {};\n');
  put('docs/ARCHITECTURE.md', '# banger\n');
  put('node_modules/prod/package.json', JSON.stringify({ name: 'prod', dependencies: { dep: '2' }, optionalDependencies: { absent: '1' } }));
  put('node_modules/prod/index.js', 'module.exports = 1;\n');
  put('node_modules/prod/node_modules/dep/package.json', JSON.stringify({ name: 'dep', version: '2.0.0' }));
  put('node_modules/dep/package.json', JSON.stringify({ name: 'dep', version: '1.0.0' })); // hoisted, only the dev dep's
  put('node_modules/@s/scoped/package.json', JSON.stringify({ name: '@s/scoped' }));
  put('node_modules/@s/scoped/binding.gyp', '{}');
  put('node_modules/@s/scoped/build/Makefile', `srcdir := ${src}/node_modules/@s/scoped\n`);
  put('node_modules/@s/scoped/build/Release/addon.node', 'ELF', 0o777);
  put('node_modules/@s/scoped/build/Release/obj.target/x.o', `${src}`);
  put('node_modules/devdep/package.json', JSON.stringify({ name: 'devdep', dependencies: { dep: '1' } }));
  mkdirSync(join(src, 'node_modules/.bin'), { recursive: true });
  symlinkSync('../devdep/cli.js', join(src, 'node_modules/.bin/devdep'));
  for (const p of walk(src)) {
    lchownSync(p, USER, USER);
  }
}

/** Every path under dir (dir itself included), not following links. */
function walk(dir: string): string[] {
  const out = [dir];
  if (lstatSync(dir).isDirectory()) for (const n of readdirSync(dir)) out.push(...walk(join(dir, n)));
  return out;
}

beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'banger-install-'));
  chmodSync(tmp, 0o755);
  src = join(tmp, 'home', 'alice', 'banger');
  mkdirSync(src, { recursive: true });
  layout = installLayout(join(tmp, 'prefix'));
  mkdirSync(layout.prefix, { mode: 0o755 });
  unitDir = join(tmp, 'units');
});
afterEach(() => rmSync(tmp, { recursive: true, force: true }));

async function install(node = process.execPath) {
  return installSystem(runner, owner, { source: src, layout, node, unitDir, systemd: false });
}

describe.skipIf(!isRoot)('root-owned install (system install --prefix)', () => {
  it('copies only what runs, root-owned and not group/other-writable; the units run from it; nothing refers to the checkout', async () => {
    fakeCheckout('9.8.7');
    const res = await install();
    expect(res.package).toMatchObject({ version: '9.8.7', dir: join(layout.libDir, '9.8.7') });
    const copied = walk(res.package.dir)
      .filter((p) => !lstatSync(p).isDirectory())
      .map((p) => relative(res.package.dir, p))
      .sort();
    expect(copied).toEqual([
      'bin/banger-helper.js',
      'bin/banger.js',
      'bin/bangerd.js',
      'dist/src/cli/main.js',
      'dist/src/helper/main.js',
      'docs/ARCHITECTURE.md',
      'node_modules/@s/scoped/binding.gyp',
      'node_modules/@s/scoped/build/Release/addon.node',
      'node_modules/@s/scoped/package.json',
      'node_modules/prod/index.js',
      'node_modules/prod/node_modules/dep/package.json',
      'node_modules/prod/package.json',
      'package.json',
    ]);
    expect(readlinkSync(layout.current)).toBe('9.8.7');

    // every file, dir and link of the install: root:root, never group/other-writable, links stay inside the prefix
    const prefixReal = realpathSync(layout.prefix);
    for (const p of [...walk(layout.libDir), ...walk(layout.binDir)]) {
      const st = lstatSync(p);
      expect({ p, uid: st.uid, gid: st.gid }).toEqual({ p, uid: 0, gid: 0 });
      if (st.isSymbolicLink()) expect(realpathSync(p).startsWith(prefixReal + '/')).toBe(true);
      else expect({ p, writable: (st.mode & 0o022).toString(8) }).toEqual({ p, writable: '0' });
      if (st.isFile()) expect(st.mode & 0o777).toBe((p.endsWith('.js') && p.includes('/bin/')) || p.endsWith('.node') || p.startsWith(layout.binDir + '/') ? 0o755 : 0o644);
      if (!st.isSymbolicLink()) expect(untrustedReason(p)).toBeUndefined();
    }
    // PREFIX/bin: wrappers that run the install's node (never `env node`, whichever node is on PATH) on current's script
    for (const b of ['banger', 'bangerd', 'banger-helper']) {
      expect(readFileSync(join(layout.binDir, b), 'utf8')).toBe(binWrapper(realpathSync(process.execPath), join(layout.current, 'bin', `${b}.js`)));
    }
    const viaWrapper = spawnSync(join(layout.binDir, 'banger'), ['--version'], { encoding: 'utf8', env: { ...process.env, PATH: '/nonexistent' } });
    expect({ code: viaWrapper.status, node: viaWrapper.stdout.trim() }).toEqual({ code: 0, node: realpathSync(process.execPath) });

    // the units run node (root-owned) and the script from the install
    const helper = unitExecStart(join(unitDir, 'banger-helper.service'))!;
    const daemon = unitExecStart(join(unitDir, 'bangerd-root.service'))!;
    expect(helper).toEqual({ node: realpathSync(process.execPath), script: join(layout.current, 'bin', 'banger-helper.js') });
    expect(daemon.script).toBe(join(layout.current, 'bin', 'bangerd.js'));

    // nothing in the install or the units names the checkout
    for (const p of [...walk(layout.libDir), ...walk(layout.binDir), ...walk(unitDir)]) {
      const st = lstatSync(p);
      const text = st.isSymbolicLink() ? readlinkSync(p) : st.isFile() ? readFileSync(p, 'utf8') : '';
      expect({ p, refersToCheckout: text.includes(src) }).toEqual({ p, refersToCheckout: false });
    }
    expect(systemStatus(layout, unitDir)).toEqual({
      installed: { version: '9.8.7', dir: realpathSync(res.package.dir) },
      helper: { ...helper, inInstall: true },
    });

    // uninstall removes the units, the install and the links, and nothing else
    await uninstallSystem(runner, 'root', layout, { unitDir, systemd: false });
    expect(existsSync(layout.libDir)).toBe(false);
    expect(readdirSync(layout.binDir)).toEqual([]);
    expect(readdirSync(unitDir)).toEqual([]);
    expect(existsSync(join(src, 'dist/src/helper/main.js'))).toBe(true);
    expect(systemStatus(layout, unitDir)).toEqual({});
  });

  it('a new version keeps the previous one (for a rollback) and prunes older ones', () => {
    fakeCheckout('1.0.0');
    installPackage(src, layout, NODE);
    put('package.json', JSON.stringify({ name: 'banger', version: '1.1.0', dependencies: { prod: '1', '@s/scoped': '1' } }));
    expect(installPackage(src, layout, NODE)).toMatchObject({ version: '1.1.0', previous: '1.0.0', pruned: [] });
    put('package.json', JSON.stringify({ name: 'banger', version: '1.2.0', dependencies: { prod: '1', '@s/scoped': '1' } }));
    expect(installPackage(src, layout, NODE)).toMatchObject({ version: '1.2.0', previous: '1.1.0', pruned: ['1.0.0'] });
    expect(readdirSync(layout.libDir).sort()).toEqual(['1.1.0', '1.2.0', 'current']);
    // the same version again from the installed copy itself: nothing copied, links kept
    const again = installPackage(join(layout.libDir, '1.2.0'), layout, NODE);
    expect(again).toMatchObject({ version: '1.2.0', pruned: [] });
    expect(again.previous).toBeUndefined();
    expect(readlinkSync(layout.current)).toBe('1.2.0');
    expect(readdirSync(layout.libDir).sort()).toEqual(['1.1.0', '1.2.0', 'current']);
  });

  it('refuses a node a user can change or that lives in a home, before copying anything', async () => {
    fakeCheckout('9.8.7');
    const bad = async (node: string, re: RegExp) => {
      const e = await install(node).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(isBangerError(e) && e.code === 'bad_request' && re.test(e.message) && /--node|system-wide/.test(e.hint ?? '')).toBe(true);
      expect(existsSync(layout.libDir)).toBe(false);
      expect(existsSync(unitDir)).toBe(false);
    };
    const inHome = join(src, '..', '.nvm', 'node');
    put('../.nvm/node', '#!/bin/sh\n', 0o755);
    chownSync(inHome, 0, 0);
    expect(() => checkNode(inHome, [join(tmp, 'home', 'alice')])).toThrow(/under the user directory/);
    const opt = join(tmp, 'opt');
    mkdirSync(opt, { mode: 0o755 });
    writeFileSync(join(opt, 'node'), '', { mode: 0o777 });
    chmodSync(join(opt, 'node'), 0o777);
    await bad(join(opt, 'node'), /not safe for root to run: .*writable by everyone/);
    chmodSync(join(opt, 'node'), 0o755);
    chownSync(opt, USER, USER);
    await bad(join(opt, 'node'), /owned by uid 4242/);
    chownSync(opt, 0, 0);
    chmodSync(opt, 0o775);
    await bad(join(opt, 'node'), /writable by its group/);
  });

  it('refuses a prefix a user can write to, and a hostile version string', () => {
    fakeCheckout('9.8.7');
    chownSync(layout.prefix, USER, USER);
    expect(() => installPackage(src, layout, NODE)).toThrow(/owned by uid 4242/);
    chownSync(layout.prefix, 0, 0);
    put('package.json', JSON.stringify({ name: 'banger', version: '../../etc', dependencies: {} }));
    expect(() => installPackage(src, layout, NODE)).toThrow(/not a version banger can install/);
    put('package.json', JSON.stringify({ name: 'banger', version: '1.0.0', dependencies: { missing: '1' } }));
    expect(() => installPackage(src, layout, NODE)).toThrow(/dependency missing .* is not installed/);
    expect(existsSync(join(layout.libDir, '1.0.0'))).toBe(false);
  });

  // The real build: the installed copy runs on its own (needs `npm run build` first).
  it.skipIf(!existsSync(join(repo, 'dist/src/helper/main.js')))('installs this checkout, whose helper then runs from the prefix', async () => {
    const res = installPackage(repo, layout, NODE);
    expect(res.version).toBe(VERSION);
    expect(productionPackages(repo)).not.toContain('node_modules/vitest');
    expect(existsSync(join(res.dir, 'node_modules/vitest'))).toBe(false);
    expect(existsSync(join(res.dir, 'node_modules/better-sqlite3/build/Release/better_sqlite3.node'))).toBe(true);
    expect(existsSync(join(res.dir, 'dist/test'))).toBe(false);
    const r = await runner.run([join(layout.binDir, 'banger-helper'), '--version'], { allowFailure: true });
    expect({ code: r.code, out: r.stdout.trim() }).toEqual({ code: 0, out: VERSION });
    for (const p of walk(res.dir)) {
      const st = lstatSync(p);
      expect(st.uid === 0 && (st.isSymbolicLink() || (st.mode & 0o022) === 0)).toBe(true);
      if (st.isFile() && st.size < 4_000_000) expect({ p, refersToCheckout: readFileSync(p, 'latin1').includes(repo + '/') }).toEqual({ p, refersToCheckout: false });
    }
  });
});
