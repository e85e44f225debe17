/**
 * The ext4 stage: the root tree becomes a sparse ext4 image with
 * `mkfs.ext4 -d` (which copies owners, modes and xattrs from the tree).
 */
import { lstatSync, mkdirSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunOptions, RunResult } from '../system/runner.js';
import { toolPath } from '../system/which.js';

export const ROOTFS_LABEL = 'banger-root';

const MiB = 1024 * 1024;

/** Image size: used space plus generous headroom, at least 1 GiB, in 64 MiB steps (sparse). */
export function rootfsSize(usedBytes: number): number {
  const want = Math.max(usedBytes * 1.5 + 256 * MiB, 1024 * MiB);
  return Math.ceil(want / (64 * MiB)) * 64 * MiB;
}

/** Bytes allocated and inode count of a tree (does not cross mount points). */
export function diskUsage(dir: string): { bytes: number; inodes: number } {
  const dev = lstatSync(dir).dev;
  let bytes = 0;
  let inodes = 0;
  const seen = new Set<string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      const st = lstatSync(path);
      if (st.dev !== dev) continue;
      if (st.nlink > 1 && !st.isDirectory()) {
        const key = `${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      inodes++;
      bytes += Math.max(st.blocks * 512, 4096);
      if (st.isDirectory()) walk(path);
    }
  };
  walk(dir);
  return { bytes, inodes };
}

/** Formats `imgPath` (created sparse, `bytes` long) as ext4 holding the tree at `rootDir`. */
export async function makeExt4(run: (argv: string[], opts?: RunOptions) => Promise<RunResult>, rootDir: string, imgPath: string, bytes: number): Promise<void> {
  writeFileSync(imgPath, '', { mode: 0o644 });
  truncateSync(imgPath, bytes);
  await run([toolPath('mkfs.ext4'), '-q', '-F', '-t', 'ext4', '-L', ROOTFS_LABEL, '-m', '0', '-i', '8192', '-d', rootDir, imgPath], {
    timeoutMs: 30 * 60 * 1000,
  });
}

/** An extended attribute of a file in the tree (file capabilities above all), by path relative to the root. */
export interface Xattr {
  path: string;
  name: string;
  value: Buffer;
}

/** Names debugfs may set: file capabilities, SELinux/IMA labels, user and trusted attributes, POSIX ACLs (debugfs converts them to ext4's format). */
const XATTR_NAME = /^((security|trusted|user)\.[A-Za-z0-9._-]{1,200}|system\.posix_acl_(access|default))$/;
/** Paths that can be quoted in a debugfs command: no control characters, quotes or backslashes. */
const DEBUGFS_PATH = /^[^\x00-\x1f\x7f"\\]{1,4000}$/;

/**
 * Sets xattrs on the files of an ext4 image with `debugfs -w` (ea_set from
 * value files): the tree was extracted without them (Node cannot set
 * xattrs), and this needs no mount and no root. The image's paths and
 * names come from a layer, so they are checked before they are written
 * into debugfs's command file: one that cannot be quoted safely is skipped
 * and reported, never passed on. Returns the warnings.
 */
export async function applyXattrs(run: (argv: string[], opts?: RunOptions) => Promise<RunResult>, imgPath: string, xattrs: Xattr[], scratchDir: string): Promise<string[]> {
  const warnings: string[] = [];
  const lines: string[] = [];
  mkdirSync(scratchDir, { recursive: true, mode: 0o700 });
  xattrs.forEach((x, i) => {
    const path = '/' + x.path.split('/').filter((c) => c !== '' && c !== '.').join('/');
    if (!XATTR_NAME.test(x.name) || !DEBUGFS_PATH.test(path) || path.split('/').includes('..') || x.value.length > 64 * 1024) {
      warnings.push(`xattr ${JSON.stringify(x.name).slice(0, 80)} on ${JSON.stringify(path).slice(0, 200)} not kept (a name or path banger does not set)`);
      return;
    }
    const valueFile = join(scratchDir, `xattr-${i}`);
    writeFileSync(valueFile, x.value, { mode: 0o600 });
    lines.push(`ea_set -f ${valueFile} "${path}" ${x.name}`);
  });
  if (lines.length === 0) return warnings;
  const cmds = join(scratchDir, 'xattrs.debugfs');
  writeFileSync(cmds, lines.join('\n') + '\n', { mode: 0o600 });
  const r = await run([toolPath('debugfs'), '-w', '-f', cmds, imgPath], { timeoutMs: 10 * 60 * 1000 });
  // debugfs exits 0 even when a command fails; its complaints come on stderr.
  for (const line of r.stderr.split('\n')) {
    const t = line.trim();
    if (t && !t.startsWith('debugfs ')) warnings.push(`debugfs: ${t.slice(0, 300)}`);
  }
  return warnings;
}

/** An entry's owner and mode as the image wants them (the layers' Owner). */
export interface OwnerMeta {
  path: string;
  uid: number;
  gid: number;
  mode: number;
}

/**
 * An image made without root (`mkfs.ext4 -d` copied the daemon user's
 * ownership): sets every inode's owner with `debugfs -w` — the layers'
 * owners and modes where `owners` has the path, root's (0:0) everywhere else
 * (banger's own files, the kernel's modules). Modes are set too where the
 * tree's differ from the layers' (a non-member cannot keep setgid). No
 * fakeroot and no user namespace: e2fsprogs edits the image file directly
 * (~24,000 commands for a 12,000-file image take about 2 s). Returns the
 * warnings (paths debugfs cannot be told about safely).
 */
export async function setOwners(run: (argv: string[], opts?: RunOptions) => Promise<RunResult>, imgPath: string, rootDir: string, owners: OwnerMeta[], scratchDir: string): Promise<string[]> {
  const want = new Map(owners.map((o) => [o.path, o]));
  const warnings: string[] = [];
  const lines: string[] = [];
  const seen = new Set<string>();
  const visit = (rel: string) => {
    const abs = rel === '' ? rootDir : join(rootDir, rel);
    const st = lstatSync(abs);
    if (st.nlink > 1 && !st.isDirectory()) {
      const key = `${st.dev}:${st.ino}`;
      if (seen.has(key)) return;
      seen.add(key);
    }
    const path = `/${rel}`;
    if (!DEBUGFS_PATH.test(path)) {
      warnings.push(`${JSON.stringify(path).slice(0, 200)}: owner not set (a name debugfs cannot be given safely)`);
    } else {
      const o = want.get(rel);
      const uid = o?.uid ?? 0;
      const gid = o?.gid ?? 0;
      if (st.uid !== uid) lines.push(`sif "${path}" uid ${uid}`);
      if (st.gid !== gid) lines.push(`sif "${path}" gid ${gid}`);
      if (o && (st.mode & 0o7777) !== (o.mode & 0o7777) && !st.isSymbolicLink()) {
        lines.push(`sif "${path}" mode 0${((st.mode & ~0o7777) | (o.mode & 0o7777)).toString(8)}`);
      }
    }
    if (st.isDirectory()) for (const name of readdirSync(abs).sort()) visit(rel === '' ? name : `${rel}/${name}`);
  };
  visit('');
  if (lines.length === 0) return warnings;
  mkdirSync(scratchDir, { recursive: true, mode: 0o700 });
  const cmds = join(scratchDir, 'owners.debugfs');
  writeFileSync(cmds, lines.join('\n') + '\n', { mode: 0o600 });
  const r = await run([toolPath('debugfs'), '-w', '-f', cmds, imgPath], { timeoutMs: 30 * 60 * 1000, maxStdoutBytes: 1024 * 1024 });
  for (const line of r.stderr.split('\n')) {
    const t = line.trim();
    if (t && !t.startsWith('debugfs ')) warnings.push(`debugfs: ${t.slice(0, 300)}`);
  }
  return warnings;
}
