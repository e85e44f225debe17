/**
 * `banger system install|status|restart|uninstall`: writes the two units
 * (units.ts), and drives systemctl when systemd is PID 1. Without systemd
 * (these test machines) the CLI's auto-start path keeps working and status
 * says systemd is not in use.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { ensureDir, writeFileAtomic } from '../system/fs.js';
import type { Runner } from '../system/runner.js';
import { daemonUnit, daemonUnitName, helperUnit, HELPER_UNIT, type UnitParams } from './units.js';

export const UNIT_DIR = '/etc/systemd/system';

export function systemdInUse(runDir = '/run/systemd/system'): { inUse: boolean; pid1: string } {
  let pid1 = 'unknown';
  try {
    pid1 = readFileSync('/proc/1/comm', 'utf8').trim();
  } catch {
    /* no /proc */
  }
  return { inUse: existsSync(runDir), pid1 };
}

/** The owner user's uid, gid and home, from the passwd database. */
export async function lookupUser(runner: Runner, name: string): Promise<{ uid: number; gid: number; home: string }> {
  const r = await runner.run(['getent', 'passwd', name], { allowFailure: true });
  const f = r.stdout.trim().split(':');
  if (r.code !== 0 || f.length < 7) throw new BangerError('not_found', `no user named ${JSON.stringify(name)}`, 'pass the user who will run VMs: --user NAME');
  return { uid: Number(f[2]), gid: Number(f[3]), home: f[5]! };
}

export interface InstallResult {
  units: string[];
  started: boolean;
  note: string;
}

export async function installUnits(runner: Runner, p: UnitParams, opts: { unitDir?: string; systemd?: boolean } = {}): Promise<InstallResult> {
  const dir = opts.unitDir ?? UNIT_DIR;
  ensureDir(dir, 0o755);
  const files = [
    [join(dir, HELPER_UNIT), helperUnit(p)],
    [join(dir, daemonUnitName(p.user)), daemonUnit(p)],
  ] as const;
  for (const [path, text] of files) writeFileAtomic(path, text, 0o644);
  const units = files.map(([f]) => f);
  const systemd = opts.systemd ?? systemdInUse().inUse;
  if (!systemd) {
    return {
      units,
      started: false,
      note: `systemd is not in use here (PID 1 is ${systemdInUse().pid1}): the units are written but not started; run the helper by hand (\`sudo banger-helper --owner-uid ${p.uid}\`) and let the CLI start bangerd`,
    };
  }
  await runner.run(['systemctl', 'daemon-reload']);
  await runner.run(['systemctl', 'enable', '--now', HELPER_UNIT, daemonUnitName(p.user)]);
  return { units, started: true, note: `enabled and started ${HELPER_UNIT} and ${daemonUnitName(p.user)}` };
}

export async function uninstallUnits(runner: Runner, user: string, opts: { unitDir?: string; systemd?: boolean } = {}): Promise<string[]> {
  const dir = opts.unitDir ?? UNIT_DIR;
  const names = [daemonUnitName(user), HELPER_UNIT];
  if (opts.systemd ?? systemdInUse().inUse) {
    // disable --now stops them; KillMode=process + SendSIGKILL=no keep the VMs running.
    await runner.run(['systemctl', 'disable', '--now', ...names], { allowFailure: true });
  }
  const removed: string[] = [];
  for (const n of names) {
    const f = join(dir, n);
    if (existsSync(f)) {
      rmSync(f);
      removed.push(f);
    }
  }
  if (opts.systemd ?? systemdInUse().inUse) await runner.run(['systemctl', 'daemon-reload'], { allowFailure: true });
  return removed;
}

export function installedUnits(user: string, unitDir = UNIT_DIR): string[] {
  return [HELPER_UNIT, daemonUnitName(user)].filter((n) => existsSync(join(unitDir, n)));
}
