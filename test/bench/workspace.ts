/**
 * npm run bench -- --workspace: workspace prepare and export on a repo of
 * 1,000 files (generated, deterministic, three commits of history), in one
 * running VM, against a hand-rolled copy measured alternately in the same run:
 *   plain:   tar -cf of the work tree, piped into `banger vm ssh VM -- tar -x … && sync`
 *   archive: `banger vm workspace prepare VM REPO` (resync, every file sent)
 *   delta:   `banger vm workspace prepare VM REPO --mode delta` (nothing changed)
 * then `workspace export` after 10 files were edited in the guest, and a
 * `git apply` of it on a host clone. A benchmark: it never fails on time.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../../src/system/runner.js';
import { repoRoot } from '../smoke/harness.js';

const runner = createRunner();
const banger = (args: string[], input?: Buffer) =>
  runner.run([process.execPath, join(repoRoot, 'bin', 'banger.js'), ...args], { allowFailure: true, input, env: { ...process.env, NO_COLOR: '1' } });
const GIT_ENV = { ...process.env, GIT_AUTHOR_NAME: 'b', GIT_AUTHOR_EMAIL: 'b@b', GIT_COMMITTER_NAME: 'b', GIT_COMMITTER_EMAIL: 'b@b' };
const git = (cwd: string, ...args: string[]) => execFileSync('git', args, { cwd, env: GIT_ENV, encoding: 'utf8' });

/** 1,000 text files of 200 B to ~16 KiB in 40 directories; the same every run. */
function makeRepo(dir: string): void {
  mkdirSync(dir, { recursive: true });
  git(dir, 'init', '-q', '-b', 'main');
  let seed = 42;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let commit = 0; commit < 3; commit++) {
    for (let i = commit * 334; i < Math.min(1000, (commit + 1) * 334); i++) {
      const d = join(dir, `pkg${i % 40}`, 'src');
      mkdirSync(d, { recursive: true });
      const lines = 4 + Math.floor(rand() * 400);
      writeFileSync(join(d, `mod${i}.c`), Array.from({ length: lines }, (_, n) => `int f${i}_${n}(int x) { return x * ${n}; }`).join('\n') + '\n');
    }
    git(dir, 'add', '-A');
    git(dir, 'commit', '-q', '-m', `commit ${commit}`);
  }
}

async function timed(label: string, args: string[], input?: Buffer): Promise<number> {
  const t0 = performance.now();
  const r = await banger(args, input);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`${label}: banger ${args.join(' ')} failed: ${r.stderr}`);
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

export async function workspaceBench(runs: number): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'bench-ws-'));
  const repo = join(root, 'repo');
  const name = `bench-ws-${process.pid}`;
  makeRepo(repo);
  const bytes = Number(execFileSync('sh', ['-c', 'git ls-files -z | xargs -0 cat | wc -c'], { cwd: repo, encoding: 'utf8' }));
  console.log(`bench workspace: 1000 files, ${(bytes / 2 ** 20).toFixed(1)} MiB, 3 commits`);
  try {
    if ((await banger(['vm', 'create', '--name', name])).code !== 0) throw new Error('vm create failed');
    console.log(`  first prepare: ${s(await timed('first prepare', ['vm', 'workspace', 'prepare', name, repo]))}`);
    const plain: number[] = [];
    const archive: number[] = [];
    const delta: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const tarFile = join(root, 'plain.tar');
      execFileSync('tar', ['-cf', tarFile, '--exclude=.git', '-C', repo, '.']);
      await timed('plain', ['vm', 'ssh', name, '--', 'sh', '-c', 'rm -rf /root/plain && mkdir /root/plain && tar -x -C /root/plain && sync'], readFileSync(tarFile));
      plain.push(performance.now() - t0);
      archive.push(await timed('archive', ['vm', 'workspace', 'prepare', name, repo]));
      delta.push(await timed('delta', ['vm', 'workspace', 'prepare', name, repo, '--mode', 'delta']));
      console.log(`  run ${i + 1}: plain ${s(plain.at(-1)!)}  archive ${s(archive.at(-1)!)}  delta ${s(delta.at(-1)!)}`);
    }
    await timed('edit', ['vm', 'exec', name, '--', 'sh', '-c', 'for f in $(git ls-files | head -n 10); do echo "/* guest edit */" >> "$f"; done']);
    const patch = join(root, 'guest.patch');
    const exportMs = await timed('export', ['vm', 'workspace', 'export', name, '-o', patch]);
    const clone = join(root, 'clone');
    git(root, 'clone', '-q', repo, clone);
    git(clone, 'apply', patch);
    const changed = git(clone, 'diff', '--name-only').trim().split('\n').length;
    console.log(`median plain tar | ssh tar -x:     ${s(median(plain))} over ${runs}`);
    console.log(`median prepare (archive, resync): ${s(median(archive))}  ratio to plain ${(median(archive) / median(plain)).toFixed(2)}`);
    console.log(`median prepare (delta, no change): ${s(median(delta))}  ratio to plain ${(median(delta) / median(plain)).toFixed(2)}`);
    console.log(`export after 10 guest edits:      ${s(exportMs)} (git apply on a host clone: ${changed} files changed)`);
  } finally {
    await banger(['vm', 'delete', '-f', name]);
    rmSync(root, { recursive: true, force: true });
  }
}
