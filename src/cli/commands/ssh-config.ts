/**
 * banger ssh-config --install|--uninstall|--status, and the hidden
 * `vm ssh-proxy NAME.vm` it names as ProxyCommand: plain `ssh NAME.vm`
 * reaches the VM wherever its sshd is (a forwarded loopback port in user
 * networking, the guest IP on a bridge), pinned by banger's known_hosts.
 */
import { Command } from '@commander-js/extra-typings';
import { connect } from 'node:net';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { BangerError } from '../../errors/errors.js';
import { vmNameProblem } from '../../model/names.js';
import { configTarget, installSshConfig, sshConfigState, uninstallSshConfig, type SshConfigPaths } from '../../guest/ssh-config.js';
import { printJson, type CliContext } from '../context.js';

export function sshConfigPaths(ctx: CliContext): SshConfigPaths {
  const home = process.env.HOME && process.env.HOME.length > 0 ? process.env.HOME : homedir();
  return {
    userConfig: join(home, '.ssh', 'config'),
    bangerConfig: join(ctx.layout.sshDir, 'ssh_config'),
    createdMarker: join(ctx.layout.sshDir, 'ssh_config.created-user-config'),
    privateKey: ctx.layout.sshKey,
    knownHosts: ctx.layout.knownHosts,
    proxyCommand: [process.execPath, resolve(process.argv[1] ?? 'banger'), 'vm', 'ssh-proxy', '%n'],
  };
}

export function sshConfigCommand(ctx: CliContext): Command {
  return new Command('ssh-config')
    .description('let plain `ssh NAME.vm` reach banger VMs (one Include line in ~/.ssh/config)')
    .option('--install', 'add the Include line (idempotent; your own lines are never touched)')
    .option('--uninstall', 'remove it again (the file is left as it was before --install)')
    .option('--json', 'machine-readable status')
    .action((opts) => {
      const p = sshConfigPaths(ctx);
      if (opts.install && opts.uninstall) throw new BangerError('bad_request', '--install and --uninstall cannot be combined');
      // A symlinked ~/.ssh/config (dotfile managers) is edited at its target; the link stays.
      const target = configTarget(p.userConfig);
      const where = target === p.userConfig ? p.userConfig : `${p.userConfig} (a link to ${target})`;
      if (opts.install) {
        const changed = installSshConfig(p);
        process.stdout.write(changed ? `added \`Include ${p.bangerConfig}\` to ${where}; try \`ssh NAME.vm\`\n` : `already installed in ${where} (refreshed ${p.bangerConfig})\n`);
        return;
      }
      if (opts.uninstall) {
        const changed = uninstallSshConfig(p);
        process.stdout.write(changed ? `removed banger's Include line from ${where}\n` : 'not installed: nothing to remove\n');
        return;
      }
      const state = sshConfigState(p);
      if (opts.json) return printJson({ state, userConfig: p.userConfig, bangerConfig: p.bangerConfig });
      process.stdout.write(`${state} (${p.userConfig}); \`banger ssh-config --install\` adds it\n`);
    });
}

/** ProxyCommand target: pipes stdin/stdout to NAME's sshd. */
export function addSshProxyCommand(vm: Command, ctx: CliContext): void {
  vm.command('ssh-proxy', { hidden: true })
    .argument('<host>', 'NAME.vm (what ssh was asked to reach)')
    .action(async (host) => {
      const name = host.endsWith('.vm') ? host.slice(0, -3) : host;
      const problem = vmNameProblem(name);
      if (problem) throw new BangerError('bad_request', `${host}: ${problem}`);
      const t = await (await ctx.banger()).vm(name).sshTarget();
      ctx.close();
      await new Promise<void>((res, rej) => {
        const sock = connect({ host: t.host, port: t.port }, () => {
          process.stdin.pipe(sock);
          sock.pipe(process.stdout);
        });
        sock.on('error', (e) => rej(new BangerError('unavailable', `cannot reach ${host} at ${t.host}:${t.port}: ${e.message}`)));
        sock.on('close', () => res());
      });
    });
}
