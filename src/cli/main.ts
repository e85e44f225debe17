/** banger: the CLI. Parses, calls the daemon, renders. */
import { Command, CommanderError } from '@commander-js/extra-typings';
import { BangerError } from '../errors/errors.js';
import { VERSION } from '../version.js';
import { createContext, FlagError } from './context.js';
import { renderError, exitCodeFor } from './render-error.js';
import { vmCommand } from './commands/vm.js';
import { imageCommand } from './commands/image.js';
import { daemonCommand } from './commands/daemon.js';
import { doctorCommand } from './commands/doctor.js';
import { sshConfigCommand } from './commands/ssh-config.js';
import { networkCommand } from './commands/network.js';
import { systemCommand } from './commands/system.js';

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

program.addCommand(vmCommand(ctx));
program.addCommand(imageCommand(ctx));
program.addCommand(daemonCommand(ctx));
program.addCommand(doctorCommand(ctx));
program.addCommand(sshConfigCommand(ctx));
program.addCommand(networkCommand(ctx));
program.addCommand(systemCommand(ctx));

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
