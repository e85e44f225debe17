/**
 * `banger vm commit VM IMAGE`: a stopped VM's root disk becomes an image.
 * The VMM driver flattens the VM's overlay (with the image under it) into
 * one raw ext4; what must differ per VM is scrubbed from it with
 * `debugfs -w` (no mount, no root): the SSH host keys (each VM gets its own
 * from the daemon), the machine-id (emptied: systemd makes one at boot),
 * the random seed. The work disk (/root) is a separate disk and never part
 * of the image. The kernel and initrd are the VM's image's; the result is
 * published atomically like every image (publish.ts).
 */
import { copyFileSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { messageOf } from '../errors/errors.js';
import type { Runner } from '../system/runner.js';
import { toolPath } from '../system/which.js';
import { publishDir } from './publish.js';
import { cleanupWorkDir } from './work-dir.js';

export interface CommitDeps {
  runner: Runner;
  log?: (msg: string) => void;
}

export interface CommitOptions {
  name: string;
  /** The VM, in words, for the image's source reference (e.g. `box (image bookworm)`). */
  vmRef: string;
  /** The directory of the kernel the VM boots (its image's, or its catalog kernel's): its vmlinuz and initrd.img come along. */
  baseDir: string;
  kernelVersion: string;
  /** That kernel's catalog name, when it is one (image.json names it). */
  kernel?: string;
  packages: string[];
  outDir: string;
  workDir: string;
  /** Writes the VM's root disk, flattened, as raw ext4 at `out` (the VMM driver's exportRootDisk). */
  exportRoot: (out: string) => Promise<void>;
  onProgress?: (stage: string, message: string) => void;
}

/** What is per VM in a root disk, as debugfs commands (a path that is not there is only a complaint on stderr). */
export function scrubCommands(emptyFile: string): string[] {
  const keys = ['rsa', 'ecdsa', 'ed25519', 'dsa'].flatMap((t) => [`rm /etc/ssh/ssh_host_${t}_key`, `rm /etc/ssh/ssh_host_${t}_key.pub`]);
  return [
    ...keys,
    'rm /etc/machine-id',
    `write ${emptyFile} /etc/machine-id`,
    'sif /etc/machine-id mode 0100444',
    'sif /etc/machine-id uid 0',
    'sif /etc/machine-id gid 0',
    'rm /var/lib/systemd/random-seed',
  ];
}

export async function commitVmImage(deps: CommitDeps, opts: CommitOptions): Promise<{ rootfsBytes: number; sourceRef: string }> {
  const progress = (stage: string, message: string) => {
    deps.log?.(`${stage}: ${message}`);
    opts.onProgress?.(stage, message);
  };
  const workDir = resolve(opts.workDir);
  const stageDir = join(workDir, 'image');
  mkdirSync(stageDir, { recursive: true, mode: 0o700 });
  try {
    const rootfs = join(stageDir, 'rootfs.ext4');
    progress('commit', `flattening the root disk of ${opts.vmRef}`);
    await opts.exportRoot(rootfs);
    const empty = join(workDir, 'empty');
    writeFileSync(empty, '', { mode: 0o444 });
    const cmds = join(workDir, 'scrub.debugfs');
    writeFileSync(cmds, scrubCommands(empty).join('\n') + '\n', { mode: 0o600 });
    progress('commit', 'removing what is per VM: SSH host keys, machine-id, random seed');
    await deps.runner.run([toolPath('debugfs'), '-w', '-f', cmds, rootfs], { timeoutMs: 10 * 60 * 1000 });
    for (const f of ['vmlinuz', 'initrd.img']) copyFileSync(join(opts.baseDir, f), join(stageDir, f));
    const rootfsBytes = statSync(rootfs).size;
    const sourceRef = opts.vmRef;
    writeFileSync(
      join(stageDir, 'image.json'),
      JSON.stringify(
        { name: opts.name, source: { kind: 'vm', ref: sourceRef }, kernelVersion: opts.kernelVersion, ...(opts.kernel ? { kernel: opts.kernel } : {}), rootfsBytes, packages: opts.packages, builtAt: new Date().toISOString() },
        null,
        2,
      ) + '\n',
      { mode: 0o644 },
    );
    progress('install', `installing into ${opts.outDir}`);
    await publishDir((argv, o) => deps.runner.run(argv, o), stageDir, opts.outDir);
    return { rootfsBytes, sourceRef };
  } finally {
    try {
      await cleanupWorkDir(deps.runner, workDir);
    } catch (e) {
      deps.log?.(`cleanup of ${workDir} failed: ${messageOf(e)}`);
    }
  }
}
