/** banger daemon status|stop|socket — these never start the daemon. */
import { Command } from '@commander-js/extra-typings';
import { tryConnect } from '../../sdk/connect.js';
import { isBangerError } from '../../errors/errors.js';
import { readCmdline, readPidFile } from '../../system/proc.js';
import { printJson, type CliContext } from '../context.js';

export function daemonCommand(ctx: CliContext): Command {
  const daemon = new Command('daemon').description('the banger daemon (bangerd)');

  daemon
    .command('status')
    .description('is bangerd running, and where')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const c = await tryConnect(ctx.layout);
      if (!c) {
        if (opts.json) printJson({ running: false, socket: ctx.layout.socketPath });
        else process.stdout.write(`bangerd is not running (socket ${ctx.layout.socketPath}); it starts on first use\n`);
        process.exitCode = 3;
        return;
      }
      const s = await c.call('daemon.status', {});
      c.close();
      if (opts.json) return printJson({ running: true, ...s });
      process.stdout.write(
        [
          `bangerd ${s.version} running (pid ${s.pid}, up ${s.uptimeSeconds} s, protocol ${s.protocol})`,
          `socket   ${s.socket}`,
          `state    ${s.stateDir}`,
          `log      ${s.logFile}`,
          `vms      ${s.vms}`,
        ].join('\n') + '\n',
      );
    });

  daemon
    .command('stop')
    .description('stop bangerd (running VMs keep running and are re-adopted on next start)')
    .action(async () => {
      let pid: number;
      try {
        const c = await tryConnect(ctx.layout);
        if (!c) return void process.stdout.write('bangerd is not running\n');
        pid = (await c.call('daemon.status', {})).pid;
        await c.call('daemon.stop', {});
        c.close();
      } catch (e) {
        // A daemon of another protocol (an upgrade) refuses every request: it is stopped by its pid file.
        if (!(isBangerError(e) && e.code === 'bad_version')) throw e;
        const old = runningDaemonPid(ctx.layout.daemonPidFile);
        if (old === undefined) throw e;
        process.kill(old, 'SIGTERM');
        pid = old;
      }
      for (let i = 0; i < 100; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      process.stdout.write(`bangerd stopped (pid ${pid})\n`);
    });

  daemon
    .command('socket')
    .description("print the daemon's socket path")
    .action(() => {
      process.stdout.write(ctx.layout.socketPath + '\n');
    });

  return daemon;
}

/** The pid in bangerd's pid file when that process is a running bangerd (its argv names the daemon's main). */
function runningDaemonPid(pidFile: string): number | undefined {
  const pid = readPidFile(pidFile);
  if (pid === undefined) return undefined;
  const argv = readCmdline(pid) ?? [];
  return argv.some((a) => /(^|\/)(bangerd(\.js)?|daemon\/main\.js)$/.test(a)) ? pid : undefined;
}
