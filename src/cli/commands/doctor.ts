/** banger doctor: PASS/WARN/FAIL per check; exit code non-zero only on FAIL. */
import { Command } from '@commander-js/extra-typings';
import { tryConnect } from '../../sdk/connect.js';
import { printJson, type CliContext } from '../context.js';
import { style } from '../style.js';

export function doctorCommand(ctx: CliContext): Command {
  return new Command('doctor')
    .description('check that this host can run banger VMs')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      // Loaded when doctor runs: its checks pull in the VMM drivers and the logger.
      const { runChecks } = await import('../../doctor/checks.js');
      const checks = await runChecks(
        { runner: ctx.runner, layout: ctx.layout },
        {
          defaultImage: 'bookworm',
          daemon: async () => {
            const c = await tryConnect(ctx.layout);
            if (!c) return undefined;
            const s = await c.call('daemon.status', {});
            c.close();
            return `running (pid ${s.pid}, ${s.socket})`;
          },
        },
      );
      if (opts.json) printJson(checks);
      else {
        for (const c of checks) {
          const label = c.status === 'pass' ? style.pass('PASS') : c.status === 'warn' ? style.warn('WARN') : style.fail('FAIL');
          process.stdout.write(`${label}  ${c.name.padEnd(20)} ${c.detail}\n`);
        }
      }
      if (checks.some((c) => c.status === 'fail')) process.exitCode = 1;
    });
}
