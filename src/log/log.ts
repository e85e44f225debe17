/**
 * JSON-lines logging (pino). The daemon logs to a file; opId/vm fields tie
 * lines to requests. The file rotates: when it passes `maxBytes` it becomes
 * `<file>.1` (the previous `.1` is dropped) and a new file starts, so a peer
 * that makes us log a lot costs at most twice `maxBytes` of disk.
 */
import { pino, type Logger, type DestinationStream } from 'pino';
import { closeSync, constants, fstatSync, openSync, renameSync, writeSync } from 'node:fs';

export type { Logger };

/** Default size at which a log file rotates (BANGER_LOG_MAX_BYTES overrides it). */
export const DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024;

/** A log file that rotates at maxBytes; opened without following a symlink. */
export class RotatingFile implements DestinationStream {
  private fd: number;
  private size: number;

  constructor(
    readonly path: string,
    readonly maxBytes: number,
  ) {
    this.fd = RotatingFile.open(path);
    this.size = fstatSync(this.fd).size;
  }

  private static open(path: string): number {
    return openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  }

  write(msg: string): void {
    const bytes = Buffer.byteLength(msg);
    if (this.size > 0 && this.size + bytes > this.maxBytes) this.rotate();
    writeSync(this.fd, msg);
    this.size += bytes;
  }

  private rotate(): void {
    try {
      closeSync(this.fd);
      renameSync(this.path, `${this.path}.1`);
    } catch {
      /* keep logging into whatever we can open */
    }
    this.fd = RotatingFile.open(this.path);
    this.size = fstatSync(this.fd).size;
  }
}

export function fileLogger(path: string, level = process.env.BANGER_LOG_LEVEL ?? 'info', maxBytes = envMaxBytes()): Logger {
  return pino({ level, base: { pid: process.pid } }, new RotatingFile(path, maxBytes));
}

function envMaxBytes(): number {
  const v = Number(process.env.BANGER_LOG_MAX_BYTES);
  return Number.isInteger(v) && v >= 4096 ? v : DEFAULT_LOG_MAX_BYTES;
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
