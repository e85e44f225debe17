/** banger's version, read from package.json (works from src/ under tsx and from dist/src/). */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageJson(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'banger' && pkg.version) return pkg.version;
    } catch {
      /* keep looking upward */
    }
    dir = dirname(dir);
  }
  return '0.0.0';
}

export const VERSION = findPackageJson();
