/**
 * Unpacks what banger needs of an image archive given as a tar file (an
 * `oci-archive:` from skopeo, a `docker save` tar, either plain, gzip'd or
 * zstd'd, sniffed from the first bytes) into a scratch directory, reading
 * the tar once with banger's own reader (tar-reader.ts).
 *
 * Only entries whose names an image archive uses are kept: `index.json`,
 * `oci-layout`, `manifest.json`, `blobs/sha256/<64 hex>`, top-level
 * `*.json` and `*.tar` (docker's and skopeo's docker-archive configs and
 * layers) and `DIR/layer.tar`. Names must be relative with no `..` and at
 * most 256 characters; anything else is skipped (and counted). Regular
 * files are written (O_EXCL, O_NOFOLLOW, 0600) under directories this code
 * made itself (each checked to be a real directory, so an entry cannot
 * write through a link another entry made); metadata files may be 4 MiB at
 * most. Symlinks with a kept name are recreated verbatim (docker save links
 * a repeated layer to the first copy): archive-files.ts resolves them
 * inside the directory, never out of it. Hard links to a kept file are
 * linked. The tar's entries and bytes are bounded as a layer's are.
 */
import { constants, linkSync, lstatSync, mkdirSync, symlinkSync, unlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, messageOf } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';
import { ARCHIVE_HINT, MAX_META_BYTES, archiveName } from './archive-files.js';
import { LayerDataError, fileCompression, layerTarStream, type LayerCompression } from './decompress.js';
import { LAYER_DEFAULTS } from './layers.js';
import { readTar, TarFormatError, type TarEntry } from './tar-reader.js';

const KEEP = /^(?:index\.json|oci-layout|manifest\.json|blobs\/sha256\/[0-9a-f]{64}|[^/]+\.json|[^/]+\.tar|[^/]+\/layer\.tar)$/;
const META = /^(?:oci-layout|[^/]+\.json)$/;
/** Files kept from one archive (a layout with many images has a few per layer). */
const MAX_KEPT = 65_536;
const MAX_PAX_BYTES = 1024 * 1024;

export interface Unpacked {
  compression: LayerCompression;
  /** Files and links kept. */
  kept: number;
  /** Bytes written. */
  bytes: number;
  /** Entries skipped for an unsafe name. */
  unsafe: number;
}

/** Unpacks the archive file `file` into the directory `into` (made by the caller, empty). */
export async function unpackArchive(file: string, into: string, signal?: AbortSignal): Promise<Unpacked> {
  const notTar = (why: string) =>
    new BangerError('bad_request', `${file} is not an OCI image layout or a docker save archive: ${why}`, `give a directory or a tar file (plain, gzip or zstd); ${ARCHIVE_HINT}`);
  const compression = await fileCompression(file);
  const out: Unpacked = { compression, kept: 0, bytes: 0, unsafe: 0 };
  const files = new Set<string>();
  const stream = passThrough(await layerTarStream(file, compression));
  const limits = { maxEntries: LAYER_DEFAULTS.maxEntries, maxBytes: LAYER_DEFAULTS.maxBytes, maxMetaBytes: MAX_PAX_BYTES };
  try {
    for await (const e of readTar(stream, limits)) {
      if (signal?.aborted) throw new BangerError('interrupted', `reading ${file} was cancelled`, 'run the import again');
      if (e.kind !== 'file' && e.kind !== 'symlink' && e.kind !== 'hardlink') continue;
      const rel = archiveName(e.path);
      if (rel === undefined) {
        out.unsafe++;
        continue;
      }
      if (!KEEP.test(rel)) continue;
      if (++out.kept > MAX_KEPT) throw notTar(`it has more than ${MAX_KEPT} files banger would keep`);
      const path = place(into, rel, file);
      if (e.kind === 'symlink') {
        symlinkSync(e.linkpath, path);
        files.delete(rel);
      }
      else if (e.kind === 'hardlink') {
        const target = archiveName(e.linkpath);
        // A hard link to something not kept (or not a file) is left out: reading it then says what is missing.
        if (target !== undefined && files.has(target)) {
          linkSync(join(into, target), path);
          files.add(rel);
        }
      } else {
        if (META.test(rel) && e.size > MAX_META_BYTES) throw notTar(`${quoteInput(rel, 120)} is ${e.size} bytes (a metadata file may have ${MAX_META_BYTES})`);
        out.bytes += await writeBody(path, e);
        files.add(rel);
      }
    }
  } catch (e) {
    if (e instanceof TarFormatError) throw notTar(`${compression === 'none' ? '' : `the ${compression} data holds no valid tar: `}${e.message}${e.entry !== undefined ? ` (at ${quoteInput(e.entry, 120)})` : ''}`);
    if (e instanceof LayerDataError) throw notTar(`its ${compression} data is damaged (${e.message})`);
    if (e instanceof BangerError) throw e;
    throw new BangerError('operation_failed', `unpacking ${file} into ${into} failed: ${messageOf(e)}`, 'check the free space and permissions of the scratch directory', { cause: e });
  } finally {
    await stream.return(undefined);
  }
  return out;
}

/** The host path for `rel` under `root`: its directories made (each must be a real directory), whatever was at the name removed. */
function place(root: string, rel: string, file: string): string {
  const parts = rel.split('/');
  let dir = root;
  for (const p of parts.slice(0, -1)) {
    dir = join(dir, p);
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (!lstatSync(dir).isDirectory()) throw clash(file, rel);
  }
  const path = join(root, rel);
  try {
    // A later entry of a name replaces the earlier one, as tar extracts it.
    if (lstatSync(path).isDirectory()) throw clash(file, rel);
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  return path;
}

function clash(file: string, rel: string): BangerError {
  return new BangerError('bad_request', `${file}: the entry ${quoteInput(rel, 120)} clashes with another entry (a file and a directory of one name)`, `the archive is malformed: ${ARCHIVE_HINT}`);
}

async function writeBody(path: string, e: TarEntry): Promise<number> {
  const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  let n = 0;
  try {
    for await (const chunk of e.body()) {
      await fh.write(chunk, 0, chunk.length, n);
      n += chunk.length;
    }
  } finally {
    await fh.close();
  }
  return n;
}

/** A generator over `src` whose `return()` closes `src` (readTar does not close what it reads). */
async function* passThrough(src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  for await (const c of src) yield c;
}
