import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostBlock, includeLine, installSshConfig, sshConfigState, uninstallSshConfig, type SshConfigPaths } from './ssh-config.js';

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
});
