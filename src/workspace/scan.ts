/**
 * What a workspace prepare sends: the repo's tracked files as they are in
 * the work tree (staged and unstaged edits included), plus untracked files
 * that git does not ignore when asked. Runs on the host, reads only.
 *
 * Refused, with the path named: FIFOs, sockets and device files, and
 * symlinks that point outside the repo (absolute, or escaping by `..` or
 * through another symlink). Directories that git records as one entry
 * (submodules, nested repos) are skipped and reported.
 */
/** fs/promises on first use: this module is on every vm command's load path (src/model/random.ts says why). */
const fsp = () => process.getBuiltinModule('node:fs/promises');
import { dirname, isAbsolute, join, posix, relative, sep } from 'node:path';
import { BangerError } from '../errors/errors.js';
import type { Runner } from '../system/runner.js';

export interface ScanEntry {
  /** Repo-relative, '/'-separated (as git prints it). */
  path: string;
  kind: 'file' | 'symlink';
  /** Bytes of a file, or of a symlink's target string. */
  size: number;
  tracked: boolean;
}

export interface RepoScan {
  /** The work tree's top directory (absolute). */
  root: string;
  /** The HEAD commit, or null in a repo without commits. */
  head: string | null;
  /** The checked-out branch (short name), or null when HEAD is detached. */
  branch: string | null;
  entries: ScanEntry[];
  /** Tracked paths missing from the work tree (deleted, not yet committed). */
  deleted: string[];
  /** Submodules and nested repos: not sent. */
  skipped: string[];
  totalBytes: number;
  includeUntracked: boolean;
}

export interface ScanOptions {
  includeUntracked?: boolean;
}

/** git with a fixed, quiet environment; cwd is the repo. */
export async function git(runner: Runner, cwd: string, args: string[], env?: NodeJS.ProcessEnv, input?: string | Buffer): Promise<string> {
  const res = await runner.run(['git', ...args], {
    cwd,
    env: { ...process.env, ...env, GIT_TERMINAL_PROMPT: '0', LC_ALL: 'C', GIT_LITERAL_PATHSPECS: '1' },
    input,
  });
  return res.stdout;
}

/** The top of the git work tree containing `path`, or a coded error. */
export async function repoRoot(runner: Runner, path: string): Promise<string> {
  const st = await fsp().lstat(path).catch(() => null);
  if (!st) throw new BangerError('bad_request', `${path} does not exist`, 'pass the path of a git repository (default: the current directory)');
  if (!st.isDirectory()) throw new BangerError('bad_request', `${path} is not a directory`, 'pass the directory of a git repository');
  const res = await runner.run(['git', 'rev-parse', '--show-toplevel'], { cwd: path, allowFailure: true, env: { ...process.env, LC_ALL: 'C' } });
  if (res.code !== 0) {
    throw new BangerError(
      'bad_request',
      `${path} is not inside a git work tree`,
      'workspaces copy a git repo\'s files: run `git init` there (and commit), or pass the path of a repo',
    );
  }
  return res.stdout.trim();
}

export async function scanRepo(runner: Runner, path: string, opts: ScanOptions = {}): Promise<RepoScan> {
  const root = await repoRoot(runner, path);
  const includeUntracked = opts.includeUntracked === true;
  const headOut = await runner.run(['git', 'rev-parse', '-q', '--verify', 'HEAD^{commit}'], { cwd: root, allowFailure: true });
  const head = headOut.code === 0 ? headOut.stdout.trim() : null;
  const branchOut = await runner.run(['git', 'symbolic-ref', '-q', '--short', 'HEAD'], { cwd: root, allowFailure: true });
  const branch = branchOut.code === 0 ? branchOut.stdout.trim() : null;

  const tracked = splitZ(await git(runner, root, ['ls-files', '-z', '--cached', '--full-name']));
  const untracked = includeUntracked ? splitZ(await git(runner, root, ['ls-files', '-z', '--others', '--exclude-standard', '--full-name'])) : [];
  const realRoot = await fsp().realpath(root);

  const entries: ScanEntry[] = [];
  const deleted: string[] = [];
  const skipped: string[] = [];
  const seen = new Set<string>();
  let totalBytes = 0;
  const visit = async (raw: string, isTracked: boolean) => {
    // ls-files prints an untracked nested repo as "dir/"; unmerged paths once per stage.
    const p = raw.endsWith('/') ? raw.slice(0, -1) : raw;
    if (seen.has(p)) return;
    seen.add(p);
    const abs = join(root, ...p.split('/'));
    const st = await fsp().lstat(abs).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return null;
      throw new BangerError('operation_failed', `cannot read ${p} in ${root}: ${e.message}`);
    });
    if (!st) {
      if (isTracked) deleted.push(p);
      return;
    }
    if (st.isFile()) {
      entries.push({ path: p, kind: 'file', size: st.size, tracked: isTracked });
      totalBytes += st.size;
    } else if (st.isSymbolicLink()) {
      const target = await fsp().readlink(abs);
      await checkSymlink(root, realRoot, p, target);
      entries.push({ path: p, kind: 'symlink', size: Buffer.byteLength(target), tracked: isTracked });
      totalBytes += Buffer.byteLength(target);
    } else if (st.isDirectory()) {
      skipped.push(p);
    } else {
      throw new BangerError(
        'bad_request',
        `refusing to send ${p} (in ${root}): it is a ${specialKind(st)}; workspaces carry regular files and symlinks only`,
        isTracked ? `remove it from git (\`git rm --cached -- ${p}\`)` : `delete it, or add it to .gitignore`,
      );
    }
  };
  for (const p of tracked) await visit(p, true);
  for (const p of untracked) await visit(p, false);
  return { root, head, branch, entries, deleted, skipped, totalBytes, includeUntracked };
}

function splitZ(out: string): string[] {
  return out.split('\0').filter((s) => s.length > 0);
}

function specialKind(st: { isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): string {
  if (st.isFIFO()) return 'FIFO (named pipe)';
  if (st.isSocket()) return 'socket';
  if (st.isCharacterDevice()) return 'character device';
  if (st.isBlockDevice()) return 'block device';
  return 'special file';
}

/** A symlink must stay inside the repo, both as written and as the kernel resolves it. */
async function checkSymlink(root: string, realRoot: string, p: string, target: string): Promise<void> {
  const refuse = (why: string) =>
    new BangerError(
      'bad_request',
      `refusing to send symlink ${p} -> ${target} (in ${root}): ${why}`,
      'a workspace symlink must point inside the repo; replace it with a relative link to a file in the repo, or remove it',
    );
  if (isAbsolute(target)) throw refuse('it is an absolute path');
  const lexical = posix.normalize(posix.join(posix.dirname(p), target));
  if (lexical === '..' || lexical.startsWith('../')) throw refuse('it points outside the repo');
  // Through other symlinks: resolve what exists of it.
  const resolved = await fsp().realpath(join(root, ...p.split('/'))).catch(() => null);
  if (resolved !== null && !inside(realRoot, resolved)) throw refuse(`it resolves to ${resolved}, outside the repo`);
  if (resolved === null) {
    // Dangling: the part that exists must still be inside.
    const parent = await fsp().realpath(dirname(join(root, ...p.split('/'), '..', target))).catch(() => null);
    if (parent !== null && !inside(realRoot, parent)) throw refuse(`it resolves outside the repo`);
  }
}

function inside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel));
}
