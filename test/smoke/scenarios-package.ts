/**
 * The published package, as a user gets it: `npm pack` of this checkout,
 * `npm install -g` of the tarball into a temporary prefix (native modules
 * compiled there, against the node that runs this suite), then the INSTALLED
 * `banger` — its own bangerd, not the checkout's — runs `doctor`, a
 * `vm run --rm`, an SDK script in a project outside the checkout, and the
 * package's own example. It uses this run's directories (dirs.env), so the
 * default image and its snapshot are already there.
 *
 * The SDK project links the global install (`npm link banger`) rather than
 * installing the tarball a second time (`npm install ./banger-*.tgz`, what
 * docs/SDK.md shows): both give the project a node_modules/banger with the
 * same files, and the second would compile better-sqlite3 again (minutes).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { check, cleanup, liveProcessesMentioning, ok, repoRoot, runLogged as run, sleep, type CliResult } from './harness.js';
import type { Scenario } from './scenarios.js';

/** The VMs this scenario may make (each is deleted on the way out, pass or fail). */
const RUN_VM = 'smoke-pkg-run';
const SDK_VM = 'smoke-pkg-sdk';
const EXAMPLE_VM = 'smoke-pkg-example';

interface PackEntry {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: Array<{ path: string; size: number }>;
}

/** What must not be in the tarball: a user installs it on a clean machine. */
const FORBIDDEN: Array<[RegExp, string]> = [
  [/\.map$/, 'a source map'],
  [/(^|\/)tests?\/|\.test\.|\.test-support\./, 'a test file'],
  [/(^|\/)node_modules\//, 'node_modules'],
  [/^src\/|(?<!\.d)\.[mc]?ts$/, 'TypeScript source'],
  [/(^|\/)\.smoke|state\.db|bangerd\.(log|out|pid|sock|lock)|\.log$/, 'banger state'],
  [/(^|\/)\.(env|npmrc|git|ssh)|(^|\/)id_(rsa|ecdsa|ed25519)|\.(pem|key)$|known_hosts/, 'a secret or dotfile'],
];

/**
 * The environment npm runs in: PATH starts with the node running this suite
 * (so `env node` in npm, node-gyp and the installed bin/ scripts is that one,
 * and the native modules are built for its ABI), npm_config_nodedir is its
 * headers (better-sqlite3 compiles from source here; scripts/setup.sh), and
 * npm's own script variables (from `npm run smoke`: the checkout's prefix)
 * are left out.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const keep = /^npm_config_(cache|registry|userconfig|nodedir)$/i;
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) || keep.test(k)) env[k] = v;
  const nodeBin = dirname(process.execPath);
  env.PATH = `${nodeBin}:${process.env.PATH ?? ''}`;
  const nodePrefix = dirname(nodeBin);
  if (existsSync(join(nodePrefix, 'include', 'node', 'node.h'))) env.npm_config_nodedir = nodePrefix;
  env.JOBS = 'max'; // node-gyp: compile with every core
  return env;
}

/** The pid of the daemon answering on this run's socket, asked with CLI (`daemon status --json`); undefined when none runs. */
async function daemonPid(cli: (args: string[]) => Promise<CliResult>): Promise<number | undefined> {
  const r = await cli(['daemon', 'status', '--json']);
  const s = JSON.parse(r.stdout) as { running: boolean; pid?: number };
  check(s.running === (r.code === 0), `daemon status --json: running ${s.running} with exit ${r.code}`);
  return s.running ? s.pid : undefined;
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** The SDK script a user would write: imports 'banger' from its project's node_modules; prints one JSON line. */
const SDK_SCRIPT = `import { Banger, VERSION } from 'banger';
const out = { version: VERSION, resolved: import.meta.resolve('banger') };
const banger = await Banger.connect();
try {
  const vm = await banger.createVm({ name: process.argv[2] });
  out.bootMs = vm.boot?.bootMs ?? null;
  out.clonedFrom = vm.boot?.clonedFrom ?? null;
  try {
    const r = await vm.exec(['sh', '-c', 'echo pkg-ok; exit 5']);
    Object.assign(out, { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr });
  } finally {
    await vm.delete({ force: true });
    out.deleted = true;
  }
} finally {
  banger.close();
}
console.log(JSON.stringify(out));
`;

export const packageScenarios: Scenario[] = [
  {
    name: 'package_install',
    exclusive: true,
    description: 'npm pack → npm install -g into a temp prefix; the installed banger (its own bangerd) runs doctor, vm run --rm, an SDK script and the example',
    run: async ({ banger, dirs, log }) => {
      const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
        name: string;
        version: string;
        main?: string;
        types?: string;
        bin: Record<string, string>;
        exports: Record<string, string | Record<string, string>>;
      };
      const tmp = mkdtempSync(join(tmpdir(), 'banger-smoke-pkg-'));
      const prefix = join(tmp, 'prefix');
      const app = join(tmp, 'app');
      const pkgDir = join(prefix, 'lib', 'node_modules', pkg.name);
      const daemonMain = join(pkgDir, 'dist', 'src', 'daemon', 'main.js');
      const env = npmEnv();
      const npm = (args: string[], cwd: string, timeoutMs: number, extra: NodeJS.ProcessEnv = {}) =>
        run(log, 'npm', args, { cwd, env: { ...env, ...extra }, timeoutMs });
      // The installed CLI as a user runs it: its bin/ script (`#!/usr/bin/env node`), from a directory outside the checkout.
      const installedEnv = { ...dirs.env, PATH: env.PATH };
      const installed = (args: string[], timeoutMs = 6 * 60_000) =>
        run(log, join(prefix, 'bin', 'banger'), args, { cwd: app, env: installedEnv, timeoutMs, label: 'installed banger' });
      let installedOk = false;
      let vmsGone = false;
      try {
        check(!realpathSync(tmp).startsWith(`${repoRoot}/`), `the temp dir ${tmp} is inside the checkout (TMPDIR)`);
        // The daemon of this run is the checkout's: stop it, so that the installed package starts its own.
        const stop = await banger(['daemon', 'stop']);
        check(stop.code === 0, `daemon stop → exit ${stop.code}: ${stop.stderr.trim()}`);

        // npm pack: the file list is what a clean machine gets.
        const pack = await npm(['pack', '--json', '--pack-destination', tmp], repoRoot, 5 * 60_000);
        check(pack.code === 0, `npm pack → exit ${pack.code}: ${pack.stderr.trim().split('\n').slice(-3).join(' | ')}`);
        const entry = (JSON.parse(pack.stdout) as PackEntry[])[0];
        check(entry !== undefined, 'npm pack --json printed no entry');
        const files = new Set(entry.files.map((f) => f.path));
        log(`npm pack: ${entry.filename}, ${entry.entryCount} files, ${(entry.size / 1024).toFixed(0)} KiB (${(entry.unpackedSize / 1048576).toFixed(1)} MiB unpacked) in ${(pack.ms / 1000).toFixed(1)} s`);
        const targets = [
          'package.json',
          'README.md',
          ...Object.values(pkg.bin),
          ...Object.values(pkg.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e))),
          ...[pkg.main, pkg.types].filter((p): p is string => p !== undefined),
          'dist/src/daemon/main.js', // spawned by path (src/sdk/connect.ts), not named in package.json
          'examples/run.mjs', // run below
        ].map((p) => p.replace(/^\.\//, ''));
        const missing = [...new Set(targets)].filter((p) => !files.has(p));
        check(missing.length === 0, `the tarball lacks ${missing.join(', ')}`);
        const bad = entry.files.flatMap((f) => FORBIDDEN.filter(([re]) => re.test(f.path)).map(([, what]) => `${f.path} (${what})`));
        check(bad.length === 0, `the tarball has what it should not: ${bad.slice(0, 10).join(', ')}${bad.length > 10 ? ` and ${bad.length - 10} more` : ''}`);

        // npm install -g of the tarball into a prefix of its own, as docs/SDK.md says.
        const install = await npm(['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(tmp, entry.filename)], tmp, 20 * 60_000);
        check(install.code === 0, `npm install -g → exit ${install.code}: ${install.stderr.trim().split('\n').slice(-5).join(' | ')}`);
        log(`npm install -g: ${install.stdout.trim().split('\n').pop() ?? ''} in ${(install.ms / 1000).toFixed(1)} s${env.npm_config_nodedir ? ` (nodedir ${env.npm_config_nodedir})` : ''}`);
        for (const b of Object.keys(pkg.bin)) check(existsSync(join(prefix, 'bin', b)), `npm install -g made no ${prefix}/bin/${b}`);
        installedOk = true;
        mkdirSync(app);

        const version = await installed(['--version']);
        check(version.code === 0 && version.stdout.trim() === pkg.version, `installed banger --version → exit ${version.code}, ${JSON.stringify(version.stdout)} (want ${pkg.version})`);
        check((await daemonPid(installed)) === undefined, 'a daemon still answers after daemon stop');

        // doctor: exit 0 (no FAIL), every line a check, and this run's state dir.
        const doctor = await installed(['doctor']);
        check(doctor.code === 0, `installed banger doctor → exit ${doctor.code}: ${doctor.stdout.split('\n').filter((l) => l.startsWith('FAIL')).join(' | ')}`);
        const lines = doctor.stdout.trim().split('\n');
        check(lines.length >= 5 && lines.every((l) => /^(PASS|WARN) {2}\S/.test(l)), `doctor output: ${JSON.stringify(doctor.stdout.slice(0, 600))}`);
        for (const name of ['qemu-system-x86_64', 'qemu-img', 'state dir', 'runtime dir', 'daemon']) {
          check(lines.some((l) => l.slice(6).startsWith(name)), `doctor has no "${name}" check`);
        }
        check(lines.some((l) => l.includes(dirs.stateDir)), `doctor does not name the state dir ${dirs.stateDir}`);

        // vm run --rm: starts the installed package's bangerd, which serves it.
        const r = await installed(['vm', 'run', '--rm', '--name', RUN_VM, '--', 'true']);
        check(r.code === 0, `installed banger vm run --rm -- true → exit ${r.code}`);
        check(/ready in \d+(\.\d+)? s/.test(r.stderr), 'no "ready in N s" line on stderr');
        const pid = await daemonPid(installed);
        check(pid !== undefined, 'no daemon answers after vm run');
        const argv = cmdline(pid);
        log(`daemon pid ${pid}: ${argv.join(' ')}`);
        check(argv.includes(daemonMain) || argv.includes(realpathSync(daemonMain)), `the daemon that served is not the installed one: ${argv.join(' ')}`);

        // An SDK script in a project outside the checkout: node_modules/banger → the global install.
        writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'smoke-pkg-app', private: true, type: 'module' }, null, 2) + '\n');
        writeFileSync(join(app, 'sdk.mjs'), SDK_SCRIPT);
        const link = await npm(['link', pkg.name, '--prefer-offline', '--no-audit', '--no-fund'], app, 5 * 60_000, { npm_config_prefix: prefix });
        check(link.code === 0, `npm link ${pkg.name} → exit ${link.code}: ${link.stderr.trim().split('\n').slice(-3).join(' | ')}`);
        check(realpathSync(join(app, 'node_modules', pkg.name)) === realpathSync(pkgDir), `node_modules/${pkg.name} is not the global install`);
        const sdk = await run(log, process.execPath, ['sdk.mjs', SDK_VM], { cwd: app, env: installedEnv, timeoutMs: 6 * 60_000, label: 'node' });
        check(sdk.code === 0, `SDK script → exit ${sdk.code}: ${sdk.stderr.trim().split('\n').slice(-5).join(' | ')}`);
        const line = sdk.stdout.trim().split('\n').pop() ?? '';
        log(`  ${line}`);
        const out = JSON.parse(line) as { version: string; resolved: string; exitCode: number; stdout: string; stderr: string; deleted?: boolean };
        check(out.version === pkg.version, `the SDK says version ${out.version}`);
        check(out.resolved.startsWith(`file://${realpathSync(pkgDir)}/`), `'banger' resolved to ${out.resolved}, not the installed package`);
        check(out.exitCode === 5, `exec exitCode ${out.exitCode}, want 5`);
        check(out.stdout === 'pkg-ok\n', `exec stdout ${JSON.stringify(out.stdout)}`);
        check(out.deleted === true, 'the SDK script did not delete its VM');

        // The package's own example, run where npm put it (it imports 'banger' by self-reference).
        const ex = await run(log, process.execPath, [join(pkgDir, 'examples', 'run.mjs'), '--', 'sh', '-c', 'echo example-ok; exit 7'], {
          cwd: app,
          env: { ...installedEnv, BANGER_EXAMPLE_NAME: EXAMPLE_VM },
          timeoutMs: 6 * 60_000,
          label: 'node',
        });
        check(ex.code === 7, `examples/run.mjs → exit ${ex.code}, want 7`);
        check(ex.stdout.includes('example-ok'), `examples/run.mjs stdout ${JSON.stringify(ex.stdout)}`);

        check((await daemonPid(installed)) === pid, 'the daemon changed during the scenario: it was not one installed daemon that served');
        const left = await installed(['vm', 'list', '--json']);
        const names = (JSON.parse(left.stdout) as Array<{ name: string }>).map((v) => v.name);
        check(!names.some((n) => n.startsWith('smoke-pkg-')), `VMs left by the installed package: ${names.join(', ')}`);
        vmsGone = true;
      } finally {
        if (installedOk) {
          // The installed daemon deletes what it made, then stops; one that will not stop is killed (it is ours: it runs from this temp prefix).
          if (!vmsGone) for (const n of [RUN_VM, SDK_VM, EXAMPLE_VM]) await installed(['vm', 'delete', '-f', n], 2 * 60_000);
          await installed(['daemon', 'stop'], 60_000);
          for (let i = 0; i < 50 && liveProcessesMentioning(daemonMain).length; i++) await sleep(100);
          for (const p of liveProcessesMentioning(daemonMain)) {
            log(`installed bangerd pid ${p.pid} still running after daemon stop: SIGKILL`);
            try {
              process.kill(p.pid, 'SIGKILL');
            } catch {
              /* gone */
            }
          }
        }
        // The checkout's daemon (started again by this) removes anything left.
        if (!vmsGone) await cleanup(banger, RUN_VM, SDK_VM, EXAMPLE_VM);
        rmSync(tmp, { recursive: true, force: true });
      }
      // The harness's commands are served by the checkout's daemon again (vm list starts it).
      await ok(banger, ['vm', 'list', '--json']);
      const after = await daemonPid(banger);
      check(after !== undefined && cmdline(after).includes(join(repoRoot, 'dist', 'src', 'daemon', 'main.js')), `after the scenario the daemon is ${after === undefined ? 'not running' : cmdline(after).join(' ')}`);
    },
  },
];
