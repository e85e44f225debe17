/**
 * scripts/release: the maintainers' release tool (not part of `banger`).
 *
 *   scripts/release keygen DIR
 *       a P-256 key pair: DIR/release.key.pem (0600; keep it secret) and
 *       DIR/release.pub.pem (what banger embeds, src/release/keys.ts).
 *   scripts/release build --key KEY --out DIR [--version V] [--not-latest] [--no-npm-pack]
 *       from this checkout, built: the install artifact `banger update`
 *       installs (the tree `system install` lays out, as a tar.gz named for
 *       this platform and Node ABI: node_modules holds native code) and the
 *       npm package (`npm pack`), written to DIR/V/ with a signed manifest,
 *       and DIR/manifest.json (the newest) unless --not-latest. --version
 *       stamps another version into the install artifact (test releases;
 *       no npm package then: it would carry package.json's version).
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BangerError, isBangerError } from '../errors/errors.js';
import { copyPackageTree } from '../install/package.js';
import { createRunner } from '../system/runner.js';
import { VERSION_PATTERN } from './manifest.js';
import { installArtifactName, writeRelease } from './publish.js';
import { makeKeyPair } from './sign.js';

const USAGE = `usage: scripts/release keygen DIR
       scripts/release build --key KEY --out DIR [--version V] [--not-latest] [--no-npm-pack]`;

const repoRoot = resolve(fileURLToPath(new URL('../../..', import.meta.url)));

function keygen(dir: string): void {
  const key = join(dir, 'release.key.pem');
  if (existsSync(key)) throw new BangerError('already_exists', `${key} exists`, 'a release key is never overwritten: choose another DIR');
  const { privateKeyPem, publicKeyPem } = makeKeyPair();
  writeFileSync(key, privateKeyPem, { mode: 0o600, flag: 'wx' });
  chmodSync(key, 0o600);
  writeFileSync(join(dir, 'release.pub.pem'), publicKeyPem, { mode: 0o644 });
  process.stdout.write(`${key} (secret)\n${join(dir, 'release.pub.pem')}\n`);
}

async function build(o: { key: string; out: string; version?: string; latest: boolean; npmPack: boolean }): Promise<void> {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
  const version = o.version ?? pkg.version;
  if (!VERSION_PATTERN.test(version)) throw new BangerError('bad_request', `--version ${version} is not a version`, 'use major.minor.patch[-pre]');
  if (!existsSync(join(repoRoot, 'dist', 'src', 'helper', 'main.js'))) throw new BangerError('not_found', 'this checkout is not built', 'run `npm run build` first');
  const privateKeyPem = readFileSync(o.key, 'utf8');
  const runner = createRunner();
  const work = mkdtempSync(join(tmpdir(), 'banger-release-'));
  try {
    const tree = join(work, 'tree');
    copyPackageTree(repoRoot, tree, { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
    if (version !== pkg.version) {
      const p = join(tree, 'package.json');
      writeFileSync(p, JSON.stringify({ ...(JSON.parse(readFileSync(p, 'utf8')) as object), version }, null, 2) + '\n');
    }
    const files = [join(work, installArtifactName(version))];
    await runner.run(['tar', '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-czf', files[0]!, '-C', tree, '.']);
    // The npm package carries package.json's version: only a release of that version gets one.
    if (o.npmPack && version === pkg.version) {
      const packDir = join(work, 'pack');
      await runner.run(['mkdir', packDir]);
      await runner.run(['npm', 'pack', '--silent', '--pack-destination', packDir], { cwd: repoRoot });
      for (const f of readdirSync(packDir)) files.push(join(packDir, f));
    }
    const m = await writeRelease({ outDir: o.out, version, files, privateKeyPem, latest: o.latest });
    for (const a of m.artifacts) process.stdout.write(`${join(o.out, version, a.name)}  sha256 ${a.sha256}\n`);
    process.stdout.write(`${join(o.out, version, 'manifest.json')} (signed)${o.latest ? `\n${join(o.out, 'manifest.json')} (signed, newest)` : ''}\n`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { key: { type: 'string' }, out: { type: 'string' }, version: { type: 'string' }, 'not-latest': { type: 'boolean' }, 'no-npm-pack': { type: 'boolean' } },
  });
  const [cmd, ...rest] = positionals;
  if (cmd === 'keygen' && rest.length === 1) return keygen(resolve(rest[0]!));
  if (cmd === 'build' && rest.length === 0 && values.key && values.out) {
    return build({ key: resolve(values.key), out: resolve(values.out), version: values.version, latest: !values['not-latest'], npmPack: !values['no-npm-pack'] });
  }
  throw new BangerError('bad_request', 'bad arguments', USAGE);
}

main(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(isBangerError(e) ? `release: ${e.message}${e.hint ? `\n  ${e.hint}` : ''}\n` : `release: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
