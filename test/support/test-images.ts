/**
 * The test images of issue 11, built as OCI layouts by the test itself
 * (push them with `pushLayout`; see oci-layout.ts):
 *
 * - `mmdebstrapTar`: a Debian root filesystem as a tar (mmdebstrap
 *   `--format=tar`, as root). minbase gives the "minimal image without sshd
 *   or the agent"; minbase plus `--include=systemd-sysv,openssh-server,
 *   qemu-guest-agent,…` the image that already has them. `rootfsImage` makes
 *   either a one-layer image.
 * - `whiteoutImage`: base rootfs, then a layer that adds `WHITEOUT.dir`'s
 *   files, then a layer of whiteouts (`.wh.NAME`), an opaque directory
 *   (`.wh..wh..opq`) with one new file, and a directory replaced by a file.
 *   `WHITEOUT` lists what a guest must (not) see.
 * - `linksImage`: base rootfs, then a layer with a hard-linked trio, a
 *   setuid-root binary, setgid and sticky directories, a file owned by
 *   1234:2345, symlinks, a file capability and a user xattr. `LINKS` lists
 *   the paths and what to expect of each.
 * - `hostileImage`: layers that try to write outside the root (`../`
 *   names, absolute names, a symlink followed by a file written through it,
 *   in one layer or across two, a hard link to a host file then written
 *   through). Each targets a host directory the caller names; the result
 *   says which host paths must not appear or change.
 *
 * The staging trees and layer tars are made as root (ownership, setuid and
 * capabilities need it), like mmdebstrap's root mode. Layers of the extra
 * files are small; the base rootfs layer dominates (gzip of ~170-250 MB of
 * tar), and is compressed once per process when several images share it.
 */
import { chmodSync, chownSync, copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { run, writeOciLayout, type Compression, type LayerInput, type OciImage } from './oci-layout.js';

export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';

/** What the "image that already has the guest contract's pieces" includes on top of minbase. */
export const CONTRACT_PACKAGES = ['systemd-sysv', 'openssh-server', 'qemu-guest-agent', 'iproute2', 'udev', 'dbus', 'kmod', 'e2fsprogs'];

export interface MmdebstrapOptions {
  /** Default `'minbase'`. */
  variant?: 'apt' | 'minbase' | 'essential' | 'required' | 'important' | 'standard' | 'custom';
  include?: string[];
  /** Default `'bookworm'`. */
  suite?: string;
  /** Default `DEFAULT_MIRROR`. */
  mirror?: string;
  /** Anything else for mmdebstrap (e.g. `--mode=unshare` for a caller that is not root). */
  extraArgs?: string[];
}

/** `mmdebstrap --variant=V [--include=…] --format=tar SUITE OUT MIRROR`: a rootfs tar (uncompressed), written atomically. */
export async function mmdebstrapTar(out: string, opts: MmdebstrapOptions = {}): Promise<{ path: string; seconds: number; bytes: number }> {
  const path = resolve(out);
  const tmp = `${path}.tmp-${process.pid}`;
  const args = [`--variant=${opts.variant ?? 'minbase'}`, '--format=tar', '--quiet'];
  if (opts.include?.length) args.push(`--include=${opts.include.join(',')}`);
  args.push(...(opts.extraArgs ?? []), opts.suite ?? 'bookworm', tmp, opts.mirror ?? DEFAULT_MIRROR);
  const t0 = Date.now();
  try {
    await run('mmdebstrap', args);
    renameSync(tmp, path);
  } finally {
    rmSync(tmp, { force: true });
  }
  return { path, seconds: (Date.now() - t0) / 1000, bytes: statSync(path).size };
}

export interface ImageBuildOptions {
  /** The base rootfs tar (uncompressed; e.g. from `mmdebstrapTar`). Omitted: no base layer (an image that can be inspected, not booted). */
  baseTar?: string;
  /** Default `'latest'`. */
  tag?: string;
  /** Default `'gzip'`. */
  compression?: Compression;
  /** Where staging trees go (removed afterwards); default a fresh directory under the OS temp dir. */
  workDir?: string;
}

/** A one-layer image of a rootfs tar (the "has systemd/sshd/agent" or the "minimal" image). */
export async function rootfsImage(out: string, opts: ImageBuildOptions & { baseTar: string }): Promise<OciImage> {
  return writeOciLayout(out, {
    layers: [{ path: opts.baseTar, comment: 'mmdebstrap rootfs' }],
    compression: opts.compression,
    tag: opts.tag,
    config: { Cmd: ['/bin/bash'] },
  });
}

/** Paths in the whiteout image and what the guest must see there. */
export const WHITEOUT = {
  dir: '/srv/banger-wh',
  /** Added by layer 2, whited out by layer 3 (`.wh.deleted.txt`): must not exist. */
  deletedFile: '/srv/banger-wh/deleted.txt',
  /** A directory with files, added by layer 2, whited out by layer 3 (`.wh.deleted-dir`): must not exist. */
  deletedDir: '/srv/banger-wh/deleted-dir',
  /** Added by layer 2, untouched: must exist with `keptContent`. */
  keptFile: '/srv/banger-wh/kept.txt',
  keptContent: 'kept\n',
  /** Layer 2 fills it; layer 3 marks it opaque (`.wh..wh..opq`) and adds `new.txt`: `ls -A` must list exactly `opaqueListing`. */
  opaqueDir: '/srv/banger-wh/opaque',
  opaqueHidden: ['/srv/banger-wh/opaque/old.txt', '/srv/banger-wh/opaque/old-sub'],
  opaqueNewFile: '/srv/banger-wh/opaque/new.txt',
  opaqueNewContent: 'new\n',
  opaqueListing: ['new.txt'],
  /** A directory (with a file) in layer 2; layer 3 whites it out and adds a regular file of the same name: must be that file. */
  replaced: '/srv/banger-wh/replaced',
  replacedContent: 'now a file\n',
  /** From the Debian base layer (base-files), whited out by layer 3: must not exist (only meaningful with a Debian base). */
  baseDeleted: '/etc/issue.net',
  /** No `.wh.*` file may be left anywhere under `dir` (or `/etc`). */
  whiteoutPrefix: '.wh.',
} as const;

/**
 * Base rootfs → layer 2 (bare names, `docker build` style): WHITEOUT.dir's
 * files → layer 3 (`./` names): the whiteouts. Layer 3's tar, in name order:
 * `./etc/.wh.issue.net`, `./srv/banger-wh/.wh.deleted-dir`,
 * `.wh.deleted.txt`, `.wh.replaced`, `opaque/.wh..wh..opq`, `opaque/new.txt`,
 * `replaced`.
 */
export async function whiteoutImage(out: string, opts: ImageBuildOptions = {}): Promise<OciImage> {
  return withWorkDir(opts.workDir, async (work) => {
    const seed = stagingRoot(work, 'seed');
    const wh = join(seed, 'srv', 'banger-wh');
    mkdirs(join(wh, 'deleted-dir', 'inner'), join(wh, 'opaque', 'old-sub'), join(wh, 'replaced'));
    writeFileSync(join(wh, 'deleted.txt'), 'to be deleted\n');
    writeFileSync(join(wh, 'deleted-dir', 'inner', 'file.txt'), 'to be deleted with its directory\n');
    writeFileSync(join(wh, WHITEOUT.keptFile.split('/').pop()!), WHITEOUT.keptContent);
    writeFileSync(join(wh, 'opaque', 'old.txt'), 'hidden by the opaque whiteout\n');
    writeFileSync(join(wh, 'opaque', 'old-sub', 'deep.txt'), 'hidden by the opaque whiteout\n');
    writeFileSync(join(wh, 'replaced', 'inside.txt'), 'goes with the directory\n');

    const upper = stagingRoot(work, 'whiteouts');
    const uwh = join(upper, 'srv', 'banger-wh');
    mkdirs(join(uwh, 'opaque'), join(upper, 'etc'));
    for (const name of ['deleted.txt', 'deleted-dir', 'replaced']) writeFileSync(join(uwh, `.wh.${name}`), '');
    writeFileSync(join(uwh, 'opaque', '.wh..wh..opq'), '');
    writeFileSync(join(uwh, 'opaque', 'new.txt'), WHITEOUT.opaqueNewContent);
    writeFileSync(join(uwh, 'replaced'), WHITEOUT.replacedContent);
    writeFileSync(join(upper, 'etc', '.wh.issue.net'), '');

    const layers: LayerInput[] = [];
    if (opts.baseTar) layers.push({ path: opts.baseTar, comment: 'base rootfs' });
    layers.push({ path: seed, names: 'bare', comment: 'add /srv/banger-wh' }, { path: upper, names: 'dot', comment: 'whiteouts and an opaque directory' });
    return writeOciLayout(out, { layers, compression: opts.compression, tag: opts.tag, config: { Cmd: ['/bin/bash'] } });
  });
}

/** Paths in the links image and what the guest must see there. */
export const LINKS = {
  dir: '/srv/banger-links',
  /** One inode, three names (`stat -c %i` equal, `%h` = 3), content `hardlinkContent`; the third is in a subdirectory. */
  hardlinks: ['/srv/banger-links/a.txt', '/srv/banger-links/b.txt', '/srv/banger-links/sub/c.txt'],
  hardlinkContent: 'linked\n',
  /** A copy of /bin/true, root:root, mode 4755 (`stat -c %a` → 4755): still runs. */
  setuid: '/usr/local/bin/banger-suid',
  setuidMode: '4755',
  /** A directory with mode 2775. */
  setgidDir: '/srv/banger-links/sgid',
  setgidMode: '2775',
  /** A directory with mode 1777. */
  stickyDir: '/srv/banger-links/sticky',
  stickyMode: '1777',
  /** Owned by 1234:2345 (no such user in the image: numeric ids must survive), mode 640. */
  owned: '/srv/banger-links/owned.txt',
  ownedIds: '1234:2345',
  ownedMode: '640',
  /** `readlink` → `a.txt`. */
  symlinkRelative: '/srv/banger-links/rel-link',
  symlinkRelativeTarget: 'a.txt',
  /** `readlink` → `/etc/os-release`: absolute, resolved in the guest, never on the host while extracting. */
  symlinkAbsolute: '/srv/banger-links/abs-link',
  symlinkAbsoluteTarget: '/etc/os-release',
  /** A copy of /bin/true with `cap_net_raw=ep` (`getcap` prints it; security.capability xattr), when setcap worked here. */
  capability: '/usr/local/bin/banger-cap',
  capabilityText: 'cap_net_raw=ep',
  /** A file with the xattr `user.banger` = `xattrValue`, when setfattr worked here. */
  xattrFile: '/srv/banger-links/xattr.txt',
  xattrName: 'user.banger',
  xattrValue: 'kept',
} as const;

/** Base rootfs → one layer with LINKS' files. `extras` says whether the capability and the user xattr could be set here (setcap, setfattr). */
export async function linksImage(out: string, opts: ImageBuildOptions = {}): Promise<OciImage & { extras: { capability: boolean; xattr: boolean } }> {
  return withWorkDir(opts.workDir, async (work) => {
    const root = stagingRoot(work, 'links');
    const at = (p: string) => join(root, p);
    mkdirs(at(`${LINKS.dir}/sub`), at('/usr/local/bin'), at(LINKS.setgidDir), at(LINKS.stickyDir));
    // mkdir's mode is masked by the umask; chmod sets the special bits for sure.
    chmodSync(at(LINKS.setgidDir), 0o2775);
    chmodSync(at(LINKS.stickyDir), 0o1777);
    const [first, ...others] = LINKS.hardlinks;
    writeFileSync(at(first), LINKS.hardlinkContent);
    for (const o of others) linkSync(at(first), at(o));
    copyFileSync('/bin/true', at(LINKS.setuid));
    chownSync(at(LINKS.setuid), 0, 0);
    chmodSync(at(LINKS.setuid), 0o4755);
    writeFileSync(at(LINKS.owned), 'owned by 1234:2345\n');
    chownSync(at(LINKS.owned), 1234, 2345);
    chmodSync(at(LINKS.owned), 0o640);
    symlinkSync(LINKS.symlinkRelativeTarget, at(LINKS.symlinkRelative));
    symlinkSync(LINKS.symlinkAbsoluteTarget, at(LINKS.symlinkAbsolute));
    copyFileSync('/bin/true', at(LINKS.capability));
    chmodSync(at(LINKS.capability), 0o755);
    const capability = spawnSync('setcap', ['cap_net_raw+ep', at(LINKS.capability)]).status === 0;
    writeFileSync(at(LINKS.xattrFile), 'has a user xattr\n');
    const xattr = spawnSync('setfattr', ['-n', LINKS.xattrName, '-v', LINKS.xattrValue, at(LINKS.xattrFile)]).status === 0;

    const layers: LayerInput[] = [];
    if (opts.baseTar) layers.push({ path: opts.baseTar, comment: 'base rootfs' });
    layers.push({ path: root, names: 'dot', comment: 'hard links, setuid, caps, xattrs' });
    const img = await writeOciLayout(out, { layers, compression: opts.compression, tag: opts.tag, config: { Cmd: ['/bin/bash'] } });
    return { ...img, extras: { capability, xattr } };
  });
}

export type HostileKind = 'dotdot' | 'absolute' | 'symlink-escape' | 'symlink-escape-layers' | 'hardlink-escape';
export const HOSTILE_KINDS: readonly HostileKind[] = ['dotdot', 'absolute', 'symlink-escape', 'symlink-escape-layers', 'hardlink-escape'];

export interface HostileResult {
  image: OciImage;
  /** Host paths that must not exist after a pull (refused or contained). */
  mustNotExist: string[];
  /** Host files that must still hold this content (and have one link) after a pull. */
  mustKeep: Array<{ path: string; content: string }>;
  /** The offending tar entries, as `tar -tv` would show them. */
  entries: string[];
}

/**
 * An image whose last layer(s) try to write under the host directory
 * `escapeDir` (absolute; created if missing; a fresh one per test is best):
 * - `dotdot`: a file named `../../…/ESCAPEDIR/banger-hostile-dotdot` (20 × `../`).
 * - `absolute`: a file named `/ESCAPEDIR/banger-hostile-absolute`.
 * - `symlink-escape`: in one layer, `escape` → ESCAPEDIR (symlink), then the file `escape/banger-hostile-symlink`.
 * - `symlink-escape-layers`: the same split over two layers (the symlink below, the file above).
 * - `hardlink-escape`: `b` a hard link to ESCAPEDIR/banger-hostile-hardlink-target (created here with
 *   "original\n"), then a regular file `b` with "pwned\n" (written through the link by a naive extractor).
 */
export async function hostileImage(out: string, kind: HostileKind, escapeDir: string, opts: ImageBuildOptions = {}): Promise<HostileResult> {
  if (!isAbsolute(escapeDir) || /[,&\\\n]/.test(escapeDir)) throw new Error(`escapeDir must be absolute without , & \\ or newlines: ${escapeDir}`);
  const esc = resolve(escapeDir);
  mkdirSync(esc, { recursive: true });
  return withWorkDir(opts.workDir, async (work) => {
    const stage = stagingRoot(work, 'hostile');
    const tars: string[] = [];
    const mustNotExist: string[] = [];
    const mustKeep: Array<{ path: string; content: string }> = [];
    const tarOut = (n: number) => {
      const p = join(work, `hostile-${n}.tar`);
      tars.push(p);
      return p;
    };
    // -P keeps `../` and `/` in names; --no-recursion and explicit names give exactly the listed entries.
    const base = ['--numeric-owner', '--format=posix', '--pax-option=delete=atime,delete=ctime', '-P', '--no-recursion'];
    switch (kind) {
      case 'dotdot':
      case 'absolute': {
        const name = `banger-hostile-${kind}`;
        writeFileSync(join(stage, 'payload'), `${kind}\n`);
        const to = kind === 'dotdot' ? `${'../'.repeat(20)}${esc.slice(1)}/${name}` : `${esc}/${name}`;
        await run('tar', ['-cf', tarOut(1), ...base, `--transform=flags=r;s,^payload$,${to},`, '-C', stage, 'payload']);
        mustNotExist.push(join(esc, name));
        break;
      }
      case 'symlink-escape':
      case 'symlink-escape-layers': {
        const name = `banger-hostile-${kind}`;
        symlinkSync(esc, join(stage, 'escape'));
        mkdirSync(join(stage, 'd'));
        writeFileSync(join(stage, 'd', name), 'written through a symlink\n');
        const file = ['--transform=flags=r;s,^d/,escape/,', '-C', stage, `d/${name}`];
        if (kind === 'symlink-escape') await run('tar', ['-cf', tarOut(1), ...base, '-C', stage, 'escape', ...file]);
        else {
          await run('tar', ['-cf', tarOut(1), ...base, '-C', stage, 'escape']);
          await run('tar', ['-cf', tarOut(2), ...base, ...file]);
        }
        mustNotExist.push(join(esc, name));
        break;
      }
      case 'hardlink-escape': {
        const target = join(esc, 'banger-hostile-hardlink-target');
        writeFileSync(target, 'original\n');
        writeFileSync(join(stage, 'a'), 'decoy\n');
        linkSync(join(stage, 'a'), join(stage, 'b'));
        writeFileSync(join(stage, 'c'), 'pwned\n');
        const t = tarOut(1);
        // `a` stays `a`; `b` is stored as a hard link whose target is rewritten to the host file.
        await run('tar', ['-cf', t, ...base, `--transform=flags=h;s,^a$,${target},`, '-C', stage, 'a', 'b']);
        await run('tar', ['-rf', t, ...base, '--transform=flags=r;s,^c$,b,', '-C', stage, 'c']);
        mustKeep.push({ path: target, content: 'original\n' });
        break;
      }
    }
    const entries: string[] = [];
    for (const t of tars) {
      const r = spawnSync('tar', ['-tvPf', t], { encoding: 'utf8' });
      entries.push(...r.stdout.split('\n').filter(Boolean));
    }
    const layers: LayerInput[] = [];
    if (opts.baseTar) layers.push({ path: opts.baseTar, comment: 'base rootfs' });
    for (const t of tars) layers.push({ path: t, comment: `hostile: ${kind}` });
    const image = await writeOciLayout(out, { layers, compression: opts.compression, tag: opts.tag ?? kind, config: { Cmd: ['/bin/bash'] } });
    return { image, mustNotExist, mustKeep, entries };
  });
}

async function withWorkDir<T>(workDir: string | undefined, f: (dir: string) => Promise<T>): Promise<T> {
  const dir = workDir ? mkdtempSync(join(resolve(workDir), 'imgwork-')) : mkdtempSync(join(tmpdir(), 'banger-imgwork-'));
  try {
    return await f(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A staging root with the mode and owner a rootfs root has (its `./` entry lands on the image's `/`). */
function stagingRoot(work: string, name: string): string {
  const d = join(work, name);
  mkdirSync(d, { mode: 0o755 });
  chmodSync(d, 0o755);
  if (process.getuid?.() === 0) chownSync(d, 0, 0);
  return d;
}

/** mkdir -p, with every directory 0755 whatever the umask. */
function mkdirs(...dirs: string[]): void {
  for (const d of dirs) {
    const made = mkdirSync(d, { recursive: true, mode: 0o755 });
    if (!made) continue;
    // chmod what was created: from `made` (the first new directory) down to `d`.
    for (let p = d; p.length >= made.length; p = join(p, '..')) {
      if (existsSync(p)) chmodSync(p, 0o755);
      if (p === made) break;
    }
  }
}
