/** Running things in a VM from the CLI: vm ssh, vm exec, and the command half of vm run. */
import { Command } from '@commander-js/extra-typings';
import { BangerError } from '../../errors/errors.js';
import { shellJoin } from '../../model/quote.js';
import type { SshTarget } from '../../model/types.js';
import { sshCommandArgs, sshExec } from '../../guest/ssh.js';
import type { CliContext } from '../context.js';

/** With passThroughOptions, the `--` after NAME reaches us: it separates, it is not the command. */
export function commandAfterName(rest: string[]): string[] {
  return rest[0] === '--' ? rest.slice(1) : rest;
}

/** Runs CMD (or an interactive shell) in the VM; resolves with the exit code. */
export async function runInVm(ctx: CliContext, target: SshTarget, cmd: string[], signal?: AbortSignal): Promise<number> {
  if (cmd.length === 0) {
    if (!process.stdin.isTTY) {
      throw new BangerError('bad_request', 'no command given and stdin is not a terminal', 'pass a command after --, e.g. `-- uname -a`');
    }
    return ctx.runner.runInteractive(['ssh', '-t', ...sshCommandArgs(target)]);
  }
  const res = await sshExec(target, shellJoin(cmd), {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin.isTTY ? null : process.stdin,
    signal,
  });
  return res.exitCode;
}

export function addShellCommands(vm: Command, ctx: CliContext): void {
  vm.command('ssh')
    .description('open a shell in a running VM, or run CMD in it (exit code passed through)')
    .argument('<name>')
    .argument('[cmd...]')
    .passThroughOptions()
    .action(async (name, rest) => {
      const target = await (await ctx.daemon()).call('vm.ssh_target', { name });
      process.exitCode = await runInVm(ctx, target, commandAfterName(rest));
    });

  vm.command('exec')
    .description('run CMD in a running VM, non-interactively; exits with its exit code')
    .usage('NAME -- CMD [ARGS...]')
    .argument('<name>')
    .argument('<cmd...>')
    .passThroughOptions()
    .action(async (name, rest) => {
      const cmd = commandAfterName(rest);
      if (cmd.length === 0) throw new BangerError('bad_request', 'vm exec needs a command', `e.g. \`banger vm exec ${name} -- uname -a\``);
      const target = await (await ctx.daemon()).call('vm.ssh_target', { name });
      const res = await sshExec(target, shellJoin(cmd), {
        stdout: process.stdout,
        stderr: process.stderr,
        stdin: process.stdin.isTTY ? null : process.stdin,
      });
      process.exitCode = res.exitCode;
    });
}
