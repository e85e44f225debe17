/**
 * A streaming, pull-based reader of the tar archives OCI image layers are
 * (ustar, pax, GNU long names; base-256 numbers), for the layer applier
 * (layers.ts).
 *
 * Why not node-tar's Parser: its pax parser decodes the extended header as
 * UTF-8 text and keeps only the fields it knows, so `SCHILY.xattr.*`
 * records (binary values such as `security.capability`) are lost; and its
 * push-style entry events run ahead of an applier that awaits file-system
 * work per entry. This reader hands out one entry at a time and does not
 * read past it until the consumer asks for the next one, so memory stays
 * bounded by one input chunk, one header and one pax record set.
 *
 * Everything read is bounded: entries (meta headers included), body bytes
 * (skipped bodies included), pax/long-name data, consecutive meta headers,
 * the data after the end-of-archive marker (read to the end, so a
 * compressed stream's checksum is checked, and at most 1 MiB). A damaged archive (bad
 * checksum, bad number, truncated header or body, missing end-of-archive
 * marker, malformed pax record) throws TarFormatError; the caller names the
 * layer. No I/O of its own: it reads the async iterable it is given.
 */

import { parsePax, TarFormatError, type PaxRecords, type TarXattr } from './pax.js';

export { TarFormatError, type TarProblem, type TarXattr } from './pax.js';

/** What an entry is (`other`: a type we do not extract, e.g. a tape volume header). */
export type TarEntryKind = 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'blockdev' | 'fifo' | 'other';

export interface TarEntry {
  /** As the archive names it (pax/GNU overrides applied), not normalised. */
  path: string;
  kind: TarEntryKind;
  /** The raw type flag, for messages. */
  typeflag: string;
  /** Permission bits with setuid/setgid/sticky (`& 0o7777`). */
  mode: number;
  uid: number;
  gid: number;
  /** Body bytes (0 for header-only types, as Go's archive/tar reads them). */
  size: number;
  /** Seconds since the epoch, possibly fractional (pax). */
  mtime: number;
  atime: number | undefined;
  /** Symlink target or hard link target ('' when none). */
  linkpath: string;
  xattrs: TarXattr[];
  /** The body, once; what the consumer does not read is skipped before the next entry. */
  body(): AsyncGenerator<Buffer>;
}

export interface TarLimits {
  /** Headers, meta headers included. */
  maxEntries: number;
  /** Body bytes of every entry, skipped ones included. */
  maxBytes: number;
  /** One pax extended header or GNU long name. */
  maxMetaBytes: number;
}

const BLOCK = 512;
/** Meta headers (pax, GNU long names) that may precede one entry. */
const MAX_META_RUN = 16;
const EMPTY = Buffer.alloc(0);
/** What may follow the end-of-archive marker (GNU tar pads to a 10 KiB record). */
const MAX_TRAILING = 1024 * 1024;

/** Buffered reads over an async iterator of chunks. */
class ByteReader {
  private buf: Buffer = EMPTY;
  private off = 0;
  private ended = false;

  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(): Promise<boolean> {
    while (!this.ended) {
      const r = await this.it.next();
      if (r.done === true) {
        this.ended = true;
        break;
      }
      if (r.value.length > 0) {
        this.buf = r.value;
        this.off = 0;
        return true;
      }
    }
    return false;
  }

  /** Exactly `n` bytes, or fewer only where the input ends. */
  async read(n: number): Promise<Buffer> {
    if (this.buf.length - this.off >= n) {
      const b = this.buf.subarray(this.off, this.off + n);
      this.off += n;
      return b;
    }
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      if (this.off >= this.buf.length && !(await this.fill())) break;
      const take = Math.min(n - have, this.buf.length - this.off);
      parts.push(this.buf.subarray(this.off, this.off + take));
      this.off += take;
      have += take;
    }
    return Buffer.concat(parts, have);
  }

  /** Between 1 and `n` bytes, or none where the input ends. */
  async some(n: number): Promise<Buffer> {
    if (this.off >= this.buf.length && !(await this.fill())) return EMPTY;
    const take = Math.min(n, this.buf.length - this.off);
    const b = this.buf.subarray(this.off, this.off + take);
    this.off += take;
    return b;
  }

  /** Skips `n` bytes; false when the input ended first. */
  async skip(n: number): Promise<boolean> {
    let left = n;
    while (left > 0) {
      const b = await this.some(left);
      if (b.length === 0) return false;
      left -= b.length;
    }
    return true;
  }

  /** Reads to the end; false when more than `max` bytes were left. */
  async drain(max: number): Promise<boolean> {
    let seen = 0;
    for (;;) {
      const b = await this.some(1 << 20);
      if (b.length === 0) return true;
      seen += b.length;
      if (seen > max) return false;
    }
  }
}

/** Bytes up to the first NUL, as UTF-8. */
function cstring(b: Buffer, off: number, len: number): string {
  const f = b.subarray(off, off + len);
  const nul = f.indexOf(0);
  return f.toString('utf8', 0, nul < 0 ? f.length : nul);
}

/** A numeric header field: octal text (NUL/space padded; empty reads 0) or GNU base-256. */
function number(b: Buffer, off: number, len: number, field: string): number {
  const f = b.subarray(off, off + len);
  if ((f[0]! & 0x80) !== 0) {
    // base-256, two's complement when the second-highest bit of the first byte is set (as Go reads it)
    const inv = (f[0]! & 0x40) !== 0 ? 0xff : 0;
    let x = 0n;
    for (let i = 0; i < f.length; i++) {
      let c = f[i]! ^ inv;
      if (i === 0) c &= 0x7f;
      x = (x << 8n) | BigInt(c);
    }
    const v = inv === 0xff ? -x - 1n : x;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new TarFormatError(`header field ${field} is out of range`, 'corrupt');
    }
    return Number(v);
  }
  const text = f.toString('latin1').replace(/^[\0 ]+|[\0 ]+$/g, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`header field ${field} is not an octal number (${JSON.stringify(text.slice(0, 20))})`, 'corrupt');
  return parseInt(text, 8);
}

/** Header checksum: the field read as octal; unsigned or (old tars) signed sum of the block with the field as spaces. */
function checksumOk(b: Buffer): boolean {
  let want: number;
  try {
    want = number(b, 148, 8, 'chksum');
  } catch {
    return false;
  }
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return want === unsigned || want === signed;
}

const KINDS: Record<string, TarEntryKind> = {
  '0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'chardev',
  '4': 'blockdev',
  '5': 'dir',
  '6': 'fifo',
  D: 'dir', // GNU dump dir: a directory whose body (a listing) is skipped
};
/** Types whose size field says nothing about a body (Go's isHeaderOnlyType). */
const HEADER_ONLY = new Set(['1', '2', '3', '4', '5', '6']);

/** The entries of a tar stream, one at a time. */
export async function* readTar(source: AsyncIterable<Buffer>, limits: TarLimits): AsyncGenerator<TarEntry, void, undefined> {
  const r = new ByteReader(source[Symbol.asyncIterator]());
  let headers = 0;
  let bytes = 0;
  let pax: PaxRecords | undefined;
  let longPath: string | undefined;
  let longLink: string | undefined;
  let metaRun = 0;

  const countBytes = (n: number, entry?: string): void => {
    bytes += n;
    if (bytes > limits.maxBytes) throw new TarFormatError(`the layer holds more than ${limits.maxBytes} bytes`, 'limit', entry);
  };
  const readMeta = async (size: number, what: string): Promise<Buffer> => {
    if (size > limits.maxMetaBytes) throw new TarFormatError(`${what} of ${size} bytes (at most ${limits.maxMetaBytes})`, 'limit');
    if (++metaRun > MAX_META_RUN) throw new TarFormatError(`more than ${MAX_META_RUN} extended headers in a row`, 'corrupt');
    const data = await r.read(size);
    if (data.length < size || !(await r.skip(padding(size)))) throw new TarFormatError(`truncated ${what}`, 'corrupt');
    return data;
  };

  for (;;) {
    const block = await r.read(BLOCK);
    if (block.length === 0) throw new TarFormatError('the archive ends without its end-of-archive marker', 'corrupt');
    if (block.length < BLOCK) throw new TarFormatError('the archive ends inside a header (truncated)', 'corrupt');
    if (block.every((c) => c === 0)) {
      if (pax !== undefined || longPath !== undefined || longLink !== undefined) throw new TarFormatError('an extended header is not followed by an entry', 'corrupt');
      // End of archive. Read what follows (zero padding to the record size) so a
      // compressed stream is read to its end and its checksum checked.
      if (!(await r.drain(MAX_TRAILING))) throw new TarFormatError(`more than ${MAX_TRAILING} bytes follow the end-of-archive marker`, 'corrupt');
      return;
    }
    if (++headers > limits.maxEntries) throw new TarFormatError(`the layer has more than ${limits.maxEntries} entries`, 'limit');
    if (!checksumOk(block)) throw new TarFormatError('header checksum mismatch (not a tar archive, or a damaged one)', 'corrupt');

    const typeByte = block[156]!;
    const typeflag = typeByte === 0 ? '0' : String.fromCharCode(typeByte);
    const ustar = block.toString('latin1', 257, 263) === 'ustar\0';
    let path = cstring(block, 0, 100);
    if (ustar) {
      const star = block.toString('latin1', 508, 512) === 'tar\0';
      const prefix = cstring(block, 345, star ? 131 : 155);
      if (prefix !== '') path = `${prefix}/${path}`;
    }
    const headerSize = number(block, 124, 12, 'size');
    if (headerSize < 0) throw new TarFormatError('negative size', 'corrupt', path);

    switch (typeflag) {
      case 'x':
      case 'X':
        pax = parsePax(await readMeta(headerSize, 'pax header'), pax);
        continue;
      case 'g':
        parsePax(await readMeta(headerSize, 'global pax header')); // checked, then ignored (as containerd does)
        continue;
      case 'L':
        longPath = cstring(await readMeta(headerSize, 'GNU long name'), 0, headerSize);
        continue;
      case 'K':
        longLink = cstring(await readMeta(headerSize, 'GNU long link name'), 0, headerSize);
        continue;
      case 'S':
        throw new TarFormatError('GNU sparse files are not supported', 'unsupported', longPath ?? pax?.path ?? path);
      default:
    }

    const p = pax;
    pax = undefined;
    metaRun = 0;
    path = p?.path ?? longPath ?? path;
    const linkpath = p?.linkpath ?? longLink ?? cstring(block, 157, 100);
    longPath = undefined;
    longLink = undefined;
    if (path === '') throw new TarFormatError('an entry has no name', 'corrupt');
    if (p?.sparse === true) throw new TarFormatError('GNU sparse files are not supported', 'unsupported', path);

    let kind: TarEntryKind = KINDS[typeflag] ?? 'other';
    let headerOnly = HEADER_ONLY.has(typeflag);
    // Old tars mark a directory as a file whose name ends in '/'.
    if (typeflag === '0' && path.endsWith('/')) {
      kind = 'dir';
      headerOnly = true;
    }
    // As Go's archive/tar reads it: a header-only type has no body in the
    // stream whatever its size field says (one reading for every tool that
    // made the layer, so no entry can hide inside another's "body").
    const stored = headerOnly ? 0 : (p?.size ?? headerSize);
    const size = kind === 'dir' ? 0 : stored;
    countBytes(stored, path);
    if ((kind === 'symlink' || kind === 'hardlink') && linkpath === '') throw new TarFormatError('a link without a target', 'corrupt', path);

    const mtime = p?.mtime ?? number(block, 136, 12, 'mtime');
    let remain = stored;
    const entry: TarEntry = {
      path,
      kind,
      typeflag,
      mode: number(block, 100, 8, 'mode') & 0o7777,
      uid: p?.uid ?? number(block, 108, 8, 'uid'),
      gid: p?.gid ?? number(block, 116, 8, 'gid'),
      size,
      mtime,
      atime: p?.atime,
      linkpath: kind === 'symlink' || kind === 'hardlink' ? linkpath : '',
      xattrs: p?.xattrs ?? [],
      body: async function* () {
        while (remain > 0 && size > 0) {
          const c = await r.some(Math.min(remain, 1 << 20));
          if (c.length === 0) throw new TarFormatError('the archive ends inside this entry (truncated)', 'corrupt', path);
          remain -= c.length;
          yield c;
        }
      },
    };
    if (entry.uid < 0 || entry.gid < 0) throw new TarFormatError('negative uid or gid', 'corrupt', path);
    yield entry;
    if (!(await r.skip(remain)) || !(await r.skip(padding(stored)))) {
      throw new TarFormatError('the archive ends inside this entry (truncated)', 'corrupt', path);
    }
  }
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}
