/** Issue 4 scenarios: workspaces (prepare, run, exec, export), detach, bootstrap, egress. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { check, cleanup, ok, type Banger, git } from './harness.js';
import type { Scenario } from './scenarios.js';


/** A throwaway repo under the run's root with FILES committed. */
function makeRepo(root: string, files: Record<string, string | Buffer>): string {
  mkdirSync(join(root, 'repos'), { recursive: true });
  const dir = mkdtempSync(join(root, 'repos', 'r-'));
  git(dir, 'init', '-q', '-b', 'main');
  for (const [p, content] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), content);
  }
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', 'initial');
  return dir;
}



async function vmNames(banger: Banger): Promise<string[]> {
  return (JSON.parse(await ok(banger, ['vm', 'list', '--json'])) as Array<{ name: string }>).map((v) => v.name);
}

/** The git tree of the guest's work tree (read through a throwaway index, like export does). */
const GUEST_TREE =
  'cd /root/repo && t=$(mktemp -p .git) && cp .git/index "$t" && GIT_INDEX_FILE=$t git add -A && GIT_INDEX_FILE=$t git write-tree; rm -f "$t"';

export const workspaceScenarios: Scenario[] = [
  {
    name: 'workspace_run',
    description: 'vm run --rm REPO -- cat FILE: the tracked file (with an unstaged edit) is in /root/repo, git status matches',
    run: async ({ banger, dirs }) => {
      const repo = makeRepo(dirs.root, { 'tracked.txt': 'committed\n', 'src/lib.c': 'int x;\n' });
      writeFileSync(join(repo, 'tracked.txt'), 'committed\nedited on the host\n');
      const r = await banger(['vm', 'run', '--rm', '--name', 'smoke-ws-run', repo, '--', 'sh', '-c', 'pwd; cat tracked.txt; git status --porcelain']);
      check(r.code === 0, `exit ${r.code}: ${r.stderr}`);
      check(r.stdout === '/root/repo\ncommitted\nedited on the host\n M tracked.txt\n', `guest printed ${JSON.stringify(r.stdout)}`);
      check(/2 files/.test(r.stderr), `no file count in the progress: ${r.stderr}`);
    },
  },
  {
    name: 'workspace_dryrun',
    description: 'workspace prepare --dry-run lists files, count and size, and creates no VM (no daemon needed)',
    run: async ({ banger, dirs }) => {
      const repo = makeRepo(dirs.root, { 'a.txt': 'aaaa\n', 'dir/b.txt': 'bb\n' });
      writeFileSync(join(repo, 'untracked.txt'), 'u\n');
      const out = await ok(banger, ['vm', 'workspace', 'prepare', 'smoke-dry', repo, '--dry-run']);
      check(out.includes('a.txt') && out.includes('dir/b.txt'), `files not listed: ${out}`);
      check(!out.includes('untracked.txt'), 'an untracked file was listed without --include-untracked');
      check(/2 files, 8 B/.test(out), `no "2 files, 8 B" summary: ${out}`);
      const json = JSON.parse(await ok(banger, ['vm', 'workspace', 'prepare', 'smoke-dry', repo, '--dry-run', '--include-untracked', '--json'])) as { count: number };
      check(json.count === 3, `--include-untracked dry run counts ${json.count}, want 3`);
      check(!(await vmNames(banger)).includes('smoke-dry'), 'a dry run created a VM');
    },
  },
  {
    name: 'workspace_untracked',
    description: 'untracked files stay home by default; --include-untracked sends them, never ignored ones',
    run: async ({ banger, dirs }) => {
      const name = 'smoke-ws-untr';
      const repo = makeRepo(dirs.root, { 'tracked.txt': 't\n', '.gitignore': 'secret.env\n' });
      writeFileSync(join(repo, 'notes.txt'), 'untracked\n');
      writeFileSync(join(repo, 'secret.env'), 'TOKEN=ignored\n');
      try {
        await ok(banger, ['vm', 'run', '-d', '--name', name, repo]);
        const ls1 = await ok(banger, ['vm', 'exec', name, '--', 'ls', '-A']);
        check(ls1.split('\n').includes('tracked.txt') && !ls1.includes('notes.txt') && !ls1.includes('secret.env'), `default prepare sent: ${ls1}`);
        await ok(banger, ['vm', 'workspace', 'prepare', name, repo, '--include-untracked']);
        const ls2 = await ok(banger, ['vm', 'exec', name, '--', 'ls', '-A']);
        check(ls2.includes('notes.txt'), `--include-untracked did not send notes.txt: ${ls2}`);
        check(!ls2.includes('secret.env'), 'an ignored file was sent');
      } finally {
        await cleanup(banger, name);
      }
    },
  },
  {
    name: 'workspace_restart',
    description: 'prepare 300 files → vm stop → vm start: /root/repo is byte-identical (the seeds’ data-loss regression)',
    run: async ({ banger, dirs }) => {
      const name = 'smoke-ws-restart';
      const files: Record<string, string> = {};
      for (let i = 0; i < 300; i++) files[`d${i % 10}/f${i}.txt`] = `file ${i}\n`.repeat(1 + (i % 50));
      const repo = makeRepo(dirs.root, files);
      const sums = 'cd /root/repo && git ls-files -z | sort -z | xargs -0 sha256sum | sha256sum';
      try {
        await ok(banger, ['vm', 'run', '-d', '--name', name, repo]);
        const before = await ok(banger, ['vm', 'exec', name, '--', 'sh', '-c', sums]);
        const hostSum = execFileSync('sh', ['-c', 'git ls-files -z | sort -z | xargs -0 sha256sum | sha256sum'], { cwd: repo, encoding: 'utf8' });
        check(before === hostSum, `guest files differ from the host's right after prepare: ${before} vs ${hostSum}`);
        await ok(banger, ['vm', 'stop', name]);
        await ok(banger, ['vm', 'start', name]);
        const after = await ok(banger, ['vm', 'exec', name, '--', 'sh', '-c', sums]);
        check(after === before, `files changed across stop/start: ${before} → ${after}`);
        const status = await ok(banger, ['vm', 'exec', name, '--', 'git', 'status', '--porcelain']);
        check(status === '', `git status after restart: ${status}`);
      } finally {
        await cleanup(banger, name);
      }
    },
  },
  {
    name: 'workspace_export',
    description: 'guest edits, adds, deletes, changes a binary → export → git apply on a host clone reproduces the guest tree; --base-commit gives a series for git am',
    run: async ({ banger, dirs }) => {
      const name = 'smoke-ws-export';
      const repo = makeRepo(dirs.root, { 'edit.txt': 'one\n', 'gone.txt': 'bye\n', 'blob.bin': Buffer.from([0, 1, 2, 3, 255]) });
      const base = git(repo, 'rev-parse', 'HEAD').trim();
      try {
        await ok(banger, ['vm', 'run', '-d', '--name', name, repo]);
        await ok(banger, ['vm', 'exec', name, '--', 'sh', '-c', "echo two >> edit.txt && echo new > added.txt && rm gone.txt && printf '\\000\\377\\001' > blob.bin"]);
        const indexBefore = await ok(banger, ['vm', 'exec', name, '--', 'sha256sum', '.git/index']);
        const patchFile = join(dirs.root, 'export.patch');
        await ok(banger, ['vm', 'workspace', 'export', name, '-o', patchFile]);
        check(readFileSync(patchFile, 'utf8').includes('GIT binary patch'), 'the patch has no binary hunk');
        const indexAfter = await ok(banger, ['vm', 'exec', name, '--', 'sha256sum', '.git/index']);
        check(indexBefore === indexAfter, "export changed the guest's git index");
        const clone = join(dirs.root, 'repos', 'clone-export');
        git(dirs.root, 'clone', '-q', repo, clone);
        git(clone, 'apply', patchFile);
        git(clone, 'add', '-A');
        const hostTree = git(clone, 'write-tree').trim();
        const guestTree = (await ok(banger, ['vm', 'exec', name, '--', 'sh', '-c', GUEST_TREE])).trim();
        check(hostTree === guestTree, `tree after git apply ${hostTree} != guest tree ${guestTree}`);
        // stdout without -o is the same patch
        const viaStdout = await ok(banger, ['vm', 'workspace', 'export', name]);
        check(viaStdout === readFileSync(patchFile, 'utf8'), 'export to stdout differs from -o FILE');

        // a commit made in the guest, then --base-commit
        await ok(banger, ['vm', 'exec', name, '--', 'sh', '-c', 'git add -A && git -c user.name=g -c user.email=g@g commit -q -m "guest work"']);
        await ok(banger, ['vm', 'exec', name, '--', 'sh', '-c', 'echo later > later.txt']);
        const series = join(dirs.root, 'series.mbox');
        await ok(banger, ['vm', 'workspace', 'export', name, '--base-commit', base, '-o', series]);
        const clone2 = join(dirs.root, 'repos', 'clone-am');
        git(dirs.root, 'clone', '-q', repo, clone2);
        git(clone2, 'am', '-q', series);
        check(git(clone2, 'log', '--format=%s', '-n', '2') === 'banger: changes not committed in the guest\nguest work\n', `git am log: ${git(clone2, 'log', '--format=%s')}`);
        check(readFileSync(join(clone2, 'later.txt'), 'utf8') === 'later\n' && readFileSync(join(clone2, 'added.txt'), 'utf8') === 'new\n', 'git am did not reproduce the files');
        const bad = await banger(['vm', 'workspace', 'export', name, '--base-commit', '--upload-pack=x']);
        check(bad.code !== 0 && /not a commit/.test(bad.stderr), `a bad --base-commit was not refused: ${bad.stderr}`);

        // A big export (it used to travel as one base64 JSON line and crash the CLI past ~12 MiB): it streams.
        await ok(banger, ['vm', 'exec', name, '--', 'sh', '-c', 'head -c 20000000 /dev/urandom > big.bin']);
        const bigSum = (await ok(banger, ['vm', 'exec', name, '--', 'sha256sum', 'big.bin'])).split(' ')[0];
        const bigPatch = join(dirs.root, 'big.patch');
        await ok(banger, ['vm', 'workspace', 'export', name, '-o', bigPatch]);
        check(statSync(bigPatch).size > 20_000_000, `the big export is only ${statSync(bigPatch).size} bytes`);
        const clone3 = join(dirs.root, 'repos', 'clone-big');
        git(dirs.root, 'clone', '-q', repo, clone3);
        git(clone3, 'apply', bigPatch);
        const hostSum = createHash('sha256').update(readFileSync(join(clone3, 'big.bin'))).digest('hex');
        check(hostSum === bigSum, `big.bin after git apply ${hostSum} != guest ${bigSum}`);
      } finally {
        await cleanup(banger, name);
      }
    },
  },
  {
    name: 'vm_exec',
    description: 'vm exec: runs in /root/repo, exit 7 passes through, dirty host warns (one line), --auto-prepare resyncs, stopped VM refused',
    run: async ({ banger, dirs }) => {
      const name = 'smoke-exec';
      const repo = makeRepo(dirs.root, { 'f.txt': 'v1\n' });
      try {
        await ok(banger, ['vm', 'run', '-d', '--name', name, repo]);
        check((await ok(banger, ['vm', 'exec', name, '--', 'pwd'])) === '/root/repo\n', 'vm exec did not run in /root/repo');
        const seven = await banger(['vm', 'exec', name, '--', 'sh', '-c', 'exit 7']);
        check(seven.code === 7, `exit code ${seven.code}, want 7`);
        const clean = await banger(['vm', 'exec', name, '--', 'true']);
        check(!clean.stderr.includes('warning'), `a warning with an unchanged repo: ${clean.stderr}`);
        writeFileSync(join(repo, 'f.txt'), 'v2\n');
        const dirty = await banger(['vm', 'exec', name, '--', 'cat', 'f.txt']);
        check(dirty.code === 0 && dirty.stdout === 'v1\n', `dirty exec: ${dirty.code} ${dirty.stdout}`);
        const warnings = dirty.stderr.split('\n').filter((l) => l.includes('warning'));
        check(warnings.length === 1 && warnings[0]!.includes(repo), `want one warning line naming ${repo}, got: ${dirty.stderr}`);
        const auto = await banger(['vm', 'exec', '--auto-prepare', name, '--', 'cat', 'f.txt']);
        check(auto.code === 0 && auto.stdout === 'v2\n', `--auto-prepare: ${auto.code} ${auto.stdout} ${auto.stderr}`);
        const after = await banger(['vm', 'exec', name, '--', 'true']);
        check(!after.stderr.includes('warning'), `still warns after --auto-prepare: ${after.stderr}`);
        await ok(banger, ['vm', 'stop', name]);
        const stopped = await banger(['vm', 'exec', name, '--', 'true']);
        check(stopped.code !== 0 && /not running/.test(stopped.stderr), `exec on a stopped VM: ${stopped.code} ${stopped.stderr}`);
      } finally {
        await cleanup(banger, name);
      }
    },
  },
  {
    name: 'detach_run',
    description: '-d --rm and -d -- CMD are refused before any VM exists; bare -d leaves a VM that answers SSH',
    run: async ({ banger }) => {
      const name = 'smoke-detach';
      const a = await banger(['vm', 'run', '-d', '--rm', '--name', name]);
      check(a.code !== 0 && /-d and --rm/.test(a.stderr), `-d --rm: ${a.code} ${a.stderr}`);
      const b = await banger(['vm', 'run', '-d', '--name', name, '--', 'echo', 'hi']);
      check(b.code !== 0 && /-d takes no command/.test(b.stderr), `-d -- CMD: ${b.code} ${b.stderr}`);
      check(!(await vmNames(banger)).includes(name), 'a refused -d run created a VM');
      try {
        const out = await ok(banger, ['vm', 'run', '-d', '--name', name]);
        check(out.includes(`banger vm ssh ${name}`), `-d does not say how to reach the VM: ${out}`);
        check((await ok(banger, ['vm', 'ssh', name, '--', 'hostname'])).trim() === name, 'the detached VM does not answer SSH');
      } finally {
        await cleanup(banger, name);
      }
    },
  },
  {
    name: 'bootstrap_precondition',
    description: 'a repo with .mise.toml is refused without --nat (no VM made); --no-bootstrap runs; --nat without mise in the image says how to get it',
    run: async ({ banger, dirs }) => {
      const repo = makeRepo(dirs.root, { '.mise.toml': '[tools]\n', 'x.txt': 'x\n' });
      const refused = await banger(['vm', 'run', '--rm', '--name', 'smoke-boot-a', repo, '--', 'true']);
      check(refused.code !== 0 && /--nat/.test(refused.stderr) && /--no-bootstrap/.test(refused.stderr), `without --nat: ${refused.code} ${refused.stderr}`);
      check(!(await vmNames(banger)).includes('smoke-boot-a'), 'the refused run created a VM');
      const skipped = await banger(['vm', 'run', '--rm', '--no-bootstrap', '--name', 'smoke-boot-b', repo, '--', 'cat', 'x.txt']);
      check(skipped.code === 0 && skipped.stdout === 'x\n', `--no-bootstrap: ${skipped.code} ${skipped.stderr}`);
      const noMise = await banger(['vm', 'run', '--rm', '--nat', '--name', 'smoke-boot-c', repo, '--', 'true']);
      check(noMise.code !== 0 && /no mise/.test(noMise.stderr) && /mise\.run/.test(noMise.stderr), `--nat without mise: ${noMise.code} ${noMise.stderr}`);
    },
  },
  {
    name: 'unsafe_paths',
    description: 'an escaping symlink is refused by name before any VM exists; a guest symlink cannot redirect a resync outside /root/repo',
    run: async ({ banger, dirs }) => {
      const evil = makeRepo(dirs.root, { 'ok.txt': 'ok\n' });
      symlinkSync('../../../etc/passwd', join(evil, 'escape'));
      git(evil, 'add', 'escape');
      const r = await banger(['vm', 'run', '--rm', '--name', 'smoke-unsafe-a', evil, '--', 'true']);
      check(r.code !== 0 && /refusing to send symlink escape/.test(r.stderr), `escaping symlink: ${r.code} ${r.stderr}`);
      check(!(await vmNames(banger)).includes('smoke-unsafe-a'), 'the refused run created a VM');

      const name = 'smoke-unsafe-b';
      const repo = makeRepo(dirs.root, { 'sub/file.txt': 'inside\n', 'gone/old.txt': 'old\n' });
      try {
        await ok(banger, ['vm', 'run', '-d', '--name', name, repo]);
        // The guest swaps directories for symlinks to places outside the repo.
        await ok(banger, ['vm', 'exec', name, '--', 'sh', '-c', 'mkdir -p /tmp/outside /tmp/outside2 && echo keep > /tmp/outside2/old.txt && rm -rf sub gone && ln -s /tmp/outside sub && ln -s /tmp/outside2 gone']);
        git(repo, 'rm', '-q', 'gone/old.txt');
        writeFileSync(join(repo, 'sub', 'file.txt'), 'changed\n');
        git(repo, 'commit', '-q', '-am', 'change');
        await ok(banger, ['vm', 'workspace', 'prepare', name, repo]);
        const out = await ok(banger, ['vm', 'exec', name, '--', 'sh', '-c', 'ls -A /tmp/outside; cat /tmp/outside2/old.txt; test -d sub && ! test -L sub && cat sub/file.txt']);
        check(out === 'keep\nchanged\n', `writes escaped /root/repo, or the resync did not land: ${JSON.stringify(out)}`);
      } finally {
        await cleanup(banger, name);
      }
    },
  },
  {
    name: 'no_egress_without_nat',
    description: "the guest cannot reach a port on the host's 127.0.0.1 via the user-mode gateway without --nat; with --nat it can; vm show says which",
    run: async ({ banger }) => {
      const received: string[] = [];
      const server = createServer((s) => {
        s.on('data', (d) => received.push(d.toString()));
        s.on('error', () => undefined);
      });
      await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
      const port = (server.address() as { port: number }).port;
      // 10.0.2.2 is QEMU user networking's gateway: it forwards to the host's loopback.
      const probe = (tag: string) => ['bash', '-c', `timeout 10 bash -c 'echo ${tag} > /dev/tcp/10.0.2.2/${port}' && echo connected || echo blocked`];
      try {
        const closed = await banger(['vm', 'run', '--rm', '--name', 'smoke-noegress', '--', ...probe('without-nat')]);
        check(closed.code === 0 && closed.stdout.trim() === 'blocked', `without --nat: ${closed.code} ${closed.stdout} ${closed.stderr}`);
        check(!received.join('').includes('without-nat'), 'the guest reached the host without --nat');
        const open = await banger(['vm', 'run', '--rm', '--nat', '--name', 'smoke-egress', '--', ...probe('with-nat')]);
        check(open.code === 0 && open.stdout.trim() === 'connected', `with --nat: ${open.code} ${open.stdout} ${open.stderr}`);
        for (let i = 0; i < 20 && !received.join('').includes('with-nat'); i++) await new Promise((r) => setTimeout(r, 100));
        check(received.join('').includes('with-nat'), 'the host listener got nothing with --nat');
        await ok(banger, ['vm', 'create', '--no-start', '--nat', '--name', 'smoke-egress-show']);
        const shown = await ok(banger, ['vm', 'show', 'smoke-egress-show']);
        check(/egress\s+allowed/.test(shown), `vm show does not say egress is allowed: ${shown}`);
        const json = JSON.parse(await ok(banger, ['vm', 'show', 'smoke-egress-show', '--json'])) as { nat: boolean };
        check(json.nat === true, 'vm show --json lacks nat: true');
      } finally {
        server.close();
        await cleanup(banger, 'smoke-egress-show');
      }
    },
  },
];
