/** banger: the CLI. Parses, calls the daemon, renders. */
import { Command, CommanderError } from '@commander-js/extra-typings';
import { BangerError } from '../errors/errors.js';
import { VERSION } from '../version.js';
import { createContext, FlagError } from './context.js';
import { renderError, exitCodeFor } from './render-error.js';
import type { CliContext } from './context.js';

/**
 * Each top-level command's module, loaded only when that command runs (a
 * simple command should cost little more than starting node: every module
 * loaded is time). Help, and a name that is none of these, load them all.
 */
const COMMANDS: Record<string, () => Promise<(ctx: CliContext, sub?: string) => Command>> = {
  vm: async () => (await import('./commands/vm.js')).vmCommand,
  image: async () => (await import('./commands/image.js')).imageCommand,
  daemon: async () => (await import('./commands/daemon.js')).daemonCommand,
  doctor: async () => (await import('./commands/doctor.js')).doctorCommand,
  'ssh-config': async () => (await import('./commands/ssh-config.js')).sshConfigCommand,
  network: async () => (await import('./commands/network.js')).networkCommand,
  system: async () => (await import('./commands/system.js')).systemCommand,
  update: async () => (await import('./commands/update.js')).updateCommand,
  kernel: async () => (await import('./commands/kernel.js')).kernelCommand,
};

const ctx = createContext();
const debug = process.argv.includes('--debug');
/** The command being run ("vm run"): the error renderer names its flags. */
let command: string | undefined;

const program = new Command('banger')
  .description('throwaway Linux microVMs as sandboxes for your repos')
  .version(VERSION)
  .option('--debug', 'show stacks for unexpected errors')
  .enablePositionalOptions()
  .exitOverride();

/** The command named on the command line (the first operand), when it is one of ours, and the operand after it. */
function named(argv: string[]): { name?: string; sub?: string } {
  const operands = argv.filter((a) => !a.startsWith('-'));
  const first = operands[0];
  return first !== undefined && Object.prototype.hasOwnProperty.call(COMMANDS, first) ? { name: first, sub: operands[1] } : {};
}

const wanted = named(process.argv.slice(2));
const versionOnly = wanted.name === undefined && process.argv.slice(2).some((a) => a === '--version' || a === '-V');
if (!versionOnly) {
  for (const [name, load] of Object.entries(COMMANDS)) {
    // The subcommand named is a hint: a command may build only that one (src/cli/commands/vm.ts).
    if (wanted.name === undefined || name === wanted.name) program.addCommand((await load())(ctx, name === wanted.name ? wanted.sub : undefined));
  }
}

function exitWith(e: unknown): void {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode;
    return;
  }
  const err = e instanceof FlagError ? new BangerError('bad_request', e.message) : e;
  process.stderr.write(renderError(err, debug, command) + '\n');
  process.exitCode = exitCodeFor(err);
}

program.hook('preAction', (_program, action) => {
  const names: string[] = [];
  for (let c: { name(): string; parent: unknown } | null = action; c && c !== program; c = c.parent as typeof c) names.unshift(c.name());
  command = names.join(' ');
});

program.commands.forEach(function walk(c: Command<unknown[], Record<string, unknown>>) {
  c.exitOverride();
  c.commands.forEach((sub) => walk(sub as Command<unknown[], Record<string, unknown>>));
});

try {
  await program.parseAsync(process.argv);
} catch (e) {
  exitWith(e);
} finally {
  ctx.close();
}
