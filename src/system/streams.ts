/** Writable ends for command output: one that keeps it (bounded), one that drops it, one that forwards it. */
import { Writable } from 'node:stream';

/** Default bound on what a collector keeps: guest output is the guest's to choose. */
export const DEFAULT_COLLECT_BYTES = 16 * 1024 * 1024;

export type Collector = Writable & {
  /** What was kept (at most the limit). */
  buffer(): Buffer;
  /** True when more than the limit was written (the rest was dropped). */
  readonly overflowed: boolean;
  /** Bytes written in all, kept or not. */
  readonly total: number;
};

/**
 * Keeps what is written, up to `limit` bytes; the rest is counted and
 * dropped (never an error: an error on a piped destination would have no
 * one to catch it). Callers that parse the output check `overflowed`.
 */
export function collector(limit = DEFAULT_COLLECT_BYTES): Collector {
  const chunks: Buffer[] = [];
  let kept = 0;
  let total = 0;
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      total += chunk.length;
      if (kept < limit) {
        const part = kept + chunk.length > limit ? chunk.subarray(0, limit - kept) : chunk;
        chunks.push(part);
        kept += part.length;
      }
      cb();
    },
  });
  Object.defineProperties(w, {
    overflowed: { get: () => total > limit },
    total: { get: () => total },
  });
  const c = w as Collector;
  c.buffer = () => Buffer.concat(chunks);
  return c;
}

/** Accepts and drops everything. */
export function sink(): Writable {
  return new Writable({
    write(_c, _e, cb) {
      cb();
    },
  });
}

/**
 * Hands every chunk to `send`, waiting for it before taking the next
 * (backpressure reaches the source). A failed send is recorded in `failed`
 * and the rest is dropped: the stream itself never errors (a piped
 * destination's error would have no one to catch it).
 */
export function forwarder(send: (chunk: Buffer) => Promise<void>): Writable & { readonly total: number; readonly failed: unknown } {
  let total = 0;
  let failed: unknown;
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (failed !== undefined) return cb();
      total += chunk.length;
      send(chunk).then(
        () => cb(),
        (e: unknown) => {
          failed = e ?? new Error('send failed');
          cb();
        },
      );
    },
  });
  Object.defineProperties(w, { total: { get: () => total }, failed: { get: () => failed } });
  return w as Writable & { readonly total: number; readonly failed: unknown };
}

/**
 * Resolves once `stream` has drained its write buffer ('drain') or closed
 * ('close'): the wait of a writer that respects backpressure and must not
 * hang on a peer that went away. Never rejects (the writer checks the
 * stream's state afterwards).
 */
export function drainedOrClosed(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}
