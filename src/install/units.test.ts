/** The generated units, checked by systemd itself (`systemd-analyze verify`), and install/uninstall into a temp dir. */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../system/runner.js';
import { onPath } from '../system/which.js';
import { daemonUnit, helperUnit, type UnitParams } from './units.js';
import { installedUnits, installUnits, uninstallUnits } from './install.js';
import { pickSubnet } from '../model/net.js';

const runner = createRunner();
const root = '/usr/local/lib/banger/current';
const params: UnitParams = {
  node: process.execPath,
  root,
  user: 'root',
  uid: 0,
  gid: 0,
  home: '/root',
  subnet: '10.213.0.0/24',
  bridge: 'bgr0',
  helperSocket: '/run/banger/helper.sock',
};
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-units-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('systemd units', () => {
  it('neither unit ever kills a VM on stop or restart', () => {
    for (const u of [helperUnit(params), daemonUnit(params)]) {
      expect(u).toMatch(/^KillMode=process$/m);
      expect(u).toMatch(/^SendSIGKILL=no$/m);
      expect(u).toMatch(/^RuntimeDirectoryPreserve=yes$/m);
      expect(u).toMatch(/^NoNewPrivileges=yes$/m);
    }
    expect(helperUnit(params)).toMatch(/^CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW/m);
    expect(daemonUnit(params)).toMatch(/^User=root$/m);
    expect(daemonUnit(params)).toMatch(/^CapabilityBoundingSet=$/m);
  });

  it('both run from the root-owned install, never a checkout', () => {
    expect(helperUnit(params)).toMatch(new RegExp(`^ExecStart=${process.execPath} ${root}/bin/banger-helper\\.js `, 'm'));
    expect(daemonUnit(params)).toMatch(new RegExp(`^ExecStart=${process.execPath} ${root}/bin/bangerd\\.js --foreground$`, 'm'));
    expect(helperUnit(params) + daemonUnit(params)).not.toContain(import.meta.dirname.replace(/\/src\/install$/, ''));
  });

  it.skipIf(!onPath('systemd-analyze'))('systemd-analyze verify accepts both, with no warning', async () => {
    const res = await installUnits(runner, params, { unitDir: dir, systemd: false });
    expect(res.started).toBe(false);
    expect(res.note).toMatch(/systemd is not in use|units are written/);
    for (const f of res.units) {
      const r = await runner.run(['systemd-analyze', 'verify', f], { allowFailure: true });
      expect({ f, code: r.code, stderr: r.stderr.trim() }).toEqual({ f, code: 0, stderr: '' });
    }
  });

  it('systemd-analyze catches a broken unit (the check can fail)', async () => {
    if (!onPath('systemd-analyze')) return;
    const bad = helperUnit(params).replace('KillMode=process', 'KillMode=procezz');
    const f = join(dir, 'bad.service');
    await import('node:fs').then((fs) => fs.writeFileSync(f, bad));
    const r = await runner.run(['systemd-analyze', 'verify', f], { allowFailure: true });
    expect(r.stderr).toMatch(/KillMode|procezz/);
  });

  it('install writes, uninstall removes exactly those files', async () => {
    await installUnits(runner, params, { unitDir: dir, systemd: false });
    expect(installedUnits('root', dir)).toEqual(['banger-helper.service', 'bangerd-root.service']);
    expect(readFileSync(join(dir, 'bangerd-root.service'), 'utf8')).toContain('BANGER_RUNTIME_DIR=/run/banger/u0');
    const removed = await uninstallUnits(runner, 'root', { unitDir: dir, systemd: false });
    expect(removed).toHaveLength(2);
    expect(existsSync(join(dir, 'banger-helper.service'))).toBe(false);
  });
});

describe('subnet choice', () => {
  it('takes the first candidate no route overlaps', () => {
    expect(pickSubnet('default via 192.168.1.1 dev eth0\n192.168.1.0/24 dev eth0\n')).toBe('10.213.0.0/24');
    expect(pickSubnet('10.0.0.0/8 dev wg0\n172.16.0.0/12 dev x\n')).toBe('192.168.213.0/24');
    expect(pickSubnet('10.213.0.7 dev tun0\n')).toBe('10.214.0.0/24');
    expect(() => pickSubnet('0.0.0.0/1 dev a\n128.0.0.0/1 dev b\n')).toThrow(/overlaps a route on this host/);
  });
});
