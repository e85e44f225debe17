/** banger kernel list|show|pull|delete: kernels from the signed catalog (config kernel_catalog_url). */
import { Command } from '@commander-js/extra-typings';
import { formatSize } from '../../model/sizes.js';
import { printJson, type CliContext } from '../context.js';
import { keyValues, table } from '../style.js';

export function kernelCommand(ctx: CliContext): Command {
  const kernel = new Command('kernel').description('kernels from the signed kernel catalog (config kernel_catalog_url): every file checked against it before use');

  kernel
    .command('list')
    .alias('ls')
    .description('the kernels pulled here; with --catalog, what the catalog offers')
    .option('--catalog', "list the catalog's kernels (its signature checked)")
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const banger = await ctx.banger();
      if (opts.catalog) {
        const entries = await banger.kernelCatalog();
        if (opts.json) return printJson(entries);
        const pulled = new Set((await banger.listKernels()).map((k) => k.name));
        if (entries.length === 0) return void process.stdout.write('the catalog lists no kernels\n');
        process.stdout.write(
          table(
            ['NAME', 'VERSION', 'ARCH', 'SIZE', 'PULLED', 'DESCRIPTION'],
            entries.map((e) => [e.name, e.version, e.arch, formatSize(e.files.reduce((n, f) => n + f.size, 0)), pulled.has(e.name) ? 'yes' : 'no', e.description ?? '']),
          ) + '\n',
        );
        return;
      }
      const kernels = await banger.listKernels();
      if (opts.json) return printJson(kernels);
      if (kernels.length === 0) return void process.stdout.write('no kernels pulled (`banger kernel list --catalog` shows what there is)\n');
      process.stdout.write(table(['NAME', 'VERSION', 'ARCH', 'PULLED', 'USED BY'], kernels.map((k) => [k.name, k.version, k.arch, k.pulledAt, k.usedBy.join(', ') || '-'])) + '\n');
    });

  kernel
    .command('show')
    .description('one pulled kernel')
    .argument('<name>')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const k = await (await ctx.banger()).showKernel(name);
      if (opts.json) return printJson(k);
      process.stdout.write(
        keyValues([
          ['name', k.name],
          ['version', k.version],
          ['arch', k.arch],
          ['kernel sha256', k.sha256.kernel],
          ['initrd sha256', k.sha256.initrd],
          ...(k.sha256.modules ? [['modules sha256', k.sha256.modules] as [string, string]] : []),
          ['from', k.source],
          ['used by', k.usedBy.join(', ') || 'nothing (it can be deleted)'],
          ['pulled', k.pulledAt],
          ['files', k.dir],
        ]) + '\n',
      );
    });

  kernel
    .command('pull')
    .description("download a kernel the catalog lists; the catalog's signature and each file's sha256 are checked before it appears")
    .argument('<name>', 'e.g. generic-6.12 (`banger kernel list --catalog`)')
    .option('--force', 'pull it again')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const k = await (await ctx.banger()).pullKernel(name, { force: opts.force === true });
      if (opts.json) return printJson(k);
      process.stdout.write(`pulled kernel ${k.name} ${k.version} (verified) into ${k.dir}\n`);
    });

  kernel
    .command('delete')
    .alias('rm')
    .description('delete a pulled kernel (refused while an image or VM uses it)')
    .argument('<name>')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const r = await (await ctx.banger()).deleteKernel(name);
      if (opts.json) return printJson(r);
      process.stdout.write(`deleted kernel ${r.deleted}\n`);
    });
  return kernel;
}
