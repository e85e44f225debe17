/**
 * Turns a RepoScan into what the guest receives, without writing to the
 * user's repo: git objects go to a temporary object directory that borrows
 * the repo's objects as an alternate, and the index used is a copy.
 *
 *   indexTree  the host's staged state (git status in the guest matches)
 *   tree       the work tree as sent (the scan's entries)
 *   commit     `tree` with HEAD as parent: the guest's refs/banger/prepared,
 *              the base that `workspace export` diffs against. Its dates and
 *              author are fixed, so the same work tree gives the same commit.
 *   pack       every object the guest needs (history up to HEAD, the two
 *              trees), minus what an earlier prepare already sent
 *   tar        the entries, with a member for each parent directory so that
 *              extraction replaces a guest-made symlink instead of following it
 */
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import type { Runner } from '../system/runner.js';
import { git, type RepoScan } from './scan.js';

export interface Snapshot {
  dir: string;
  tree: string;
  /** null when the host index has unmerged entries (then the guest's index is HEAD). */
  indexTree: string | null;
  commit: string;
  packFile: string;
  packBytes: number;
  tarFile: string;
  tarBytes: number;
  /** Commits the host repo is shallow at (sent as the guest's .git/shallow). */
  shallow: string[];
  /** Files in the archive (all of them, or in delta mode only those the guest lacks). */
  sentFiles: number;
  /** The commit left out of the pack with its history (the guest must have it), or null. */
  base: string | null;
}

const FIXED_IDENT: NodeJS.ProcessEnv = {
  GIT_AUTHOR_NAME: 'banger',
  GIT_AUTHOR_EMAIL: 'banger@localhost',
  GIT_COMMITTER_NAME: 'banger',
  GIT_COMMITTER_EMAIL: 'banger@localhost',
  GIT_AUTHOR_DATE: '@0 +0000',
  GIT_COMMITTER_DATE: '@0 +0000',
};

export const SNAPSHOT_MESSAGE = 'banger: workspace as prepared';

/** The repo's object directory, index and shallow file (one rev-parse; worktrees share the common dir). */
async function gitPaths(runner: Runner, root: string): Promise<{ objects: string; index: string; shallow: string }> {
  const out = await git(runner, root, ['rev-parse', '--path-format=absolute', '--git-path', 'objects', '--git-path', 'index', '--git-path', 'shallow']);
  const [objects, index, shallow] = out.split('\n');
  if (!objects || !index || !shallow) throw new BangerError('internal', `git rev-parse --git-path printed ${JSON.stringify(out)}`);
  return { objects, index, shallow };
}

/** The env that keeps git's writes in `dir`. */
async function tempGitEnv(paths: { objects: string; index: string }, dir: string): Promise<NodeJS.ProcessEnv> {
  const { objects, index } = paths;
  const tmpIndex = join(dir, 'index');
  await mkdir(join(dir, 'objects'), { recursive: true });
  await copyFile(index, tmpIndex).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw e; // no index yet: a new repo
  });
  return { GIT_INDEX_FILE: tmpIndex, GIT_OBJECT_DIRECTORY: join(dir, 'objects'), GIT_ALTERNATE_OBJECT_DIRECTORIES: objects };
}

/** The tree of the work tree as the scan sees it (also the dirty check's fingerprint). */
export async function worktreeTree(
  runner: Runner,
  scan: RepoScan,
  dir: string,
): Promise<{ tree: string; indexTree: string | null; env: NodeJS.ProcessEnv; shallowFile: string }> {
  const repoPaths = await gitPaths(runner, scan.root);
  const env = await tempGitEnv(repoPaths, dir);
  const idx = await runner.run(['git', 'write-tree'], { cwd: scan.root, env: { ...process.env, ...env }, allowFailure: true });
  const indexTree = idx.code === 0 ? idx.stdout.trim() : null;
  // update-index skips files whose stat matches the copied index, so this is
  // cheap for an unchanged repo; --remove drops the deleted ones.
  const paths = [...scan.entries.map((e) => e.path), ...scan.deleted];
  if (paths.length > 0) {
    await git(runner, scan.root, ['update-index', '--add', '--remove', '-z', '--stdin'], env, paths.join('\0') + '\0');
  }
  // Untracked files git never saw are in; tracked ones the scan skipped (submodules) stay as they were.
  const tree = (await git(runner, scan.root, ['write-tree'], env)).trim();
  return { tree, indexTree, env, shallowFile: repoPaths.shallow };
}

export async function makeSnapshot(
  runner: Runner,
  scan: RepoScan,
  opts: {
    tmpRoot: string;
    /** A host commit whose history the guest already has (from an earlier prepare). */
    have?: string | null;
    /** Delta mode: the guest's files now (path → "mode sha"); only differing ones are archived. */
    guestFiles?: Map<string, string> | null;
  },
): Promise<Snapshot> {
  await mkdir(opts.tmpRoot, { recursive: true });
  const dir = await mkdtemp(join(opts.tmpRoot, 'ws-'));
  try {
    const { tree, indexTree, env, shallowFile } = await worktreeTree(runner, scan, dir);
    const commitArgs = ['commit-tree', tree, '-m', SNAPSHOT_MESSAGE];
    if (scan.head) commitArgs.push('-p', scan.head);
    const commit = (await git(runner, scan.root, commitArgs, { ...env, ...FIXED_IDENT })).trim();

    const revs = [commit];
    if (indexTree) revs.push(indexTree);
    let base: string | null = null;
    if (opts.have && /^[0-9a-f]{40,64}$/.test(opts.have)) {
      const known = await runner.run(['git', 'cat-file', '-e', `${opts.have}^{commit}`], { cwd: scan.root, allowFailure: true });
      if (known.code === 0) {
        revs.push(`^${opts.have}`);
        base = opts.have;
      }
    }
    const packBase = join(dir, 'pack');
    await git(runner, scan.root, ['pack-objects', '--revs', '-q', packBase], env, revs.join('\n') + '\n');
    const packName = (await readdir(dir)).find((f) => f.startsWith('pack-') && f.endsWith('.pack'));
    if (!packName) throw new BangerError('internal', 'git pack-objects wrote no pack');
    const packFile = join(dir, packName);

    const tarFile = join(dir, 'files.tar.gz');
    const paths = opts.guestFiles ? await changedPaths(runner, scan.root, tree, opts.guestFiles, env) : scan.entries.map((e) => e.path);
    const members = tarMembers(paths);
    await runner.run(
      // gzip: the guest's sshd (under TCG) moves ~3 MB/s; source text shrinks several times.
      ['tar', '--create', '--gzip', '--format=posix', '--numeric-owner', '-f', tarFile, '-C', scan.root, '--no-recursion', '--null', '--verbatim-files-from', '--files-from=-'],
      { input: members.join('\0') + (members.length ? '\0' : '') },
    );
    const shallow = await readFile(shallowFile, 'utf8')
      .then((t) => t.split('\n').filter((l) => /^[0-9a-f]{40,64}$/.test(l)))
      .catch(() => [] as string[]);
    return {
      dir,
      tree,
      indexTree,
      commit,
      packFile,
      packBytes: (await stat(packFile)).size,
      tarFile,
      tarBytes: (await stat(tarFile)).size,
      shallow,
      sentFiles: paths.length,
      base,
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** Paths of `tree` whose mode or content the guest does not have. */
async function changedPaths(runner: Runner, root: string, tree: string, guestFiles: Map<string, string>, env: NodeJS.ProcessEnv): Promise<string[]> {
  const out = await git(runner, root, ['ls-tree', '-r', '-z', '--full-tree', tree], env);
  const paths: string[] = [];
  for (const rec of out.split('\0')) {
    const tab = rec.indexOf('\t');
    if (tab < 0) continue;
    const [mode, type, sha] = rec.slice(0, tab).split(' ');
    if (type !== 'blob') continue; // submodules are not sent
    const p = rec.slice(tab + 1);
    if (guestFiles.get(p) !== `${mode} ${sha}`) paths.push(p);
  }
  return paths;
}

export async function dropSnapshot(s: Snapshot): Promise<void> {
  await rm(s.dir, { recursive: true, force: true });
}

/** Paths in order, each directory listed once before anything in it. */
export function tarMembers(paths: string[]): string[] {
  const out: string[] = [];
  const dirs = new Set<string>();
  for (const p of [...paths].sort(byBytes)) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        out.push(d);
      }
    }
    out.push(p);
  }
  return out;
}

function byBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}
