/**
 * unprivileged_daemon: bangerd and QEMU run as a user made for the test; only
 * the helper runs as root. The image comes from the run's state (built by
 * root: an unprivileged daemon cannot run mmdebstrap) and is adopted from its
 * manifest. The user, its files, its helper and its bridge go at the end.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { check, repoRoot } from './harness.js';
import { bridgeLeaks, startBridge, stopBridge } from './bridge.js';
import type { Scenario } from './scenarios.js';

function sh(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; allowFail?: boolean } = {}): { code: number; out: string; err: string } {
  try {
    const out = execFileSync(cmd, args, { env: opts.env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 15 * 60_000 });
    return { code: 0, out, err: '' };
  } catch (e) {
    const x = e as { status?: number; stdout?: string; stderr?: string };
    if (!opts.allowFail) throw new Error(`${cmd} ${args.join(' ')} failed (${x.status}): ${x.stderr ?? ''}`);
    return { code: x.status ?? 1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

function uidOf(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('Uid:'));
  return Number(line?.split(/\s+/)[1]);
}

export const unprivScenarios: Scenario[] = [
  {
    name: 'unprivileged_daemon',
    needs: 'root',
    description: 'bangerd and QEMU run as a non-root user created for the test, the helper as root: vm run --network bridge works end to end',
    run: async ({ dirs, log }) => {
      check(process.getuid?.() === 0, 'needs root to create the test user and run the helper');
      const user = `bsmoke${process.pid % 100000}`;
      const base = mkdtempSync('/tmp/banger-unpriv-');
      chmodSync(base, 0o755);
      const home = join(base, 'home');
      sh('useradd', ['--home-dir', home, '--create-home', '--shell', '/bin/sh', user]);
      let helper: Awaited<ReturnType<typeof startBridge>> | undefined;
      const env = (): NodeJS.ProcessEnv => ({
        PATH: process.env.PATH,
        HOME: home,
        NO_COLOR: '1',
        BANGER_STATE_DIR: join(base, 'state'),
        BANGER_RUNTIME_DIR: join(base, 'run'),
        BANGER_CONFIG_DIR: join(base, 'config'),
        BANGER_CACHE_DIR: join(base, 'cache'),
        BANGER_HELPER_SOCKET: join(base, 'helper.sock'),
        USER: user,
        LOGNAME: user,
      });
      let runAs: (args: string[]) => { code: number; out: string; err: string } = () => ({ code: 1, out: '', err: '' });
      try {
        const uid = Number(sh('id', ['-u', user]).out.trim());
        const gid = Number(sh('id', ['-g', user]).out.trim());
        // Code the user can read: the checkout, or a copy of what runs.
        let code = repoRoot;
        if (sh('runuser', ['-u', user, '--', 'test', '-r', join(repoRoot, 'dist', 'src', 'cli', 'main.js')], { allowFail: true }).code !== 0) {
          code = join(base, 'code');
          mkdirSync(code);
          for (const d of ['bin', 'dist', 'node_modules', 'package.json']) cpSync(join(repoRoot, d), join(code, d), { recursive: true });
          log(`copied the code to ${code} (the checkout is not readable by ${user})`);
        }
        for (const d of ['state', 'run', 'config', 'cache']) mkdirSync(join(base, d), { recursive: true, mode: 0o700 });
        sh('cp', ['-a', '--sparse=always', join(dirs.stateDir, 'images'), join(base, 'state', 'images')]);
        writeFileSync(join(base, 'config', 'config.toml'), `network = "user"\ndns_port = ${30000 + (process.pid % 20000)}\n`);
        sh('chown', ['-R', `${uid}:${gid}`, join(base, 'state'), join(base, 'run'), join(base, 'config'), join(base, 'cache'), home]);
        helper = await startBridge(dirs, { ownerUid: uid, name: `bgru${(process.pid % 0xffff).toString(16).padStart(4, '0')}`, socket: join(base, 'helper.sock'), thirdOctet: 200 + (process.pid % 50) });
        const bangerJs = join(code, 'bin', 'banger.js');
        runAs = (args) => {
          log(`$ (as ${user}) banger ${args.join(' ')}`);
          const r = sh('runuser', ['-u', user, '--', 'env', '-i', ...Object.entries(env()).map(([k, v]) => `${k}=${v}`), process.execPath, bangerJs, ...args], { allowFail: true });
          log(`  → exit ${r.code}${r.err.trim() ? `; stderr: ${r.err.trim().split('\n').slice(-4).join(' | ')}` : ''}`);
          return r;
        };
        const created = runAs(['vm', 'run', '-d', '--network', 'bridge', '--name', 'smoke-unpriv']);
        check(created.code === 0, `vm run -d as ${user} failed: ${created.err}`);
        const show = JSON.parse(runAs(['vm', 'show', 'smoke-unpriv', '--json']).out) as { ip: string; runtime: { pid: number } };
        check(uidOf(show.runtime.pid) === uid, `QEMU runs as uid ${uidOf(show.runtime.pid)}, not ${uid}`);
        const status = JSON.parse(runAs(['daemon', 'status', '--json']).out) as { pid: number };
        check(uidOf(status.pid) === uid, `bangerd runs as uid ${uidOf(status.pid)}, not ${uid}`);
        const inGuest = runAs(['vm', 'exec', 'smoke-unpriv', '--', 'sh', '-c', 'id -u; ip -4 -o addr show dev eth0']);
        check(inGuest.code === 0 && inGuest.out.startsWith('0\n') && inGuest.out.includes(`inet ${show.ip}/`), `in the guest: ${inGuest.out} ${inGuest.err}`);
        const del = runAs(['vm', 'delete', '-f', 'smoke-unpriv']);
        check(del.code === 0, `delete: ${del.err}`);
        const leaks = bridgeLeaks(helper);
        check(leaks.length === 0, `the user's bridge kept: ${leaks.join('; ')}`);
      } finally {
        runAs(['vm', 'delete', '-f', 'smoke-unpriv']);
        runAs(['daemon', 'stop']);
        if (helper) await stopBridge(helper, helper.child).catch(() => undefined);
        sh('pkill', ['-u', user], { allowFail: true });
        sh('userdel', ['-r', '-f', user], { allowFail: true });
        rmSync(base, { recursive: true, force: true });
      }
    },
  },
];
