/**
 * Pax extended header records (POSIX.1-2001), read as bytes: the tar
 * reader's part that keeps what node-tar's pax parser drops or mangles —
 * `SCHILY.xattr.*` (and libarchive's `LIBARCHIVE.xattr.*`) records with
 * binary values such as `security.capability`, returned byte for byte.
 * No I/O.
 */

export interface TarXattr {
  name: string;
  value: Buffer;
}

export type TarProblem = 'corrupt' | 'unsupported' | 'limit';

export class TarFormatError extends Error {
  constructor(
    message: string,
    readonly problem: TarProblem,
    /** The entry it is about, when one was decoded. */
    readonly entry?: string,
  ) {
    super(message);
    this.name = 'TarFormatError';
  }
}

export interface PaxRecords {
  path?: string;
  linkpath?: string;
  size?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  atime?: number;
  xattrs: TarXattr[];
  sparse: boolean;
}

function paxInteger(key: string, v: string): number {
  if (!/^[0-9]{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) throw new TarFormatError(`pax record ${key} is not a number`, 'corrupt');
  return Number(v);
}

function paxTime(key: string, v: string): number {
  if (!/^-?[0-9]{1,16}(\.[0-9]{0,9}[0-9]*)?$/.test(v)) throw new TarFormatError(`pax record ${key} is not a time`, 'corrupt');
  return Number(v);
}

function paxText(key: string, v: Buffer): string {
  if (v.includes(0)) throw new TarFormatError(`pax record ${key} holds a NUL byte`, 'corrupt');
  return v.toString('utf8');
}

/**
 * Pax records, read as bytes: `LEN KEY=VALUE\n`, LEN counting the whole
 * record. An empty value removes an earlier record of that key.
 */
export function parsePax(data: Buffer, into: PaxRecords = { xattrs: [], sparse: false }): PaxRecords {
  let off = 0;
  while (off < data.length) {
    // Some writers pad the data with NULs.
    if (data[off] === 0 && data.subarray(off).every((c) => c === 0)) break;
    const sp = data.indexOf(0x20, off);
    const lenText = sp < 0 ? '' : data.toString('latin1', off, sp);
    if (!/^[1-9][0-9]{0,8}$/.test(lenText)) throw new TarFormatError('malformed pax record length', 'corrupt');
    const len = Number(lenText);
    const end = off + len;
    if (end > data.length || end <= sp + 1 || data[end - 1] !== 0x0a) throw new TarFormatError('malformed pax record', 'corrupt');
    const rec = data.subarray(sp + 1, end - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarFormatError('pax record without a key', 'corrupt');
    const key = rec.toString('utf8', 0, eq);
    const value = rec.subarray(eq + 1);
    off = end;
    const unset = value.length === 0;
    if (key.startsWith('SCHILY.xattr.')) {
      const name = key.slice('SCHILY.xattr.'.length);
      into.xattrs = into.xattrs.filter((x) => x.name !== name);
      if (name !== '' && !unset) into.xattrs.push({ name, value: Buffer.from(value) });
      continue;
    }
    if (key.startsWith('LIBARCHIVE.xattr.')) {
      let name: string;
      try {
        name = decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
      } catch {
        throw new TarFormatError('malformed LIBARCHIVE.xattr name', 'corrupt');
      }
      into.xattrs = into.xattrs.filter((x) => x.name !== name);
      if (name !== '' && !unset) into.xattrs.push({ name, value: Buffer.from(value.toString('latin1'), 'base64') });
      continue;
    }
    if (key.startsWith('GNU.sparse.')) {
      into.sparse = true;
      continue;
    }
    const text = value.toString('latin1');
    switch (key) {
      case 'path':
        if (unset) delete into.path;
        else into.path = paxText(key, value);
        break;
      case 'linkpath':
        if (unset) delete into.linkpath;
        else into.linkpath = paxText(key, value);
        break;
      case 'size':
      case 'uid':
      case 'gid':
        if (unset) delete into[key];
        else into[key] = paxInteger(key, text);
        break;
      case 'mtime':
      case 'atime':
        if (unset) delete into[key];
        else into[key] = paxTime(key, text);
        break;
      default:
      // uname, gname, ctime, comment, charset, hdrcharset, SCHILY.dev/ino/nlink/fflags…: not used
    }
  }
  return into;
}

