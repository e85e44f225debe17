/**
 * What a banger process does with an error nothing caught. Every
 * long-running process (bangerd, banger-helper) installs this once, from
 * its main, before it serves anyone:
 *   - an unhandled promise rejection is logged (with the op id of the
 *     request whose work it came from, when there is one) and the process
 *     keeps serving: the request it belonged to has already been answered
 *     or failed on its own;
 *   - an uncaught exception is logged the same way, then the process takes
 *     its clean shutdown path (socket, pid and lock files removed) and exits
 *     1: its state can no longer be trusted. VMs keep running either way.
 */
import type { Logger } from 'pino';

export interface CrashPolicyOptions {
  log: Logger;
  /** The op id (and method) of the request the failing code ran for, if any. */
  currentOp: () => { opId: string; method: string } | undefined;
  /** The process's clean shutdown; called once, then the process exits 1. */
  shutdown: (why: string) => Promise<void> | void;
  /** Bound on the clean shutdown before exiting anyway (ms). */
  shutdownTimeoutMs?: number;
}

export function installCrashPolicy(o: CrashPolicyOptions): () => void {
  let fatal = false;
  const describe = (e: unknown) => ({
    err: e instanceof Error ? e.message.slice(0, 2000) : String(e).slice(0, 2000),
    stack: e instanceof Error ? e.stack : undefined,
    ...(o.currentOp() ?? {}),
  });
  const onRejection = (reason: unknown) => {
    o.log.error(describe(reason), 'unhandled promise rejection (the process keeps serving)');
  };
  const onException = (e: unknown) => {
    o.log.fatal(describe(e), 'uncaught exception: shutting down cleanly');
    if (fatal) return;
    fatal = true;
    const timer = setTimeout(() => process.exit(1), o.shutdownTimeoutMs ?? 5000);
    timer.unref();
    void Promise.resolve()
      .then(() => o.shutdown('uncaught exception'))
      .catch(() => undefined)
      .finally(() => process.exit(1));
  };
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return () => {
    process.off('unhandledRejection', onRejection);
    process.off('uncaughtException', onException);
  };
}
