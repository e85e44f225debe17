/**
 * Restarting what runs from the install after `banger update` swapped it
 * (or rolled it back): with systemd as PID 1, the helper and the user's
 * daemon units; otherwise the user's daemon, the process the CLI started:
 * stopped with the CLI of the version it runs (`daemon stop`: its VMs keep
 * running), then started by the CLI of `current` (any command that connects
 * starts it), as the daemon's user. Either way the restart is done only
 * when that daemon answers and reports the version expected.
 *
 * VMs are never stopped: QEMU runs on without its daemon (the units say
 * KillMode=process, SendSIGKILL=no), and the new daemon adopts them
 * (`VmService.reconcile`).
 */
import { join } from 'node:path';
import { BangerError } from '../errors/errors.js';
import type { InstallLayout } from '../install/package.js';
import { daemonUnitName, HELPER_UNIT } from '../install/units.js';
import { tail, type Runner } from '../system/runner.js';

export interface DaemonOwner {
  name: string;
  home: string;
  /** The environment that user's CLI runs with (BANGER_* dirs when a test overrides them). */
  env: NodeJS.ProcessEnv;
}

export interface RestartPlan {
  layout: InstallLayout;
  node: string;
  user: DaemonOwner;
  /** systemd runs the units (PID 1 is systemd and they are installed). */
  systemd: boolean;
  runner: Runner;
}

interface DaemonState {
  running: boolean;
  version?: string;
  pid?: number;
}

/** The CLI at `root` (a version's directory, or `current`), run as the daemon's user. */
async function cliAs(p: RestartPlan, root: string, args: string[], timeoutMs = 60_000) {
  const env = { ...p.user.env, HOME: p.user.home };
  const argv = process.getuid?.() === 0 ? ['runuser', '-u', p.user.name, '--', p.node, join(root, 'bin', 'banger.js'), ...args] : [p.node, join(root, 'bin', 'banger.js'), ...args];
  return p.runner.run(argv, { env, allowFailure: true, timeoutMs });
}

/** What `daemon status --json` of the CLI at `root` says about the user's daemon. */
export async function daemonState(p: RestartPlan, root = p.layout.current): Promise<DaemonState> {
  const r = await cliAs(p, root, ['daemon', 'status', '--json']);
  try {
    const j = JSON.parse(r.stdout) as { running?: unknown; version?: unknown; pid?: unknown };
    return { running: j.running === true, ...(typeof j.version === 'string' ? { version: j.version } : {}), ...(typeof j.pid === 'number' ? { pid: j.pid } : {}) };
  } catch {
    return { running: false };
  }
}

/**
 * Restarts what runs from the install so that it runs `version` (what
 * `current` now points at). `from` is the version directory the running
 * daemon was started from (its CLI stops it). Resolves once the daemon
 * answers as `version`; throws otherwise.
 */
export async function restartInstalled(p: RestartPlan, from: string, version: string, timeoutMs = 60_000): Promise<void> {
  if (p.systemd) {
    const r = await p.runner.run(['systemctl', 'restart', HELPER_UNIT, daemonUnitName(p.user.name)], { allowFailure: true, timeoutMs: 120_000 });
    if (r.code !== 0) throw new BangerError('operation_failed', `systemctl restart failed: ${tail(r.stderr, 600)}`, `journalctl -u ${daemonUnitName(p.user.name)} says why`);
  } else {
    const before = await daemonState(p, join(p.layout.libDir, from));
    if (before.running) {
      const stop = await cliAs(p, join(p.layout.libDir, from), ['daemon', 'stop']);
      if (stop.code !== 0) throw new BangerError('operation_failed', `stopping the daemon (${from}) failed: ${tail(stop.stderr, 600)}`, 'see `banger daemon status`');
    }
  }
  // Started on first use (no systemd), or by systemd: either way, wait for it to answer as `version`.
  const deadline = Date.now() + timeoutMs;
  let last: DaemonState = { running: false };
  let lastErr = '';
  let failedStarts = 0;
  for (;;) {
    if (!p.systemd) {
      // Each try starts the daemon if none runs; the CLI waits for it and says why it died.
      const r = await cliAs(p, p.layout.current, ['vm', 'list', '--json']);
      if (r.code !== 0) lastErr = tail(r.stderr, 600);
      failedStarts = r.code === 0 ? 0 : failedStarts + 1;
    }
    last = await daemonState(p);
    if (last.running && last.version === version) return;
    // Three starts in a row that died: it is not coming up (no need to wait out the deadline).
    if (Date.now() > deadline || failedStarts >= 3) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new BangerError(
    'operation_failed',
    `the daemon did not come back as ${version} (${last.running ? `it answers as ${last.version ?? 'an unknown version'}` : 'it does not answer'})${lastErr ? `: ${lastErr}` : ''}`,
    `its log says why (\`banger daemon status\` names it)`,
  );
}
