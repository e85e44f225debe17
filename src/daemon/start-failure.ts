/**
 * bangerd's start-up failures as coded errors. The daemon prints them to its
 * stderr (<state>/bangerd.out when the CLI started it): one line for people,
 * one machine line (src/errors/start-failure.ts) the CLI turns back into the
 * same error, so `banger ...` shows the daemon's own message and hint.
 */
import { writeSync } from 'node:fs';
import { BangerError, messageOf, type ErrorShape } from '../errors/errors.js';
import { formatStartFailure } from '../errors/start-failure.js';

export function startFailureShape(e: unknown, paths: { dbPath: string; daemonLog: string }): ErrorShape {
  if (e instanceof BangerError) return e.toShape();
  const code = (e as { code?: unknown } | null)?.code;
  if (code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT') {
    return {
      code: 'operation_failed',
      message: `${paths.dbPath} is not a usable state database (${messageOf(e)})`,
      hint: `restore it from a backup, or move it aside (\`mv ${paths.dbPath} ${paths.dbPath}.bad\`) and banger starts with an empty one (it forgets the VMs and images the old one recorded)`,
    };
  }
  return { code: 'operation_failed', message: `bangerd failed to start: ${messageOf(e)}`, hint: `see ${paths.daemonLog}` };
}

/** Writes the failure to stderr synchronously (the caller exits right after). */
export function reportStartFailure(shape: ErrorShape): void {
  const human = `bangerd: ${shape.message}${shape.hint ? `\n  hint: ${shape.hint}` : ''}\n`;
  try {
    writeSync(2, human + formatStartFailure(shape) + '\n');
  } catch {
    /* no stderr: nothing more to do */
  }
}
