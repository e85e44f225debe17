/** banger vm run|list|show|delete|ssh */
import { Command, Option, type OptionValues } from '@commander-js/extra-typings';
import { BangerError } from '../../errors/errors.js';
import { generateVmName, validateImageName, validateVmName } from '../../model/names.js';
import { MIN_MEMORY_MIB } from '../../model/limits.js';
import { NETWORK_MODES, type NetworkMode, type VmView } from '../../model/types.js';
import type { VmSpec } from '../../sdk/banger.js';
import { parseIntFlag, printJson, type CliContext } from '../context.js';
import { style, table, keyValues } from '../style.js';
import { addShellCommands, runInVm } from './vm-shell.js';
import { addWorkspaceCommands, modeOption, type PrepareFlags } from './vm-workspace.js';
import { addSshProxyCommand } from './ssh-config.js';
import { GUEST_REPO } from '../../workspace/guest-scripts.js';
import { loadSsh2 } from '../../guest/ssh.js';
import { existsSync } from 'node:fs';
import { addLifecycleCommands, diskSizeFlag } from './vm-lifecycle.js';
import { addInspectCommands } from './vm-inspect.js';
import { formatSize } from '../../model/sizes.js';

/**
 * `banger vm`. With `sub` (the operand after `vm`), only that subcommand is
 * built: building all ~25 with their options cost a simple command ~3 ms.
 * When `sub` names none of them (an alias such as `ls`, a typo, or a value
 * that only looked like a subcommand), everything is built, so help, aliases
 * and "did you mean" work as before.
 */
export function vmCommand(ctx: CliContext, sub?: string): Command {
  if (sub !== undefined) {
    const vm = buildVm(ctx, sub);
    if (vm.commands.some((c) => c.name() === sub)) return vm;
  }
  return buildVm(ctx);
}

function buildVm(ctx: CliContext, only?: string): Command {
  const vm = new Command('vm').description('create, run and manage microVMs').enablePositionalOptions();
  if (only !== undefined) buildOnly(vm, only);

  specOptions(vm.command('run'))
    .description(`create a VM, boot it, copy PATH (a git repo) into ${GUEST_REPO}, run CMD there over SSH and exit with its exit code`)
    .usage('[options] [PATH] -- CMD [ARGS...]')
    .option('--rm', 'delete the VM and all its files when the command ends (Ctrl-C included)')
    .option('-d, --detach', 'leave the VM running and print how to reach it (takes no CMD)')
    .option('--include-untracked', 'also send untracked files that git does not ignore')
    .option('--no-bootstrap', 'do not run `mise install` for a repo with .mise.toml')
    .option('--json', "print the result as one JSON document (exitCode, stdout, stderr, name, bootMs …) instead of the command's output; the exit code is still the command's")
    .addOption(modeOption())
    .argument('[args...]', 'PATH (default: none), then -- and the command (interactive shell when omitted)')
    .passThroughOptions()
    .action(async (args, opts) => {
      const split = splitRunArgs(args, process.argv.slice(2).includes('--'));
      process.exitCode = await vmRun(ctx, split, opts);
    });

  vm.command('list')
    .alias('ls')
    .description('list VMs')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const vms = await (await ctx.banger()).listVms();
      if (opts.json) return printJson(vms);
      if (vms.length === 0) return void process.stdout.write('no VMs (create one with `banger vm run -- CMD`)\n');
      process.stdout.write(
        table(
          ['NAME', 'STATE', 'IMAGE', 'VCPU', 'MEMORY', 'SSH', 'CREATED'],
          vms.map((v) => [v.name, v.state, v.image, String(v.vcpu), `${v.memoryMib} MiB`, sshColumn(v), v.createdAt]),
        ) + '\n',
      );
    });

  vm.command('show')
    .description('show one VM')
    .argument('<name>')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const v = await (await ctx.banger()).vm(name).refresh();
      if (opts.json) return printJson(v);
      const rows: Array<[string, string]> = [
        ['name', v.name],
        ['id', v.id],
        ['state', v.state],
        ['image', v.image],
        ...(v.kernel ? [['kernel', `${v.kernel} (from the kernel catalog)`] as [string, string]] : []),
        ['vcpu', String(v.vcpu)],
        ['memory', `${v.memoryMib} MiB`],
        ['work disk', `${formatSize(v.diskBytes)} at /root`],
        ['root fs', formatSize(v.systemOverlayBytes)],
        ['network', v.network === 'bridge' ? `bridge, ${v.ip} (${v.name}.vm)` : 'user (SSH forwarded to loopback)'],
        ['egress', v.nat ? 'allowed (--nat)' : 'none: no route off the host (create with --nat to allow)'],
        ['ephemeral', v.ephemeral ? 'yes (vm run --rm)' : 'no'],
        ['created', v.createdAt],
      ];
      if (v.runtime) {
        rows.push(['pid', String(v.runtime.pid)], ['accel', v.runtime.accel], ['ssh', `${v.runtime.sshHost}:${v.runtime.sshPort}`]);
      }
      if (v.workspace) rows.push(['workspace', `${v.workspace.hostPath} → ${v.workspace.guestPath} (${v.workspace.files} files, prepared ${v.workspace.preparedAt})`]);
      if (v.lastError) rows.push(['last error', v.lastError]);
      process.stdout.write(keyValues(rows) + '\n');
    });

  vm.command('delete')
    .alias('rm')
    .description('delete VMs and every file of them (a running VM needs -f)')
    .argument('<name...>')
    .option('-f, --force', 'delete a running VM too')
    .option('--json', 'machine-readable output: [{deleted}], one per NAME')
    .action(async (names, opts) => {
      const banger = await ctx.banger();
      const done: Array<{ deleted: string }> = [];
      for (const name of names) {
        done.push(await banger.vm(name).delete({ force: opts.force === true }));
        if (!opts.json) process.stdout.write(`deleted ${name}\n`);
      }
      if (opts.json) printJson(done);
    });

  specOptions(vm.command('create'))
    .description('create a VM (and boot it, unless --no-start)')
    .option('--no-start', 'create the disks but do not boot')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const name = checkSpecFlags(opts);
      const started = Date.now();
      const res = await (await ctx.banger()).createRaw({ ...specOf(name, opts), start: opts.start });
      if (opts.json) return printJson(res.vm);
      if (opts.start) {
        const how = res.clonedFrom ? ` (warm clone of snapshot ${res.clonedFrom})` : '';
        process.stderr.write(style.dim(`• ${name} ready in ${((Date.now() - started) / 1000).toFixed(1)} s${how}`, process.stderr) + '\n');
      }
      process.stdout.write(`${name} ${res.vm.state}${opts.start ? `: \`banger vm ssh ${name}\`` : `: \`banger vm start ${name}\``}\n`);
    });

  addShellCommands(vm, ctx);
  addWorkspaceCommands(vm, ctx);
  addSshProxyCommand(vm, ctx);
  addLifecycleCommands(vm, ctx);
  addInspectCommands(vm, ctx);

  return vm;
}

/**
 * Makes `parent.command(name)` build a real subcommand only for `name`;
 * any other returns a stand-in whose every method returns itself, so the
 * builders' chains (`.description().option().action()`) cost nothing.
 */
function buildOnly(parent: Command, name: string): void {
  const standIn: Command = new Proxy(function standIn() {}, { get: (_t, prop) => (prop === 'then' ? undefined : () => standIn) }) as unknown as Command;
  const real = parent.command.bind(parent) as (nameAndArgs: string, opts?: Record<string, unknown>) => Command;
  // (The override's type is commander's overloaded `command`; the stand-in answers every call of it.)
  (parent as unknown as { command: (nameAndArgs: string, opts?: Record<string, unknown>) => Command }).command = (nameAndArgs, opts) =>
    nameAndArgs.split(' ')[0] === name ? real(nameAndArgs, opts) : standIn;
}

/** The flags that describe a new VM, shared by vm run and vm create. */
function specOptions<A extends unknown[], O extends OptionValues>(c: Command<A, O>) {
  return c
    .option('--name <name>', 'VM name (a DNS label; generated when omitted)')
    .option('--vcpu <n>', 'virtual CPUs', parseIntFlag('--vcpu'))
    .option('--memory <mib>', 'memory in MiB', parseIntFlag('--memory'))
    .option('--disk-size <size>', 'persistent /root work disk size, e.g. 16G, at most 2 TiB (default: disk_size in config)', diskSizeFlag('--disk-size'))
    .option('--image <name>', 'image to boot (default: bookworm, built on first use)')
    .option('--nat', 'let the guest reach the network (default: no route off the host)')
    .option('--cold', 'boot the kernel even when a snapshot of this image and shape could start a warm clone')
    .option('--kernel <name>', 'boot this kernel from the kernel catalog instead of the image\'s (pulled when missing; boots cold)')
    .addOption(new Option('--network <mode>', 'user (rootless, SSH on a loopback port) or bridge (root helper: own IP, NAME.vm DNS); default: config').choices(NETWORK_MODES));
}

/** The VM the spec flags describe, as the SDK takes it. */
function specOf(name: string, opts: SpecFlags): VmSpec {
  return { name, image: opts.image, vcpu: opts.vcpu, memoryMib: opts.memory, diskBytes: opts.diskSize, nat: opts.nat === true, network: opts.network, cold: opts.cold === true, kernel: opts.kernel };
}

interface SpecFlags {
  image?: string;
  vcpu?: number;
  memory?: number;
  diskSize?: number;
  nat?: boolean;
  network?: NetworkMode;
  cold?: boolean;
  kernel?: string;
}

function sshColumn(v: VmView): string {
  return v.runtime ? `${v.runtime.sshHost}:${v.runtime.sshPort}` : '-';
}

interface RunOpts extends PrepareFlags {
  name?: string;
  vcpu?: number;
  memory?: number;
  diskSize?: number;
  image?: string;
  rm?: boolean;
  detach?: boolean;
  nat?: boolean;
  cold?: boolean;
  kernel?: string;
  bootstrap?: boolean;
  network?: NetworkMode;
  json?: boolean;
}

export interface RunArgs {
  path?: string;
  cmd: string[];
}

/**
 * `vm run [PATH] -- CMD`: what comes before `--` is PATH (one at most),
 * what follows is CMD. Commander drops a `--` that comes before any operand,
 * so `vm run -- CMD` arrives as bare operands: hadDoubleDash tells them apart
 * from `vm run PATH`.
 */
export function splitRunArgs(args: string[], hadDoubleDash: boolean): RunArgs {
  const usage = 'usage: `banger vm run [PATH] -- CMD [ARGS...]`';
  const i = args.indexOf('--');
  const before = i >= 0 ? args.slice(0, i) : hadDoubleDash ? [] : args;
  const cmd = i >= 0 ? args.slice(i + 1) : hadDoubleDash ? args : [];
  if (before.length > 1) {
    throw new BangerError('bad_request', `vm run takes one PATH before --, got ${before.length}: ${before.join(' ')}`, `put the command after --; ${usage}`);
  }
  return { path: before[0], cmd };
}

/**
 * What vm run and vm create can check without the daemon, before anything
 * is printed or created (the daemon checks again, and checks the host's
 * limits). Returns the VM name (generated when --name is absent).
 */
export function checkSpecFlags(opts: { name?: string; image?: string; vcpu?: number; memory?: number; diskSize?: number }): string {
  const name = opts.name !== undefined ? validateVmName(opts.name) : generateVmName();
  if (opts.image !== undefined) validateImageName(opts.image);
  if (opts.vcpu !== undefined && opts.vcpu < 1) throw new BangerError('bad_request', `--vcpu must be at least 1 (got ${opts.vcpu})`, 'pick 1 up to the number of host CPUs');
  if (opts.memory !== undefined && opts.memory < MIN_MEMORY_MIB) {
    throw new BangerError('bad_request', `--memory must be at least ${MIN_MEMORY_MIB} MiB (got ${opts.memory})`, 'e.g. --memory 1024');
  }
  // --disk-size is checked as it is parsed (diskSizeFlag).
  return name;
}

export async function vmRun(ctx: CliContext, args: RunArgs, opts: RunOpts): Promise<number> {
  const { cmd } = args;
  // Validate before anything is printed or created; the daemon validates again.
  const name = checkSpecFlags(opts);
  if (opts.detach && opts.rm) {
    throw new BangerError('bad_request', '-d and --rm cannot be combined: a detached VM outlives this command', 'drop --rm (delete it later with `banger vm delete -f NAME`), or drop -d');
  }
  if (opts.detach && cmd.length > 0) {
    throw new BangerError('bad_request', `-d takes no command (got: ${cmd.join(' ')})`, 'start it with -d, then `banger vm exec NAME -- CMD`; or drop -d to run CMD now');
  }
  if (opts.json && (opts.detach || cmd.length === 0)) {
    throw new BangerError('bad_request', '--json needs a command: it prints the command\'s exit code and output as one JSON document', 'pass a command after --, or drop --json');
  }
  if (cmd.length === 0 && !opts.detach && !process.stdin.isTTY) {
    throw new BangerError('bad_request', 'no command given and stdin is not a terminal', 'pass a command after --, e.g. `banger vm run --rm -- uname -a`');
  }
  if (args.path !== undefined && !existsSync(args.path)) {
    throw new BangerError('bad_request', `PATH ${args.path} does not exist`, `a command goes after --: \`banger vm run -- ${args.path}\`; a PATH must be a directory in a git repo`);
  }
  const banger = await ctx.banger();
  // The command runs over SSH once the VM is up: load the SSH client while it boots.
  if (!opts.detach) loadSsh2().catch(() => undefined);
  const abort = new AbortController();
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(130); // second Ctrl-C: leave now
    interrupted = true;
    process.stderr.write(`\n${style.warn('interrupted', process.stderr)} (${sig})${opts.rm ? `; removing VM ${name}…` : ''}\n`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const started = Date.now();
  // Announced with the daemon's first progress line: it comes once the daemon has accepted
  // everything (a refused image or size prints nothing but the error).
  let announced = false;
  const interactive = cmd.length === 0 && !opts.detach;
  try {
    const res = await banger.run({
      ...specOf(name, opts),
      cmd,
      repo: args.path,
      includeUntracked: opts.includeUntracked === true,
      mode: opts.mode,
      bootstrap: opts.bootstrap !== false,
      keep: opts.rm !== true,
      signal: abort.signal,
      onProgress: (ev) => {
        if (!announced) {
          announced = true;
          process.stderr.write(style.dim(`• creating VM ${name}`, process.stderr) + '\n');
        }
        ctx.progress(ev);
      },
      onReady: (_vm, r) => {
        const how = r.clonedFrom ? ` (warm clone of snapshot ${r.clonedFrom})` : '';
        process.stderr.write(style.dim(`• ${name} ready in ${((Date.now() - started) / 1000).toFixed(1)} s${how}`, process.stderr) + '\n');
      },
      ...(opts.json ? {} : { stdout: process.stdout, stderr: process.stderr, maxBufferBytes: 0 }),
      stdin: process.stdin.isTTY ? undefined : process.stdin,
      session: opts.detach
        ? async (_vm, cwd) => {
            printDetached(name, cwd);
            return 0;
          }
        : interactive
          ? async (vm, cwd) => runInVm(ctx, await vm.sshTarget(), [], abort.signal, cwd)
          : undefined,
    });
    if (opts.json) printJson(res);
    else if (!opts.rm && !opts.detach) {
      process.stderr.write(style.dim(`• ${name} is still running: \`banger vm ssh ${name}\`; \`banger vm delete -f ${name}\` removes it`, process.stderr) + '\n');
    }
    return res.exitCode;
  } catch (e) {
    if (interrupted) return 130;
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function printDetached(name: string, cwd: string | undefined): void {
  process.stdout.write(`${name} is running${cwd ? ` with the repo at ${cwd}` : ''}\n`);
  process.stdout.write(`  banger vm ssh ${name}            # a shell\n  banger vm exec ${name} -- CMD     # run a command${cwd ? ` in ${cwd}` : ''}\n`);
  if (cwd) process.stdout.write(`  banger vm workspace export ${name} -o changes.patch\n`);
  process.stdout.write(`  banger vm delete -f ${name}       # remove it\n`);
}
