/** The checkout the CLI runs from (bin/ and dist/ live there): units point at it. */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export function repoRoot(): string {
  // this file is dist/src/cli/repo-root.js
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}
