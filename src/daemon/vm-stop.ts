/**
 * Graceful stop that keeps every write (the seeds' data-loss bug): sync the
 * guest, ask it to power off, wait a bounded time, and only then kill.
 *   1. guest agent: sync, then guest-shutdown (or `systemctl poweroff` when that fails);
 *   2. else SSH: `sync; systemctl --no-block poweroff`;
 *   3. else QMP system_powerdown (ACPI button);
 *   4. wait for QEMU to exit within what is left of the window;
 *   5. SIGTERM, then SIGKILL.
 * No single path is trusted; each step down is logged with its reason, and
 * a hung or unreachable guest cannot make the stop outlast its window.
 */
import { sink } from '../system/streams.js';
import { messageOf } from '../errors/errors.js';
import type { Logger } from '../log/log.js';
import type { SshTarget, VmRuntime } from '../model/types.js';
import { connectAgent } from '../guest/agent.js';
import { sshExec } from '../guest/ssh.js';
import { QmpClient } from '../vmm/qemu/qmp.js';
import { isSameProcess, killProcess, waitForExit } from '../system/proc.js';
import type { StopReport } from '../rpc/methods.js';

export type { StopReport };



/** Runs `fn` but gives up (resolving false) after `ms`. */
async function bounded(ms: number, fn: (signal: AbortSignal) => Promise<unknown>): Promise<boolean> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((res) => (timer = setTimeout(() => (ac.abort(), res(false)), Math.max(0, ms))));
  try {
    return await Promise.race([fn(ac.signal).then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export async function gracefulStop(
  log: Logger,
  vmName: string,
  rt: VmRuntime,
  ssh: SshTarget,
  windowMs: number,
): Promise<StopReport> {
  const started = Date.now();
  const left = () => windowMs - (Date.now() - started);
  const report: StopReport = { asked: 'none', synced: false, ended: 'already gone', ms: 0 };
  const step = (s: string, detail: Record<string, unknown> = {}) => log.info({ vm: vmName, step: s, ...detail }, `stop: ${s}`);
  if (!isSameProcess(rt.pid, rt.pidStartTime)) {
    report.ms = Date.now() - started;
    return report;
  }
  // Budget: most of the window is for the guest to go down by itself.
  const askBudget = Math.min(15_000, windowMs * 0.5);

  // 1. The guest agent.
  try {
    const ok = await bounded(Math.min(askBudget, left()), async (signal) => {
      const agent = await connectAgent(rt.qgaSocket, { deadlineMs: Date.now() + 3000, signal });
      try {
        await agent.sync(Math.max(1000, left() - 2000));
        report.synced = true;
        step('agent sync done');
        try {
          const how = await agent.shutdown('powerdown', 3000);
          step('agent guest-shutdown', { outcome: how });
        } catch (e) {
          step('agent guest-shutdown failed; trying systemctl poweroff through the agent', { reason: messageOf(e) });
          await agent.exec('/bin/systemctl', ['--no-block', 'poweroff'], { captureOutput: true, timeoutMs: 3000 });
        }
        report.asked = 'agent';
      } finally {
        agent.close();
      }
    });
    if (!ok) step('agent did not answer in time', { budgetMs: askBudget });
  } catch (e) {
    step('agent unavailable', { reason: messageOf(e) });
  }

  // 2. SSH, when the agent could not ask.
  if (report.asked === 'none' && left() > 1000) {
    try {
      let sent = false;
      await bounded(Math.min(8000, left() - 500), async (signal) => {
        const r = await sshExec(ssh, 'sync; (systemctl --no-block poweroff || /sbin/poweroff -f) >/dev/null 2>&1 &', {
          stdout: sink(),
          stderr: sink(),
          signal,
          connectTimeoutMs: 5000,
        });
        sent = r.exitCode === 0;
      });
      if (sent) {
        report.synced = true;
        report.asked = 'ssh';
      }
      step(sent ? 'ssh sync + poweroff sent' : 'ssh did not work');
    } catch (e) {
      step('ssh unavailable', { reason: messageOf(e) });
    }
  }

  // 3. The ACPI power button, as a last polite request.
  if (report.asked === 'none' && left() > 500) {
    try {
      const ok = await bounded(Math.min(3000, left()), async () => {
        const qmp = await QmpClient.connect(rt.qmpSocket, { timeoutMs: 2000 });
        try {
          await qmp.systemPowerdown();
        } finally {
          qmp.close();
        }
      });
      if (ok) {
        report.asked = 'qmp';
        step('qmp system_powerdown sent (guest not synced first)');
      }
    } catch (e) {
      step('qmp unavailable', { reason: messageOf(e) });
    }
  }

  // 4. Wait for the guest to power off.
  if (await waitForExit(rt.pid, rt.pidStartTime, Math.max(0, left()))) {
    report.ended = 'exited';
  } else {
    // 5. Kill.
    step('guest did not power off within the window; SIGTERM', { windowMs });
    killProcess(rt.pid, rt.pidStartTime, 'SIGTERM');
    if (await waitForExit(rt.pid, rt.pidStartTime, 3000)) report.ended = 'SIGTERM';
    else {
      step('QEMU ignored SIGTERM; SIGKILL');
      killProcess(rt.pid, rt.pidStartTime, 'SIGKILL');
      await waitForExit(rt.pid, rt.pidStartTime, 3000);
      report.ended = 'SIGKILL';
    }
  }
  report.ms = Date.now() - started;
  log.info({ vm: vmName, ...report }, 'stop: done');
  return report;
}
