/**
 * The image pipeline's installer (src/images/pipeline.ts `GuestInstaller`):
 * installs what a pulled image lacks of the guest contract — once, at pull
 * time — in a throwaway build VM of the default image, booted cold with the
 * image's ext4 as an extra disk and network on for this step only. The VM
 * runs src/images/install-script.ts over SSH; its output is the pull's
 * progress. The VM is ephemeral and deleted whatever happens, so VMs made
 * from the image later boot without network and without first-boot work.
 *
 * The image's own programs (its package manager, its packages' scripts)
 * run as root inside that VM, never on the host; what comes back is the
 * VM's output (clipped, bounded) and the ext4 file.
 */
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { BangerError, messageOf } from '../errors/errors.js';
import { clip } from '../model/text.js';
import type { ProgressEvent } from '../model/types.js';
import { EXIT_STILL_MISSING, MISSING_PREFIX, installScript } from '../images/install-script.js';
import type { GuestInstaller } from '../images/pipeline.js';
import { lineSplitter } from '../images/work-dir.js';
import type { Connection } from '../rpc/server.js';
import type { Logger } from '../log/log.js';
import type { GuestOps } from './guest-ops.js';
import { DEFAULT_IMAGE } from './image-service.js';
import type { VmService } from './vm-service.js';

export interface GuestInstallDeps {
  vms: VmService;
  guest: GuestOps;
  log: Logger;
}

/** Output lines kept for the error of a failed install. */
const TAIL_LINES = 30;
/** Longest line shown as progress. */
const LINE_MAX = 300;

export function guestInstaller(deps: GuestInstallDeps): GuestInstaller {
  return async ({ image, label, install, what }, ctx) => {
    const name = `pull-${randomBytes(4).toString('hex')}`;
    const closers: Array<() => void> = [];
    // The build VM's "client": it goes away when the pull is cancelled (the create stops; the VM is removed).
    const conn: Connection = { id: `internal-${name}`, closed: false, onClose: (cb) => void closers.push(cb) };
    const onAbort = () => closers.splice(0).forEach((c) => c());
    ctx.signal?.addEventListener('abort', onAbort, { once: true });
    const progress = (ev: ProgressEvent) => ctx.progress('integrate', `${name}: ${ev.message}`);
    const tail: string[] = [];
    const missing: string[] = [];
    const lines = lineSink((line) => {
      const l = clip(line, LINE_MAX);
      tail.push(l);
      if (tail.length > TAIL_LINES) tail.shift();
      if (l.startsWith(MISSING_PREFIX)) missing.push(l.slice(MISSING_PREFIX.length));
      ctx.progress('integrate', l);
    });
    try {
      ctx.progress('integrate', `booting build VM ${name} (image ${DEFAULT_IMAGE}, cold, network on for this step)`);
      await deps.vms.create({ name, image: DEFAULT_IMAGE, ephemeral: true, nat: true, network: 'user', cold: true, extraDisks: [image] }, conn, progress);
      ctx.checkAbort();
      const script = installScript({ label, family: install.family, argv: install.argv, env: install.env });
      const res = await deps.vms.withRunning(name, (_vm, target) =>
        deps.guest.sshExec(target, 'sh -s', { stdout: lines.stream, stderr: lines.stream, stdin: readableOf(script), signal: ctx.signal }),
      );
      lines.flush();
      if (res.exitCode === EXIT_STILL_MISSING) {
        throw new BangerError('operation_failed', `${what}: after installing ${install.packages.join(' ')} it still lacks ${missing.join(', ')}`, 'the distribution may name those packages differently; use an image that has them');
      }
      if (res.exitCode !== 0) {
        throw new BangerError('operation_failed', `${what}: installing ${install.packages.join(' ')} in the build VM failed (exit ${res.exitCode}):\n${tail.join('\n')}`, 'the image\'s package mirrors must be reachable from a VM with --nat; see the lines above');
      }
    } finally {
      ctx.signal?.removeEventListener('abort', onAbort);
      await deps.vms.delete(name, true).catch((e: unknown) => {
        if (!(e instanceof BangerError && e.code === 'not_found')) deps.log.warn({ vm: name, err: messageOf(e) }, 'removing the build VM failed');
      });
    }
  };
}

/** A writable that hands complete lines (split on \n and \r: apt's progress) to onLine. */
function lineSink(onLine: (line: string) => void): { stream: Writable; flush: () => void } {
  const lines = lineSplitter(onLine);
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk);
      cb();
    },
  });
  return { stream, flush: lines.flush };
}

/** The script on the remote shell's stdin. */
function readableOf(text: string): NodeJS.ReadableStream {
  return Readable.from([Buffer.from(text, 'utf8')]);
}
