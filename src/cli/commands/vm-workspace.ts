/** banger vm workspace prepare|export|show, and the workspace half of vm run / vm exec. */
import { Command, Option } from '@commander-js/extra-typings';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Vm } from '../../sdk/vm.js';
import { formatSize } from '../../model/sizes.js';
import { WORKSPACE_MODES, type WorkspaceMode } from '../../model/types.js';
import { scanRepo, type RepoScan } from '../../workspace/scan.js';
import { GUEST_REPO } from '../../workspace/guest-scripts.js';
import { printJson, type CliContext } from '../context.js';
import { style, keyValues } from '../style.js';

export interface PrepareFlags {
  includeUntracked?: boolean;
  mode?: WorkspaceMode;
}

export const modeOption = () =>
  new Option('--mode <mode>', 'archive: send every file (first prepare, or most files changed); delta: only files that differ in the guest (resync of a big repo)')
    .choices(WORKSPACE_MODES)
    .default('archive' as WorkspaceMode);

/** The dry run: what would be sent, without a daemon or a VM. */
async function dryRun(ctx: CliContext, name: string, path: string, flags: PrepareFlags & { json?: boolean }): Promise<void> {
  const scan = await scanRepo(ctx.runner, resolve(path), { includeUntracked: flags.includeUntracked });
  if (flags.json) {
    printJson({ vm: name, root: scan.root, guestPath: GUEST_REPO, count: scan.entries.length, bytes: scan.totalBytes, files: scan.entries, skipped: scan.skipped, deleted: scan.deleted });
    return;
  }
  const out = scan.entries.map((e) => `${e.tracked ? ' ' : '+'} ${formatSize(e.size).padStart(9)}  ${e.path}${e.kind === 'symlink' ? ' (symlink)' : ''}`);
  process.stdout.write(out.join('\n') + (out.length ? '\n' : ''));
  process.stdout.write(`${summary(scan)}; would be sent to ${name}:${GUEST_REPO} (dry run: nothing was sent)\n`);
}

export function summary(scan: RepoScan): string {
  const untracked = scan.entries.filter((e) => !e.tracked).length;
  const parts = [`${scan.entries.length} files, ${formatSize(scan.totalBytes)}`];
  if (untracked) parts.push(`${untracked} untracked (marked +)`);
  if (scan.skipped.length) parts.push(`${scan.skipped.length} submodule(s) skipped`);
  return parts.join(', ');
}

export function addWorkspaceCommands(vm: Command, ctx: CliContext): void {
  const ws = vm.command('workspace').description('copy a git repo into a VM and bring its edits back as a patch');

  ws.command('prepare')
    .description(`copy a repo's tracked files (edits included) and its history into NAME:${GUEST_REPO}; run again to resync`)
    .argument('<name>')
    .argument('[path]', 'a directory inside the git work tree', '.')
    .option('--include-untracked', 'also send untracked files that git does not ignore')
    .option('--dry-run', 'list what would be sent (count and size) without touching any VM')
    .option('--json', 'machine-readable output')
    .addOption(modeOption())
    .action(async (name, path, opts) => {
      if (opts.dryRun) return dryRun(ctx, name, path, opts);
      const r = await (await ctx.banger()).vm(name).prepareWorkspace(path, opts);
      if (opts.json) return printJson(r);
      process.stdout.write(`prepared ${name}:${r.workspace.guestPath} (\`banger vm exec ${name} -- CMD\` runs there)\n`);
    });

  ws.command('export')
    .description(`the guest's changes to ${GUEST_REPO} since the prepare, as a git patch (git apply; with --base-commit, git am)`)
    .argument('<name>')
    .option('-o, --output <file>', 'write the patch to FILE instead of stdout')
    .option('--base-commit <sha>', "include the guest's commits after SHA, as a series for `git am`")
    .option('--json', 'machine-readable output: {bytes, baseCommit, path} with -o, else {bytes, baseCommit, patch}')
    .action(async (name, opts) => {
      const vm = (await ctx.banger()).vm(name);
      if (opts.json) {
        if (opts.output) return printJson(await vm.exportWorkspaceTo(opts.output, { baseCommit: opts.baseCommit }));
        const patch = await vm.exportWorkspace({ baseCommit: opts.baseCommit });
        return printJson({ bytes: Buffer.byteLength(patch), baseCommit: opts.baseCommit ?? null, patch });
      }
      const bytes = await exportTo(vm, opts.baseCommit, opts.output);
      if (opts.output) process.stderr.write(style.dim(`• wrote ${formatSize(bytes)} to ${opts.output}`, process.stderr) + '\n');
      if (bytes === 0) process.stderr.write(style.dim(`• no changes in ${name}:${GUEST_REPO} since it was prepared`, process.stderr) + '\n');
    });

  ws.command('show')
    .description("a VM's workspace: where it came from and whether the host repo changed since")
    .argument('<name>')
    .option('--json', 'machine-readable output')
    .action(async (name, opts) => {
      const st = await (await ctx.banger()).vm(name).workspaceStatus();
      if (opts.json) return printJson(st);
      const w = st.workspace;
      if (!w) return void process.stdout.write(`${name} has no workspace (\`banger vm workspace prepare ${name} PATH\`)\n`);
      const rows: Array<[string, string]> = [
        ['host', w.hostPath],
        ['guest', w.guestPath],
        ['files', `${w.files} (${formatSize(w.bytes)})${w.includeUntracked ? ', untracked included' : ''}`],
        ['head', w.head ? `${w.head}${w.branch ? ` (${w.branch})` : ''}` : '(no commits)'],
        ['prepared', w.preparedAt],
        ['host repo', st.changed === null ? `unknown: ${st.reason}` : st.changed ? 'changed since the prepare' : 'unchanged'],
      ];
      process.stdout.write(keyValues(rows) + '\n');
    });
}

/**
 * The patch goes to FILE atomically (src/sdk/workspace.ts), or through a
 * private temp file to stdout: only a complete patch is ever printed.
 */
async function exportTo(vm: Vm, baseCommit: string | undefined, output: string | undefined): Promise<number> {
  if (output) return (await vm.exportWorkspaceTo(output, { baseCommit })).bytes;
  const dir = mkdtempSync(join(tmpdir(), 'banger-export-'));
  try {
    const r = await vm.exportWorkspaceTo(join(dir, 'patch'), { baseCommit });
    await process.getBuiltinModule('node:stream/promises').pipeline(createReadStream(r.path), process.stdout, { end: false });
    return r.bytes;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
