/** JSON-lines logging (pino). The daemon logs to a file; opId/vm fields tie lines to requests. */
import { pino, type Logger } from 'pino';
import { openSync } from 'node:fs';

export type { Logger };

export function fileLogger(path: string, level = process.env.BANGER_LOG_LEVEL ?? 'info'): Logger {
  const fd = openSync(path, 'a', 0o600);
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd, sync: true }));
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
