/**
 * npm run bench -- --cli [--pairs N]: how long a simple CLI command takes
 * from process start to exit, against `node -e 0` on the same node binary,
 * alternately in one run (issue 12: the round trip of a simple command
 * should be at most 2× starting node).
 *
 * Setup (not timed): a daemon of its own in temp state, runtime, config and
 * cache dirs (started by a first `banger vm list`, stopped and removed at
 * the end, pass or fail); one warm-up run of each command, so Node's compile
 * cache (22.1+) is filled, as it is for a user's second command.
 *
 * Timed, per sample, spawn to exit:
 * - `node bin/banger.js vm list` (the round trip: start, connect, hello,
 *   vm.list, result checked, rendered), and `--version` (no daemon);
 * - `node -e 0`.
 * No VM is involved. A benchmark, not a test: it never fails on time.
 */
import { mkdtempSync, rmSync, chmodSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { repoRoot } from '../smoke/harness.js';
import { alternatePairs, spread } from './stages.js';

function timed(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - t0;
      if (code !== 0) reject(new Error(`${argv.join(' ')} exited ${code}: ${err.slice(-500)}`));
      else resolve(ms);
    });
  });
}

export async function cliBench(opts: { pairs: number }): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'bench-cli-'));
  const dirs = { state: join(root, 'state'), run: join(root, 'run'), config: join(root, 'config'), cache: join(root, 'cache') };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  chmodSync(dirs.run, 0o700);
  const env = { ...process.env, BANGER_STATE_DIR: dirs.state, BANGER_RUNTIME_DIR: dirs.run, BANGER_CONFIG_DIR: dirs.config, BANGER_CACHE_DIR: dirs.cache, NO_COLOR: '1' };
  const banger = join(repoRoot, 'bin', 'banger.js');
  const ms = (x: number) => `${x.toFixed(0)} ms`;
  try {
    console.log(`CLI start-up on node ${process.version} (${process.execPath}), ${opts.pairs} alternating pairs`);
    await timed([banger, 'vm', 'list'], env); // starts the daemon
    await timed([banger, '--version'], env);
    await timed(['-e', '0'], env);
    for (const [label, argv] of [
      ['vm list', [banger, 'vm', 'list']],
      ['--version', [banger, '--version']],
    ] as const) {
      console.log(`\nbanger ${label} vs node -e 0:`);
      const r = await alternatePairs(opts.pairs, { label: 'banger', run: () => timed([...argv], env) }, { label: 'node', run: () => timed(['-e', '0'], env) });
      console.log(`  banger ${label}: ${spread(r.a, ms)}`);
      console.log(`  node -e 0: ${spread(r.b, ms)}`);
      console.log(`  per-pair ratio banger/node: ${spread(r.ratios, (x) => x.toFixed(2))}`);
    }
  } finally {
    await timed([banger, 'daemon', 'stop'], env).catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  }
}
