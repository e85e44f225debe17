/**
 * `banger ssh-config --install | --uninstall`: lets plain `ssh NAME.vm` use
 * banger's key and known_hosts. banger owns one file (its `Host *.vm` block)
 * and adds exactly one line to ~/.ssh/config: `Include <that file>`.
 *
 * The line goes first in the file: ssh_config applies an Include inside
 * whatever Host/Match block it sits in, so appended after a user's
 * `Host foo` block it would only apply to foo. Install is idempotent; the
 * user's own lines are never rewritten; uninstall removes exactly the line
 * install added (and the file itself if install created it), so the file is
 * byte-identical to before.
 *
 * Dotfile managers (stow, yadm, home-manager, ...) often make ~/.ssh/config a
 * symlink into their tree. banger then edits the file the link points to, in
 * place (atomically, in that file's own directory) and leaves the link alone;
 * when the target cannot be written (a read-only store), it says so and
 * names the line to add by hand.
 */
import { existsSync, lstatSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { BangerError, messageOf } from '../errors/errors.js';
import { ensureDir, writeFileAtomic } from '../system/fs.js';

export interface SshConfigPaths {
  /** The user's ~/.ssh/config. */
  userConfig: string;
  /** banger's own file with the Host *.vm block. */
  bangerConfig: string;
  /** Marks that install created userConfig (so uninstall removes it). */
  createdMarker: string;
  privateKey: string;
  knownHosts: string;
  /** argv of the ProxyCommand (`%n` is the name ssh was given). */
  proxyCommand: string[];
}

/** A value for ssh_config: quoted when it has spaces (ssh_config has no other escaping; `"` and `%` are refused/doubled). */
function configValue(path: string): string {
  if (/["\n\r]/.test(path)) throw new BangerError('bad_request', `path ${JSON.stringify(path)} cannot be written into an ssh config`);
  const v = path.replace(/%/g, '%%');
  return /\s/.test(v) ? `"${v}"` : v;
}

export function includeLine(p: SshConfigPaths): string {
  // Include takes glob patterns, not %-tokens: only quote.
  if (/["\n\r*?[]/.test(p.bangerConfig)) throw new BangerError('bad_request', `path ${JSON.stringify(p.bangerConfig)} cannot be included from an ssh config`);
  return `Include ${/\s/.test(p.bangerConfig) ? `"${p.bangerConfig}"` : p.bangerConfig}`;
}

/** A ProxyCommand word: run by /bin/sh, with ssh's %-tokens expanded first. */
function proxyWord(a: string): string {
  const v = a.replace(/%/g, '%%');
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`;
}

export function hostBlock(p: SshConfigPaths): string {
  return [
    '# Written by `banger ssh-config --install`; rewritten on every install. Remove with `banger ssh-config --uninstall`.',
    'Host *.vm',
    '  User root',
    `  IdentityFile ${configValue(p.privateKey)}`,
    '  IdentitiesOnly yes',
    `  UserKnownHostsFile ${configValue(p.knownHosts)}`,
    '  StrictHostKeyChecking accept-new',
    '  CheckHostIP no',
    `  ProxyCommand ${p.proxyCommand.map((a) => (a === '%n' ? a : proxyWord(a))).join(' ')}`,
    '',
  ].join('\n');
}

export type SshConfigState = 'installed' | 'not installed';

export function sshConfigState(p: SshConfigPaths): SshConfigState {
  if (!existsSync(p.userConfig)) return 'not installed';
  return readFileSync(p.userConfig, 'utf8').split('\n').includes(includeLine(p)) ? 'installed' : 'not installed';
}

/**
 * The file edits go to: `path` itself, or, when it is a symlink (a chain of
 * them, possibly dangling), the file at the end of the chain.
 */
export function configTarget(path: string): string {
  let cur = path;
  for (let i = 0; i < 40; i++) {
    let isLink: boolean;
    try {
      isLink = lstatSync(cur).isSymbolicLink();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return cur;
      throw e;
    }
    if (!isLink) return cur;
    cur = resolve(dirname(cur), readlinkSync(cur));
  }
  throw new BangerError('bad_request', `${path}: too many levels of symbolic links`, `fix the link chain of ${path}`);
}

/** Writes the user's config (through its link, if any); a target that cannot be written is a coded error. */
function writeUserConfig(p: SshConfigPaths, target: string, data: string | Buffer, mode: number, byHand: string): void {
  try {
    writeFileAtomic(target, data, mode);
  } catch (e) {
    if (target === p.userConfig) throw e;
    throw new BangerError(
      'operation_failed',
      `${p.userConfig} is a link to ${target}, which banger cannot write: ${messageOf(e)}`,
      `${byHand} in the file your dotfile manager generates it from`,
    );
  }
}

/** Returns what changed: false when it was installed already (banger's own file is refreshed either way). */
export function installSshConfig(p: SshConfigPaths): boolean {
  ensureDir(dirname(p.bangerConfig));
  writeFileAtomic(p.bangerConfig, hostBlock(p), 0o600);
  const line = includeLine(p);
  const target = configTarget(p.userConfig);
  const existed = existsSync(target);
  const before = existed ? readFileSync(target) : Buffer.alloc(0);
  if (before.toString('utf8').split('\n').includes(line)) return false;
  if (target === p.userConfig) ensureDir(dirname(p.userConfig), 0o700);
  const mode = existed ? statSync(target).mode & 0o777 : 0o600;
  writeUserConfig(p, target, Buffer.concat([Buffer.from(line + '\n'), before]), mode, `add \`${line}\` as the first line`);
  if (!existed) writeFileAtomic(p.createdMarker, 'banger ssh-config --install created ' + target + '\n', 0o600);
  return true;
}

/** Returns whether anything was removed. */
export function uninstallSshConfig(p: SshConfigPaths): boolean {
  let changed = false;
  const target = configTarget(p.userConfig);
  if (existsSync(target)) {
    const text = readFileSync(target, 'utf8');
    const line = includeLine(p) + '\n';
    const mid = text.indexOf('\n' + line);
    const at = text.startsWith(line) ? 0 : mid >= 0 ? mid + 1 : -1;
    if (at >= 0) {
      const after = text.slice(0, at) + text.slice(at + line.length);
      if (after === '' && existsSync(p.createdMarker)) rmSync(target);
      else writeUserConfig(p, target, after, statSync(target).mode & 0o777, `remove the line \`${includeLine(p)}\``);
      changed = true;
    }
  }
  rmSync(p.createdMarker, { force: true });
  if (existsSync(p.bangerConfig)) {
    rmSync(p.bangerConfig);
    changed = true;
  }
  return changed;
}
