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
 */
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { BangerError } from '../errors/errors.js';
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

/** Returns what changed: false when it was installed already (banger's own file is refreshed either way). */
export function installSshConfig(p: SshConfigPaths): boolean {
  ensureDir(dirname(p.bangerConfig));
  writeFileAtomic(p.bangerConfig, hostBlock(p), 0o600);
  const line = includeLine(p);
  const existed = existsSync(p.userConfig);
  const before = existed ? readFileSync(p.userConfig) : Buffer.alloc(0);
  if (before.toString('utf8').split('\n').includes(line)) return false;
  ensureDir(dirname(p.userConfig), 0o700);
  const mode = existed ? statSync(p.userConfig).mode & 0o777 : 0o600;
  writeFileAtomic(p.userConfig, Buffer.concat([Buffer.from(line + '\n'), before]), mode);
  if (!existed) writeFileAtomic(p.createdMarker, 'banger ssh-config --install created ' + p.userConfig + '\n', 0o600);
  return true;
}

/** Returns whether anything was removed. */
export function uninstallSshConfig(p: SshConfigPaths): boolean {
  let changed = false;
  if (existsSync(p.userConfig)) {
    const text = readFileSync(p.userConfig, 'utf8');
    const line = includeLine(p) + '\n';
    const mid = text.indexOf('\n' + line);
    const at = text.startsWith(line) ? 0 : mid >= 0 ? mid + 1 : -1;
    if (at >= 0) {
      const after = text.slice(0, at) + text.slice(at + line.length);
      if (after === '' && existsSync(p.createdMarker)) rmSync(p.userConfig);
      else writeFileAtomic(p.userConfig, after, statSync(p.userConfig).mode & 0o777);
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
