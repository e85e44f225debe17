/** banger system install|status|restart|uninstall: systemd units for the root helper and the owner's daemon. */
import { Command } from '@commander-js/extra-typings';
import { userInfo } from 'node:os';
import { resolve } from 'node:path';
import { BangerError } from '../../errors/errors.js';
import { checkBridgeName, DEFAULT_BRIDGE, parseSubnet, pickSubnet } from '../../model/net.js';
import { installedUnits, installUnits, lookupUser, systemdInUse, uninstallUnits, UNIT_DIR } from '../../install/install.js';
import { daemonUnitName, HELPER_UNIT } from '../../install/units.js';
import { printJson, type CliContext } from '../context.js';
import { keyValues } from '../style.js';
import { repoRoot } from '../repo-root.js';

const HELPER_SOCKET = '/run/banger/helper.sock';

function ownerName(flag?: string): string {
  return flag ?? process.env.SUDO_USER ?? userInfo().username;
}

function needRoot(what: string, unitDir?: string): void {
  if (unitDir === undefined && process.getuid?.() !== 0) {
    throw new BangerError('bad_request', `${what} writes ${UNIT_DIR} and needs root`, `run it with sudo: \`sudo banger system ${what.split(' ')[1] ?? ''}\``);
  }
}

export function systemCommand(ctx: CliContext): Command {
  const sys = new Command('system').description('systemd units for the root helper and your daemon (bridge networking without sudo in daily use)');

  sys
    .command('install')
    .description('write and start banger-helper.service (root) and bangerd-USER.service (as USER)')
    .option('--user <name>', 'who runs VMs (default: $SUDO_USER, else you)')
    .option('--subnet <cidr>', 'bridge subnet (default: the first of 10.213.0.0/24, 10.214.0.0/24, … that no route on this host overlaps)')
    .option('--bridge <name>', `bridge name (default ${DEFAULT_BRIDGE})`, DEFAULT_BRIDGE)
    .option('--unit-dir <dir>', 'write the units here instead (nothing is started)')
    .action(async (opts) => {
      needRoot('system install', opts.unitDir);
      const user = ownerName(opts.user);
      const u = await lookupUser(ctx.runner, user);
      const subnet = opts.subnet ? parseSubnet(opts.subnet).cidr : pickSubnet((await ctx.runner.run(['ip', '-4', 'route', 'show', 'table', 'all'], { allowFailure: true })).stdout);
      const res = await installUnits(
        ctx.runner,
        { node: process.execPath, repo: repoRoot(), user, ...u, subnet, bridge: checkBridgeName(opts.bridge), helperSocket: HELPER_SOCKET },
        { unitDir: opts.unitDir ? resolve(opts.unitDir) : undefined, systemd: opts.unitDir ? false : undefined },
      );
      process.stdout.write(`wrote ${res.units.join(', ')}\n${res.note}\n`);
    });

  sys
    .command('status')
    .description('are the units installed and running; is systemd in use at all')
    .option('--user <name>', 'whose daemon (default: $SUDO_USER, else you)')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const user = ownerName(opts.user);
      const sd = systemdInUse();
      const units = installedUnits(user);
      const active: Record<string, string> = {};
      if (sd.inUse) {
        for (const n of [HELPER_UNIT, daemonUnitName(user)]) {
          active[n] = (await ctx.runner.run(['systemctl', 'is-active', n], { allowFailure: true })).stdout.trim() || 'unknown';
        }
      }
      if (opts.json) return printJson({ systemd: sd.inUse, pid1: sd.pid1, installed: units, active });
      const rows: Array<[string, string]> = [
        ['systemd', sd.inUse ? 'in use' : `not in use (PID 1 is ${sd.pid1}): bangerd is started by the CLI on first use`],
        ['units', units.length ? units.join(', ') : 'not installed (`sudo banger system install`)'],
      ];
      for (const [n, s] of Object.entries(active)) rows.push([n, s]);
      process.stdout.write(keyValues(rows) + '\n');
    });

  sys
    .command('restart')
    .description('restart the helper and your daemon (running VMs keep running)')
    .option('--user <name>', 'whose daemon (default: $SUDO_USER, else you)')
    .action(async (opts) => {
      const sd = systemdInUse();
      if (!sd.inUse) throw new BangerError('unavailable', `systemd is not in use here (PID 1 is ${sd.pid1})`, 'restart the daemon with `banger daemon stop` (the next command starts it)');
      await ctx.runner.run(['systemctl', 'restart', HELPER_UNIT, daemonUnitName(ownerName(opts.user))]);
      process.stdout.write('restarted; VMs kept running\n');
    });

  sys
    .command('uninstall')
    .description('stop, disable and remove the units (VMs keep running; the daemon is auto-started again on use)')
    .option('--user <name>', 'whose daemon (default: $SUDO_USER, else you)')
    .option('--unit-dir <dir>', 'remove them from here instead')
    .action(async (opts) => {
      needRoot('system uninstall', opts.unitDir);
      const removed = await uninstallUnits(ctx.runner, ownerName(opts.user), { unitDir: opts.unitDir ? resolve(opts.unitDir) : undefined, systemd: opts.unitDir ? false : undefined });
      process.stdout.write(removed.length ? `removed ${removed.join(', ')}\n` : 'nothing installed\n');
    });
  return sys;
}
