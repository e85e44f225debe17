/** banger vm run|list|show|delete|ssh */
import { Command, type OptionValues } from '@commander-js/extra-typings';
import { BangerError } from '../../errors/errors.js';
import { generateVmName, validateVmName } from '../../model/names.js';
import type { VmView } from '../../model/types.js';
import { RpcClient } from '../../rpc/client.js';
import { tryConnect } from '../connect.js';
import { parseIntFlag, printJson, type CliContext } from '../context.js';
import { style, table } from '../style.js';
import { addShellCommands, runInVm } from './vm-shell.js';
import { addLifecycleCommands, sizeFlag } from './vm-lifecycle.js';
import { addInspectCommands } from './vm-inspect.js';
import { formatSize } from '../../model/sizes.js';

export function vmCommand(ctx: CliContext): Command {
  const vm = new Command('vm').description('create, run and manage microVMs').enablePositionalOptions();

  specOptions(vm.command('run'))
    .description('create a VM, boot it, run CMD in it over SSH and exit with its exit code')
    .usage('[options] -- CMD [ARGS...]')
    .option('--rm', 'delete the VM and all its files when the command ends (Ctrl-C included)')
    .argument('[cmd...]', 'command to run in the guest (interactive shell when omitted)')
    .passThroughOptions()
    .action(async (cmd, opts) => {
      process.exitCode = await vmRun(ctx, cmd, opts);
    });

  vm.command('list')
    .alias('ls')
    .description('list VMs')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const vms = await (await ctx.daemon()).call('vm.list', {});
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
      const v = await (await ctx.daemon()).call('vm.show', { name });
      if (opts.json) return printJson(v);
      const rows: Array<[string, string]> = [
        ['name', v.name],
        ['id', v.id],
        ['state', v.state],
        ['image', v.image],
        ['vcpu', String(v.vcpu)],
        ['memory', `${v.memoryMib} MiB`],
        ['work disk', `${formatSize(v.diskBytes)} at /root`],
        ['root fs', formatSize(v.systemOverlayBytes)],
        ['network', `${v.network} (SSH forwarded to loopback)`],
        ['ephemeral', v.ephemeral ? 'yes (vm run --rm)' : 'no'],
        ['created', v.createdAt],
      ];
      if (v.runtime) {
        rows.push(['pid', String(v.runtime.pid)], ['accel', v.runtime.accel], ['ssh', `${v.runtime.sshHost}:${v.runtime.sshPort}`]);
      }
      if (v.lastError) rows.push(['last error', v.lastError]);
      process.stdout.write(rows.map(([k, val]) => `${k.padEnd(10)}  ${val}`).join('\n') + '\n');
    });

  vm.command('delete')
    .alias('rm')
    .description('delete VMs and every file of them (a running VM needs -f)')
    .argument('<name...>')
    .option('-f, --force', 'delete a running VM too')
    .action(async (names, opts) => {
      const c = await ctx.daemon();
      for (const name of names) {
        await c.call('vm.delete', { name, force: opts.force === true });
        process.stdout.write(`deleted ${name}\n`);
      }
    });

  specOptions(vm.command('create'))
    .description('create a VM (and boot it, unless --no-start)')
    .option('--no-start', 'create the disks but do not boot')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const name = opts.name !== undefined ? validateVmName(opts.name) : generateVmName();
      const started = Date.now();
      const res = await (await ctx.daemon()).call(
        'vm.create',
        { name, image: opts.image, vcpu: opts.vcpu, memoryMib: opts.memory, diskBytes: opts.diskSize, start: opts.start },
        (ev) => ctx.progress(ev),
      );
      if (opts.json) return printJson(res.vm);
      if (opts.start) process.stderr.write(style.dim(`• ${name} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`, process.stderr) + '\n');
      process.stdout.write(`${name} ${res.vm.state}${opts.start ? `: \`banger vm ssh ${name}\`` : `: \`banger vm start ${name}\``}\n`);
    });

  addShellCommands(vm, ctx);
  addLifecycleCommands(vm, ctx);
  addInspectCommands(vm, ctx);

  return vm;
}

/** The flags that describe a new VM, shared by vm run and vm create. */
function specOptions<A extends unknown[], O extends OptionValues>(c: Command<A, O>) {
  return c
    .option('--name <name>', 'VM name (a DNS label; generated when omitted)')
    .option('--vcpu <n>', 'virtual CPUs', parseIntFlag('--vcpu'))
    .option('--memory <mib>', 'memory in MiB', parseIntFlag('--memory'))
    .option('--disk-size <size>', 'persistent /root work disk size, e.g. 16G (default: disk_size in config)', sizeFlag('--disk-size'))
    .option('--image <name>', 'image to boot (default: bookworm, built on first use)');
}

function sshColumn(v: VmView): string {
  return v.runtime ? `${v.runtime.sshHost}:${v.runtime.sshPort}` : '-';
}

interface RunOpts {
  name?: string;
  vcpu?: number;
  memory?: number;
  diskSize?: number;
  image?: string;
  rm?: boolean;
}

async function vmRun(ctx: CliContext, cmd: string[], opts: RunOpts): Promise<number> {
  // Validate before anything is created; the daemon validates again.
  const name = opts.name !== undefined ? validateVmName(opts.name) : generateVmName();
  if (opts.vcpu !== undefined && opts.vcpu < 1) throw new BangerError('bad_request', `--vcpu must be at least 1 (got ${opts.vcpu})`);
  if (cmd.length === 0 && !process.stdin.isTTY) {
    throw new BangerError('bad_request', 'no command given and stdin is not a terminal', 'pass a command after --, e.g. `banger vm run --rm -- uname -a`');
  }
  const client = await ctx.daemon();
  const exec = new AbortController();
  let interrupted = false;
  let created = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) process.exit(130); // second Ctrl-C: leave now
    interrupted = true;
    process.stderr.write(`\n${style.warn('interrupted', process.stderr)} (${sig})${opts.rm ? `; removing VM ${name}…` : ''}\n`);
    exec.abort();
    if (opts.rm) void cleanupAfterInterrupt(ctx, client, name).finally(() => process.exit(130));
    else process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const started = Date.now();
    process.stderr.write(style.dim(`• creating VM ${name}`, process.stderr) + '\n');
    const res = await client.call(
      'vm.create',
      { name, image: opts.image, vcpu: opts.vcpu, memoryMib: opts.memory, diskBytes: opts.diskSize, ephemeral: opts.rm === true },
      (ev) => ctx.progress(ev),
    );
    created = true;
    process.stderr.write(style.dim(`• ${name} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`, process.stderr) + '\n');
    if (!res.ssh) throw new BangerError('internal', 'vm.create returned no SSH target for a started VM');
    const code = await runInVm(ctx, res.ssh, cmd, exec.signal);
    if (opts.rm) await client.call('vm.delete', { name, force: true });
    else process.stderr.write(style.dim(`• ${name} is still running: \`banger vm ssh ${name}\`; \`banger vm delete -f ${name}\` removes it`, process.stderr) + '\n');
    return code;
  } catch (e) {
    if (interrupted) return new Promise<number>(() => undefined); // the signal handler exits
    if (opts.rm && created) await client.call('vm.delete', { name, force: true }).catch(() => undefined);
    throw e;
  } finally {
    if (!interrupted) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}

/**
 * Ctrl-C during `vm run --rm`: closing our connection makes the daemon
 * abort the boot and remove the ephemeral VM; we wait for that on a second
 * connection so the VM is gone when we exit.
 */
async function cleanupAfterInterrupt(ctx: CliContext, client: RpcClient, name: string): Promise<void> {
  client.close();
  try {
    const c2 = await tryConnect(ctx.layout);
    if (!c2) return;
    try {
      await c2.call('vm.delete', { name, force: true });
    } catch {
      /* already removed by the daemon: fine */
    }
    // The delete may have raced the daemon's own cleanup: wait until the row is gone.
    for (let i = 0; i < 100; i++) {
      const vms = await c2.call('vm.list', {});
      if (!vms.some((v) => v.name === name)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    c2.close();
  } catch {
    /* best effort: the daemon removes ephemeral VMs on its own */
  }
}
