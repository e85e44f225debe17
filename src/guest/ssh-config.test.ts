import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configTarget, hostBlock, includeLine, installSshConfig, sshConfigState, uninstallSshConfig, type SshConfigPaths } from './ssh-config.js';

let dir: string;
let p: SshConfigPaths;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-sshcfg-'));
  p = {
    userConfig: join(dir, 'home', '.ssh', 'config'),
    bangerConfig: join(dir, 'banger config', 'ssh_config'),
    createdMarker: join(dir, 'banger config', 'ssh_config.created'),
    privateKey: join(dir, 'state', 'id_ed25519'),
    knownHosts: join(dir, 'state', 'known 100%'),
    proxyCommand: ['/usr/bin/node', "/opt/my banger/bin/banger.js", 'vm', 'ssh-proxy', '%n'],
  };
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('ssh-config', () => {
  it('puts one Include line first, keeps the user file byte for byte, and uninstall restores it exactly', () => {
    mkdirSync(join(dir, 'home', '.ssh'), { recursive: true });
    const mine = Buffer.from('Host foo\n  HostName 10.0.0.1\n  # no trailing newline, ünïcode', 'utf8');
    writeFileSync(p.userConfig, mine, { mode: 0o640 });
    expect(installSshConfig(p)).toBe(true);
    const after = readFileSync(p.userConfig);
    expect(after.toString()).toBe(`${includeLine(p)}\n${mine.toString()}`);
    expect(statSync(p.userConfig).mode & 0o777).toBe(0o640);
    expect(sshConfigState(p)).toBe('installed');
    expect(installSshConfig(p)).toBe(false); // idempotent
    expect(readFileSync(p.userConfig)).toEqual(after);
    expect(uninstallSshConfig(p)).toBe(true);
    expect(readFileSync(p.userConfig)).toEqual(mine);
    expect(existsSync(p.bangerConfig)).toBe(false);
    expect(sshConfigState(p)).toBe('not installed');
  });

  it('creates ~/.ssh/config (0600) when absent, and uninstall removes it again', () => {
    installSshConfig(p);
    expect(statSync(p.userConfig).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'home', '.ssh')).mode & 0o777).toBe(0o700);
    uninstallSshConfig(p);
    expect(existsSync(p.userConfig)).toBe(false);
  });

  it('uninstall finds the line even when the user moved it down', () => {
    writeFileSync(join(dir, 'x'), '');
    installSshConfig(p);
    const moved = `Host a\n  User a\n${includeLine(p)}\nHost b\n`;
    writeFileSync(p.userConfig, moved);
    uninstallSshConfig(p);
    expect(readFileSync(p.userConfig, 'utf8')).toBe('Host a\n  User a\nHost b\n');
  });

  it("quotes paths with spaces and doubles % in banger's block", () => {
    expect(includeLine(p)).toBe(`Include "${p.bangerConfig}"`);
    const block = hostBlock(p);
    expect(block).toContain('Host *.vm');
    expect(block).toContain(`UserKnownHostsFile "${join(dir, 'state', 'known 100%%')}"`);
    expect(block).toContain('StrictHostKeyChecking accept-new');
    expect(block).toContain("ProxyCommand /usr/bin/node '/opt/my banger/bin/banger.js' vm ssh-proxy %n");
  });

  it('a symlinked ~/.ssh/config (dotfile manager) stays a link: install and uninstall edit its target in place', () => {
    // stow-style: ~/.ssh/config -> ../dotfiles/ssh/config (relative link)
    mkdirSync(join(dir, 'home', '.ssh'), { recursive: true });
    mkdirSync(join(dir, 'home', 'dotfiles', 'ssh'), { recursive: true });
    const real = join(dir, 'home', 'dotfiles', 'ssh', 'config');
    const mine = 'Host foo\n  User me\n';
    writeFileSync(real, mine, { mode: 0o644 });
    symlinkSync('../dotfiles/ssh/config', p.userConfig);
    expect(configTarget(p.userConfig)).toBe(real);

    expect(installSshConfig(p)).toBe(true);
    expect(lstatSync(p.userConfig).isSymbolicLink()).toBe(true);
    expect(readlinkSync(p.userConfig)).toBe('../dotfiles/ssh/config');
    expect(readFileSync(real, 'utf8')).toBe(`${includeLine(p)}\n${mine}`);
    expect(statSync(real).mode & 0o777).toBe(0o644);
    expect(sshConfigState(p)).toBe('installed');
    expect(installSshConfig(p)).toBe(false);

    expect(uninstallSshConfig(p)).toBe(true);
    expect(lstatSync(p.userConfig).isSymbolicLink()).toBe(true);
    expect(readlinkSync(p.userConfig)).toBe('../dotfiles/ssh/config');
    expect(readFileSync(real, 'utf8')).toBe(mine);
    expect(sshConfigState(p)).toBe('not installed');
  });

  it('a dangling link: install creates its target, uninstall removes the target again and keeps the link', () => {
    mkdirSync(join(dir, 'home', '.ssh'), { recursive: true });
    mkdirSync(join(dir, 'dots'));
    const real = join(dir, 'dots', 'ssh_config');
    symlinkSync(real, p.userConfig);
    installSshConfig(p);
    expect(lstatSync(p.userConfig).isSymbolicLink()).toBe(true);
    expect(readFileSync(real, 'utf8')).toBe(`${includeLine(p)}\n`);
    uninstallSshConfig(p);
    expect(lstatSync(p.userConfig).isSymbolicLink()).toBe(true);
    expect(existsSync(real)).toBe(false);
  });

  it('a link whose target cannot be written is refused with the line to add by hand, and the link is kept', () => {
    mkdirSync(join(dir, 'home', '.ssh'), { recursive: true });
    const real = join(dir, 'gone', 'config'); // its directory does not exist (like a read-only store, it cannot be written)
    symlinkSync(real, p.userConfig);
    let err: unknown;
    try {
      installSshConfig(p);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'operation_failed', message: expect.stringMatching(/is a link to .*gone\/config, which banger cannot write/) });
    expect((err as { hint: string }).hint).toContain(`add \`${includeLine(p)}\` as the first line`);
    expect(lstatSync(p.userConfig).isSymbolicLink()).toBe(true);
    expect(readlinkSync(p.userConfig)).toBe(real);
  });
});
