/**
 * Applies OCI image layers, in order, onto a root directory, as container
 * runtimes do (containerd's archive.Apply is the model): whiteouts and
 * opaque directories (whiteouts.ts), then the layer's entries — regular
 * files, directories, symlinks, hard links — with their owners (when
 * running as root), exact modes (setuid/setgid/sticky included, no umask),
 * mtimes and extended attributes (returned, see Xattr).
 *
 * Each layer is read twice: the first pass checks the whole tar (format,
 * bounds, names) and collects its whiteouts before anything changes; the
 * whiteouts are applied; the second pass extracts, one entry at a time.
 *
 * Why not node-tar's Unpack (checked on these machines, node-tar 7.5): it
 * strips the `/` from absolute symlink targets (`etc/localtime ->
 * /usr/share/zoneinfo/UTC` became a broken relative link), refuses
 * symlinks whose target has `..` past the root (normal in an image: the
 * target is resolved in the guest), forces directories to at least 0700,
 * loses setgid on files it chowns (chown clears it after the mode was set),
 * does not chown symlinks, never sets their mtime, and drops pax xattrs.
 * The containment it offers is kept here (rootfs.ts): nothing is written,
 * deleted or chmod'ed through a symlink; `..` names are refused; an
 * absolute name is read relative to the root.
 *
 * Decisions:
 * - An entry whose parent is a symlink (planted by this layer or a lower
 *   one) is skipped with a warning: writing through it is what an escape
 *   looks like, and runtimes that resolve such links inside the root are
 *   rare producers of such layers.
 * - `..` names and hard links leaving the root, missing, or to a directory
 *   refuse the layer (BangerError operation_failed).
 * - Device nodes and FIFOs are skipped with a warning, as root too: Node has
 *   no mknod, and the guest's /dev is a devtmpfs.
 * - Not running as root: ownership is not kept (one warning) but returned
 *   (`owners`, with each entry's exact mode) for the ext4 stage to set with
 *   debugfs; files keep owner read and directories owner rwx so that
 *   `mkfs.ext4 -d` can read them all.
 * - Directory modes and mtimes are set once all layers are applied (deepest
 *   first): writing into a directory moves its mtime.
 * - A hard link shares its target's inode, so it keeps the target's metadata
 *   (its own header's mode/owner/mtime are not applied).
 */
import { constants } from 'node:fs';
import { chmod, lchown, link, lutimes, mkdir, open, realpath, stat, symlink, utimes, type FileHandle } from 'node:fs/promises';
import { BangerError, messageOf } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';
import { formatSize } from '../../model/sizes.js';
import { LayerDataError, layerCompression, layerTarStream, type LayerCompression } from './decompress.js';
import { LAYER_MEDIA_TYPES } from './manifest.js';
import { entryParts, lstatOrUndefined, PathProblem, RootFs } from './rootfs.js';
import { readTar, TarFormatError, type TarEntry, type TarEntryKind, type TarXattr } from './tar-reader.js';
import { applyWhiteouts, markerOf, type WhiteoutPlan } from './whiteouts.js';

export interface LayerBlob {
  /** The blob's file (already verified against its digest by the caller). */
  path: string;
  mediaType: string;
  digest: string;
}

/** An extended attribute to set on `path` (relative to the root; '.' is the root) once the tree is an ext4 image (ext4.ts sets them). */
export type { Xattr } from '../ext4.js';
import type { Xattr } from '../ext4.js';

export interface LayerEntryInfo {
  digest: string;
  path: string;
  kind: TarEntryKind;
  size: number;
}

export interface ApplyOptions {
  signal?: AbortSignal;
  /** Called for every entry extracted or skipped in the second pass (progress). */
  onEntry?: (e: LayerEntryInfo) => void;
  /** Body bytes of all layers together (default 64 GiB). */
  maxBytes?: number;
  /** Entries of all layers together (default 5 million). */
  maxEntries?: number;
  /** Bytes of one entry's name (default 4096). */
  maxPathBytes?: number;
  /** Keep the layers' uid/gid (default: when running as root). */
  preserveOwner?: boolean;
}

export interface ApplyResult {
  entries: number;
  bytes: number;
  /** What the applied tree should carry, after later layers' whiteouts and replacements. */
  xattrs: Xattr[];
  warnings: string[];
  /**
   * Not keeping owners (not root): each entry's uid, gid and mode as the
   * layers give them, for the ext4 stage to set (ext4.ts setOwners); a hard
   * link shares its target's inode and has no entry of its own.
   */
  owners?: Owner[];
}

/** An entry's ownership and mode (with setuid/setgid/sticky), by path relative to the root ('' is the root). */
export type { OwnerMeta as Owner } from '../ext4.js';
import type { OwnerMeta as Owner } from '../ext4.js';

export const LAYER_DEFAULTS = { maxBytes: 64 * 1024 ** 3, maxEntries: 5_000_000, maxPathBytes: 4096 } as const;
const MAX_META_BYTES = 1024 * 1024;
const MAX_WARNINGS = 100;
const WRITE_BATCH = 1024 * 1024;
/** Longest symlink target Linux stores (PATH_MAX less its NUL). */
const SYMLINK_MAX = 4095;
const CREATE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

const HINT = {
  corrupt: 'the layer blob is damaged or is not a tar archive; remove it from the blob cache and pull the image again',
  unsupported: 'banger applies files, directories, symlinks and hard links from ustar, pax and GNU tar layers',
  hostile: 'the image holds an entry that would reach outside its root, so it cannot be used; nothing outside the root was touched',
  write: 'check the free space and permissions of the directory the image is built in',
} as const;

/** Applies one layer onto `rootDir`; see applyLayers. */
export async function applyLayer(rootDir: string, layer: LayerBlob, opts: ApplyOptions = {}): Promise<ApplyResult> {
  return applyLayers(rootDir, [layer], opts);
}

/** Applies `layers` in order (the manifest's order: the base first) onto the existing directory `rootDir`. */
export async function applyLayers(rootDir: string, layers: readonly LayerBlob[], opts: ApplyOptions = {}): Promise<ApplyResult> {
  const owner = opts.preserveOwner ?? process.getuid?.() === 0;
  let root: string;
  try {
    root = await realpath(rootDir);
    if (!(await stat(root)).isDirectory()) throw new Error('not a directory');
  } catch (e) {
    throw new BangerError('internal', `cannot apply layers onto ${quoteInput(rootDir, 200)}: ${messageOf(e)}`, 'the image build makes this directory before applying layers; this is a bug', { cause: e });
  }
  const a = new Applier(new RootFs(root, owner), owner, opts);
  if (!owner) a.warn(`not running as root: the layers' owners are not kept (everything belongs to uid ${process.getuid?.() ?? '?'})`);
  for (const layer of layers) await a.layer(layer);
  try {
    await a.finish();
  } catch (e) {
    throw new BangerError('operation_failed', `setting the modes and times of directories under ${root}: ${messageOf(e)}`, HINT.write, { cause: e });
  }
  return a.result();
}

interface DirMeta {
  mode: number;
  mtime: number;
  atime: number;
}

class Applier {
  private readonly xattrs = new Map<string, TarXattr[]>();
  private readonly dirs = new Map<string, DirMeta>();
  /** Recorded only when owners are not kept (see ApplyResult.owners). */
  private readonly owners = new Map<string, { uid: number; gid: number; mode: number }>();
  private readonly warnings: string[] = [];
  private dropped = 0;
  private entries = 0;
  private bytes = 0;
  private readonly max: { maxBytes: number; maxEntries: number; maxPathBytes: number };

  constructor(
    private readonly fs: RootFs,
    private readonly owner: boolean,
    private readonly opts: ApplyOptions,
  ) {
    this.max = {
      maxBytes: opts.maxBytes ?? LAYER_DEFAULTS.maxBytes,
      maxEntries: opts.maxEntries ?? LAYER_DEFAULTS.maxEntries,
      maxPathBytes: opts.maxPathBytes ?? LAYER_DEFAULTS.maxPathBytes,
    };
  }

  warn(message: string): void {
    if (this.warnings.length < MAX_WARNINGS) this.warnings.push(message);
    else this.dropped++;
  }

  async layer(blob: LayerBlob): Promise<void> {
    const compression = layerCompression(blob.mediaType);
    if (compression === undefined) {
      throw layerError(blob, undefined, `its media type ${quoteInput(blob.mediaType, 100)} is not one banger applies`, `banger applies ${Object.keys(LAYER_MEDIA_TYPES).join(', ')}`);
    }
    const plan: WhiteoutPlan = { opaque: [], whiteouts: [] };
    await this.pass(blob, compression, async (e, parts) => {
      const m = markerOf(parts);
      if (m?.kind === 'opaque') plan.opaque.push(m.dir);
      else if (m?.kind === 'whiteout') plan.whiteouts.push({ dir: m.dir, name: m.name });
      else if (e.kind === 'hardlink') this.linkParts(e);
      else if (e.kind === 'symlink' && Buffer.byteLength(e.linkpath) > SYMLINK_MAX) {
        throw new PathProblem(`the symlink's target is ${Buffer.byteLength(e.linkpath)} bytes long (at most ${SYMLINK_MAX})`, 'limit');
      }
    });
    try {
      await applyWhiteouts(this.fs, plan, {
        removed: (rel, wasDir) => this.forget(rel, wasDir),
        emptied: (rel) => this.forgetUnder(rel),
        warn: (m) => this.warn(`layer ${blob.digest}: ${m}`),
      });
    } catch (e) {
      throw this.wrap(e, blob, undefined);
    }
    const counted = await this.pass(blob, compression, (e, parts) => this.extract(blob, e, parts));
    this.entries += counted.entries;
    this.bytes += counted.bytes;
  }

  /** One read of the layer's tar; `each` sees every entry with its checked name. */
  private async pass(blob: LayerBlob, compression: LayerCompression, each: (e: TarEntry, parts: string[]) => Promise<void>): Promise<{ entries: number; bytes: number }> {
    const limits = { maxEntries: this.max.maxEntries - this.entries, maxBytes: this.max.maxBytes - this.bytes, maxMetaBytes: MAX_META_BYTES };
    let entries = 0;
    let bytes = 0;
    let current: string | undefined;
    try {
      for await (const e of readTar(await layerTarStream(blob.path, compression), limits)) {
        this.checkAbort(blob);
        current = e.path;
        const parts = entryParts(e.path, this.max.maxPathBytes);
        entries++;
        bytes += e.size;
        await each(e, parts);
        current = undefined;
      }
    } catch (e) {
      throw this.wrap(e, blob, current);
    }
    return { entries, bytes };
  }

  private async extract(blob: LayerBlob, e: TarEntry, parts: string[]): Promise<void> {
    if (markerOf(parts) !== undefined) return; // applied before this pass
    this.opts.onEntry?.({ digest: blob.digest, path: e.path, kind: e.kind, size: e.size });
    const rel = parts.join('/');
    if (e.kind === 'chardev' || e.kind === 'blockdev' || e.kind === 'fifo' || e.kind === 'other') {
      const what = e.kind === 'other' ? `an entry of tar type ${JSON.stringify(e.typeflag)}` : e.kind === 'fifo' ? 'a FIFO' : 'a device node';
      this.warn(`layer ${blob.digest}: skipped ${quoteInput(rel, 120)}, ${what} (banger creates files, directories and links only; the guest's /dev is a devtmpfs)`);
      return;
    }
    if (parts.length === 0) {
      if (e.kind !== 'dir') throw new PathProblem('the entry would replace the image\'s root directory', 'hostile');
      await this.dirMeta(e, this.fs.root, '');
      if (!this.owner) this.owners.set('', { uid: e.uid, gid: e.gid, mode: e.mode });
      return;
    }
    const target = e.kind === 'hardlink' ? await this.linkTarget(e, rel) : undefined;
    if (target === null) return;
    const parent = await this.fs.dir(parts.slice(0, -1), true);
    if (typeof parent !== 'string') {
      if (parent.blocked !== 'symlink') throw new TarFormatError(`its parent ${quoteInput(parent.at, 120)} is not a directory`, 'corrupt');
      this.warn(`layer ${blob.digest}: skipped ${quoteInput(rel, 120)}: ${quoteInput(parent.at, 120)} is a symlink, and nothing is written through one`);
      return;
    }
    const abs = this.fs.abs(parts);
    const old = await lstatOrUndefined(abs);
    if (old !== undefined && !(old.isDirectory() && e.kind === 'dir')) {
      await this.fs.remove(parts);
      this.forget(rel, old.isDirectory());
    }
    switch (e.kind) {
      case 'file':
        await this.writeFile(e, abs);
        break;
      case 'dir':
        if (old === undefined || !old.isDirectory()) await mkdir(abs, 0o700);
        this.fs.knowDir(rel);
        await this.dirMeta(e, abs, rel);
        break;
      case 'symlink':
        await symlink(e.linkpath, abs);
        if (this.owner) await lchown(abs, e.uid, e.gid);
        await lutimes(abs, e.atime ?? e.mtime, e.mtime);
        break;
      case 'hardlink':
        await link(this.fs.abs(target!.split('/')), abs);
        break;
    }
    if (!this.owner && e.kind !== 'hardlink') this.owners.set(rel, { uid: e.uid, gid: e.gid, mode: e.mode });
    // The entry's xattrs replace what a lower layer gave this path (a hard link shares its target's).
    const xattrs = e.kind === 'hardlink' && e.xattrs.length === 0 ? (this.xattrs.get(target!) ?? []) : e.xattrs;
    if (xattrs.length > 0) this.xattrs.set(rel, xattrs);
    else this.xattrs.delete(rel);
  }

  /** The hard link's target as components (checked like a name). */
  private linkParts(e: TarEntry): string[] {
    try {
      return entryParts(e.linkpath, this.max.maxPathBytes);
    } catch (err) {
      if (err instanceof PathProblem) throw new PathProblem(`the hard link's target ${quoteInput(e.linkpath, 120)}: ${err.message}`, err.kind);
      throw err;
    }
  }

  /** The hard link's target (relative), null for a link to itself; throws when it is refused. */
  private async linkTarget(e: TarEntry, rel: string): Promise<string | null> {
    const tparts = this.linkParts(e);
    const trel = tparts.join('/');
    if (tparts.length === 0) throw new PathProblem('a hard link to the image\'s root directory', 'hostile');
    if (trel === rel) return null;
    const dir = await this.fs.dir(tparts.slice(0, -1), false);
    if (typeof dir !== 'string' && dir.blocked === 'symlink') {
      throw new PathProblem(`the hard link's target ${quoteInput(e.linkpath, 120)} is reached through the symlink ${quoteInput(dir.at, 120)}`, 'hostile');
    }
    const st = typeof dir === 'string' ? await lstatOrUndefined(this.fs.abs(tparts)) : undefined;
    if (st === undefined) throw new TarFormatError(`the hard link's target ${quoteInput(e.linkpath, 120)} does not exist`, 'corrupt');
    if (st.isDirectory()) throw new TarFormatError(`the hard link's target ${quoteInput(e.linkpath, 120)} is a directory`, 'corrupt');
    return trel;
  }

  private async writeFile(e: TarEntry, abs: string): Promise<void> {
    // O_EXCL|O_NOFOLLOW: whatever was there was removed just before; never open through a link.
    const fh = await open(abs, CREATE, 0o600);
    try {
      let batch: Buffer[] = [];
      let n = 0;
      for await (const chunk of e.body()) {
        batch.push(chunk);
        n += chunk.length;
        if (n >= WRITE_BATCH) {
          await writeAll(fh, Buffer.concat(batch, n));
          batch = [];
          n = 0;
        }
      }
      if (n > 0) await writeAll(fh, Buffer.concat(batch, n));
      if (this.owner) await fh.chown(e.uid, e.gid);
      // After chown, which clears setuid/setgid. Not root: the owner keeps read (mkfs.ext4 -d must read
      // a 0000 file); the exact mode goes on the ext4 from ApplyResult.owners.
      await fh.chmod(this.owner ? e.mode : e.mode | 0o400);
      await fh.utimes(e.atime ?? e.mtime, e.mtime);
    } finally {
      await fh.close();
    }
  }

  /** Owner now; mode (owner rwx kept for now) and times for finish(). */
  private async dirMeta(e: TarEntry, abs: string, rel: string): Promise<void> {
    if (this.owner) await lchown(abs, e.uid, e.gid);
    await chmod(abs, e.mode | 0o700);
    this.dirs.set(rel, { mode: e.mode, mtime: e.mtime, atime: e.atime ?? e.mtime });
  }

  /** Directory modes and times, deepest first, once nothing more is written into them. */
  async finish(): Promise<void> {
    const depth = (rel: string): number => (rel === '' ? 0 : rel.split('/').length);
    const all = [...this.dirs].sort((x, y) => depth(y[0]) - depth(x[0]));
    for (const [rel, m] of all) {
      const abs = await this.fs.dir(rel === '' ? [] : rel.split('/'), false);
      if (typeof abs !== 'string') continue;
      // Not root: the owner keeps rwx (mkfs.ext4 -d must read it; the exact mode goes on the ext4).
      await chmod(abs, this.owner ? m.mode : m.mode | 0o700);
      await utimes(abs, m.atime, m.mtime);
    }
  }

  result(): ApplyResult {
    const xattrs: Xattr[] = [];
    for (const rel of [...this.xattrs.keys()].sort()) {
      for (const x of this.xattrs.get(rel)!) xattrs.push({ path: rel === '' ? '.' : rel, name: x.name, value: x.value });
    }
    const warnings = [...this.warnings];
    if (this.dropped > 0) warnings.push(`… and ${this.dropped} more warnings`);
    const owners = this.owner ? undefined : [...this.owners].map(([path, o]) => ({ path, ...o }));
    return { entries: this.entries, bytes: this.bytes, xattrs, warnings, ...(owners ? { owners } : {}) };
  }

  /** What was at `rel` is gone: its xattrs and pending directory metadata (and those of all under it) go too. */
  private forget(rel: string, wasDir: boolean): void {
    this.xattrs.delete(rel);
    this.owners.delete(rel);
    this.dirs.delete(rel);
    if (wasDir) this.forgetUnder(rel);
  }

  private forgetUnder(rel: string): void {
    const prefix = rel === '' ? '' : `${rel}/`;
    for (const m of [this.xattrs, this.dirs, this.owners] as Map<string, unknown>[]) {
      for (const k of m.keys()) if (k !== '' && k !== rel && k.startsWith(prefix)) m.delete(k);
    }
  }

  private checkAbort(blob: LayerBlob): void {
    if (this.opts.signal?.aborted === true) {
      throw new BangerError('interrupted', `applying layer ${blob.digest} was interrupted`, 'the image is left half-applied; it is rebuilt from the start next time');
    }
  }

  private wrap(e: unknown, blob: LayerBlob, entry: string | undefined): BangerError {
    if (e instanceof BangerError) return e;
    if (e instanceof TarFormatError) {
      const at = e.entry ?? entry;
      if (e.problem === 'limit') return layerError(blob, at, e.message, this.limitHint());
      return layerError(blob, at, e.message, e.problem === 'corrupt' ? HINT.corrupt : HINT.unsupported);
    }
    if (e instanceof PathProblem) return layerError(blob, entry, e.message, e.kind === 'hostile' ? HINT.hostile : e.kind === 'limit' ? this.limitHint() : HINT.corrupt);
    if (e instanceof LayerDataError) return layerError(blob, entry, `the blob is damaged: ${e.message}`, HINT.corrupt, e);
    const err = e as NodeJS.ErrnoException;
    const msg = messageOf(e);
    if (entry === undefined && err.code === 'ENOENT' && err.path === blob.path) {
      return layerError(blob, undefined, `its blob ${blob.path} is missing`, 'pull the image again', e);
    }
    return layerError(blob, entry, entry === undefined ? msg : `could not apply it: ${msg}`, HINT.write, e);
  }

  private limitHint(): string {
    return `banger applies at most ${formatSize(this.max.maxBytes)} and ${this.max.maxEntries} entries over all of an image's layers, with names of at most ${this.max.maxPathBytes} bytes`;
  }
}

function layerError(blob: LayerBlob, entry: string | undefined, problem: string, hint: string, cause?: unknown): BangerError {
  const at = entry === undefined ? '' : `, entry ${quoteInput(entry, 120)}`;
  return new BangerError('operation_failed', `layer ${quoteInput(blob.digest, 80)}${at}: ${problem}`, hint, { cause });
}

async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}
