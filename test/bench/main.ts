/**
 * npm run bench: banger's cold create-to-exec time against a hand-written
 * QEMU command booting the same kernel, initrd and image, measured
 * alternately in one run, N pairs (--pairs, default 7; these machines are
 * noisy, so only the ratio means much).
 *   banger: `banger vm run --rm --cold -- true` (create, boot, agent+SSH wait, run, delete)
 *   plain:  qemu-system-x86_64 by hand + poll `ssh ... true` until it works, then kill
 * It is a benchmark, not a test: it never fails on time.
 * `-- --stop` adds vm stop times; `-- --workspace` runs only the workspace
 * bench (test/bench/workspace.ts); `-- --warm [--pairs N]` runs only warm
 * clones against cold boots, `-- --memory [--idle S]` only an idle VM's host
 * RSS against its guest's used memory (test/bench/warm.ts), `-- --tuning`
 * only the tuned default image against an untuned one (test/bench/tuning.ts),
 * `-- --pull [--pairs N]` only pull throughput: banger's registry client
 * against `skopeo copy` to a dir: from a local registry (test/bench/pull.ts;
 * no VM, no default image, no state dir).
 * `-- --cli [--pairs N]` only CLI start-up: `banger vm list` and
 * `banger --version` against `node -e 0` (test/bench/cli.ts; no VM).
 * `-- --state DIR` runs against DIR as the state dir (e.g. one holding a
 * built image: hard-link its images/<name> in) with runtime, config and
 * cache dirs of the run's own (removed after, with the daemon stopped);
 * without it the bench uses your banger's dirs.
 */
import { mkdtempSync, rmSync, readFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../../src/system/runner.js';
import { resolveLayout, imagePaths } from '../../src/paths/paths.js';
import { writeConfigDisk } from '../../src/guest/config-disk.js';
import { createWorkDisk } from '../../src/guest/work-disk.js';
import { ensureKeypair } from '../../src/guest/keys.js';
import { freeLoopbackPort } from '../../src/system/ports.js';
import { killProcess, readPidFile, readStartTime, waitForExit } from '../../src/system/proc.js';
import { makeRunDirs, repoRoot } from '../smoke/harness.js';
import { hostTscKhz, probeKvm, resolveAccel } from '../../src/vmm/qemu/accel.js';
import { workspaceBench } from './workspace.js';
import { memoryReport, warmBench } from './warm.js';
import { tuningBench } from './tuning.js';
import { pullBench } from './pull.js';
import { cliBench } from './cli.js';
import { alternatePairs, median, spread } from './stages.js';

interface BenchArgs {
  runs: number;
  stop: boolean;
  workspace: boolean;
  warm: boolean;
  memory: boolean;
  tuning: boolean;
  pull: boolean;
  cli: boolean;
  pairs: number;
  idleSeconds: number;
  state?: string;
}

function usage(err?: string): never {
  if (err) console.error(`bench: ${err}`);
  console.error('usage: npm run bench -- [--pairs N] [--stop] | --workspace [--runs N] | --warm [--pairs N] | --tuning [--pairs N] | --memory [--idle S] | --pull [--pairs N] | --cli [--pairs N]  [--state DIR, not with --pull or --cli]');
  process.exit(err ? 2 : 0);
}

function parseArgs(argv: string[]): BenchArgs {
  const a: BenchArgs = { runs: 3, stop: false, workspace: false, warm: false, memory: false, tuning: false, pull: false, cli: false, pairs: 7, idleSeconds: 10 };
  const whole = (flag: string, v: string, min: number) => {
    const n = Number(v);
    if (!/^\d+$/.test(v) || n < min) usage(`${flag} must be a whole number ≥ ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.startsWith('--') && argv[i]!.includes('=') ? [argv[i]!.slice(0, argv[i]!.indexOf('=')), argv[i]!.slice(argv[i]!.indexOf('=') + 1)] : [argv[i]!, undefined];
    const value = () => inline ?? argv[++i] ?? usage(`${flag} needs a value`);
    if (flag === '--runs') a.runs = whole(flag, value(), 1);
    else if (flag === '--stop') a.stop = true;
    else if (flag === '--workspace') a.workspace = true;
    else if (flag === '--warm') a.warm = true;
    else if (flag === '--memory') a.memory = true;
    else if (flag === '--tuning') a.tuning = true;
    else if (flag === '--pull') a.pull = true;
    else if (flag === '--cli') a.cli = true;
    else if (flag === '--pairs') a.pairs = whole(flag, value(), 1);
    else if (flag === '--idle') a.idleSeconds = whole(flag, value(), 0);
    else if (flag === '--state') a.state = value();
    else if (flag === '-h' || flag === '--help') usage();
    else usage(`unknown argument ${argv[i]}`);
  }
  if (a.cli && a.state !== undefined) usage('--cli uses no state dir (it makes temp dirs of its own)');
  if (a.pull && a.state !== undefined) usage('--pull uses no state dir (its registry and destinations are temp dirs of its own)');
  return a;
}

const args = parseArgs(process.argv.slice(2));
/** --state DIR: the run's own runtime, config and cache dirs (removed at the end); DIR keeps its images. */
let runRoot: string | undefined;
if (args.state) {
  mkdirSync(args.state, { recursive: true, mode: 0o700 });
  runRoot = mkdtempSync(join(tmpdir(), 'bench-run-'));
  Object.assign(process.env, makeRunDirs(runRoot, args.state).env);
}

/** The plain line uses the accelerator banger would pick here (same probe). */
let plainAccel: 'kvm' | 'tcg' = 'tcg';

const runner = createRunner();
const layout = resolveLayout();
const runs = args.runs;
const banger = (args: string[]) => runner.run([process.execPath, join(repoRoot, 'bin', 'banger.js'), ...args], { allowFailure: true, env: { ...process.env, NO_COLOR: '1' } });

async function timeBanger(): Promise<number> {
  const t0 = performance.now();
  const r = await banger(['vm', 'run', '--rm', '--cold', '--', 'true']);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`banger vm run failed: ${r.stderr}`);
  return ms;
}

async function timePlain(): Promise<number> {
  const img = imagePaths(layout, 'bookworm');
  const dir = mkdtempSync(join(tmpdir(), 'bench-plain-'));
  const key = await ensureKeypair(runner, join(dir, 'id_ed25519'));
  const mac = '52:54:00:be:0c:01';
  await writeConfigDisk(runner, join(dir, 'config.img'), {
    hostname: 'plain',
    authorizedKeys: [key.publicKey],
    network: { mac, address: '10.0.2.15', prefixLength: 24, gateway: '10.0.2.2', dns: ['10.0.2.3'] },
  }, dir);
  const port = await freeLoopbackPort();
  const t0 = performance.now();
  await runner.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', img.rootfs, '-F', 'raw', join(dir, 'root.qcow2'), '4G']);
  // A fresh work disk too, as banger makes one (without it the guest waits
  // for its /root disk until the fstab device timeout).
  await createWorkDisk(runner, join(dir, 'work.ext4'), 8 * 1024 ** 3);
  // The hand-written line: what a careful user would type.
  await runner.run([
    'qemu-system-x86_64', '-M', 'microvm,acpi=on,rtc=on,pit=on,pic=off', '-accel', plainAccel, '-cpu', plainAccel === 'kvm' ? 'host' : 'max', '-smp', '2', '-m', '1024',
    '-nodefaults', '-no-user-config', '-nographic', '-daemonize', '-pidfile', join(dir, 'qemu.pid'),
    '-kernel', img.kernel, '-initrd', img.initrd,
    '-append', `console=ttyS0 root=/dev/vda rw net.ifnames=0 panic=-1${plainAccel === 'tcg' && hostTscKhz() ? ` tsc_early_khz=${hostTscKhz()}` : ''}`,
    '-drive', `id=root,file=${join(dir, 'root.qcow2')},format=qcow2,if=none`, '-device', 'virtio-blk-device,drive=root',
    '-drive', `id=cfg,file=${join(dir, 'config.img')},format=raw,if=none,readonly=on`, '-device', 'virtio-blk-device,drive=cfg',
    '-drive', `id=work,file=${join(dir, 'work.ext4')},format=raw,if=none`, '-device', 'virtio-blk-device,drive=work',
    '-netdev', `user,id=n0,hostfwd=tcp:127.0.0.1:${port}-:22`, '-device', `virtio-net-device,netdev=n0,mac=${mac}`,
    '-serial', `file:${join(dir, 'console.log')}`,
  ]);
  const pid = readPidFile(join(dir, 'qemu.pid'))!;
  const start = readStartTime(pid)!;
  try {
    const deadline = Date.now() + 300_000;
    for (;;) {
      const r = await runner.run(
        ['ssh', '-i', key.privateKeyPath, '-p', String(port), '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=/dev/null`,
          '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR', 'root@127.0.0.1', 'true'],
        { allowFailure: true, timeoutMs: 15_000 },
      );
      if (r.code === 0) break;
      if (Date.now() > deadline) throw new Error(`plain VM never answered SSH; console: ${readFileSync(join(dir, 'console.log'), 'utf8').slice(-800)}`);
      await new Promise((res) => setTimeout(res, 250));
    }
    return performance.now() - t0;
  } finally {
    killProcess(pid, start, 'SIGKILL');
    await waitForExit(pid, start, 5000);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (args.pull) return pullBench({ pairs: args.pairs });
  if (args.cli) return cliBench({ pairs: args.pairs });
  if (!existsSync(imagePaths(layout, 'bookworm').rootfs)) {
    console.log('bench: building the default image first (not timed)…');
    const b = await banger(['image', 'build']);
    if (b.code !== 0) throw new Error(b.stderr);
  }
  if (args.workspace) return workspaceBench(runs);
  if (args.tuning) return tuningBench({ layout, pairs: args.pairs });
  if (args.warm || args.memory) {
    if (args.warm) await warmBench({ layout, pairs: args.pairs });
    if (args.memory) await memoryReport({ layout, idleMs: args.idleSeconds * 1000 });
    return;
  }
  plainAccel = resolveAccel('auto', await probeKvm({ runner }, { kernel: imagePaths(layout, 'bookworm').kernel })).accel;
  console.log(`bench: accelerator ${plainAccel} for both`);
  console.log('bench: warm-up (daemon start + accelerator probe; not counted)…');
  await timeBanger();
  const { a: b, b: p, ratios } = await alternatePairs(args.pairs, { label: 'banger', run: timeBanger }, { label: 'plain', run: timePlain });
  const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
  console.log(`banger (vm run --rm --cold -- true): ${spread(b, sec)} over ${args.pairs}`);
  console.log(`plain (qemu + ssh poll):             ${spread(p, sec)} over ${args.pairs}`);
  console.log(`per-pair ratio banger/plain: ${spread(ratios, (r) => r.toFixed(2))}`);
  if (args.stop) await stopTimes();
  console.log(`ratio banger/plain: ${median(ratios).toFixed(2)}`);
}

/** `vm stop` of an idle VM, start to return, a few times (npm run bench -- --stop). */
async function stopTimes(): Promise<void> {
  const name = `bench-stop-${process.pid}`;
  const create = await banger(['vm', 'create', '--name', name]);
  if (create.code !== 0) throw new Error(create.stderr);
  const times: number[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      await new Promise((r) => setTimeout(r, 3000)); // idle
      const t0 = performance.now();
      const r = await banger(['vm', 'stop', name]);
      times.push(performance.now() - t0);
      if (r.code !== 0) throw new Error(r.stderr);
      console.log(`  stop ${i + 1}: ${(times.at(-1)! / 1000).toFixed(2)} s (${r.stdout.trim()})`);
      if (i < runs - 1 && (await banger(['vm', 'start', name])).code !== 0) throw new Error('vm start failed');
    }
  } finally {
    await banger(['vm', 'delete', '-f', name]);
  }
  console.log(`median vm stop (idle VM): ${(median(times) / 1000).toFixed(2)} s over ${runs}`);
}

try {
  await main();
} finally {
  if (runRoot) {
    // The run's daemon lives in runRoot's runtime dir: stop it, then remove the dirs (not --state's).
    await banger(['daemon', 'stop']);
    rmSync(runRoot, { recursive: true, force: true });
  }
}
