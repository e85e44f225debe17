/** banger network show */
import { Command } from '@commander-js/extra-typings';
import { printJson, type CliContext } from '../context.js';
import { keyValues } from '../style.js';

export function networkCommand(ctx: CliContext): Command {
  const net = new Command('network').description("banger's networking: user mode, or the bridge of the root helper");
  net
    .command('show')
    .description('the mode new VMs get and why; on a bridge: its name, subnet, gateway and the .vm DNS server')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const n = await (await ctx.banger()).network();
      if (opts.json) return printJson(n);
      const rows: Array<[string, string]> = [
        ['mode', `${n.mode} (${n.why})`],
        ['helper', n.helperSocket],
      ];
      if (n.bridge) {
        rows.push(['bridge', n.bridge ?? '-'], ['subnet', n.subnet ?? '-'], ['gateway', n.gateway ?? '-'], ['dns', n.dns ?? '-'], ['resolver', n.resolver ?? '-']);
      }
      process.stdout.write(keyValues(rows) + '\n');
    });
  return net;
}
