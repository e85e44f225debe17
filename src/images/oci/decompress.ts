/**
 * A layer blob as a stream of tar bytes: the compression comes from the
 * layer's media type (manifest.ts's LAYER_MEDIA_TYPES) and must agree with
 * the blob's first bytes (gzip 1f 8b, zstd 28 b5 2f fd; a plain tar starts
 * with neither), so a mislabelled or damaged blob is refused before any
 * byte of it is applied.
 *
 * gzip is node:zlib's (multi-member streams, CRC and length checked at the
 * end); zstd is fzstd's streaming decompressor (Node 20 has no zstd in
 * node:zlib). fzstd decodes synchronously inside push(): it is fed 1 KiB at
 * a time so one push cannot expand into more than a few dozen MiB however
 * the frame is built. Errors of the blob's data come out as LayerDataError;
 * the caller names the layer.
 */
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { Decompress } from 'fzstd';
import { LAYER_MEDIA_TYPES, type LayerCompression } from './manifest.js';

export type { LayerCompression };

/** The blob's bytes are not what they should be (damaged, truncated, mislabelled). */
export class LayerDataError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LayerDataError';
  }
}

const GZIP_MAGIC = Buffer.from([0x1f, 0x8b]);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const READ_CHUNK = 256 * 1024;
/** Input fed to fzstd per push (see the file comment). */
const ZSTD_FEED = 1024;

/** The compression a media type says, or undefined for one banger does not apply. */
export function layerCompression(mediaType: string): LayerCompression | undefined {
  return Object.hasOwn(LAYER_MEDIA_TYPES, mediaType) ? LAYER_MEDIA_TYPES[mediaType] : undefined;
}

/** What the first bytes look like. */
export function sniffCompression(head: Buffer): LayerCompression {
  if (head.length >= 2 && head.subarray(0, 2).equals(GZIP_MAGIC)) return 'gzip';
  if (head.length >= 4 && head.subarray(0, 4).equals(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

const NAMES: Record<LayerCompression, string> = { none: 'an uncompressed tar', gzip: 'gzip', zstd: 'zstd' };

/** What the first bytes of the file at `path` look like (its fs error when it cannot be read). */
export async function fileCompression(path: string): Promise<LayerCompression> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(4);
    const { bytesRead } = await fh.read(buf, 0, 4, 0);
    return sniffCompression(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

/**
 * The tar bytes of the blob at `path`, after checking its first bytes
 * against `compression`. The file is opened here (a missing file throws its
 * fs error); iterating yields the decompressed bytes; breaking out of the
 * iteration closes everything.
 */
export async function layerTarStream(path: string, compression: LayerCompression): Promise<AsyncIterable<Buffer>> {
  const seen = await fileCompression(path);
  if (seen !== compression) {
    throw new LayerDataError(`its media type says ${NAMES[compression]}, but its first bytes are ${seen === 'none' ? `not ${NAMES[compression]}` : NAMES[seen]}`);
  }
  const file = createReadStream(path, { highWaterMark: READ_CHUNK });
  switch (compression) {
    case 'none':
      return guarded(file, file, 'reading the layer');
    case 'gzip': {
      const gz = createGunzip();
      file.on('error', (e) => gz.destroy(e));
      file.pipe(gz);
      return guarded(gz, file, 'gzip');
    }
    case 'zstd':
      return zstdChunks(file);
  }
}

/** Chunks of `stream`, its errors as LayerDataError, `also` closed at the end. */
async function* guarded(stream: Readable, also: Readable, what: string): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of stream) yield chunk as Buffer;
  } catch (e) {
    throw new LayerDataError(`${what}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  } finally {
    stream.destroy();
    also.destroy();
  }
}

async function* zstdChunks(file: Readable): AsyncGenerator<Buffer> {
  const out: Buffer[] = [];
  const d = new Decompress((chunk) => {
    // A copy: the chunk is fzstd's, and it is held until the consumer reads it.
    if (chunk.length > 0) out.push(Buffer.from(chunk));
  });
  const push = (chunk: Uint8Array, final: boolean): void => {
    try {
      d.push(chunk, final);
    } catch (e) {
      throw new LayerDataError(`zstd: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
  };
  try {
    for await (const raw of file) {
      const chunk = raw as Buffer;
      for (let off = 0; off < chunk.length; off += ZSTD_FEED) {
        push(chunk.subarray(off, off + ZSTD_FEED), false);
        while (out.length > 0) yield out.shift()!;
      }
    }
    push(new Uint8Array(0), true);
    while (out.length > 0) yield out.shift()!;
  } catch (e) {
    if (e instanceof LayerDataError) throw e;
    throw new LayerDataError(`reading the layer: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  } finally {
    file.destroy();
  }
}
