/**
 * Graceful stop that keeps every write (the seeds' data-loss bug): sync the
 * guest, ask it to power off, wait a bounded time, and only then kill.
 *   1. guest agent: sync, then guest-shutdown (or `systemctl poweroff` when that fails);
 *   2. else SSH: `sync; systemctl --no-block poweroff`;
 *   3. else the VMM's power button (the driver's requestPowerdown: QMP system_powerdown for QEMU);
 *   4. wait for the VMM to exit within what is left of the window;
 *   5. SIGTERM, then SIGKILL.
 * The agent and SSH are guest channels (GuestOps); the power button, the
 * wait and the signals go through the VM's driver.
 * No single path is trusted; each step down is logged with its reason, and
 * a hung or unreachable guest cannot make the stop outlast its window.
 */
import { sink } from '../system/streams.js';
import { messageOf } from '../errors/errors.js';
import type { Logger } from '../log/log.js';
import type { SshTarget } from '../model/types.js';
import type { VmmDriver, VmmHandle } from '../vmm/driver.js';
import type { StopReport } from '../rpc/methods.js';
import { realGuestOps, type GuestOps } from './guest-ops.js';

export type { StopReport };

/** A booted VM's VMM: its driver and the handle its boot returned. */
export interface BootedVmm {
  driver: VmmDriver;
  handle: VmmHandle;
}

/** SIGTERM (QEMU exits at once), wait, then SIGKILL; the driver never signals a reused pid. */
export async function forceStop(log: Logger, vmName: string, vmm: BootedVmm, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const { driver, handle } = vmm;
  if (!driver.isAlive(handle)) return;
  driver.signal(handle, signal);
  if (await driver.waitForExit(handle, 5000)) return;
  log.warn({ vm: vmName, pid: driver.hostProcess(handle).pid, signal }, 'VMM still alive; sending SIGKILL');
  driver.signal(handle, 'SIGKILL');
  await driver.waitForExit(handle, 5000);
}

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
  vmm: BootedVmm,
  ssh: SshTarget,
  windowMs: number,
  guest: GuestOps = realGuestOps,
): Promise<StopReport> {
  const { driver, handle } = vmm;
  const started = Date.now();
  const left = () => windowMs - (Date.now() - started);
  const report: StopReport = { asked: 'none', synced: false, ended: 'already gone', ms: 0 };
  const step = (s: string, detail: Record<string, unknown> = {}) => log.info({ vm: vmName, step: s, ...detail }, `stop: ${s}`);
  if (!driver.isAlive(handle)) {
    report.ms = Date.now() - started;
    return report;
  }
  // Budget: most of the window is for the guest to go down by itself.
  const askBudget = Math.min(15_000, windowMs * 0.5);

  // 1. The guest agent (when the VMM has a channel to it).
  const agentSocket = driver.capabilities.agentChannel === 'none' ? undefined : driver.agentSocket(handle);
  if (agentSocket === undefined) step('no guest agent channel');
  else {
    try {
      const ok = await bounded(Math.min(askBudget, left()), async (signal) => {
        const agent = await guest.connectAgent(agentSocket, { deadlineMs: Date.now() + 3000, signal });
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
  }

  // 2. SSH, when the agent could not ask.
  if (report.asked === 'none' && left() > 1000) {
    try {
      let sent = false;
      await bounded(Math.min(8000, left() - 500), async (signal) => {
        const r = await guest.sshExec(ssh, 'sync; (systemctl --no-block poweroff || /sbin/poweroff -f) >/dev/null 2>&1 &', {
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
      const budget = Math.min(3000, left());
      const ok = await bounded(budget, () => driver.requestPowerdown(handle, budget));
      if (ok) {
        report.asked = 'qmp';
        step('vmm power button sent (guest not synced first)');
      }
    } catch (e) {
      step('vmm power button unavailable', { reason: messageOf(e) });
    }
  }

  // 4. Wait for the guest to power off.
  if (await driver.waitForExit(handle, Math.max(0, left()))) {
    report.ended = 'exited';
  } else {
    // 5. Kill.
    step('guest did not power off within the window; SIGTERM', { windowMs });
    driver.signal(handle, 'SIGTERM');
    if (await driver.waitForExit(handle, 3000)) report.ended = 'SIGTERM';
    else {
      step('VMM ignored SIGTERM; SIGKILL');
      driver.signal(handle, 'SIGKILL');
      await driver.waitForExit(handle, 3000);
      report.ended = 'SIGKILL';
    }
  }
  report.ms = Date.now() - started;
  log.info({ vm: vmName, ...report }, 'stop: done');
  return report;
}
