/**
 * Bootstrap of a workspace with a mise config: `mise install` in the guest's
 * repo. It needs the network, so vm run refuses it without --nat (before any
 * VM exists); --no-bootstrap skips it.
 */
import { collector } from '../system/streams.js';
import { BangerError } from '../errors/errors.js';
import { shellJoin } from '../model/quote.js';
import type { SshTarget } from '../model/types.js';
import { sshExec } from '../guest/ssh.js';
import { GUEST_REPO } from '../workspace/guest-scripts.js';
import type { RepoScan } from '../workspace/scan.js';
import type { ProgressEvent } from '../model/types.js';

export const MISE_CONFIGS = ['.mise.toml', 'mise.toml'];

export function hasMiseConfig(scan: RepoScan): boolean {
  return scan.entries.some((e) => MISE_CONFIGS.includes(e.path));
}

/** Where mise may be in the guest: on PATH, or where its installer puts it (on the /root work disk). */
const FIND_MISE = 'command -v mise 2>/dev/null || { [ -x /root/.local/bin/mise ] && echo /root/.local/bin/mise; }';

export interface BootstrapIo {
  onProgress?: (ev: ProgressEvent) => void;
  /** Where mise's output goes (stdout belongs to the command that follows). */
  output: NodeJS.WritableStream;
  signal?: AbortSignal;
}

export async function bootstrapMise(target: SshTarget, name: string, io: BootstrapIo): Promise<void> {
  const { output, signal } = io;
  const out = collector();
  await sshExec(target, shellJoin(['sh', '-c', FIND_MISE]), { stdout: out, stderr: output, signal });
  const mise = out.buffer().toString('utf8').trim().split('\n')[0] ?? '';
  if (!mise) {
    throw new BangerError(
      'unavailable',
      `bootstrap: the repo has a mise config but ${name}'s image has no mise`,
      `pass --no-bootstrap to skip it; or install mise in a kept VM (\`banger vm run --nat -d --no-bootstrap PATH\`, then ` +
        `\`banger vm exec ${name} -- sh -c 'curl -fsSL https://mise.run | sh'\`): bootstrap then finds it in /root/.local/bin`,
    );
  }
  io.onProgress?.({ stage: 'bootstrap', message: `mise install in ${name}:${GUEST_REPO}` });
  const res = await sshExec(
    target,
    shellJoin(['sh', '-c', 'cd "$1" && "$2" trust --yes --quiet . && "$2" install', 'bootstrap', GUEST_REPO, mise]),
    { stdout: output, stderr: output, signal },
  );
  if (res.exitCode !== 0) {
    throw new BangerError('operation_failed', `bootstrap: mise install in ${name}:${GUEST_REPO} exited with ${res.exitCode}`, 'see its output above; --no-bootstrap skips the bootstrap');
  }
}
