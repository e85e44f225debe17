/**
 * `banger system install|status|restart|uninstall`: copies the built package
 * into a root-owned prefix (package.ts), writes the two units (units.ts) that
 * run from there, and drives systemctl when systemd is PID 1. Without
 * systemd (these test machines) the CLI's auto-start path keeps working and
 * status says systemd is not in use.
 */
import { existsSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { ensureDir, writeFileAtomic } from '../system/fs.js';
import type { Runner } from '../system/runner.js';
import { checkNode, installedPackage, installPackage, uninstallPackage, type InstallLayout, type InstalledPackage, type PackageInstall } from './package.js';
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

export interface SystemInstallOptions {
  /** The built package to copy (the checkout the CLI runs from). */
  source: string;
  layout: InstallLayout;
  /** The node the units run (default: this one); must be root-owned and outside any home. */
  node: string;
  unitDir?: string;
  systemd?: boolean;
}

export type SystemInstallResult = InstallResult & { package: PackageInstall; node: string };

/**
 * `sudo banger system install`: checks node, copies the package into the
 * root-owned prefix, then writes units that run from PREFIX/lib/banger/current.
 * A refused node changes nothing.
 */
export async function installSystem(runner: Runner, p: Omit<UnitParams, 'node' | 'root'>, o: SystemInstallOptions): Promise<SystemInstallResult> {
  const node = checkNode(o.node, [p.home]);
  if (node !== realpathSync(process.execPath)) {
    // Native addons (better-sqlite3) are built for this node's ABI: the units' node must match it.
    const r = await runner.run([node, '-p', 'process.versions.modules'], { allowFailure: true });
    if (r.code !== 0 || r.stdout.trim() !== process.versions.modules) {
      throw new BangerError('bad_request', `node ${node} does not run this build (its module ABI is ${r.stdout.trim() || 'unknown'}, this build's is ${process.versions.modules})`, `run the install with that node (\`sudo ${node} $(which banger) system install\`), or pass --node with the node you built banger with`);
    }
  }
  const pkg = installPackage(o.source, o.layout, node);
  const res = await installUnits(runner, { ...p, node, root: o.layout.current }, { unitDir: o.unitDir, systemd: o.systemd });
  return { ...res, package: pkg, node };
}

/** `sudo banger system uninstall`: the units first (stopped when systemd runs them), then the installed package. */
export async function uninstallSystem(runner: Runner, user: string, layout: InstallLayout, opts: { unitDir?: string; systemd?: boolean } = {}): Promise<string[]> {
  const units = await uninstallUnits(runner, user, opts);
  return [...units, ...uninstallPackage(layout)];
}

/** The program a unit runs (the first two words of ExecStart: node and the script), if the unit is there. */
export function unitExecStart(path: string): { node: string; script: string } | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  const line = /^ExecStart=(.*)$/m.exec(text)?.[1];
  if (!line) return undefined;
  const words = [...line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => (m[1] ?? m[2] ?? '').replace(/%%/g, '%').replace(/\$\$/g, '$'));
  return words.length >= 2 ? { node: words[0]!, script: words[1]! } : undefined;
}

export interface SystemStatus {
  installed?: InstalledPackage;
  /** Where the helper unit runs from, and whether that is inside the root-owned install. */
  helper?: { node: string; script: string; inInstall: boolean };
}

export function systemStatus(layout: InstallLayout, unitDir = UNIT_DIR): SystemStatus {
  const installed = installedPackage(layout);
  const exec = unitExecStart(join(unitDir, HELPER_UNIT));
  const out: SystemStatus = {};
  if (installed) out.installed = installed;
  if (exec) out.helper = { ...exec, inInstall: exec.script.startsWith(layout.libDir + '/') };
  return out;
}
