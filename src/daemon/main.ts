/**
 * bangerd: the user daemon that owns the VMs. Started by the CLI when not
 * running (detached, logging to <state>/bangerd.log). Stopping or killing it
 * never stops a VM: QEMU runs in its own session and is re-adopted on the
 * next start.
 */
import { VMMS } from '../model/types.js';
import { closeSync, openSync, rmSync, writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { resolveLayout, type Layout } from '../paths/paths.js';
import { loadConfig } from '../config/config.js';
import { ensureDir, exists, writeFileAtomic } from '../system/fs.js';
import { ensureRuntimeDir, ensureStateDir, readFileNoFollow } from '../system/private-dir.js';
import { createRunner } from '../system/runner.js';
import { fileLogger, type Logger } from '../log/log.js';
import { Store, pendingMigrations } from '../store/store.js';
import { MIGRATIONS } from '../store/migrations.js';
import { currentOp, startRpcServer } from '../rpc/server.js';
import { installCrashPolicy } from '../system/crash-policy.js';
import { messageOf } from '../errors/errors.js';
import { isSameProcess, readStartTime } from '../system/proc.js';
import { VERSION } from '../version.js';
import { composeServices } from './compose.js';
import { reportStartFailure, startFailureShape } from './start-failure.js';
import { makeHandlers } from './handlers.js';

function checkMigrations(layout: Layout): number {
  if (!exists(layout.dbPath)) {
    console.log(`${layout.dbPath} does not exist yet: every migration is pending (it is created on first daemon start)`);
    return 0;
  }
  const db = new Database(layout.dbPath, { readonly: true });
  try {
    const { current, pending } = pendingMigrations(db);
    const latest = MIGRATIONS.at(-1)?.version ?? 0;
    if (current > latest) {
      // A downgrade: this bangerd would refuse to start on it.
      console.error(`${layout.dbPath} is at schema version ${current}, newer than this bangerd understands (${latest})`);
      return 1;
    }
    if (pending.length === 0) console.log(`schema version ${current}: no pending migrations`);
    else {
      console.log(`schema version ${current}: ${pending.length} pending migration(s):`);
      for (const m of pending) console.log(`  ${m.version} ${m.name}`);
    }
  } finally {
    db.close();
  }
  return 0;
}

/** One daemon per runtime dir: an exclusive lock file holding "pid starttime". */
function acquireLock(path: string): boolean {
  for (let i = 0; i < 2; i++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeFileSync(fd, `${process.pid} ${readStartTime(process.pid) ?? ''}\n`);
      closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // 'wx' (O_EXCL) never follows a planted link; nor does this read: a link reads as stale.
      const [pidText, start] = (readFileNoFollow(path) ?? '').trim().split(' ');
      const pid = Number(pidText);
      if (pid > 0 && start && isSameProcess(pid, start)) return false;
      rmSync(path, { force: true }); // stale: its daemon is gone
    }
  }
  return false;
}

async function runDaemon(layout: Layout): Promise<void> {
  const lockPath = `${layout.runtimeDir}/bangerd.lock`;
  let locked = false;
  try {
    // Nothing is written into the runtime or state dir before they pass the ownership/mode check.
    ensureRuntimeDir(layout.runtimeDir);
    ensureStateDir(layout.stateDir);
    for (const d of [layout.cacheDir, layout.sshDir, layout.imagesDir, layout.vmsDir, layout.vmSocketsDir]) {
      ensureDir(d);
    }
    locked = acquireLock(lockPath);
  } catch (e) {
    reportStartFailure(startFailureShape(e, layout));
    process.exit(1);
  }
  if (!locked) {
    console.error('bangerd is already running for this runtime directory');
    process.exit(0);
  }
  const log: Logger = fileLogger(layout.daemonLog);
  const startedAt = Date.now();
  let store: Store | undefined;
  // Installed before anything is served: an error nothing caught is logged
  // with the op id it ran for; an uncaught exception takes the clean path below.
  let shutdown = async (): Promise<void> => {
    store?.close();
    rmSync(lockPath, { force: true });
  };
  installCrashPolicy({ log, currentOp: () => currentOp.getStore(), shutdown: () => shutdown() });
  try {
    const config = loadConfig(layout.configFile);
    store = Store.open(layout.dbPath);
    const runner = createRunner();
    const services = composeServices({ store, runner, layout, config, log });
    await services.vms.reconcile();
    services.snapshots.reconcile(VMMS.flatMap((v) => services.drivers(v) ?? []));
    let stopping = false;
    const cleanup = async () => {
      // A template being built is stopped and its files removed (a snapshot is whole or absent).
      await services.snapshots.abortBuilds(undefined, 'the daemon is stopping');
      await server.close().catch(() => undefined);
      services.network.close();
      store?.close();
      rmSync(layout.socketPath, { force: true });
      rmSync(layout.daemonPidFile, { force: true });
      rmSync(lockPath, { force: true });
    };
    const stop = (why: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ why }, 'daemon stopping (VMs keep running)');
      void cleanup().finally(() => process.exit(0));
    };
    shutdown = async () => {
      if (stopping) return;
      stopping = true;
      await cleanup();
    };
    const server = await startRpcServer({
      socketPath: layout.socketPath,
      handlers: makeHandlers(services, { layout, startedAt, requestStop: () => stop('daemon.stop') }),
      log,
      version: VERSION,
    });
    writeFileAtomic(layout.daemonPidFile, `${process.pid}\n`, 0o600);
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => undefined);
    log.info({ version: VERSION, socket: layout.socketPath }, 'daemon ready');
  } catch (e) {
    log.error({ err: messageOf(e), stack: (e as Error)?.stack }, 'daemon failed to start');
    reportStartFailure(startFailureShape(e, layout));
    store?.close();
    rmSync(lockPath, { force: true });
    process.exit(1);
  }
}

const args = process.argv.slice(2);
const layout = resolveLayout();
if (args.includes('--check-migrations')) {
  process.exit(checkMigrations(layout));
} else if (args.includes('--version')) {
  console.log(VERSION);
} else if (args.length > 0 && !args.every((a) => a === '--foreground')) {
  console.error(`bangerd: unknown arguments ${args.join(' ')} (supported: --check-migrations, --version)`);
  process.exit(2);
} else {
  void runDaemon(layout);
}
