/**
 * How bangerd tells the CLI that started it why it could not start. The
 * daemon's stdout/stderr go to <state>/bangerd.out; on a start-up failure it
 * writes one line there: this prefix and the coded error as JSON. The CLI
 * reads only the bytes this start appended and shows that error (code,
 * message, hint) as its own, instead of waiting for a socket that never comes.
 */
import { ERROR_CODES, type ErrorShape } from './errors.js';

export const START_FAILURE_PREFIX = 'bangerd-start-failure ';

export function formatStartFailure(shape: ErrorShape): string {
  return START_FAILURE_PREFIX + JSON.stringify(shape);
}

/** The last start-failure line in `text`, validated; undefined when there is none. */
export function parseStartFailure(text: string): ErrorShape | undefined {
  const lines = text.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i]!;
    if (!line.startsWith(START_FAILURE_PREFIX)) continue;
    let v: unknown;
    try {
      v = JSON.parse(line.slice(START_FAILURE_PREFIX.length));
    } catch {
      continue;
    }
    if (typeof v !== 'object' || v === null) continue;
    const o = v as Record<string, unknown>;
    if (typeof o.code !== 'string' || !(ERROR_CODES as readonly string[]).includes(o.code) || typeof o.message !== 'string') continue;
    const shape: ErrorShape = { code: o.code as ErrorShape['code'], message: o.message };
    if (typeof o.hint === 'string') shape.hint = o.hint;
    return shape;
  }
  return undefined;
}
