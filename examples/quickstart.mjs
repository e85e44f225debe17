// quickstart.mjs: one VM from start to finish with banger's SDK.
//
//   npm run build                              # once, in the checkout
//   node examples/quickstart.mjs [REPO]        # REPO: a directory in a git repo (default: a tiny temp repo)
//
// It creates a VM, runs commands in it (exit codes, streamed output), stops
// and starts it, copies a git repo into it, edits a file there and brings the
// edit back as a patch, then deletes the VM. Each step prints one JSON line.
// The VM's name comes from BANGER_EXAMPLE_NAME (default: quickstart-<random>).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Banger } from 'banger';

const name = process.env.BANGER_EXAMPLE_NAME ?? `quickstart-${Math.random().toString(16).slice(2, 6)}`;
const print = (step, data) => console.log(JSON.stringify({ example: 'quickstart', step, ...data }));

// A repo to copy into the VM: the one given, or a throwaway one made here.
let repo = process.argv[2] ?? process.env.BANGER_EXAMPLE_REPO;
let tempRepo;
if (!repo) {
  tempRepo = repo = mkdtempSync(join(tmpdir(), 'banger-quickstart-'));
  writeFileSync(join(repo, 'hello.txt'), 'hello from the host\n');
  const git = (...args) => execFileSync('git', ['-c', 'user.name=quickstart', '-c', 'user.email=quickstart@example.invalid', ...args], { cwd: repo });
  git('init', '-q');
  git('add', '-A');
  git('commit', '-q', '-m', 'initial');
}

// Connects to bangerd (starting it when it is not running), like the CLI.
const banger = await Banger.connect();
let vm;
try {
  // Boots a VM (a warm clone of the image's snapshot when there is one) and waits until it answers SSH.
  vm = await banger.createVm({ name, vcpu: 2, memoryMib: 1024 });
  print('create', { name: vm.name, state: vm.state, bootMs: vm.boot?.bootMs, clonedFrom: vm.boot?.clonedFrom ?? null });

  // exec takes an argv (no shell of yours in between); a non-zero exit is a result, not an error.
  const r = await vm.exec(['sh', '-c', 'echo hi; echo oops >&2; exit 3']);
  print('exec', { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr });

  // Output streams while the command runs: onStdout sees each piece as it arrives.
  const t0 = Date.now();
  const chunks = [];
  await vm.exec(['sh', '-c', 'echo first; sleep 3; echo second'], {
    onStdout: (buf) => chunks.push({ atMs: Date.now() - t0, text: buf.toString() }),
  });
  print('stream', { chunks, resolvedAtMs: Date.now() - t0 });

  // A stopped VM keeps its disks; start boots it again.
  const stopped = await vm.stop();
  print('stop', { state: stopped.vm.state });
  const started = await vm.start();
  print('start', { state: started.vm.state, bootMs: started.bootMs });

  // The repo's tracked files (uncommitted edits too) and its history go to /root/repo in the guest.
  const prep = await vm.prepareWorkspace(repo);
  print('prepare', { guestPath: prep.workspace.guestPath, files: prep.workspace.files });

  // Change something in the guest, then take the change home as a git patch.
  const edit = await vm.exec(['sh', '-c', 'echo "edited in the VM" >> hello.txt && echo new > added.txt && git status --porcelain'], { cwd: '/root/repo' });
  print('edit', { exitCode: edit.exitCode, status: edit.stdout });
  const patch = await vm.exportWorkspace();
  print('export', { bytes: Buffer.byteLength(patch), patch }); // apply it with: git -C REPO apply
} finally {
  // Whatever happened above, the VM goes (force: it is running).
  if (vm) {
    await vm.delete({ force: true });
    print('delete', { name });
  }
  banger.close();
  if (tempRepo) rmSync(tempRepo, { recursive: true, force: true });
}
