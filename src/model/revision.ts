/** Git revisions a user passes (workspace export --base-commit). */
import { BangerError } from '../errors/errors.js';

/** A revision for --base-commit: a commit id or ref name, never an option or a range. */
export function validateRevision(rev: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._/~^@{}-]{0,199}$/.test(rev) || rev.includes('..')) {
    throw new BangerError('bad_request', `${JSON.stringify(rev)} is not a commit`, 'pass a commit id (e.g. the output of `git rev-parse HEAD`) or a branch name', { field: 'baseCommit' });
  }
  return rev;
}
