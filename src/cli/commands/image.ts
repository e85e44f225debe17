/** banger image build|list|show|delete */
import { Command } from '@commander-js/extra-typings';
import { formatSize } from '../../model/sizes.js';
import { printJson, type CliContext } from '../context.js';
import { table, keyValues } from '../style.js';

export function imageCommand(ctx: CliContext): Command {
  const image = new Command('image').description('build and manage VM images');

  image
    .command('build')
    .description('build the default Debian bookworm image (mmdebstrap, with its own kernel and initrd)')
    .argument('[name]', 'image name', 'bookworm')
    .option('--force', 'rebuild even if it exists')
    .action(async (name, opts) => {
      const started = Date.now();
      const img = await (await ctx.daemon()).call('image.build', { name, force: opts.force === true }, (ev) => ctx.progress(ev));
      process.stdout.write(`built ${img.name} (kernel ${img.kernelVersion}, ${formatSize(img.rootfsBytes)}) in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    });

  image
    .command('list')
    .alias('ls')
    .description('list images')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const imgs = await (await ctx.daemon()).call('image.list', {});
      if (opts.json) return printJson(imgs);
      if (imgs.length === 0) return void process.stdout.write('no images (the default one is built on first `banger vm run`, or with `banger image build`)\n');
      process.stdout.write(table(['NAME', 'KERNEL', 'SIZE', 'CREATED'], imgs.map((i) => [i.name, i.kernelVersion, formatSize(i.rootfsBytes), i.createdAt])) + '\n');
    });

  image
    .command('show')
    .description('show one image')
    .argument('<name>')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const i = await (await ctx.daemon()).call('image.show', { name });
      if (opts.json) return printJson(i);
      const rows: Array<[string, string]> = [
        ['name', i.name],
        ['source', i.source],
        ['kernel', i.kernelVersion],
        ['size', formatSize(i.rootfsBytes)],
        ['packages', i.packages.join(', ')],
        ['created', i.createdAt],
      ];
      process.stdout.write(keyValues(rows) + '\n');
    });

  image
    .command('delete')
    .alias('rm')
    .description('delete an image (refused while a VM uses it)')
    .argument('<name>')
    .action(async (name) => {
      await (await ctx.daemon()).call('image.delete', { name });
      process.stdout.write(`deleted ${name}\n`);
    });

  return image;
}
