/** Writable ends for command output: one that keeps it, one that drops it. */
import { Writable } from 'node:stream';

/** Keeps every chunk written; `buffer()` gives them back as one Buffer. */
export function collector(): Writable & { buffer(): Buffer } {
  const chunks: Buffer[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  }) as Writable & { buffer(): Buffer };
  w.buffer = () => Buffer.concat(chunks);
  return w;
}

/** Accepts and drops everything. */
export function sink(): Writable {
  return new Writable({
    write(_c, _e, cb) {
      cb();
    },
  });
}
