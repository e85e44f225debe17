/**
 * The kernel stage of an image: which kernel a root tree carries, and its
 * small initrd (MODULES=list) that can mount root on virtio-blk over
 * virtio-mmio (QEMU microvm).
 */
import { copyFileSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import type { RunOptions, RunResult } from '../system/runner.js';
import { toolPath } from '../system/which.js';
import type { KernelStage, StageContext } from './pipeline.js';
import { resolveInRoot } from './tree.js';
import { KERNEL_FILES, type LocalKernel } from './kernels.js';
import { applyLayer } from './oci/layers.js';
import { fileCompression } from './oci/decompress.js';
import { LAYER_MEDIA_TYPES } from './oci/manifest.js';

/**
 * Modules the initrd must carry (unless built in) to mount root on
 * virtio-blk over virtio-mmio (QEMU microvm); virtio_pci too, so the image
 * also boots on a PCI machine. The initrd is built with MODULES=list.
 */
export const INITRD_MODULES = ['virtio_mmio', 'virtio_pci', 'virtio_blk', 'ext4'];

/** Picks the (newest) kernel in /boot that has its modules in /lib/modules. */
export function findKernelVersion(rootDir: string): string {
  const boot = join(rootDir, 'boot');
  const versions = readdirSync(boot)
    .filter((f) => f.startsWith('vmlinuz-'))
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => existsSync(join(boot, `initrd.img-${v}`)) && existsSync(join(modulesDir(rootDir), v)))
    .sort(compareVersions);
  const v = versions.at(-1);
  if (!v) {
    throw new BangerError(
      'operation_failed',
      `no kernel with an initrd and modules in ${boot}`,
      'the linux-image-cloud-amd64 install failed; see the mmdebstrap output',
    );
  }
  return v;
}

/** /lib/modules of the rootfs, without following an absolute /lib symlink out of it. */
export function modulesDir(rootDir: string): string {
  try {
    if (lstatSync(join(rootDir, 'lib')).isSymbolicLink()) return join(rootDir, 'usr/lib/modules');
  } catch {
    /* no /lib */
  }
  return join(rootDir, 'lib/modules');
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = Number(x);
    const ny = Number(y);
    const c = Number.isInteger(nx) && Number.isInteger(ny) && x !== '' && y !== '' ? nx - ny : x.localeCompare(y);
    if (c !== 0) return c;
  }
  return 0;
}

/**
 * Regenerates the initrd inside the rootfs (chroot + update-initramfs: the
 * only step that runs a program inside it; it needs no /proc or /dev mounts)
 * with the small MODULES=list configuration, then checks that it carries
 * the modules needed to mount root (or that they are built into the kernel).
 */
export async function ensureInitrd(
  run: (argv: string[], opts?: RunOptions) => Promise<RunResult>,
  rootDir: string,
  kernelVersion: string,
  progress: (stage: string, message: string) => void,
): Promise<void> {
  const chrootEnv = { ...process.env, LC_ALL: 'C.UTF-8', PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
  const builtin = builtinModules(rootDir, kernelVersion);
  const needed = INITRD_MODULES.filter((m) => !builtin.has(m));
  const missing = async () => {
    const listed = await run([toolPath('chroot'), rootDir, 'lsinitramfs', `/boot/initrd.img-${kernelVersion}`], {
      timeoutMs: 5 * 60 * 1000,
      env: chrootEnv,
    });
    const names = new Set(
      listed.stdout
        .split('\n')
        .map((l) => /\/([^/]+)\.ko(\.[a-z]+)?$/.exec(l.trim())?.[1])
        .filter((m): m is string => m !== undefined)
        .map((m) => m.replace(/-/g, '_')),
    );
    return needed.filter((m) => !names.has(m));
  };
  progress('initrd', `update-initramfs (root on microvm needs: ${INITRD_MODULES.join(', ')})`);
  await run([toolPath('chroot'), rootDir, 'update-initramfs', '-u', '-k', kernelVersion], {
    timeoutMs: 15 * 60 * 1000,
    env: chrootEnv,
  });
  const lacking = await missing();
  if (lacking.length > 0) {
    throw new BangerError(
      'operation_failed',
      `the image's initrd lacks ${lacking.join(', ')}`,
      'a VM could not mount its root disk; check /etc/initramfs-tools in the build',
    );
  }
  const builtinNote = INITRD_MODULES.filter((m) => builtin.has(m));
  progress('initrd', `initrd has ${needed.join(', ')}${builtinNote.length ? ` (built in: ${builtinNote.join(', ')})` : ''}`);
}

function builtinModules(rootDir: string, kernelVersion: string): Set<string> {
  const file = join(modulesDir(rootDir), kernelVersion, 'modules.builtin');
  const out = new Set<string>();
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /([^/]+)\.ko$/.exec(line.trim());
    if (m?.[1]) out.add(m[1].replace(/-/g, '_'));
  }
  return out;
}

/** The tree's own kernel (the Debian build): its newest kernel, with the small initrd made inside the tree. */
export function treeKernel(): KernelStage {
  return {
    kind: 'tree',
    async install(ctx: StageContext): Promise<string> {
      const kernelVersion = findKernelVersion(ctx.rootDir);
      ctx.progress('kernel', `kernel ${kernelVersion}`);
      await ensureInitrd(ctx.run, ctx.rootDir, kernelVersion, ctx.progress);
      ctx.checkAbort();
      copyFileSync(join(ctx.rootDir, 'boot', `vmlinuz-${kernelVersion}`), join(ctx.stageDir, 'vmlinuz'));
      copyFileSync(join(ctx.rootDir, 'boot', `initrd.img-${kernelVersion}`), join(ctx.stageDir, 'initrd.img'));
      return kernelVersion;
    },
  };
}

/** A kernel version as banger accepts it (it ends up in paths and in a debugfs command). */
const KERNEL_VERSION = /^[0-9][A-Za-z0-9._+-]{0,127}$/;

/**
 * banger's kernel, for an image without one of its own (pulled, imported):
 * vmlinuz and initrd.img copied from an image banger built (the default
 * one), and that kernel's /lib/modules copied from its rootfs (debugfs
 * rdump: no mount, no root needed) into the tree, so udev in the guest
 * finds virtio_console, virtio_net and the rest.
 */
export function bangerKernel(from: { dir: string; kernelVersion: string }): KernelStage {
  return {
    kind: 'banger',
    async install(ctx: StageContext): Promise<string> {
      const kver = from.kernelVersion;
      if (!KERNEL_VERSION.test(kver)) throw new BangerError('internal', `kernel version ${JSON.stringify(kver)} is not valid`);
      ctx.progress('kernel', `banger's kernel ${kver} (from ${from.dir}), its modules added to the image`);
      copyFileSync(join(from.dir, 'vmlinuz'), join(ctx.stageDir, 'vmlinuz'));
      copyFileSync(join(from.dir, 'initrd.img'), join(ctx.stageDir, 'initrd.img'));
      const target = resolveInRoot(ctx.rootDir, `lib/modules/${kver}`);
      rmSync(target, { recursive: true, force: true });
      mkdirSync(dirname(target), { recursive: true, mode: 0o755 });
      const rootfs = join(from.dir, 'rootfs.ext4');
      // debugfs reports a missing path on stderr and still exits 0: look for the result.
      for (const src of [`/usr/lib/modules/${kver}`, `/lib/modules/${kver}`]) {
        await ctx.run([toolPath('debugfs'), '-R', `rdump ${src} ${dirname(target)}`, rootfs], { timeoutMs: 10 * 60 * 1000 });
        if (existsSync(join(target, 'modules.dep'))) break;
      }
      if (!existsSync(join(target, 'modules.dep'))) {
        throw new BangerError('operation_failed', `the modules of kernel ${kver} are not in ${rootfs}`, `rebuild the default image (\`banger image build --force\`) and pull again`);
      }
      return kver;
    },
  };
}

/**
 * A kernel from the catalog (`image pull --kernel NAME`), pulled and checked
 * by src/images/kernels.ts: vmlinuz and initrd.img copied into the image,
 * and its modules archive, when it has one, applied to the tree's
 * /lib/modules with the layer applier (hostile names refused, nothing
 * written through a symlink). Without one the kernel must have the guest's
 * drivers built in.
 */
export function catalogKernel(k: LocalKernel): KernelStage {
  return {
    kind: 'catalog',
    catalog: k.name,
    async install(ctx: StageContext): Promise<string> {
      const kver = k.version;
      copyFileSync(join(k.dir, KERNEL_FILES.kernel), join(ctx.stageDir, 'vmlinuz'));
      copyFileSync(join(k.dir, KERNEL_FILES.initrd), join(ctx.stageDir, 'initrd.img'));
      if (k.sha256.modules === undefined) {
        ctx.progress('kernel', `kernel ${k.name} (${kver}) from the catalog; it has no modules archive: its drivers must be built in`);
        return kver;
      }
      if (!KERNEL_VERSION.test(kver)) {
        throw new BangerError('operation_failed', `kernel ${k.name}: its version ${JSON.stringify(kver.slice(0, 64))} is not a kernel release, and its modules are named by it`, 'the catalog entry\'s version must be the kernel\'s `uname -r`');
      }
      ctx.progress('kernel', `kernel ${k.name} (${kver}) from the catalog, its modules added to the image`);
      const modulesDir = resolveInRoot(ctx.rootDir, 'lib/modules');
      rmSync(join(modulesDir, kver), { recursive: true, force: true });
      mkdirSync(modulesDir, { recursive: true, mode: 0o755 });
      const archive = join(k.dir, KERNEL_FILES.modules);
      const compression = await fileCompression(archive);
      // The OCI media type of that compression: applyLayer takes the archive as a layer.
      const mediaType = Object.keys(LAYER_MEDIA_TYPES).find((t) => t.startsWith('application/vnd.oci.') && LAYER_MEDIA_TYPES[t] === compression)!;
      await applyLayer(modulesDir, { path: archive, mediaType, digest: `sha256:${k.sha256.modules}` }, { signal: ctx.signal, maxBytes: 4 * 1024 ** 3 });
      if (!existsSync(join(modulesDir, kver, 'modules.dep'))) {
        throw new BangerError('operation_failed', `kernel ${k.name}: its modules archive has no ${kver}/modules.dep`, 'its entries must be named VERSION/... (the modules directory of that kernel release, after depmod)');
      }
      return kver;
    },
  };
}
