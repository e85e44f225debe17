/**
 * Where banger keeps things. XDG base directories, each overridable by a
 * BANGER_* variable so tests run fully isolated:
 *   BANGER_CONFIG_DIR  (default $XDG_CONFIG_HOME/banger, ~/.config/banger)
 *   BANGER_STATE_DIR   (default $XDG_STATE_HOME/banger, ~/.local/state/banger)
 *   BANGER_CACHE_DIR   (default $XDG_CACHE_HOME/banger, ~/.cache/banger)
 *   BANGER_RUNTIME_DIR (default $XDG_RUNTIME_DIR/banger, else /tmp/banger-<uid>)
 * Every file the daemon writes is named here (see docs/ARCHITECTURE.md).
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { validateImageName, validateVmId } from '../model/names.js';

export interface Layout {
  configDir: string;
  configFile: string;
  stateDir: string;
  cacheDir: string;
  runtimeDir: string;
  dbPath: string;
  daemonLog: string;
  socketPath: string;
  daemonPidFile: string;
  sshDir: string;
  sshKey: string;
  sshPubKey: string;
  knownHosts: string;
  imagesDir: string;
  /** Kernels pulled from the catalog: `NAME/{vmlinuz,initrd.img,kernel.json}` (src/images/kernels.ts). */
  kernelsDir: string;
  vmsDir: string;
  vmSocketsDir: string;
  buildDir: string;
  /** Content-addressed OCI blobs (layers), shared by every pulled image: `sha256/<hex>`. */
  blobsDir: string;
}

export interface VmPaths {
  dir: string;
  overlay: string;
  configDisk: string;
  /** The persistent work disk, mounted at /root in the guest. */
  workDisk: string;
  consoleLog: string;
  pidFile: string;
  runtimeFile: string;
  socketsDir: string;
  qmpSocket: string;
  qgaSocket: string;
}

export interface ImagePaths {
  dir: string;
  rootfs: string;
  kernel: string;
  initrd: string;
  manifest: string;
}

export function resolveLayout(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? 0): Layout {
  const home = env.HOME && env.HOME.length > 0 ? env.HOME : homedir();
  const pick = (override: string | undefined, xdg: string | undefined, fallback: string) =>
    nonEmpty(override) ?? (nonEmpty(xdg) ? join(xdg!, 'banger') : fallback);
  const configDir = pick(env.BANGER_CONFIG_DIR, env.XDG_CONFIG_HOME, join(home, '.config', 'banger'));
  const stateDir = pick(env.BANGER_STATE_DIR, env.XDG_STATE_HOME, join(home, '.local', 'state', 'banger'));
  const cacheDir = pick(env.BANGER_CACHE_DIR, env.XDG_CACHE_HOME, join(home, '.cache', 'banger'));
  // A daemon installed with `banger system install` runs in /run/banger/u<uid>: the CLI finds it there.
  const systemRuntime = `/run/banger/u${uid}`;
  const runtimeDir = nonEmpty(env.BANGER_RUNTIME_DIR) ?? (existsSync(systemRuntime) ? systemRuntime : pick(undefined, env.XDG_RUNTIME_DIR, `/tmp/banger-${uid}`));
  const sshDir = join(stateDir, 'ssh');
  return {
    configDir,
    configFile: join(configDir, 'config.toml'),
    stateDir,
    cacheDir,
    runtimeDir,
    dbPath: join(stateDir, 'state.db'),
    daemonLog: join(stateDir, 'bangerd.log'),
    socketPath: join(runtimeDir, 'bangerd.sock'),
    daemonPidFile: join(runtimeDir, 'bangerd.pid'),
    sshDir,
    sshKey: join(sshDir, 'id_ed25519'),
    sshPubKey: join(sshDir, 'id_ed25519.pub'),
    knownHosts: join(sshDir, 'known_hosts'),
    imagesDir: join(stateDir, 'images'),
    kernelsDir: join(stateDir, 'kernels'),
    vmsDir: join(stateDir, 'vms'),
    vmSocketsDir: join(runtimeDir, 'vms'),
    buildDir: join(cacheDir, 'build'),
    blobsDir: join(cacheDir, 'blobs'),
  };
}

function nonEmpty(v: string | undefined): string | undefined {
  return v !== undefined && v.length > 0 ? v : undefined;
}

/**
 * `parts` joined under `root`, refused (BangerError internal) unless the
 * result is strictly inside root: no part may climb out with "..", be
 * absolute, or resolve to root itself. Every per-VM and per-image path is
 * built with it, and every recursive remove in src/daemon checks it again.
 */
export function within(root: string, ...parts: string[]): string {
  const base = resolve(root);
  const target = resolve(base, ...parts);
  assertWithin(base, target);
  return target;
}

/** Throws unless `path` (resolved) is strictly inside `root` (resolved). Returns path. */
export function assertWithin(root: string, path: string): string {
  const rel = relative(resolve(root), resolve(path));
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
    throw new BangerError(
      'internal',
      `refusing path ${JSON.stringify(path.slice(0, 200))}: it is not inside ${root}`,
      'this is a bug or a tampered state.db/state dir; nothing was touched',
    );
  }
  return path;
}

/** A VM's files; the id must be a valid VM id (12 hex characters). */
export function vmPaths(layout: Layout, vmId: string): VmPaths {
  validateVmId(vmId);
  const dir = within(layout.vmsDir, vmId);
  const socketsDir = within(layout.vmSocketsDir, vmId);
  return {
    dir,
    overlay: join(dir, 'root.qcow2'),
    configDisk: join(dir, 'config.img'),
    workDisk: join(dir, 'work.ext4'),
    consoleLog: join(dir, 'console.log'),
    pidFile: join(dir, 'qemu.pid'),
    runtimeFile: join(dir, 'runtime.json'),
    socketsDir,
    qmpSocket: join(socketsDir, 'qmp.sock'),
    qgaSocket: join(socketsDir, 'qga.sock'),
  };
}

/** An image's files; the name must be a valid image name. */
export function imagePaths(layout: Layout, imageName: string): ImagePaths {
  validateImageName(imageName);
  const dir = within(layout.imagesDir, imageName);
  return {
    dir,
    rootfs: join(dir, 'rootfs.ext4'),
    kernel: join(dir, 'vmlinuz'),
    initrd: join(dir, 'initrd.img'),
    manifest: join(dir, 'image.json'),
  };
}

/** A snapshot's key: which VMM, accelerator and machine shape it can start (e.g. `qemu-tcg-2c-1024m`). */
export const SNAPSHOT_KEY_RE = /^[a-z]{1,16}-(kvm|tcg)-\d{1,3}c-\d{1,9}m$/;
/** A template build's directory (beside the snapshots, renamed to its key when done). */
export const SNAPSHOT_BUILD_RE = /^\.build-[0-9a-f]{12}$/;

export interface SnapshotPaths {
  dir: string;
  /** snapshot.json: what it was made from and the sha256 of each file. */
  manifest: string;
  /** The VMM's saved state (memory and devices). */
  state: string;
  /** The template's root disk at the moment it was saved (clones copy it). */
  root: string;
}

/** An image's snapshots directory (removed with the image). */
export function snapshotsDir(layout: Layout, imageName: string): string {
  return within(imagePaths(layout, imageName).dir, 'snapshots');
}

/** One snapshot (or template build) of an image: `key` is a snapshot key or a build dir name. */
export function snapshotPaths(layout: Layout, imageName: string, key: string): SnapshotPaths {
  if (!SNAPSHOT_KEY_RE.test(key) && !SNAPSHOT_BUILD_RE.test(key)) {
    throw new BangerError('internal', `invalid snapshot key ${JSON.stringify(key.slice(0, 64))}`);
  }
  const dir = within(snapshotsDir(layout, imageName), key);
  return { dir, manifest: join(dir, 'snapshot.json'), state: join(dir, 'state'), root: join(dir, 'root.qcow2') };
}

/** A template VM's sockets (its QMP, agent and migration sockets) while it is built. */
export function templateSocketsDir(layout: Layout, buildId: string): string {
  if (!/^[0-9a-f]{12}$/.test(buildId)) throw new BangerError('internal', `invalid template build id ${JSON.stringify(buildId.slice(0, 64))}`);
  return within(layout.runtimeDir, 'templates', buildId);
}
