/**
 * banger system install|status|restart|uninstall: a root-owned copy of banger
 * (PREFIX/lib/banger/VERSION, src/install/package.ts) and systemd units for
 * the root helper and the owner's daemon that run from it.
 */
import { Command } from '@commander-js/extra-typings';
import { userInfo } from 'node:os';
import { resolve } from 'node:path';
import { BangerError } from '../../errors/errors.js';
import { checkBridgeName, DEFAULT_BRIDGE, parseSubnet, pickSubnet } from '../../model/net.js';
import { installedUnits, installSystem, lookupUser, systemdInUse, systemStatus, uninstallSystem, UNIT_DIR } from '../../install/install.js';
import { DEFAULT_PREFIX, installLayout, PREFIX_ENV } from '../../install/package.js';
import { daemonUnitName, HELPER_UNIT } from '../../install/units.js';
import { printJson, type CliContext } from '../context.js';
import { keyValues } from '../style.js';
import { repoRoot } from '../repo-root.js';

const HELPER_SOCKET = '/run/banger/helper.sock';

function ownerName(flag?: string): string {
  return flag ?? process.env.SUDO_USER ?? userInfo().username;
}

const PREFIX_HELP = `install prefix (default $${PREFIX_ENV}, else ${DEFAULT_PREFIX}): banger goes to PREFIX/lib/banger/VERSION, links to PREFIX/bin`;

function needRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new BangerError('bad_request', `${what} writes root-owned files (the install under ${DEFAULT_PREFIX}/lib/banger and units in ${UNIT_DIR}) and needs root`, `run it with sudo: \`sudo banger ${what}\``);
  }
}

export function systemCommand(ctx: CliContext): Command {
  const sys = new Command('system').description('systemd units for the root helper and your daemon (bridge networking without sudo in daily use)');

  sys
    .command('install')
    .description('copy banger into a root-owned prefix, then write and start banger-helper.service (root) and bangerd-USER.service (as USER) running from there')
    .option('--user <name>', 'who runs VMs (default: $SUDO_USER, else you)')
    .option('--subnet <cidr>', 'bridge subnet (default: the first of 10.213.0.0/24, 10.214.0.0/24, … that no route on this host overlaps)')
    .option('--bridge <name>', `bridge name (default ${DEFAULT_BRIDGE})`, DEFAULT_BRIDGE)
    .option('--unit-dir <dir>', 'write the units here instead (nothing is started)')
    .option('--prefix <dir>', PREFIX_HELP)
    .option('--node <path>', 'the node the units run (default: this one; it must be root-owned and outside any home)')
    .action(async (opts) => {
      needRoot('system install');
      const user = ownerName(opts.user);
      const u = await lookupUser(ctx.runner, user);
      const subnet = opts.subnet ? parseSubnet(opts.subnet).cidr : pickSubnet((await ctx.runner.run(['ip', '-4', 'route', 'show', 'table', 'all'], { allowFailure: true })).stdout);
      const res = await installSystem(
        ctx.runner,
        { user, ...u, subnet, bridge: checkBridgeName(opts.bridge), helperSocket: HELPER_SOCKET },
        {
          source: repoRoot(),
          layout: installLayout(opts.prefix),
          node: opts.node ?? process.execPath,
          unitDir: opts.unitDir ? resolve(opts.unitDir) : undefined,
          systemd: opts.unitDir ? false : undefined,
        },
      );
      const pkg = res.package;
      process.stdout.write(
        `installed banger ${pkg.version} in ${pkg.dir}${pkg.previous ? ` (kept ${pkg.previous} for a rollback)` : ''}; linked ${pkg.links.join(', ')}\n` +
          `wrote ${res.units.join(', ')} (running ${res.node} from the install)\n${res.note}\n`,
      );
    });

  sys
    .command('status')
    .description('are the units installed and running; is systemd in use at all')
    .option('--user <name>', 'whose daemon (default: $SUDO_USER, else you)')
    .option('--json', 'machine-readable output')
    .option('--prefix <dir>', PREFIX_HELP)
    .option('--unit-dir <dir>', 'look for the units here instead')
    .action(async (opts) => {
      const user = ownerName(opts.user);
      const sd = systemdInUse();
      const unitDir = opts.unitDir ? resolve(opts.unitDir) : UNIT_DIR;
      const units = installedUnits(user, unitDir);
      const layout = installLayout(opts.prefix);
      const st = systemStatus(layout, unitDir);
      const active: Record<string, string> = {};
      if (sd.inUse) {
        for (const n of [HELPER_UNIT, daemonUnitName(user)]) {
          active[n] = (await ctx.runner.run(['systemctl', 'is-active', n], { allowFailure: true })).stdout.trim() || 'unknown';
        }
      }
      if (opts.json) return printJson({ systemd: sd.inUse, pid1: sd.pid1, installed: units, active, version: st.installed?.version ?? null, installDir: st.installed?.dir ?? null, runsFrom: st.helper ?? null });
      const rows: Array<[string, string]> = [
        ['systemd', sd.inUse ? 'in use' : `not in use (PID 1 is ${sd.pid1}): bangerd is started by the CLI on first use`],
        ['version', st.installed ? `${st.installed.version} in ${st.installed.dir}` : `not installed under ${layout.libDir} (\`sudo banger system install\`)`],
        ['units', units.length ? units.join(', ') : 'not installed (`sudo banger system install`)'],
      ];
      if (st.helper) {
        rows.push(['runs from', st.helper.inInstall ? `${st.helper.node} ${st.helper.script}` : `${st.helper.script}: NOT the root-owned install; run \`sudo banger system install\` again`]);
      }
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
    .description('stop, disable and remove the units and the root-owned install (VMs keep running; the daemon is auto-started again on use)')
    .option('--user <name>', 'whose daemon (default: $SUDO_USER, else you)')
    .option('--unit-dir <dir>', 'remove them from here instead')
    .option('--prefix <dir>', PREFIX_HELP)
    .action(async (opts) => {
      needRoot('system uninstall');
      const removed = await uninstallSystem(ctx.runner, ownerName(opts.user), installLayout(opts.prefix), {
        unitDir: opts.unitDir ? resolve(opts.unitDir) : undefined,
        systemd: opts.unitDir ? false : undefined,
      });
      process.stdout.write(removed.length ? `removed ${removed.join(', ')}\n` : 'nothing installed\n');
    });
  return sys;
}
