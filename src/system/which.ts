/** Finding programs: on PATH, and admin tools that a normal user's PATH lacks. */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The full path of `name` on PATH, or undefined. */
export function onPath(name: string, envPath = process.env.PATH ?? ''): string | undefined {
  for (const d of envPath.split(delimiter)) {
    if (d.length > 0 && isExecutable(join(d, name))) return join(d, name);
  }
  return undefined;
}

/**
 * Absolute path of an admin tool (mkfs.ext4, debugfs, …) when it is not on
 * PATH: Debian's PATH for normal users lacks /usr/sbin and /sbin. Returns the
 * bare name when it is on PATH or nowhere (the runner then reports it missing).
 */
export function toolPath(name: string, envPath = process.env.PATH ?? ''): string {
  if (onPath(name, envPath)) return name;
  for (const d of ['/usr/sbin', '/sbin', '/usr/local/sbin']) {
    const p = join(d, name);
    if (isExecutable(p)) return p;
  }
  return name;
}
