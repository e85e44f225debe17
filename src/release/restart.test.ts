/**
 * The restart's decisions, with a fake runner standing in for systemctl,
 * runuser and the CLIs (the no-systemd path runs for real in the smoke
 * scenarios update_keeps_vm_alive and update_rollback_keeps_vm_alive; the
 * systemd path cannot run on these machines: PID 1 is not systemd).
 */
import { describe, it, expect } from 'vitest';
import { isBangerError } from '../errors/errors.js';
import type { RunOptions, RunResult, Runner } from '../system/runner.js';
import { installLayout } from '../install/package.js';
import { restartInstalled, type RestartPlan } from './restart.js';

/** A runner that answers each argv with `answer` and records what ran. */
function fakeRunner(answer: (argv: string[]) => Partial<RunResult>): { runner: Runner; ran: string[][] } {
  const ran: string[][] = [];
  const runner = {
    run: async (argv: string[], _o?: RunOptions): Promise<RunResult> => {
      ran.push(argv);
      return { argv, code: 0, signal: null, stdout: '', stderr: '', timedOut: false, durationMs: 1, ...answer(argv) };
    },
    spawnDetached: () => 0,
    runInteractive: async () => 0,
  } as Runner;
  return { runner, ran };
}

const layout = installLayout('/opt/test-prefix');
const plan = (runner: Runner, systemd: boolean): RestartPlan => ({ layout, node: '/usr/bin/node', user: { name: 'ana', home: '/home/ana', env: {} }, systemd, runner });
const status = (running: boolean, version?: string) => ({ stdout: JSON.stringify({ running, ...(version ? { version, pid: 7 } : {}) }), code: running ? 0 : 3 });
const isStatus = (argv: string[]) => argv.includes('status');

describe('restartInstalled', () => {
  it('with systemd: restarts the helper and the user\'s daemon unit, then waits for the new version', async () => {
    let restarted = false;
    const { runner, ran } = fakeRunner((argv) => {
      if (argv[0] === 'systemctl') {
        restarted = true;
        return {};
      }
      return isStatus(argv) ? status(true, restarted ? '2.0.0' : '1.0.0') : {};
    });
    await restartInstalled(plan(runner, true), '1.0.0', '2.0.0', 5_000);
    expect(ran[0]).toEqual(['systemctl', 'restart', 'banger-helper.service', 'bangerd-ana.service']);
    expect(ran.some((a) => a.includes('stop'))).toBe(false);
  });

  it('with systemd: a failed systemctl is an error naming the unit\'s journal', async () => {
    const { runner } = fakeRunner((argv) => (argv[0] === 'systemctl' ? { code: 1, stderr: 'Job failed' } : status(true, '1.0.0')));
    const e = await restartInstalled(plan(runner, true), '1.0.0', '2.0.0', 2_000).catch((x: unknown) => x);
    expect(isBangerError(e) && e.message).toContain('systemctl restart failed: Job failed');
    expect(isBangerError(e) && e.hint).toContain('journalctl -u bangerd-ana.service');
  });

  it('without systemd: stops the running daemon with the CLI of its version, as the user, and starts it with current\'s', async () => {
    let stopped = false;
    let started = false;
    const { runner, ran } = fakeRunner((argv) => {
      if (argv.includes('stop')) stopped = true;
      if (argv.includes('list')) started = stopped;
      if (isStatus(argv)) return started ? status(true, '2.0.0') : stopped ? status(false) : status(true, '1.0.0');
      return {};
    });
    await restartInstalled(plan(runner, false), '1.0.0', '2.0.0', 5_000);
    const asUser = (a: string[]) => (process.getuid?.() === 0 ? a.slice(0, 4) : []);
    const stop = ran.find((a) => a.includes('stop'))!;
    expect(stop).toContain('/opt/test-prefix/lib/banger/1.0.0/bin/banger.js');
    if (process.getuid?.() === 0) expect(asUser(stop)).toEqual(['runuser', '-u', 'ana', '--']);
    expect(ran.find((a) => a.includes('list'))).toContain('/opt/test-prefix/lib/banger/current/bin/banger.js');
  });

  it('without systemd: a daemon that dies at start three times is given up on, with why', async () => {
    const { runner, ran } = fakeRunner((argv) => {
      if (argv.includes('list')) return { code: 1, stderr: 'banger: unavailable: bangerd exited during start-up: broken' };
      return isStatus(argv) ? status(false) : {};
    });
    const t0 = Date.now();
    const e = await restartInstalled(plan(runner, false), '1.0.0', '2.0.0', 60_000).catch((x: unknown) => x);
    expect(isBangerError(e) && e.message).toMatch(/did not come back as 2\.0\.0 \(it does not answer\): .*broken/);
    expect(ran.filter((a) => a.includes('list')).length).toBe(3);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('a daemon that answers as another version is not taken for the new one', async () => {
    const { runner } = fakeRunner((argv) => (isStatus(argv) ? status(true, '1.0.0') : {}));
    const e = await restartInstalled(plan(runner, true), '1.0.0', '2.0.0', 1_500).catch((x: unknown) => x);
    expect(isBangerError(e) && e.message).toContain('it answers as 1.0.0');
  });
});
