/** banger vm start|stop|restart|kill|set|commit|prune */
import { Command, Option } from '@commander-js/extra-typings';
import { BangerError } from '../../errors/errors.js';
import { parseSize } from '../../model/sizes.js';
import { DISK_SIZE_HINT, diskSizeProblem } from '../../model/limits.js';
import { KILL_SIGNALS } from '../../model/types.js';
import { parseIntFlag, printJson, type CliContext } from '../context.js';
import { style, table } from '../style.js';

export function sizeFlag(flag: string) {
  return (value: string): number => parseSize(value, flag);
}

/** A work disk size flag: a size, within the bounds the daemon enforces too (src/model/limits.ts). */
export function diskSizeFlag(flag: string) {
  return (value: string): number => {
    const bytes = parseSize(value, flag);
    const problem = diskSizeProblem(bytes);
    if (problem !== undefined) throw new BangerError('bad_request', `${flag} ${problem}`, DISK_SIZE_HINT);
    return bytes;
  };
}

export function addLifecycleCommands(vm: Command, ctx: CliContext): void {
  vm.command('start')
    .description('boot a stopped VM (its /root work disk and root filesystem are kept)')
    .argument('<name>')
    .option('--json', 'machine-readable output: {vm, ssh, bootMs, clonedFrom}')
    .action(async (name, opts) => {
      const started = Date.now();
      const r = await (await ctx.banger()).vm(name).start();
      if (opts.json) return printJson(r);
      ready(name, started, r.bootMs);
    });

  vm.command('stop')
    .description('stop a VM gracefully: sync, power off, wait (bounded), then kill')
    .argument('<name...>')
    .option('--json', 'machine-readable output: [{vm, report}], one per NAME')
    .action(async (names, opts) => {
      const banger = await ctx.banger();
      const done = [];
      for (const name of names) {
        const r = await banger.vm(name).stop();
        done.push(r);
        if (opts.json) continue;
        const { report } = r;
        const how = report.ended === 'already gone' ? 'was not running' : `${report.ended === 'exited' ? 'powered off' : `killed (${report.ended})`}${report.synced ? ', guest synced' : ''}`;
        process.stdout.write(`stopped ${name} (${how}) in ${(report.ms / 1000).toFixed(1)} s\n`);
      }
      if (opts.json) printJson(done);
    });

  vm.command('restart')
    .description('reboot a VM for real (stop keeping writes, then start; its boot_id changes)')
    .argument('<name>')
    .option('--json', 'machine-readable output: {vm, ssh, bootMs, clonedFrom}')
    .action(async (name, opts) => {
      const started = Date.now();
      const r = await (await ctx.banger()).vm(name).restart();
      if (opts.json) return printJson(r);
      ready(name, started, r.bootMs);
    });

  vm.command('kill')
    .description('stop a VM forcefully by signalling QEMU (no guest sync); it ends stopped')
    .argument('<name>')
    .addOption(new Option('--signal <sig>', 'signal for QEMU').choices(KILL_SIGNALS).default('KILL' as const))
    .option('--json', 'machine-readable output: the VM')
    .action(async (name, opts) => {
      const v = await (await ctx.banger()).vm(name).kill(opts.signal);
      if (opts.json) return printJson(v);
      process.stdout.write(`killed ${name} (SIG${opts.signal}); state ${v.state}\n`);
    });

  vm.command('set')
    .description('change a stopped VM: vCPUs, memory, or grow its /root work disk')
    .argument('<name>')
    .option('--vcpu <n>', 'virtual CPUs', parseIntFlag('--vcpu'))
    .option('--memory <mib>', 'memory in MiB', parseIntFlag('--memory'))
    .option('--disk-size <size>', 'work disk size, e.g. 16G (grow only, at most 2 TiB)', diskSizeFlag('--disk-size'))
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      if (opts.vcpu === undefined && opts.memory === undefined && opts.diskSize === undefined) {
        throw new BangerError('bad_request', 'vm set needs at least one of --vcpu, --memory, --disk-size');
      }
      const v = await (await ctx.banger()).vm(name).set({ vcpu: opts.vcpu, memoryMib: opts.memory, diskBytes: opts.diskSize });
      if (opts.json) return printJson(v);
      process.stdout.write(`${name}: ${v.vcpu} vCPU, ${v.memoryMib} MiB, work disk ${v.diskBytes} bytes\n`);
    });

  vm.command('commit')
    .description("make a stopped VM's root disk an image (its /root work disk stays out; SSH host keys and machine-id are removed)")
    .argument('<name>', 'the VM (stopped)')
    .argument('<image>', 'name of the new image')
    .option('--force', 'replace an image of that name')
    .option('--json', 'machine-readable output')
    .action(async (name, image, opts) => {
      const started = Date.now();
      const img = await (await ctx.banger()).vm(name).commit(image, { force: opts.force === true });
      if (opts.json) return printJson(img);
      process.stdout.write(`committed ${name} as image ${img.name} in ${((Date.now() - started) / 1000).toFixed(0)} s: \`banger vm run --image ${img.name} ...\`\n`);
    });

  vm.command('prune')
    .description('delete every VM that is not running (asks first unless -f)')
    .option('-f, --force', 'do not ask')
    .option('--json', 'machine-readable output: {removed, skipped, candidates} (needs -f)')
    .action(async (opts) => {
      if (opts.json && !opts.force) throw new BangerError('bad_request', '--json cannot ask for a confirmation', 'add -f');
      const banger = await ctx.banger();
      const { candidates } = await banger.pruneVms({ dryRun: true });
      if (opts.json && candidates.length === 0) return printJson({ removed: [], skipped: [], candidates });
      if (candidates.length === 0) return void process.stdout.write('nothing to prune: every VM is running\n');
      if (opts.json) return printJson(await banger.pruneVms({ names: candidates }));
      const vms = (await banger.listVms()).filter((v) => candidates.includes(v.name));
      process.stdout.write(`${table(['NAME', 'STATE', 'IMAGE', 'CREATED'], vms.map((v) => [v.name, v.state, v.image, v.createdAt]))}\n`);
      if (!opts.force) {
        if (!process.stdin.isTTY) {
          throw new BangerError('bad_request', `vm prune would delete ${candidates.length} VM(s) and needs a confirmation`, 'run it in a terminal, or pass -f');
        }
        // readline on first use (process.getBuiltinModule): every vm command loads this module, few ask.
        const rl = process.getBuiltinModule('node:readline/promises').createInterface({ input: process.stdin, output: process.stdout });
        const answer = await rl.question(`delete these ${candidates.length} VM(s)? [y/N] `);
        rl.close();
        if (!/^y(es)?$/i.test(answer.trim())) return void process.stdout.write('nothing deleted\n');
      }
      const r = await banger.pruneVms({ names: candidates });
      for (const n of r.removed) process.stdout.write(`deleted ${n}\n`);
      for (const n of r.skipped) process.stdout.write(`${style.warn('kept', process.stdout)} ${n} (it started meanwhile)\n`);
    });
}

function ready(name: string, started: number, bootMs: number): void {
  if (bootMs === 0) process.stderr.write(`${name} is already running\n`);
  else process.stderr.write(style.dim(`• ${name} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`, process.stderr) + '\n');
}
