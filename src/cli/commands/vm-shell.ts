/** Running things in a VM from the CLI: vm ssh, vm exec, and the command half of vm run. */
import { Command } from '@commander-js/extra-typings';
import { BangerError } from '../../errors/errors.js';
import type { SshTarget } from '../../model/types.js';
import { sshCommandArgs } from '../../guest/ssh.js';
import type { CliContext } from '../context.js';
import { GUEST_REPO } from '../../workspace/guest-scripts.js';
import { execArgv } from '../../sdk/exec.js';

/** With passThroughOptions, the `--` after NAME reaches us: it separates, it is not the command. */
export function commandAfterName(rest: string[]): string[] {
  return rest[0] === '--' ? rest.slice(1) : rest;
}

/** Runs CMD (or an interactive shell) in the VM, in `cwd` when given; resolves with the exit code. */
export async function runInVm(ctx: CliContext, target: SshTarget, cmd: string[], signal?: AbortSignal, cwd?: string): Promise<number> {
  if (cmd.length === 0) {
    if (!process.stdin.isTTY) {
      throw new BangerError('bad_request', 'no command given and stdin is not a terminal', 'pass a command after --, e.g. `-- uname -a`');
    }
    const shell = cwd ? ['sh', '-c', 'cd "$1" && exec "${SHELL:-/bin/sh}" -l', 'shell', cwd] : undefined;
    return ctx.runner.runInteractive(['ssh', '-t', ...sshCommandArgs(target, shell)]);
  }
  const res = await execArgv(target, cmd, {
    cwd,
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin.isTTY ? undefined : process.stdin,
    signal,
    maxBufferBytes: 0,
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
      const target = await (await ctx.banger()).vm(name).sshTarget();
      process.exitCode = await runInVm(ctx, target, commandAfterName(rest));
    });

  vm.command('exec')
    .description(`run CMD in a running VM (in ${GUEST_REPO} when it has a workspace), non-interactively; exits with its exit code`)
    .usage('[options] NAME -- CMD [ARGS...]')
    .option('--auto-prepare', 'resync the workspace first when the host repo changed since the last prepare')
    .argument('<name>')
    .argument('<cmd...>')
    .passThroughOptions()
    .action(async (name, rest, opts) => {
      const cmd = commandAfterName(rest);
      if (cmd.length === 0) throw new BangerError('bad_request', 'vm exec needs a command', `e.g. \`banger vm exec ${name} -- uname -a\``);
      const vm = (await ctx.banger()).vm(name);
      const target = await vm.sshTarget(); // not_running for a stopped VM
      const st = await vm.workspaceStatus();
      const ws = st.workspace;
      if (ws && st.changed === true) {
        if (opts.autoPrepare) {
          await vm.prepareWorkspace(ws.hostPath, { includeUntracked: ws.includeUntracked, mode: ws.mode });
        } else {
          ctx.progress({ stage: 'workspace', level: 'warn', message: `${ws.hostPath} changed since it was prepared into ${name}; --auto-prepare resyncs it` });
        }
      } else if (ws && st.changed === null && st.reason) {
        ctx.progress({ stage: 'workspace', level: 'warn', message: `cannot compare ${name}'s workspace with ${ws.hostPath}: ${st.reason}` });
      }
      process.exitCode = await runInVm(ctx, target, cmd, undefined, ws?.guestPath);
    });
}
