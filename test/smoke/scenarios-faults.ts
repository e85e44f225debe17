/**
 * Issue 9 fault injection: the daemon is SIGKILLed as each step of `vm create`
 * starts (BANGER_TEST_CRASH_AT_STEP, read once in src/daemon/compose.ts), one
 * step per attempt; a restarted daemon's reconcile must leave nothing: no qemu,
 * file, socket dir, row, known_hosts entry, tap or NAT rule.
 *
 * Before the restart the scenario also checks what the crash left (the row in
 * `creating`, the disks, the tap, the live QEMU), so a kill that landed at the
 * wrong step, or not at all, fails instead of passing on an empty state.
 * Only a kill at `ready` has started QEMU (no guest boot is waited for), so the
 * whole scenario costs no full boot.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { check, leakCensus, liveProcessesMentioning, ok, sleep, type RunDirs } from './harness.js';
import { bridgeLeaks, runBridge } from './bridge.js';
import type { Scenario, ScenarioContext } from './scenarios.js';

/**
 * `vm create`'s steps in order (vm-service.ts, vm-boot.ts); `network` runs in
 * bridge mode only. `qemu-started` is a point inside `boot`: QEMU runs and
 * runtime.json is not written yet (reconcile finds that QEMU by its pid file).
 */
const CREATE_STEPS = ['image', 'disks', 'network', 'config', 'accel', 'boot', 'qemu-started', 'ready'] as const;
type StepName = (typeof CREATE_STEPS)[number];

interface Row {
  id: string;
  state: string;
  ip: string | null;
}

/** The crashed daemon's row, read straight from state.db (no daemon is running). */
function rowOf(dirs: RunDirs, name: string): Row | undefined {
  const db = new Database(join(dirs.stateDir, 'state.db'), { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT id, state, ip FROM vms WHERE name = ?').get(name) as Row | undefined;
  } finally {
    db.close();
  }
}

function listDir(path: string): string[] {
  return existsSync(path) ? readdirSync(path).sort() : [];
}

/** The daemon in bangerd.pid is gone (or a zombie waiting for PID 1 to reap it). */
async function waitDaemonGone(dirs: RunDirs): Promise<number> {
  const pid = Number(readFileSync(join(dirs.runtimeDir, 'bangerd.pid'), 'utf8').trim());
  for (let i = 0; i < 100; i++) {
    let state: string | undefined;
    try {
      state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    } catch {
      return pid;
    }
    if (state === 'Z' || state === 'X') return pid;
    await sleep(100);
  }
  throw new Error(`bangerd ${pid} is still alive after its create failed: the crash hook did not fire`);
}

async function crashAtEachStep({ banger, dirs, log }: ScenarioContext, bridge: boolean): Promise<void> {
  const steps = CREATE_STEPS.filter((s) => bridge || s !== 'network');
  const b = bridge ? runBridge() : undefined;
  if (bridge) check(b, 'the run has no root helper (see the setup lines)');
  const knownHosts = join(dirs.stateDir, 'ssh', 'known_hosts');
  for (const [i, step] of steps.entries()) {
    const done = new Set<StepName>(steps.slice(0, i));
    const name = `smoke-crash-${bridge ? 'br-' : ''}${step}`;
    const t0 = Date.now();
    try {
      // A daemon of our own, started by the create below with the hook set.
      await ok(banger, ['daemon', 'stop']);
      const args = ['vm', 'create', '--name', name, ...(bridge ? ['--network', 'bridge', '--nat'] : [])];
      const r = await banger(args, { env: { BANGER_TEST_CRASH_AT_STEP: step }, timeoutMs: 5 * 60_000 });
      check(r.code !== 0, `crash at ${step}: vm create succeeded, so the step never ran (or the hook is gone)`);
      const pid = await waitDaemonGone(dirs);
      check(readFileSync(join(dirs.stateDir, 'bangerd.log'), 'utf8').includes('fault injection: SIGKILL at step start'), 'bangerd.log has no fault injection line');

      // What the crash left: proves the kill landed where it was meant to.
      const row = rowOf(dirs, name);
      check(row?.state === 'creating', `crash at ${step}: want a row in state creating, got ${JSON.stringify(row)}`);
      const files = listDir(join(dirs.stateDir, 'vms', row.id));
      const qemu = liveProcessesMentioning(row.id).filter((p) => p.argv0.includes('qemu-system'));
      const net = b ? bridgeLeaks(b) : [];
      if (done.has('disks')) check(files.includes('root.qcow2') && files.includes('work.ext4'), `crash at ${step}: disks missing: ${files.join(' ')}`);
      else check(!files.includes('root.qcow2'), `crash at ${step}: disks made before the disks step: ${files.join(' ')}`);
      if (done.has('config')) check(files.includes('config.img'), `crash at ${step}: no config.img: ${files.join(' ')}`);
      if (step === 'qemu-started') check(qemu.length === 1 && !files.includes('runtime.json'), `crash at ${step}: want one live QEMU and no runtime.json, got ${qemu.length}, ${files.join(' ')}`);
      else if (done.has('boot')) check(qemu.length === 1 && files.includes('runtime.json'), `crash at ${step}: want one live QEMU and runtime.json, got ${qemu.length}, ${files.join(' ')}`);
      else check(qemu.length === 0, `crash at ${step}: a QEMU runs before the boot step`);
      if (b && done.has('network')) check(net.some((l) => l.startsWith('taps left')) && net.some((l) => l.startsWith('nat rules left')), `crash at ${step}: want the VM's tap and NAT rule, got ${net.join('; ') || 'none'}`);
      else if (b) check(net.length === 0, `crash at ${step}: network state before the network step: ${net.join('; ')}`);
      const before = `row ${row.id}, files [${files.join(' ')}], qemu ${qemu.length}${b ? `, net [${net.join('; ')}]` : ''}`;

      // A fresh daemon (any command starts one) reconciles; then the census.
      await ok(banger, ['vm', 'list']);
      const leaks = [...(await leakCensus(dirs, banger)), ...(b ? bridgeLeaks(b) : [])];
      const stray = liveProcessesMentioning(row.id);
      if (stray.length) leaks.push(`processes naming ${row.id}: ${stray.map((p) => `${p.pid} ${p.argv0}`).join(', ')}`);
      if (existsSync(knownHosts) && readFileSync(knownHosts, 'utf8').includes(`${name}.vm `)) leaks.push(`known_hosts entry for ${name}.vm`);
      log(`  crash at ${step.padEnd(12)} (daemon ${pid}): left ${before}; after reconcile: ${leaks.length ? leaks.join('; ') : 'nothing'} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      check(leaks.length === 0, `crash at ${step}: after reconcile: ${leaks.join('; ')}`);
    } finally {
      // Whatever happened, the next step (and the next scenario) starts from nothing.
      await banger(['vm', 'delete', '-f', name]);
    }
  }
}

export const faultScenarios: Scenario[] = [
  {
    name: 'crash_mid_create',
    exclusive: true,
    description: 'bangerd SIGKILLed as each vm create step starts (image … ready); a restarted daemon reconciles to no qemu, file, row',
    run: (ctx) => crashAtEachStep(ctx, false),
  },
  {
    name: 'crash_mid_create_bridge',
    needs: 'root',
    exclusive: true,
    description: 'the same with --network bridge --nat (image, disks, network … ready): also no tap and no NAT rule left',
    run: (ctx) => crashAtEachStep(ctx, true),
  },
];
