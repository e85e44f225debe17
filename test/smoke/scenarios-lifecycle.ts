/** Issue 3 scenarios: the full lifecycle, durable stops, daemon death, concurrency, input. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { check, cleanup, ok, qemuProcesses, sleep, type Banger } from './harness.js';
import type { Scenario } from './scenarios.js';

interface VmJson {
  name: string;
  state: string;
  runtime: { pid: number } | null;
}

async function vmList(banger: Banger): Promise<VmJson[]> {
  const r = await banger(['vm', 'list', '--json']);
  check(r.code === 0, `vm list failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as VmJson[];
}

async function show(banger: Banger, name: string): Promise<VmJson> {
  const r = await banger(['vm', 'show', name, '--json']);
  check(r.code === 0, `vm show ${name} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as VmJson;
}

/** Runs CMD in the VM; fails the scenario unless it exits 0. Returns stdout. */
async function exec(banger: Banger, name: string, ...cmd: string[]): Promise<string> {
  const r = await banger(['vm', 'exec', name, '--', ...cmd]);
  check(r.code === 0, `vm exec ${name} ${cmd.join(' ')} → exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}



const bootId = (banger: Banger, name: string) => exec(banger, name, 'cat', '/proc/sys/kernel/random/boot_id').then((s) => s.trim());

export const lifecycleScenarios: Scenario[] = [
  {
    name: 'lifecycle',
    description: 'create → exec → stop → start → exec → delete; exec refused when stopped',
    run: async ({ banger }) => {
      const n = 'smoke-life';
      try {
        await ok(banger, ['vm', 'create', '--name', n]);
        check((await exec(banger, n, 'findmnt', '-n', '-o', 'SOURCE', '/root')).trim() === '/dev/vdc', '/root is not the work disk /dev/vdc');
        await exec(banger, n, 'sh', '-c', 'echo kept > /root/marker');
        const stop = await ok(banger, ['vm', 'stop', n]);
        check(/stopped .* in \d/.test(stop), `stop output: ${stop}`);
        check((await show(banger, n)).state === 'stopped', 'state is not stopped after vm stop');
        const refused = await banger(['vm', 'exec', n, '--', 'true']);
        check(refused.code !== 0 && refused.stderr.includes('not running'), `exec on a stopped VM: exit ${refused.code} ${refused.stderr}`);
        await ok(banger, ['vm', 'start', n]);
        check((await exec(banger, n, 'cat', '/root/marker')).trim() === 'kept', 'work disk content lost across stop/start');
        const code = await banger(['vm', 'exec', n, '--', 'sh', '-c', 'exit 7']);
        check(code.code === 7, `exit code ${code.code}, want 7`);
        const running = await banger(['vm', 'delete', n]);
        check(running.code !== 0 && running.stderr.includes('-f'), 'delete of a running VM without -f was not refused');
        await ok(banger, ['vm', 'delete', '-f', n]);
        check(!(await vmList(banger)).some((v) => v.name === n), 'VM still listed after delete');
      } finally {
        await cleanup(banger, n);
      }
    },
  },
  {
    name: 'stop_keeps_writes',
    description: '2,000 small files + one 64 MiB file under /root survive stop/start byte for byte (3 rounds)',
    run: async ({ banger, log }) => {
      const n = 'smoke-writes';
      try {
        await ok(banger, ['vm', 'create', '--name', n]);
        for (let round = 1; round <= 3; round++) {
          // Written right before the stop: nothing has had time to reach the disk by itself.
          const script =
            `set -e; d=/root/w${round}; mkdir -p $d; i=0; while [ $i -lt 2000 ]; do echo "${round}-$i" > $d/f$i; i=$((i+1)); done; ` +
            `head -c 67108864 /dev/urandom > $d/big; cd /root && find w${round} -type f | sort | xargs sha256sum > /root/manifest${round}`;
          await exec(banger, n, 'sh', '-c', script);
          const before = await exec(banger, n, 'cat', `/root/manifest${round}`);
          check(before.split('\n').filter(Boolean).length === 2001, `manifest ${round} has ${before.split('\n').length} lines`);
          const stop = await ok(banger, ['vm', 'stop', n]);
          log(`  round ${round}: ${stop.trim()}`);
          await ok(banger, ['vm', 'start', n]);
          const after = await exec(banger, n, 'sh', '-c', `cd /root && sha256sum -c --quiet manifest${round} && echo verified`);
          check(after.trim() === 'verified', `round ${round}: files differ after stop/start`);
        }
      } finally {
        await cleanup(banger, n);
      }
    },
  },
  {
    name: 'start_after_stop',
    description: 'after vm start returns, QEMU is still alive 5 s later and exec works (the seeds\' 150 ms bug); a client killed mid-start does not stop the boot',
    run: async ({ banger, log }) => {
      const n = 'smoke-restart-bug';
      try {
        await ok(banger, ['vm', 'create', '--name', n]);
        await ok(banger, ['vm', 'stop', n]);
        // A client that goes away mid-start (Ctrl-C, or killed) must not affect the VM.
        const child = banger.spawn(['vm', 'start', n]);
        await sleep(3000);
        log('  killing the vm start client mid-boot');
        child.kill('SIGKILL');
        const deadline = Date.now() + 10 * 60_000;
        while ((await show(banger, n)).state !== 'running' && Date.now() < deadline) await sleep(2000);
        check((await show(banger, n)).state === 'running', 'the boot did not finish after its client went away');
        await exec(banger, n, 'true');
        await ok(banger, ['vm', 'stop', n]);
        await ok(banger, ['vm', 'start', n]);
        const pid = (await show(banger, n)).runtime?.pid;
        check(pid, 'no pid after start');
        await sleep(5000);
        check((await show(banger, n)).runtime?.pid === pid, 'QEMU died after vm start returned');
        await exec(banger, n, 'true');
      } finally {
        await cleanup(banger, n);
      }
    },
  },
  {
    name: 'restart_new_boot_id',
    description: 'vm restart is a real reboot: boot_id changes, the work disk stays',
    run: async ({ banger }) => {
      const n = 'smoke-reboot';
      try {
        await ok(banger, ['vm', 'create', '--name', n]);
        await exec(banger, n, 'sh', '-c', 'echo here > /root/keep');
        const before = await bootId(banger, n);
        await ok(banger, ['vm', 'restart', n]);
        const after = await bootId(banger, n);
        check(before.length > 0 && before !== after, `boot_id unchanged: ${before}`);
        check((await exec(banger, n, 'cat', '/root/keep')).trim() === 'here', 'work disk lost across restart');
      } finally {
        await cleanup(banger, n);
      }
    },
  },
  {
    name: 'kill_signal',
    description: 'vm kill --signal KILL ends stopped (not error), releases resources; the next start works',
    run: async ({ banger, dirs }) => {
      const n = 'smoke-kill';
      try {
        await ok(banger, ['vm', 'create', '--name', n]);
        const pid = (await show(banger, n)).runtime!.pid;
        const bad = await banger(['vm', 'kill', n, '--signal', 'BOGUS']);
        check(bad.code !== 0 && /signal/i.test(bad.stderr), 'a bogus signal was not refused');
        await ok(banger, ['vm', 'kill', n, '--signal', 'KILL']);
        const v = await show(banger, n);
        check(v.state === 'stopped' && v.runtime === null, `after kill: state ${v.state}`);
        check(!qemuProcesses(dirs).includes(pid), 'QEMU still running after kill');
        await ok(banger, ['vm', 'start', n]);
        await exec(banger, n, 'true');
      } finally {
        await cleanup(banger, n);
      }
    },
  },
  {
    name: 'prune_only_stopped',
    description: 'vm prune -f removes stopped VMs and leaves a running one alone',
    run: async ({ banger }) => {
      const up = 'smoke-prune-up';
      const down = 'smoke-prune-down';
      try {
        await ok(banger, ['vm', 'create', '--name', up]);
        await ok(banger, ['vm', 'create', '--name', down, '--no-start']);
        const noTty = await banger(['vm', 'prune']);
        check(noTty.code !== 0 && noTty.stderr.includes('-f'), 'prune without -f and without a terminal did not refuse');
        check((await vmList(banger)).length === 2, 'prune without confirmation deleted something');
        const out = await ok(banger, ['vm', 'prune', '-f']);
        check(out.includes(`deleted ${down}`), `prune output: ${out}`);
        const left = await vmList(banger);
        check(left.length === 1 && left[0]!.name === up && left[0]!.state === 'running', `after prune: ${JSON.stringify(left.map((v) => v.name))}`);
        await exec(banger, up, 'true');
      } finally {
        await cleanup(banger, up, down);
      }
    },
  },
  {
    name: 'vm_set',
    description: 'vm set --vcpu 1 → 2 shows nproc 2 after start; shrinking the disk and setting a running VM are refused',
    run: async ({ banger }) => {
      const n = 'smoke-set';
      try {
        await ok(banger, ['vm', 'create', '--name', n, '--vcpu', '1', '--disk-size', '1G']);
        check((await exec(banger, n, 'nproc')).trim() === '1', 'nproc is not 1');
        const running = await banger(['vm', 'set', n, '--vcpu', '2']);
        check(running.code !== 0 && running.stderr.includes('stop'), 'vm set on a running VM was not refused');
        await ok(banger, ['vm', 'stop', n]);
        const shrink = await banger(['vm', 'set', n, '--disk-size', '512M']);
        check(shrink.code === 2 && shrink.stderr.includes('--disk-size'), `shrink: exit ${shrink.code} ${shrink.stderr}`);
        await ok(banger, ['vm', 'set', n, '--vcpu', '2', '--disk-size', '2G']);
        await ok(banger, ['vm', 'start', n]);
        check((await exec(banger, n, 'nproc')).trim() === '2', 'nproc is not 2 after set');
        const size = Number((await exec(banger, n, 'df', '-B1', '--output=size', '/root')).trim().split('\n').pop());
        check(size > 1.5 * 1024 ** 3, `/root is ${size} bytes after growing to 2G`);
      } finally {
        await cleanup(banger, n);
      }
    },
  },
  {
    name: 'daemon_kill9_keeps_vms',
    exclusive: true,
    description: 'kill -9 of bangerd keeps the VM running; the restarted daemon re-adopts it (same boot_id)',
    run: async ({ banger, dirs }) => {
      const n = 'smoke-adopt';
      try {
        await ok(banger, ['vm', 'create', '--name', n]);
        const before = await bootId(banger, n);
        const pid = Number(readFileSync(join(dirs.runtimeDir, 'bangerd.pid'), 'utf8').trim());
        process.kill(pid, 'SIGKILL');
        await sleep(500);
        // The next command starts a new daemon, which reconciles.
        const v = await show(banger, n);
        check(v.state === 'running' && v.runtime !== null, `after daemon kill -9: state ${v.state}`);
        check((await bootId(banger, n)) === before, 'boot_id changed: the VM was restarted');
        await ok(banger, ['daemon', 'stop']);
        check((await bootId(banger, n)) === before, 'boot_id changed after a daemon stop');
      } finally {
        await cleanup(banger, n);
      }
    },
  },
  {
    name: 'concurrent_runs',
    description: 'two vm run --rm at once both succeed',
    run: async ({ banger }) => {
      const [a, b] = await Promise.all([
        banger(['vm', 'run', '--rm', '--name', 'smoke-par-a', '--', 'echo', 'a']),
        banger(['vm', 'run', '--rm', '--name', 'smoke-par-b', '--', 'echo', 'b']),
      ]);
      check(a.code === 0 && a.stdout.trim() === 'a', `run a: ${a.code} ${a.stderr}`);
      check(b.code === 0 && b.stdout.trim() === 'b', `run b: ${b.code} ${b.stderr}`);
    },
  },
  {
    name: 'same_name_race',
    description: 'two creates with one name: exactly one succeeds, the other gets already_exists, nothing leaks',
    run: async ({ banger }) => {
      const n = 'smoke-race';
      try {
        const rs = await Promise.all([banger(['vm', 'create', '--name', n]), banger(['vm', 'create', '--name', n])]);
        const wins = rs.filter((r) => r.code === 0);
        const losses = rs.filter((r) => r.code !== 0);
        check(wins.length === 1 && losses.length === 1, `exit codes ${rs.map((r) => r.code).join(',')}`);
        check(losses[0]!.stderr.includes('already exists'), `loser said: ${losses[0]!.stderr}`);
        check((await vmList(banger)).filter((v) => v.name === n).length === 1, 'not exactly one row');
        await exec(banger, n, 'true');
      } finally {
        await cleanup(banger, n);
      }
    },
  },
  {
    name: 'invalid_spec',
    description: 'bad sizes, counts and images are refused before any side effect: no row, file or process',
    run: async ({ banger, dirs }) => {
      const cases: Array<[string[], RegExp]> = [
        [['--vcpu', '0'], /--vcpu/],
        [['--vcpu', '999'], /--vcpu: .*more than this host/],
        [['--vcpu', 'two'], /--vcpu must be a whole number/],
        [['--memory', '1'], /--memory/],
        [['--disk-size', 'lots'], /--disk-size/],
        [['--disk-size', '1M'], /--disk-size/],
        [['--image', 'nope'], /image nope not found/],
        [['--image', '../../etc'], /invalid image name/],
        [['--disk-size', '3T'], /--disk-size must be at most 2\.0 TiB/],
      ];
      for (const [flags, re] of cases) {
        const r = await banger(['vm', 'create', '--name', 'smoke-invalid', ...flags]);
        check(r.code !== 0 && re.test(r.stderr), `${flags.join(' ')}: exit ${r.code}, stderr ${r.stderr}`);
      }
      check((await vmList(banger)).length === 0, 'a row was left');
      check(qemuProcesses(dirs).length === 0, 'a qemu process was started');
    },
  },
  {
    name: 'ports',
    description: 'vm ports lists sshd on :22 with the host endpoint it is reachable at',
    run: async ({ banger }) => {
      const n = 'smoke-ports';
      try {
        await ok(banger, ['vm', 'create', '--name', n]);
        const ports = JSON.parse(await ok(banger, ['vm', 'ports', n, '--json'])) as Array<{ proto: string; port: number; hostEndpoint: string | null }>;
        // sshd listens on 0.0.0.0:22 (forwarded) and [::]:22 (IPv6 only: slirp cannot reach it).
        const ssh = ports.find((p) => p.proto === 'tcp' && p.port === 22 && p.hostEndpoint !== null);
        check(ssh, `no forwarded tcp :22 in ${JSON.stringify(ports)}`);
        check(/^127\.0\.0\.1:\d+$/.test(ssh.hostEndpoint ?? ''), `sshd endpoint ${ssh.hostEndpoint}`);
        const human = await ok(banger, ['vm', 'ports', n]);
        check(human.includes('22'), 'human output lacks :22');
      } finally {
        await cleanup(banger, n);
      }
    },
  },
  {
    name: 'stats',
    description: 'vm stats reports CPU, memory, filesystems and disks of a running VM',
    run: async ({ banger }) => {
      const n = 'smoke-stats';
      try {
        // Cold: the `vm logs` check below wants a boot's console, and a warm clone's starts at its restore (no boot in it).
        await ok(banger, ['vm', 'create', '--name', n, '--memory', '768', '--cold']);
        const s = JSON.parse(await ok(banger, ['vm', 'stats', n, '--json'])) as {
          cpuPercent: number;
          memory: { totalBytes: number; usedBytes: number };
          filesystems: Array<{ mount: string; sizeBytes: number }>;
          disks: Array<{ name: string; allocatedBytes: number }>;
        };
        check(s.cpuPercent >= 0, 'no cpu figure');
        check(s.memory.totalBytes > 500 * 1024 ** 2 && s.memory.totalBytes <= 768 * 1024 ** 2, `memory total ${s.memory.totalBytes}`);
        check(s.filesystems.some((f) => f.mount === '/root'), 'no /root filesystem');
        check(s.disks.length >= 2 && s.disks.every((d) => d.allocatedBytes > 0), `disks ${JSON.stringify(s.disks)}`);
        await ok(banger, ['vm', 'stop', n]);
        const refused = await banger(['vm', 'stats', n]);
        check(refused.code !== 0 && refused.stderr.includes('not running'), 'stats of a stopped VM was not refused');
        const logs = await ok(banger, ['vm', 'logs', n]);
        check(logs.includes('banger-guest-config: done'), `vm logs lacks the guest config unit's lines: ${logs.slice(-300)}`);
      } finally {
        await cleanup(banger, n);
      }
    },
  },
];
