/** banger image build|pull|import|prune|list|show|snapshot|delete */
import { Command } from '@commander-js/extra-typings';
import { resolve } from 'node:path';
import { formatSize } from '../../model/sizes.js';
import { parseIntFlag, printJson, type CliContext } from '../context.js';
import { table, keyValues } from '../style.js';

/** "5 min", "3 h", "2 d": how long ago an ISO time was. */
function age(iso: string): string {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (!Number.isFinite(s)) return '-';
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 129600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

/** A reference short enough for a table: a digest is cut to 12 hex digits (image show has it whole). */
function shortRef(ref: string): string {
  return ref.replace(/@sha256:([0-9a-f]{12})[0-9a-f]{52}/, '@sha256:$1');
}

export function imageCommand(ctx: CliContext): Command {
  const image = new Command('image').description('build and manage VM images');

  image
    .command('build')
    .description('build a Debian image (mmdebstrap, with its own kernel and initrd): by default bookworm with development tools')
    .argument('[name]', 'image name', 'bookworm')
    .option('--force', 'rebuild even if it exists')
    .option('--no-tuning', "keep Debian's stock boot (no masked units or trimmed SSH login): slower; for comparing boots")
    .option('--suite <suite>', 'Debian suite: bookworm (default) or trixie')
    .option('--packages <list>', 'more Debian packages, comma-separated (e.g. ripgrep,postgresql-client)')
    .option('--minimal', 'only what banger needs in a guest: no compilers, make, python3, curl (the `minimal` image)')
    .option('--from <image>', 'start from this image (Debian family) and add --packages, in a build VM')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const started = Date.now();
      const packages = opts.packages === undefined ? undefined : opts.packages.split(',').map((p) => p.trim()).filter((p) => p !== '');
      const img = await (await ctx.banger()).buildImage(name, { force: opts.force === true, tuned: opts.tuning !== false, suite: opts.suite, minimal: opts.minimal === true, packages, from: opts.from });
      if (opts.json) return printJson(img);
      process.stdout.write(`built ${img.name} (kernel ${img.kernelVersion}, ${formatSize(img.rootfsBytes)}) in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    });

  image
    .command('pull')
    .description('pull an OCI image from a registry (Docker Hub, ghcr.io, a private or local one), or an image bundle from an http(s) URL, and make it a banger image')
    .argument('<ref>', 'image reference, e.g. debian:bookworm, docker.io/library/ubuntu:24.04, 127.0.0.1:5000/team/app:1.2; or https://…/x.bundle')
    .option('--name <name>', 'image name (default: from the reference, debian:bookworm → debian-bookworm)')
    .option('--platform <os/arch>', 'platform to pick from a multi-platform image', 'linux/amd64')
    .option('--insecure', 'allow plain HTTP to a registry that is not on a loopback address')
    .option('--force', 'replace an image of that name')
    .option('--pubkey-file <pem>', "a bundle URL: check its signature with this public key instead of banger's")
    .option('--kernel <name>', "boot this kernel from the kernel catalog (pulled when missing) instead of banger's")
    .option('--json', 'machine-readable output')
    .action(async (ref, opts) => {
      const started = Date.now();
      const img = await (await ctx.banger()).pullImage(ref, { name: opts.name, platform: opts.platform, insecure: opts.insecure === true, force: opts.force === true, pubkey: opts.pubkeyFile ? resolve(opts.pubkeyFile) : undefined, kernel: opts.kernel });
      if (opts.json) return printJson(img);
      process.stdout.write(`pulled ${img.name} from ${img.sourceRef} (${formatSize(img.rootfsBytes)}) in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    });

  image
    .command('import')
    .description('import an image bundle (`image export`), an OCI image layout or a `docker save` archive (directory or tar, gzip or zstd) without a registry')
    .argument('<file>', 'e.g. app.tar from `docker save app -o app.tar`, or an `skopeo copy ... oci-archive:` file')
    .option('--name <name>', 'image name (default: the file name without its extensions)')
    .option('--platform <os/arch>', 'platform to pick from a multi-platform archive', 'linux/amd64')
    .option('--force', 'replace an image of that name')
    .option('--pubkey-file <pem>', "check a signed bundle with this public key instead of banger's")
    .option('--kernel <name>', "boot this kernel from the kernel catalog (pulled when missing) instead of banger's")
    .option('--json', 'machine-readable output')
    .action(async (file, opts) => {
      const started = Date.now();
      const img = await (await ctx.banger()).importImage(resolve(file), { name: opts.name, platform: opts.platform, force: opts.force === true, pubkey: opts.pubkeyFile ? resolve(opts.pubkeyFile) : undefined, kernel: opts.kernel });
      if (opts.json) return printJson(img);
      process.stdout.write(`imported ${img.name} from ${img.sourceRef} (${formatSize(img.rootfsBytes)}) in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    });

  image
    .command('export')
    .description('write an image as a bundle: one tar of its files by sha256 and a manifest pinning them (signed with --sign); `image import` reads it back, checked')
    .argument('<name>')
    .requiredOption('-o, --output <file>', 'the bundle file to write (must not exist)')
    .option('--sign <key.pem>', 'sign the manifest with this ECDSA P-256 private key (PEM)')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const r = await (await ctx.banger()).exportImage(name, resolve(opts.output), { sign: opts.sign ? resolve(opts.sign) : undefined });
      if (opts.json) return printJson(r);
      process.stdout.write(`wrote ${r.path} (${formatSize(r.bytes)}, ${r.signed ? 'signed' : 'unsigned'}): bundle ${r.digest}\n`);
    });

  image
    .command('prune')
    .description('drop cached layers (OCI blobs) that no pulled image names; images themselves are untouched')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const r = await (await ctx.banger()).pruneImages();
      if (opts.json) return printJson(r);
      process.stdout.write(`removed ${r.removed} cached blob(s), ${formatSize(r.bytes)}; ${r.kept} kept for pulled images\n`);
    });

  image
    .command('list')
    .alias('ls')
    .description('list images')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const imgs = await (await ctx.banger()).listImages();
      if (opts.json) return printJson(imgs);
      if (imgs.length === 0) return void process.stdout.write('no images (the default one is built on first `banger vm run`, or with `banger image build`)\n');
      process.stdout.write(
        table(
          ['NAME', 'SOURCE', 'REFERENCE', 'KERNEL', 'SIZE', 'CREATED'],
          imgs.map((i) => [i.name, i.sourceKind, shortRef(i.sourceRef), i.kernelVersion, formatSize(i.rootfsBytes), i.createdAt]),
        ) + '\n',
      );
    });

  image
    .command('show')
    .description('show one image')
    .argument('<name>')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const i = await (await ctx.banger()).showImage(name);
      if (opts.json) return printJson(i);
      const rows: Array<[string, string]> = [
        ['name', i.name],
        ['source', i.source],
        ['source kind', i.sourceKind],
        ['reference', i.sourceRef],
        ['kernel', i.kernel ? `${i.kernelVersion} (catalog kernel ${i.kernel})` : i.kernelVersion],
        ['size', formatSize(i.rootfsBytes)],
        ['packages', i.packages.join(', ')],
        ['created', i.createdAt],
      ];
      process.stdout.write(keyValues(rows) + '\n');
      if (i.snapshots.length === 0) {
        process.stdout.write('snapshots: none (made after the first create of a shape, or with `banger image snapshot`)\n');
        return;
      }
      process.stdout.write('snapshots:\n');
      process.stdout.write(
        table(
          ['KEY', 'VCPU', 'MEMORY', 'SIZE', 'AGE', 'STATUS'],
          i.snapshots.map((s) => [
            s.key,
            s.vcpu > 0 ? String(s.vcpu) : '-',
            s.memoryMib > 0 ? `${s.memoryMib} MiB` : '-',
            formatSize(s.bytes),
            s.createdAt ? age(s.createdAt) : '-',
            s.current ? 'current' : `stale: ${s.reason ?? 'unknown'}`,
          ]),
        ) + '\n',
      );
    });

  image
    .command('snapshot')
    .description('make (or remake) the snapshot new VMs of this image and shape start from as warm clones')
    .argument('[name]', 'image name', 'bookworm')
    .option('--vcpu <n>', 'virtual CPUs of the shape (default: vcpu in config)', parseIntFlag('--vcpu'))
    .option('--memory <mib>', 'memory in MiB of the shape (default: memory_mib in config)', parseIntFlag('--memory'))
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const started = Date.now();
      const s = await (await ctx.banger()).snapshotImage(name, { vcpu: opts.vcpu, memoryMib: opts.memory });
      if (opts.json) return printJson(s);
      process.stdout.write(`snapshot ${s.key} of ${name}: ${formatSize(s.bytes)}, made in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    });

  image
    .command('delete')
    .alias('rm')
    .description('delete an image (refused while a VM uses it)')
    .argument('<name>')
    .option('--json', 'machine-readable output: {deleted}')
    .action(async (name, opts) => {
      const r = await (await ctx.banger()).deleteImage(name);
      if (opts.json) return printJson(r);
      process.stdout.write(`deleted ${name}\n`);
    });

  return image;
}
