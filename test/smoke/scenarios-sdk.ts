/**
 * The SDK, as a user meets it: the scripts in examples/ (plain ESM that
 * imports 'banger' by package self-reference) run as their own processes
 * against this run's daemon and real VMs. What they print (JSON lines, the
 * command's own output) is checked here, and so is what they leave behind.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { check, cleanup, ok, qemuProcesses, repoRoot, type Banger, type RunDirs, git } from './harness.js';
import type { Scenario } from './scenarios.js';

const EXAMPLES = join(repoRoot, 'examples');


/** A throwaway repo under the run's root with FILES committed. */
function makeRepo(root: string, files: Record<string, string>): string {
  mkdirSync(join(root, 'repos'), { recursive: true });
  const dir = mkdtempSync(join(root, 'repos', 'sdk-'));
  git(dir, 'init', '-q', '-b', 'main');
  for (const [p, content] of Object.entries(files)) writeFileSync(join(dir, p), content);
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', 'initial');
  return dir;
}

interface ExampleRun {
  code: number;
  stdout: Buffer;
  stderr: string;
  /** Each piece of stdout and when it arrived (ms since the spawn). */
  chunks: Array<{ atMs: number; data: Buffer }>;
}

/** Runs examples/FILE ARGS with node, in this run's state (dirs.env) plus ENV. */
function runExample(dirs: RunDirs, log: (l: string) => void, file: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 6 * 60_000): Promise<ExampleRun> {
  const script = join(EXAMPLES, file);
  check(existsSync(script), `${script} is missing`);
  log(`$ ${Object.entries(env).map(([k, v]) => `${k}=${v} `).join('')}node examples/${file} ${args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ')}`);
  return new Promise((resolvePromise, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [script, ...args], { cwd: repoRoot, env: { ...dirs.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: ExampleRun['chunks'] = [];
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => chunks.push({ atMs: Date.now() - t0, data: c }));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res = { code: code ?? (signal === 'SIGKILL' ? 137 : 143), stdout: Buffer.concat(chunks.map((c) => c.data)), stderr, chunks };
      log(`  → exit ${res.code} in ${((Date.now() - t0) / 1000).toFixed(1)} s${stderr.trim() ? `; stderr: ${stderr.trim().split('\n').slice(-6).join(' | ')}` : ''}`);
      resolvePromise(res);
    });
  });
}

/** The JSON lines an example printed, logged as they are checked. */
function jsonLines(r: ExampleRun, log: (l: string) => void): Array<Record<string, unknown>> {
  const lines = r.stdout
    .toString('utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'));
  for (const l of lines) log(`  ${l.length > 300 ? `${l.slice(0, 300)}…` : l}`);
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
}

function step(lines: Array<Record<string, unknown>>, key: string, value: string): Record<string, unknown> {
  const found = lines.find((l) => l[key] === value);
  check(found, `no ${key} ${JSON.stringify(value)} line among ${lines.length} printed`);
  return found;
}

/** This run's qemu processes started for the VM NAME (QEMU gets `-name guest=NAME`). */
function qemuNamed(dirs: RunDirs, name: string): number[] {
  return qemuProcesses(dirs).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(`guest=${name}`);
    } catch {
      return false; // exited meanwhile
    }
  });
}

/** NAMES are gone: no row in `vm list --json`, no qemu process. */
async function gone(banger: Banger, dirs: RunDirs, ...names: string[]): Promise<void> {
  const listed = (JSON.parse(await ok(banger, ['vm', 'list', '--json'])) as Array<{ name: string }>).map((v) => v.name);
  for (const n of names) {
    check(!listed.includes(n), `VM ${n} is still listed by vm list --json`);
    const q = qemuNamed(dirs, n);
    check(q.length === 0, `qemu of ${n} still running: pid ${q.join(', ')}`);
  }
}

/** Arguments that a shell on either side would mangle: each must reach the guest command unchanged. */
const TRICKY_ARGS = ['a b', "c'd", '"dq"', '$HOME', '*', '', 'new\nline', 'ünïcødé ✓ 🐢', 'back\\slash', '`id`', '$(id)', ';', '--', '-n', '  lead and trail  ', 'tab\there'];

export const sdkScenarios: Scenario[] = [
  {
    name: 'sdk_examples',
    description: 'examples/quickstart.mjs and errors.mjs through the SDK: exit codes, streamed output, stop/start, workspace prepare → guest edit → export that git apply --check takes; BangerError codes and hints',
    run: async ({ banger, dirs, log }) => {
      const qs = 'smoke-sdk-qs';
      const err = 'smoke-sdk-err';
      try {
        // quickstart: one VM from create to delete.
        const repo = makeRepo(dirs.root, { 'hello.txt': 'hello from the host\n' });
        const r = await runExample(dirs, log, 'quickstart.mjs', [repo], { BANGER_EXAMPLE_NAME: qs });
        const lines = jsonLines(r, log);
        check(r.code === 0, `quickstart exit ${r.code}: ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`);
        const create = step(lines, 'step', 'create');
        check(create.name === qs && create.state === 'running', `create printed ${JSON.stringify(create)}`);
        const ex = step(lines, 'step', 'exec');
        check(ex.exitCode === 3, `exit 3 came back as exitCode ${String(ex.exitCode)}`);
        check(ex.stdout === 'hi\n' && ex.stderr === 'oops\n', `exec output ${JSON.stringify(ex)}`);

        // Streaming: "first" arrives while the command still sleeps (3 s), not when exec resolves.
        const stream = step(lines, 'step', 'stream') as { chunks: Array<{ atMs: number; text: string }>; resolvedAtMs: number };
        check(stream.chunks.map((c) => c.text).join('') === 'first\nsecond\n', `streamed ${JSON.stringify(stream.chunks)}`);
        const lead = stream.resolvedAtMs - stream.chunks[0]!.atMs;
        log(`  first chunk ${lead} ms before exec resolved`);
        check(lead >= 2000, `the first chunk came only ${lead} ms before exec resolved (want ≥ 2000: output is not streamed)`);

        check(step(lines, 'step', 'stop').state === 'stopped', 'stop did not leave the VM stopped');
        check(step(lines, 'step', 'start').state === 'running', 'start did not leave the VM running');
        const prep = step(lines, 'step', 'prepare');
        check(prep.guestPath === '/root/repo' && prep.files === 1, `prepare printed ${JSON.stringify(prep)}`);
        const edit = step(lines, 'step', 'edit');
        check(edit.exitCode === 0 && edit.status === ' M hello.txt\n?? added.txt\n', `guest edit: ${JSON.stringify(edit)}`);

        // The patch applies to the host repo and gives the guest's files.
        const exported = step(lines, 'step', 'export') as { patch: string; bytes: number };
        check(exported.patch.includes('+edited in the VM') && exported.patch.includes('b/added.txt'), `patch lacks the guest's edits: ${exported.patch}`);
        check(Buffer.byteLength(exported.patch) === exported.bytes, 'patch length differs from the bytes printed');
        const patchFile = join(dirs.root, 'sdk-quickstart.patch');
        writeFileSync(patchFile, exported.patch);
        git(repo, 'apply', '--check', patchFile);
        git(repo, 'apply', patchFile);
        const hello = readFileSync(join(repo, 'hello.txt'), 'utf8');
        check(hello === 'hello from the host\nedited in the VM\n', `hello.txt after git apply: ${JSON.stringify(hello)}`);
        check(readFileSync(join(repo, 'added.txt'), 'utf8') === 'new\n', 'added.txt after git apply differs');
        check(step(lines, 'step', 'delete').name === qs, 'quickstart did not say it deleted its VM');
        await gone(banger, dirs, qs);

        // errors: BangerError's code, message and hint.
        const e = await runExample(dirs, log, 'errors.mjs', [], { BANGER_EXAMPLE_NAME: err });
        const cases = jsonLines(e, log);
        check(e.code === 0, `errors.mjs exit ${e.code}: ${e.stderr.trim().split('\n').slice(-5).join(' | ')}`);
        const bad = step(cases, 'case', 'bad-name');
        check(bad.failed === true && bad.code === 'bad_request', `a bad name gave ${JSON.stringify(bad)}`);
        check(typeof bad.message === 'string' && bad.message.includes('Bad_Name'), `the message does not name the input: ${String(bad.message)}`);
        check(typeof bad.hint === 'string' && bad.hint.includes('1-63 characters'), `no hint with the naming rule: ${String(bad.hint)}`);
        const missing = step(cases, 'case', 'not-found');
        check(missing.code === 'not_found' && typeof missing.hint === 'string', `a missing VM gave ${JSON.stringify(missing)}`);
        const stopped = step(cases, 'case', 'not-running');
        check(stopped.code === 'not_running' && typeof stopped.hint === 'string' && stopped.hint.includes(err), `exec in a stopped VM gave ${JSON.stringify(stopped)}`);
        await gone(banger, dirs, err);
      } finally {
        await cleanup(banger, qs, err);
      }
    },
  },
  {
    name: 'sdk_run',
    description: 'examples/run.mjs and abort.mjs: banger.run streams output, keeps argv byte-identical, returns the exit code; an aborted run rejects with interrupted and leaves no VM',
    run: async ({ banger, dirs, log }) => {
      const name = 'smoke-sdk-run';
      const abortBase = 'smoke-sdk-abort';
      const aborted = [`${abortBase}-cmd`, `${abortBase}-boot`];
      try {
        // run: the repo's file, argv, streaming and the exit code, from one throwaway VM.
        const repo = makeRepo(dirs.root, { 'marker.txt': 'from the host repo\n' });
        const script = 'printf "%s\\0" "$PWD" "$(cat marker.txt)" "$@"; sleep 3; printf "%s\\0" late; exit 3';
        const r = await runExample(dirs, log, 'run.mjs', [repo, '--', 'sh', '-c', script, 'sh', ...TRICKY_ARGS], { BANGER_EXAMPLE_NAME: name });
        check(r.code === 3, `run.mjs exit ${r.code}, want 3 (the command's): ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`);
        const got = r.stdout.toString('utf8').split('\0');
        const want = ['/root/repo', 'from the host repo', ...TRICKY_ARGS, 'late', ''];
        check(JSON.stringify(got) === JSON.stringify(want), `the guest printed ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
        // Streamed: the arguments reached this process ≥ 2 s before "late" (the command sleeps 3 s in between).
        const lateOffset = r.stdout.indexOf('late\0');
        let seen = 0;
        const lateAt = r.chunks.find((c) => (seen += c.data.length) > lateOffset)!.atMs;
        const lead = lateAt - r.chunks[0]!.atMs;
        log(`  first output ${lead} ms before the last`);
        check(lead >= 2000, `the first output arrived only ${lead} ms before the last (want ≥ 2000: output is not streamed)`);
        check(/ready in \d/.test(r.stderr) && /VM deleted/.test(r.stderr), `run.mjs did not report readiness and deletion: ${r.stderr}`);
        await gone(banger, dirs, name);

        // abort: one run aborted while its command runs, one while its VM boots.
        const a = await runExample(dirs, log, 'abort.mjs', [], { BANGER_EXAMPLE_NAME: abortBase });
        const lines = jsonLines(a, log);
        check(a.code === 0, `abort.mjs exit ${a.code}: ${a.stderr.trim().split('\n').slice(-5).join(' | ')}`);
        for (const [phase, vm] of [['command', aborted[0]!], ['boot', aborted[1]!]] as const) {
          const l = step(lines, 'phase', phase);
          check(l.name === vm, `phase ${phase} ran in ${String(l.name)}, want ${vm}`);
          check(l.outcome === 'rejected' && l.code === 'interrupted', `the run aborted during ${phase} gave ${JSON.stringify(l)} (want a rejection with code interrupted)`);
          check(l.listed === false, `${vm} was still listed when run() rejected`);
        }
        check(step(lines, 'phase', 'command').ready === true && a.stderr.includes(`${aborted[0]} is ready`), 'the command-phase run was not aborted after onReady');
        // Not asserted: with a fast enough boot (KVM) the deadline may pass after the VM is ready.
        log(`  the boot-phase run was aborted ${step(lines, 'phase', 'boot').ready === true ? 'after its VM was ready' : 'before its VM was ready'}`);
        await gone(banger, dirs, ...aborted);
      } finally {
        await cleanup(banger, name, ...aborted);
      }
    },
  },
];
