/**
 * The one place errors become text. Coded errors print their message, hint
 * and operation id (the same id is in the daemon's log line); anything
 * uncoded is a bug and shows a stack only with --debug.
 */
import { isBangerError, messageOf, type ErrorCode } from '../errors/errors.js';
import { style } from './style.js';

const LABELS: Partial<Record<ErrorCode, string>> = {
  bad_request: 'invalid input',
  not_found: 'not found',
  already_exists: 'already exists',
  not_running: 'not running',
  conflict: 'conflict',
  timeout: 'timed out',
  bad_version: 'version mismatch',
  unknown_method: 'unknown method',
  unavailable: 'daemon unavailable',
  host_key_mismatch: 'HOST KEY MISMATCH',
  interrupted: 'interrupted',
  internal: 'internal error',
};

export function renderError(e: unknown, debug: boolean): string {
  const err = process.stderr;
  if (isBangerError(e)) {
    const label = LABELS[e.code];
    const lines = [`${style.fail('banger:', err)} ${label ? `${label}: ` : ''}${e.message}`];
    if (e.hint) lines.push(`  hint: ${e.hint}`);
    if (e.opId) lines.push(style.dim(`  (${e.opId}: grep for it in the daemon log)`, err));
    if (debug && e.stack) lines.push(style.dim(e.stack, err));
    return lines.join('\n');
  }
  const lines = [`${style.fail('banger:', err)} unexpected error: ${messageOf(e)}`];
  if (debug && e instanceof Error && e.stack) lines.push(e.stack);
  else lines.push('  hint: this is a bug in banger; run again with --debug for the stack');
  return lines.join('\n');
}

/** Exit code for an error: 2 for bad input, 1 otherwise. */
export function exitCodeFor(e: unknown): number {
  return isBangerError(e) && e.code === 'bad_request' ? 2 : 1;
}
