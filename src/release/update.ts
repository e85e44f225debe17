/**
 * `banger update`, the parts before anything installed changes (issue 13):
 * read a release (fetch, verify the signature, parse), pick this host's
 * install artifact, stage it beside the install (download, sha256, extract,
 * check the tree), and ask the staged bangerd whether it can use the live
 * state (`--check-migrations`, run as the daemon's user). A staged release
 * is a directory PREFIX/lib/banger/.staging-VERSION-PID that `remove()`
 * deletes; nothing else is written.
 */
import { chmodSync, closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeSync, type Stats } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { BangerError, isBangerError } from '../errors/errors.js';
import { BIN_NAMES, untrustedReason, type InstallLayout } from '../install/package.js';
import { tail, type Runner } from '../system/runner.js';
import { downloadFile, fetchSigned } from './fetch.js';
import { artifactUrl, MAX_MANIFEST_BYTES, parseManifest, versionManifestUrl, type ReleaseArtifact, type ReleaseManifest } from './manifest.js';
import { installArtifactName } from './publish.js';
import { checkSha256 } from './verify.js';

/** The largest install artifact banger downloads (a release is ~10 MiB). */
export const MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024;

export interface Release {
  manifest: ReleaseManifest;
  /** Where the manifest was read (artifact urls are relative to it). */
  url: URL;
}

/**
 * The newest release (or `version`'s) from the release directory whose top
 * manifest is `manifestUrl`: the signature is checked over the manifest's
 * bytes before they are parsed. A version that is not there is not_found.
 */
export async function readRelease(manifestUrl: URL, key: KeyObject, version?: string, signal?: AbortSignal): Promise<Release> {
  const url = version === undefined ? manifestUrl : versionManifestUrl(manifestUrl, version);
  const what = version === undefined ? 'the release manifest' : `release ${version}`;
  let bytes: Buffer;
  try {
    bytes = await fetchSigned(url, key, { what, maxBytes: MAX_MANIFEST_BYTES, signal });
  } catch (e) {
    // The manifest missing (not its signature: that error says `the signature of …`) means no such release.
    if (version !== undefined && isBangerError(e) && e.code === 'not_found' && e.message.startsWith(`${what}:`)) {
      throw new BangerError('not_found', `there is no release ${version} at ${new URL('.', manifestUrl).href}`, '`banger update --check` shows the newest release');
    }
    throw e;
  }
  const manifest = parseManifest(bytes, url.href);
  if (version !== undefined && manifest.version !== version) {
    throw new BangerError('verification_failed', `${url.href} is the manifest of ${manifest.version}, not ${version}`, 'the release directory is inconsistent; nothing was used');
  }
  return { manifest, url };
}

/** This host's install artifact of a release: its OS, CPU, and the Node ABI the units run. */
export function pickInstallArtifact(m: ReleaseManifest, abi: string): ReleaseArtifact {
  const name = installArtifactName(m.version, process.platform, process.arch, abi);
  const a = m.artifacts.find((x) => x.name === name);
  if (!a) {
    throw new BangerError(
      'not_found',
      `release ${m.version} has no build for ${process.platform}-${process.arch} with Node module ABI ${abi} (no ${name})`,
      'install a Node that release is built for (its manifest lists the builds), or wait for a release built for yours',
    );
  }
  return a;
}

export interface Staged {
  version: string;
  dir: string;
  remove(): void;
}

/** Every path under `root`, depth first, with lstat. */
function* walk(root: string, rel = ''): Generator<{ path: string; rel: string; st: Stats }> {
  const path = join(root, rel);
  const st = lstatSync(path);
  yield { path, rel, st };
  if (st.isDirectory()) for (const name of readdirSync(path).sort()) yield* walk(root, rel ? join(rel, name) : name);
}

/**
 * The extracted tree is a banger package of `version`, with nothing that
 * points out of it, and not writable by anyone but its owner.
 */
function checkTree(dir: string, version: string): void {
  const bad = (why: string) => new BangerError('verification_failed', `the staged release ${version}: ${why}`, 'the release artifact is not a banger install tree; nothing was installed');
  for (const { path, rel, st } of walk(dir)) {
    if (st.isSymbolicLink()) {
      const target = readlinkSync(path);
      const to = resolve(join(dir, rel, '..'), target);
      if (isAbsolute(target) || (to !== dir && !to.startsWith(dir + sep))) throw bad(`${rel} links out of the tree (${target.slice(0, 100)})`);
      continue;
    }
    if (!st.isDirectory() && !st.isFile()) throw bad(`${rel} is neither a file nor a directory`);
    if ((st.mode & 0o022) !== 0) chmodSync(path, st.mode & 0o7755);
    if ((st.mode & 0o6000) !== 0) chmodSync(path, st.mode & 0o1777);
  }
  let pkg: { name?: unknown; version?: unknown };
  try {
    pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as typeof pkg;
  } catch {
    throw bad('no readable package.json');
  }
  if (pkg.name !== 'banger' || pkg.version !== version) throw bad(`package.json says ${String(pkg.name).slice(0, 40)} ${String(pkg.version).slice(0, 40)}`);
  for (const n of BIN_NAMES) if (!existsSync(join(dir, 'bin', `${n}.js`))) throw bad(`bin/${n}.js is missing`);
  if (!existsSync(join(dir, 'dist', 'src', 'daemon', 'main.js'))) throw bad('dist/src/daemon/main.js is missing');
}

/**
 * Downloads `artifact` next to the install, checks its sha256 against the
 * (verified) manifest, extracts it into a staging directory and checks the
 * tree. On any failure nothing is left behind.
 */
export async function stageRelease(layout: InstallLayout, release: Release, artifact: ReleaseArtifact, runner: Runner, signal?: AbortSignal): Promise<Staged> {
  const version = release.manifest.version;
  if (!existsSync(layout.libDir)) throw new BangerError('not_found', `nothing is installed under ${layout.libDir}`, 'install banger first: `sudo banger system install`');
  const why = untrustedReason(layout.libDir);
  if (why !== undefined) throw new BangerError('bad_request', `cannot stage into ${layout.libDir}: ${why}`, 'the install must be root-owned (`sudo banger system install`)');
  const download = join(layout.libDir, `.download-${version}-${process.pid}.tar.gz`);
  const dir = join(layout.libDir, `.staging-${version}-${process.pid}`);
  const remove = () => {
    rmSync(download, { force: true });
    rmSync(dir, { recursive: true, force: true });
  };
  remove();
  try {
    const got = await downloadFile(artifactUrl(artifact, release.url), download, { what: `release ${version} (${artifact.name})`, maxBytes: MAX_ARTIFACT_BYTES, timeoutMs: 15 * 60_000, signal });
    checkSha256(artifact.name, artifact.sha256, got.sha256);
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    await runner.run(['tar', '-xzf', download, '-C', dir, '--no-same-owner', '--no-overwrite-dir', '--touch'], { signal });
    rmSync(download, { force: true });
    checkTree(dir, version);
    const untrusted = untrustedReason(dir);
    if (untrusted !== undefined) throw new BangerError('bad_request', `the staged release is not safe for root to run: ${untrusted}`, 'run the update as root');
    return { version, dir, remove };
  } catch (e) {
    remove();
    throw e;
  }
}

export interface DaemonUser {
  name: string;
  home: string;
}

/**
 * Runs the staged bangerd's `--check-migrations` against the state of the
 * daemon's user, as that user (so nothing of root's lands in their state):
 * it fails when that state is newer than the staged release understands.
 */
export async function checkStagedMigrations(staged: Staged, node: string, user: DaemonUser, runner: Runner): Promise<string> {
  const script = join(staged.dir, 'bin', 'bangerd.js');
  const argv = process.getuid?.() === 0 ? ['runuser', '-u', user.name, '--', 'env', `HOME=${user.home}`, node, script, '--check-migrations'] : [node, script, '--check-migrations'];
  const r = await runner.run(argv, { allowFailure: true, timeoutMs: 60_000 });
  if (r.code !== 0) {
    throw new BangerError('bad_version', `the staged bangerd ${staged.version} cannot use ${user.name}'s state: ${tail(r.stderr || r.stdout, 600)}`, 'nothing was installed; a newer release may be needed');
  }
  return r.stdout.trim();
}

/** The lock file one update at a time holds beside the versions. */
export const UPDATE_LOCK = '.update.lock';

/** Takes the install's update lock (a file holding the pid); a lock whose process is gone is taken over. Returns its release. */
export function lockUpdates(layout: InstallLayout): () => void {
  const path = join(layout.libDir, UPDATE_LOCK);
  for (let i = 0; i < 2; i++) {
    try {
      const fd = openSync(path, 'wx', 0o644);
      writeSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return () => rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(path, 'utf8').trim());
      let alive = false;
      try {
        alive = Number.isSafeInteger(pid) && pid > 0 && process.kill(pid, 0);
      } catch {
        alive = false;
      }
      if (alive) throw new BangerError('conflict', `another banger update (pid ${pid}) is running`, 'wait for it to finish');
      rmSync(path, { force: true });
    }
  }
  throw new BangerError('conflict', `cannot take ${path}`, 'another update may be starting; try again');
}
