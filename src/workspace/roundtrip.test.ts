/**
 * The whole workspace path with real git and GNU tar, the guest side run
 * locally (the scripts take the repo directory as an argument): scan →
 * snapshot → apply → edit → export → git apply on a clone.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../system/runner.js';
import { isBangerError } from '../errors/errors.js';
import { scanRepo } from './scan.js';
import { dropSnapshot, makeSnapshot, tarMembers, worktreeTree } from './snapshot.js';
import { applyArgv, exportArgv, parseProbe, probeArgv } from './guest-scripts.js';

const runner = createRunner();
const GIT_ENV = {
  ...process.env,
  GIT_AUTHOR_NAME: 't',
  GIT_AUTHOR_EMAIL: 't@t',
  GIT_COMMITTER_NAME: 't',
  GIT_COMMITTER_EMAIL: 't@t',
  GIT_CONFIG_NOSYSTEM: '1',
  HOME: '/nonexistent',
};

let tmp: string;
let repo: string;
let guest: string;

async function g(cwd: string, ...args: string[]): Promise<string> {
  return (await runner.run(['git', ...args], { cwd, env: GIT_ENV })).stdout;
}

async function prepare(opts: { includeUntracked?: boolean; delta?: boolean } = {}) {
  const scan = await scanRepo(runner, repo, opts);
  const probe = await runner.run(probeArgv(guest, opts.delta), { env: GIT_ENV });
  const { have, guestFiles } = parseProbe(Buffer.from(probe.stdout));
  const snap = await makeSnapshot(runner, scan, { tmpRoot: join(tmp, 'work'), have, guestFiles });
  try {
    const input = Buffer.concat([readFileSync(snap.packFile), readFileSync(snap.tarFile)]);
    await runner.run(
      applyArgv({ repo: guest, packBytes: snap.packBytes, commit: snap.commit, indexTree: snap.indexTree, head: scan.head, branch: scan.branch, shallow: snap.shallow, base: snap.base }),
      { input, env: GIT_ENV },
    );
    return { scan, snap };
  } finally {
    await dropSnapshot(snap);
  }
}

async function exportPatch(base: string | null = null): Promise<string> {
  return (await runner.run(exportArgv(guest, base), { env: GIT_ENV })).stdout;
}

beforeEach(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'banger-ws-'));
  repo = join(tmp, 'repo');
  guest = join(tmp, 'guest', 'repo');
  mkdirSync(repo);
  await g(repo, 'init', '-q', '-b', 'main');
  writeFileSync(join(repo, 'a.txt'), 'alpha\n');
  mkdirSync(join(repo, 'src', 'deep'), { recursive: true });
  writeFileSync(join(repo, 'src', 'deep', 'b.txt'), 'beta\n');
  writeFileSync(join(repo, 'run.sh'), '#!/bin/sh\necho run\n');
  chmodSync(join(repo, 'run.sh'), 0o755);
  writeFileSync(join(repo, 'bin.dat'), Buffer.from([0, 1, 2, 255, 254, 0, 10]));
  writeFileSync(join(repo, 'name with spaces.txt'), 'spaces\n');
  symlinkSync('src/deep/b.txt', join(repo, 'link'));
  writeFileSync(join(repo, '.gitignore'), 'ignored.log\n');
  await g(repo, 'add', '-A');
  await g(repo, 'commit', '-q', '-m', 'first');
});

afterEach(() => {
  rmSync(tmp, { recursive: true, force: true });
});

describe('workspace round trip (real git and tar)', () => {
  it('sends tracked files with unstaged and staged edits; git status in the guest matches the host', async () => {
    writeFileSync(join(repo, 'a.txt'), 'alpha edited\n'); // unstaged
    writeFileSync(join(repo, 'staged.txt'), 'staged\n');
    await g(repo, 'add', 'staged.txt'); // staged, new
    unlinkSync(join(repo, 'src', 'deep', 'b.txt')); // deleted, not committed
    writeFileSync(join(repo, 'untracked.txt'), 'u\n');
    writeFileSync(join(repo, 'ignored.log'), 'i\n');
    const { scan } = await prepare();
    expect(scan.deleted).toEqual(['src/deep/b.txt']);
    expect(readFileSync(join(guest, 'a.txt'), 'utf8')).toBe('alpha edited\n');
    expect(readFileSync(join(guest, 'staged.txt'), 'utf8')).toBe('staged\n');
    expect(existsSync(join(guest, 'untracked.txt'))).toBe(false);
    expect(existsSync(join(guest, 'ignored.log'))).toBe(false);
    expect(readFileSync(join(guest, 'bin.dat'))).toEqual(Buffer.from([0, 1, 2, 255, 254, 0, 10]));
    expect(lstatSync(join(guest, 'run.sh')).mode & 0o111).not.toBe(0);
    expect(readlinkSync(join(guest, 'link'))).toBe('src/deep/b.txt');
    const hostStatus = (await g(repo, 'status', '--porcelain', '--untracked-files=no')).split('\n').sort();
    const guestStatus = (await g(guest, 'status', '--porcelain', '--untracked-files=no')).split('\n').sort();
    expect(guestStatus).toEqual(hostStatus);
    expect(hostStatus).toContain('A  staged.txt');
    expect(hostStatus).toContain(' M a.txt');
    expect(await g(guest, 'rev-parse', 'HEAD')).toBe(await g(repo, 'rev-parse', 'HEAD'));
    expect((await g(guest, 'symbolic-ref', 'HEAD')).trim()).toBe('refs/heads/main');
    expect(await g(guest, 'log', '--format=%s')).toBe('first\n');
  });

  it('--include-untracked adds untracked files that are not ignored', async () => {
    writeFileSync(join(repo, 'untracked.txt'), 'u\n');
    writeFileSync(join(repo, 'ignored.log'), 'i\n');
    await prepare({ includeUntracked: true });
    expect(readFileSync(join(guest, 'untracked.txt'), 'utf8')).toBe('u\n');
    expect(existsSync(join(guest, 'ignored.log'))).toBe(false);
  });

  it('resync: removes what the host no longer has, keeps what the guest made, sends only new objects', async () => {
    await prepare();
    writeFileSync(join(guest, 'build.out'), 'guest made\n');
    await g(repo, 'rm', '-q', 'a.txt');
    writeFileSync(join(repo, 'new.txt'), 'new\n');
    await g(repo, 'add', 'new.txt');
    await g(repo, 'commit', '-q', '-m', 'second');
    const { snap } = await prepare();
    expect(existsSync(join(guest, 'a.txt'))).toBe(false);
    expect(readFileSync(join(guest, 'new.txt'), 'utf8')).toBe('new\n');
    expect(readFileSync(join(guest, 'build.out'), 'utf8')).toBe('guest made\n');
    expect(await g(guest, 'log', '--format=%s')).toBe('second\nfirst\n');
    expect(snap.packBytes).toBeLessThan(2000);
  });

  it('delta mode sends only the files that differ in the guest, and the result equals an archive prepare', async () => {
    await prepare();
    writeFileSync(join(repo, 'a.txt'), 'host change\n');
    writeFileSync(join(guest, 'src', 'deep', 'b.txt'), 'guest scribble\n');
    writeFileSync(join(guest, 'guest-only.txt'), 'mine\n');
    const { snap } = await prepare({ delta: true });
    expect(snap.sentFiles).toBe(2);
    expect(readFileSync(join(guest, 'a.txt'), 'utf8')).toBe('host change\n');
    expect(readFileSync(join(guest, 'src', 'deep', 'b.txt'), 'utf8')).toBe('beta\n');
    expect(readFileSync(join(guest, 'guest-only.txt'), 'utf8')).toBe('mine\n');
    expect(await g(guest, 'status', '--porcelain', '--untracked-files=no')).toBe(' M a.txt\n');
    // nothing differs: nothing is sent
    const again = await prepare({ delta: true });
    expect(again.snap.sentFiles).toBe(0);
  });

  it('a base the guest no longer has: apply exits 5 before touching anything, and a full send works', async () => {
    const first = await prepare();
    rmSync(join(guest, '.git'), { recursive: true });
    const scan = await scanRepo(runner, repo);
    const snap = await makeSnapshot(runner, scan, { tmpRoot: join(tmp, 'work'), have: first.scan.head });
    try {
      expect(snap.base).toBe(first.scan.head);
      const input = Buffer.concat([readFileSync(snap.packFile), readFileSync(snap.tarFile)]);
      const res = await runner.run(
        applyArgv({ repo: guest, packBytes: snap.packBytes, commit: snap.commit, indexTree: snap.indexTree, head: scan.head, branch: scan.branch, shallow: snap.shallow, base: snap.base }),
        { input, env: GIT_ENV, allowFailure: true },
      );
      expect(res.code).toBe(5);
    } finally {
      await dropSnapshot(snap);
    }
    await prepare();
    expect(await g(guest, 'log', '--format=%s')).toBe('first\n');
  });

  it('delta mode without an earlier prepare sends everything', async () => {
    const { snap, scan } = await prepare({ delta: true });
    expect(snap.sentFiles).toBe(scan.entries.length);
  });

  it('the same work tree gives the same snapshot tree (the dirty check) and a change gives another', async () => {
    const scan1 = await scanRepo(runner, repo);
    const t1 = await worktreeTree(runner, scan1, mkdtempSync(join(tmp, 'a')));
    const t2 = await worktreeTree(runner, await scanRepo(runner, repo), mkdtempSync(join(tmp, 'b')));
    expect(t2.tree).toBe(t1.tree);
    writeFileSync(join(repo, 'a.txt'), 'changed\n');
    const t3 = await worktreeTree(runner, await scanRepo(runner, repo), mkdtempSync(join(tmp, 'c')));
    expect(t3.tree).not.toBe(t1.tree);
    // nothing was written into the user's repo
    expect(await g(repo, 'count-objects')).toMatch(/^\d+ objects/);
    expect((await g(repo, 'status', '--porcelain'))).toBe(' M a.txt\n');
  });

  it('export: edits, a new file, a deletion and a binary change apply on a host clone and reproduce the guest tree', async () => {
    await prepare();
    const indexBefore = readFileSync(join(guest, '.git', 'index'));
    writeFileSync(join(guest, 'a.txt'), 'alpha from guest\n');
    writeFileSync(join(guest, 'added.txt'), 'added\n');
    unlinkSync(join(guest, 'name with spaces.txt'));
    writeFileSync(join(guest, 'bin.dat'), Buffer.from([9, 0, 8, 0, 255]));
    const patch = await exportPatch();
    expect(patch).toContain('GIT binary patch');
    // the guest's index and files are as they were
    expect(readFileSync(join(guest, '.git', 'index'))).toEqual(indexBefore);
    expect(existsSync(join(guest, 'added.txt'))).toBe(true);
    expect(await g(guest, 'status', '--porcelain')).toContain('?? added.txt');

    const clone = join(tmp, 'clone');
    await g(tmp, 'clone', '-q', repo, clone);
    const patchFile = join(tmp, 'p.patch');
    writeFileSync(patchFile, patch);
    await g(clone, 'apply', '--index', patchFile);
    const treeOf = async (dir: string) => {
      await g(dir, 'add', '-A');
      return (await g(dir, 'write-tree')).trim();
    };
    expect(await treeOf(clone)).toBe(await treeOf(guest));
  });

  it('export --base-commit: guest commits become a series git am applies; the plain export is relative to the prepare', async () => {
    const base = (await g(repo, 'rev-parse', 'HEAD')).trim();
    await prepare();
    writeFileSync(join(guest, 'committed.txt'), 'c\n');
    await g(guest, 'add', 'committed.txt');
    await g(guest, 'commit', '-q', '-m', 'guest commit');
    writeFileSync(join(guest, 'a.txt'), 'uncommitted\n');
    const series = await exportPatch(base);
    expect(series).toContain('Subject: [PATCH 1/2] guest commit');
    expect(series).toContain('changes not committed in the guest');
    const clone = join(tmp, 'clone');
    await g(tmp, 'clone', '-q', repo, clone);
    writeFileSync(join(tmp, 's.mbox'), series);
    await g(clone, 'am', '-q', join(tmp, 's.mbox'));
    expect(readFileSync(join(clone, 'committed.txt'), 'utf8')).toBe('c\n');
    expect(readFileSync(join(clone, 'a.txt'), 'utf8')).toBe('uncommitted\n');
    expect(await g(clone, 'log', '--format=%s', '-n', '2')).toBe('banger: changes not committed in the guest\nguest commit\n');
    // plain export: everything since the prepare, in one diff
    const plain = await exportPatch();
    expect(plain).toContain('committed.txt');
    const bad = await runner.run(exportArgv(guest, '0'.repeat(40)), { env: GIT_ENV, allowFailure: true });
    expect(bad.code).toBe(4);
    expect(bad.stderr).toContain('not in the guest');
  });

  it('refuses an escaping symlink, naming it', async () => {
    symlinkSync('../outside', join(repo, 'escape'));
    await g(repo, 'add', 'escape');
    const err = await scanRepo(runner, repo).catch((e: unknown) => e);
    expect(isBangerError(err) ? err.message : String(err)).toMatch(/refusing to send symlink escape -> \.\.\/outside/);
  });

  it('refuses an absolute symlink and one escaping through another symlink', async () => {
    symlinkSync('/etc/passwd', join(repo, 'abs'));
    writeFileSync(join(repo, '.gitignore'), '');
    let err = await scanRepo(runner, repo, { includeUntracked: true }).catch((e: unknown) => e);
    expect(isBangerError(err) ? err.message : String(err)).toMatch(/symlink abs -> \/etc\/passwd .*absolute/);
    unlinkSync(join(repo, 'abs'));
    symlinkSync('..', join(repo, 'up'));
    symlinkSync('up/x', join(repo, 'via'));
    err = await scanRepo(runner, repo, { includeUntracked: true }).catch((e: unknown) => e);
    expect(isBangerError(err) ? err.message : String(err)).toMatch(/refusing to send symlink (up|via)/);
  });

  it('refuses a tracked path that is now a FIFO, naming it; untracked FIFOs are never listed by git', async () => {
    await runner.run(['mkfifo', join(repo, 'pipe')]);
    const scan = await scanRepo(runner, repo, { includeUntracked: true });
    expect(scan.entries.map((e) => e.path)).not.toContain('pipe');
    unlinkSync(join(repo, 'a.txt'));
    await runner.run(['mkfifo', join(repo, 'a.txt')]);
    const err = await scanRepo(runner, repo).catch((e: unknown) => e);
    expect(isBangerError(err) ? err.message : String(err)).toMatch(/refusing to send a\.txt .*FIFO/);
  });

  it('a guest-made symlink where the host has a directory is replaced, not followed', async () => {
    await prepare();
    const outside = join(tmp, 'outside');
    mkdirSync(outside);
    rmSync(join(guest, 'src'), { recursive: true });
    symlinkSync(outside, join(guest, 'src'));
    await prepare();
    expect(lstatSync(join(guest, 'src')).isDirectory()).toBe(true);
    expect(readFileSync(join(guest, 'src', 'deep', 'b.txt'), 'utf8')).toBe('beta\n');
    expect(existsSync(join(outside, 'deep'))).toBe(false);
  });

  it('refuses a path outside a git work tree', async () => {
    const plain = join(tmp, 'plain');
    mkdirSync(plain);
    const err = await scanRepo(runner, plain).catch((e: unknown) => e);
    expect(isBangerError(err) ? err.message : String(err)).toMatch(/is not inside a git work tree/);
  });

  it('a repo without commits can be prepared', async () => {
    const fresh = join(tmp, 'fresh');
    mkdirSync(fresh);
    await g(fresh, 'init', '-q', '-b', 'trunk');
    writeFileSync(join(fresh, 'x'), 'x\n');
    await g(fresh, 'add', 'x');
    repo = fresh;
    const { scan } = await prepare();
    expect(scan.head).toBeNull();
    expect(readFileSync(join(guest, 'x'), 'utf8')).toBe('x\n');
    expect(await g(guest, 'status', '--porcelain')).toBe('A  x\n');
  });

  it('tarMembers lists each parent directory once, before its contents', () => {
    expect(tarMembers(['b/c/d', 'a', 'b/e'])).toEqual(['a', 'b', 'b/c', 'b/c/d', 'b/e']);
  });
});
