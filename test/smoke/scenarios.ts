/** The smoke scenarios: each boots real VMs and asserts one user-visible behaviour. */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RpcClient } from '../../src/rpc/client.js';
import { BangerError } from '../../src/errors/errors.js';
import { check, qemuProcesses, sleep, type Banger, type RunDirs } from './harness.js';
import { lifecycleScenarios } from './scenarios-lifecycle.js';
import { workspaceScenarios } from './scenarios-workspace.js';
import { networkScenarios } from './scenarios-network.js';
import { unprivScenarios } from './scenarios-unpriv.js';
import { faultScenarios } from './scenarios-faults.js';
import { cloneScenarios } from './scenarios-clones.js';
import { imageScenarios } from './scenarios-images.js';
import { packageScenarios } from './scenarios-package.js';
import { sdkScenarios } from './scenarios-sdk.js';
import { updateScenarios } from './scenarios-update.js';
import { bundleScenarios } from './scenarios-bundles.js';
import { kernelScenarios } from './scenarios-kernels.js';

export interface ScenarioContext {
  banger: Banger;
  dirs: RunDirs;
  log: (line: string) => void;
}

export interface Scenario {
  name: string;
  description: string;
  /** root: needs root and the run's root helper (bridge, taps, iptables); counted as not run without them. */
  needs?: 'root';
  /** Stops and restarts the daemon, or breaks something peers share (a snapshot): with --jobs > 1 it runs alone, after the parallel pool. */
  exclusive?: boolean;
  run: (ctx: ScenarioContext) => Promise<void>;
}

/** Runs first, on a state dir without an image: the build-on-first-use path. */
export const FIRST_USE = 'first_use_build';

const baseScenarios: Scenario[] = [
  {
    name: FIRST_USE,
    description: 'vm run with no image builds the default one first, showing progress, then runs',
    run: async ({ banger }) => {
      const r = await banger(['vm', 'run', '--rm', '--name', 'smoke-first', '--', 'sh', '-c', '. /etc/os-release; echo "$VERSION_CODENAME"']);
      check(r.code === 0, `exit code ${r.code}: ${r.stderr}`);
      check(r.stderr.includes('building it'), 'no "building it" progress line');
      check(/mmdebstrap|bootstrap/i.test(r.stderr), 'no build progress from mmdebstrap');
      check(r.stdout.trim() === 'bookworm', `guest says ${JSON.stringify(r.stdout)}`);
      const img = await banger(['image', 'list', '--json']);
      check((JSON.parse(img.stdout) as Array<{ name: string }>).some((i) => i.name === 'bookworm'), 'image not listed after the build');
    },
  },
  {
    name: 'bare_run',
    description: 'vm run --rm -- echo: output printed inside the guest, exit 0',
    run: async ({ banger }) => {
      const r = await banger(['vm', 'run', '--rm', '--name', 'smoke-bare', '--', 'sh', '-c', 'echo hello-from-$(hostname); uname -r']);
      check(r.code === 0, `exit code ${r.code}, want 0`);
      check(r.stdout.includes('hello-from-smoke-bare'), `stdout lacks the guest's greeting: ${JSON.stringify(r.stdout)}`);
      check(/ready in \d+(\.\d+)? s/.test(r.stderr), 'no "ready in N s" line on stderr');
    },
  },
  {
    name: 'exit_code',
    description: "sh -c 'exit 42' in the guest → banger exits 42",
    run: async ({ banger }) => {
      const r = await banger(['vm', 'run', '--rm', '--name', 'smoke-exit', '--', 'sh', '-c', 'exit 42']);
      check(r.code === 42, `exit code ${r.code}, want 42`);
    },
  },
  {
    name: 'quoting',
    description: 'arguments with spaces, quotes, $, a newline arrive byte-identical',
    run: async ({ banger }) => {
      const args = ['a b', "c'd", '"dq"', '$HOME', 'new\nline', '*', '`id`', 'back\\slash', ''];
      const r = await banger(['vm', 'run', '--rm', '--name', 'smoke-quote', '--', 'printf', '[%s]\\n', ...args]);
      check(r.code === 0, `exit code ${r.code}`);
      const want = args.map((a) => `[${a}]\n`).join('');
      check(r.stdout === want, `stdout ${JSON.stringify(r.stdout)} != ${JSON.stringify(want)}`);
    },
  },
  {
    name: 'invalid_name',
    description: 'a bad VM name is refused by the CLI and by a direct RPC call; nothing is left behind',
    run: async ({ banger, dirs }) => {
      const r = await banger(['vm', 'run', '--name', 'Bad_Name', '--', 'true']);
      check(r.code === 2, `exit code ${r.code}, want 2`);
      check(r.stderr.includes('1-63 characters'), `stderr does not name the rule: ${r.stderr}`);
      // The daemon validates again, for callers that are not the CLI.
      const c = await RpcClient.connect(join(dirs.runtimeDir, 'bangerd.sock'), 'smoke');
      try {
        for (const name of ['Bad_Name', 'box/../evil', 'a'.repeat(64), '-x', 'new\nline']) {
          const e = await c.call('vm.create', { name }).then(
            () => undefined,
            (x: unknown) => x,
          );
          check(e instanceof BangerError && e.code === 'bad_request', `daemon accepted ${JSON.stringify(name)}`);
        }
      } finally {
        c.close();
      }
      const bad = await banger(['vm', 'run', '--vcpu', '0', '--', 'true']);
      check(bad.code === 2 && bad.stderr.includes('--vcpu'), `--vcpu 0: exit ${bad.code}, stderr ${bad.stderr}`);
      const list = await banger(['vm', 'list', '--json']);
      check(list.stdout.trim() === '[]', `vm list --json is ${list.stdout}`);
      check(qemuProcesses(dirs).length === 0, 'a qemu process exists');
    },
  },
  {
    name: 'rm_cleanup',
    description: 'after --rm (normal exit and Ctrl-C mid-command) no qemu, VM dir or row remains',
    run: async ({ banger, dirs, log }) => {
      const r = await banger(['vm', 'run', '--rm', '--name', 'smoke-rm', '--', 'true']);
      check(r.code === 0, `exit code ${r.code}`);
      check(!existsSync(join(dirs.stateDir, 'vms')) || readdirCount(join(dirs.stateDir, 'vms')) === 0, 'VM dir left after --rm');

      // Ctrl-C while the guest command runs: the VM must still go.
      const child = banger.spawn(['vm', 'run', '--rm', '--name', 'smoke-rm-int', '--', 'sleep', '600']);
      let stderr = '';
      child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
      const exited = new Promise<number>((res) => child.on('close', (code) => res(code ?? -1)));
      const deadline = Date.now() + 15 * 60_000;
      while (!/ready in/.test(stderr) && Date.now() < deadline) await sleep(200);
      check(/ready in/.test(stderr), `VM never became ready: ${stderr}`);
      await sleep(1500);
      log('  sending SIGINT to banger vm run');
      child.kill('SIGINT');
      const code = await exited;
      check(code === 130, `exit code after Ctrl-C ${code}, want 130`);
    },
  },
  {
    name: 'tofu_mismatch',
    description: "a pinned VM whose host key changes is refused with an explicit error; delete drops the pin",
    run: async ({ banger, dirs }) => {
      const name = 'smoke-tofu';
      try {
        const r = await banger(['vm', 'run', '--name', name, '--', 'true']);
        check(r.code === 0, `vm run exit ${r.code}`);
        const list = await banger(['vm', 'list', '--json']);
        check((JSON.parse(list.stdout) as Array<{ name: string; state: string }>).some((v) => v.name === name && v.state === 'running'), 'VM not listed as running');
        const kh = join(dirs.stateDir, 'ssh', 'known_hosts');
        check(readFileSync(kh, 'utf8').includes(`${name}.vm`), 'host key was not pinned under <name>.vm');
        const ok = await banger(['vm', 'ssh', name, '--', 'true']);
        check(ok.code === 0, `ssh to the pinned VM failed: ${ok.stderr}`);
        // Replace the guest's host keys: the next connection must be refused.
        const rotate = await banger(['vm', 'ssh', name, '--', 'sh', '-c', 'rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && systemctl restart ssh']);
        check(rotate.code === 0, `rotating host keys failed: ${rotate.stderr}`);
        const bad = await banger(['vm', 'ssh', name, '--', 'touch', '/root/should-not-exist']);
        check(bad.code !== 0, 'ssh with a changed host key succeeded');
        check(/HOST KEY MISMATCH/i.test(bad.stderr) || /host key/i.test(bad.stderr), `error does not say what happened: ${bad.stderr}`);
        const del = await banger(['vm', 'delete', '-f', name]);
        check(del.code === 0, `delete failed: ${del.stderr}`);
        check(!readFileSync(kh, 'utf8').includes(`${name}.vm`), 'delete did not drop the known_hosts entry');
      } finally {
        await banger(['vm', 'delete', '-f', name]);
      }
    },
  },
];

function readdirCount(dir: string): number {
  return readdirSync(dir).length;
}

export const scenarios: Scenario[] = [...baseScenarios, ...lifecycleScenarios, ...workspaceScenarios, ...networkScenarios, ...unprivScenarios, ...faultScenarios, ...cloneScenarios, ...imageScenarios, ...packageScenarios, ...sdkScenarios, ...updateScenarios, ...bundleScenarios, ...kernelScenarios];
