/** banger vm logs|stats|ports: read-only views of one VM. */
import type { Command } from '@commander-js/extra-typings';
import type { VmPort, VmStats } from '../../rpc/methods.js';
import { formatSize } from '../../model/sizes.js';
import { printJson, type CliContext } from '../context.js';
import { style, table } from '../style.js';

/** How often `vm logs -f` asks for new console output. */
const FOLLOW_POLL_MS = 500;

export function addInspectCommands(vm: Command, ctx: CliContext): void {
  vm.command('logs')
    .description("print a VM's serial console (kernel and boot messages); works for stopped VMs too")
    .argument('<name>')
    .option('-f, --follow', 'keep printing new output until Ctrl-C')
    .action(async (name, opts) => {
      const vm = (await ctx.banger()).vm(name);
      process.stdout.on('error', () => undefined); // EPIPE also reaches write()'s callback
      let offset = 0;
      for (;;) {
        const r = await vm.logs(offset);
        if (r.offset < offset) {
          // the daemon restarted from 0: the log was truncated by a new boot
          process.stderr.write(style.dim(`• ${name} booted again: the console starts over`, process.stderr) + '\n');
        }
        if (r.data && !(await write(r.data))) return; // stdout closed (| head)
        offset = r.offset;
        if (r.data && r.offset < r.size) continue; // more is there already
        if (!opts.follow) break;
        await new Promise((res) => setTimeout(res, FOLLOW_POLL_MS));
      }
    });

  vm.command('stats')
    .description('show CPU, memory, guest filesystem and host disk use of a running VM')
    .argument('<name>')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const s = await (await ctx.banger()).vm(name).stats();
      if (opts.json) return printJson(s);
      process.stdout.write(renderStats(s) + '\n');
    });

  vm.command('ports')
    .description('list the TCP and UDP sockets listening in a running VM, and where the host reaches them')
    .argument('<name>')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const ports = await (await ctx.banger()).vm(name).ports();
      if (opts.json) return printJson(ports);
      if (ports.length === 0) return void process.stdout.write(`nothing is listening in ${name}\n`);
      process.stdout.write(renderPorts(ports) + '\n');
    });
}

/** The `vm stats` table: one row per resource, USED of SIZE. */
export function renderStats(s: VmStats): string {
  const pct = (used: number, size: number) => (size > 0 ? `${Math.round((used / size) * 100)} %` : '-');
  const rows: string[][] = [
    ['cpu', `${s.cpuPercent.toFixed(1)} %`, `${s.vcpu} vCPU${s.vcpu === 1 ? '' : 's'}`, '', 'QEMU process, % of one host CPU'],
    ['memory', formatSize(s.memory.usedBytes), formatSize(s.memory.totalBytes), pct(s.memory.usedBytes, s.memory.totalBytes), 'guest, total - available'],
    ['host memory', formatSize(s.hostRssBytes), '', '', 'QEMU process resident memory on the host (VmRSS)'],
    ...s.filesystems.map((f) => [`fs ${f.mount}`, formatSize(f.usedBytes), formatSize(f.sizeBytes), pct(f.usedBytes, f.sizeBytes), 'guest filesystem']),
    ...s.disks.map((d) => [`disk ${d.name}`, formatSize(d.allocatedBytes), formatSize(d.virtualBytes), pct(d.allocatedBytes, d.virtualBytes), `host file, allocated of virtual: ${d.path}`]),
  ];
  return table(['RESOURCE', 'USED', 'SIZE', 'USE', 'WHAT'], rows);
}

/** The `vm ports` table; `-` where a value is unknown or the port is not forwarded. */
export function renderPorts(ports: VmPort[]): string {
  return table(
    ['PROTO', 'ADDRESS', 'PORT', 'PROCESS', 'HOST ENDPOINT'],
    ports.map((p) => [p.proto, p.address, String(p.port), p.process ?? '-', p.hostEndpoint ?? '-']),
  );
}

/** Writes to stdout, waiting for it to drain; false when the reader went away (EPIPE). */
function write(text: string): Promise<boolean> {
  return new Promise((resolve, reject) =>
    process.stdout.write(text, (e) => {
      if (!e) resolve(true);
      else if ((e as NodeJS.ErrnoException).code === 'EPIPE') resolve(false);
      else reject(e);
    }),
  );
}
