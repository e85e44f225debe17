/**
 * The one process runner. Every external program banger starts goes through
 * here: no shell is ever used, argv is passed as-is, and a failure reports
 * argv, exit code and the tail of stderr. Only this folder imports
 * node:child_process (pinned by test/unit/policy.test.ts).
 */
import type { SpawnOptions } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { BangerError } from '../errors/errors.js';

/** node:child_process on first spawn: loading it costs every CLI command ~3 ms, and most never spawn. */
const childProcess = () => process.getBuiltinModule('node:child_process');

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string | Buffer;
  /** Kill the process (SIGKILL) after this many ms; the result then has timedOut=true. */
  timeoutMs?: number;
  /** Resolve instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  signal?: AbortSignal;
  /** Keep at most this many bytes of stdout (default 64 MiB). */
  maxStdoutBytes?: number;
}

export interface RunResult {
  argv: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

export interface DetachedOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** File that receives the child's stdout and stderr (appended). */
  logPath?: string;
}

export interface Runner {
  run(argv: string[], opts?: RunOptions): Promise<RunResult>;
  /** Start a process in its own session (setsid) that outlives us. */
  spawnDetached(argv: string[], opts?: DetachedOptions): number;
  /** Run interactively with our own stdio; resolves with the exit code. */
  runInteractive(argv: string[], opts?: { env?: NodeJS.ProcessEnv }): Promise<number>;
}

const STDERR_TAIL = 2000;

export function tail(text: string, max = STDERR_TAIL): string {
  const t = text.trimEnd();
  return t.length > max ? '…' + t.slice(t.length - max) : t;
}

export class CommandFailedError extends BangerError {
  readonly result: RunResult;
  constructor(result: RunResult) {
    const how = result.timedOut
      ? `timed out after ${result.durationMs} ms`
      : result.signal
        ? `was killed by ${result.signal}`
        : `exited with code ${result.code}`;
    const err = tail(result.stderr);
    super(
      'operation_failed',
      `command ${formatArgv(result.argv)} ${how}${err ? `:\n${err}` : ''}`,
      'see the command and its output above; `banger doctor` checks the host tools',
    );
    this.result = result;
  }
}

/** Render argv for messages (not for execution: nothing here uses a shell). */
export function formatArgv(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

export function createRunner(): Runner {
  return {
    run(argv, opts = {}) {
      return new Promise((resolve, reject) => {
        const [cmd, ...args] = argv;
        if (!cmd) {
          reject(new BangerError('internal', 'runner: empty argv'));
          return;
        }
        const started = Date.now();
        const spawnOpts: SpawnOptions = {
          cwd: opts.cwd,
          env: opts.env ?? process.env,
          stdio: ['pipe', 'pipe', 'pipe'],
          shell: false,
        };
        const child = childProcess().spawn(cmd, args, spawnOpts);
        const out: Buffer[] = [];
        const errs: Buffer[] = [];
        let outBytes = 0;
        const maxOut = opts.maxStdoutBytes ?? 64 * 1024 * 1024;
        let timedOut = false;
        let timer: NodeJS.Timeout | undefined;
        if (opts.timeoutMs !== undefined) {
          timer = setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs);
        }
        const onAbort = () => child.kill('SIGKILL');
        opts.signal?.addEventListener('abort', onAbort, { once: true });
        child.stdout?.on('data', (c: Buffer) => {
          opts.onStdout?.(c);
          if (outBytes < maxOut) {
            out.push(c);
            outBytes += c.length;
          }
        });
        child.stderr?.on('data', (c: Buffer) => {
          opts.onStderr?.(c);
          errs.push(c);
          // keep memory bounded: only the tail matters for errors
          if (errs.length > 256) errs.splice(0, errs.length - 128);
        });
        child.stdin?.on('error', () => undefined);
        if (opts.input !== undefined) child.stdin?.end(opts.input);
        else child.stdin?.end();
        child.on('error', (e: NodeJS.ErrnoException) => {
          if (timer) clearTimeout(timer);
          opts.signal?.removeEventListener('abort', onAbort);
          const hint =
            e.code === 'ENOENT'
              ? `install it (run \`bash scripts/setup.sh\`), then check with \`banger doctor\``
              : undefined;
          reject(new BangerError('operation_failed', `cannot run ${cmd}: ${e.message}`, hint, { cause: e }));
        });
        child.on('close', (code, signal) => {
          if (timer) clearTimeout(timer);
          opts.signal?.removeEventListener('abort', onAbort);
          const result: RunResult = {
            argv,
            code,
            signal,
            stdout: Buffer.concat(out).toString('utf8'),
            stderr: Buffer.concat(errs).toString('utf8'),
            timedOut,
            durationMs: Date.now() - started,
          };
          if (code === 0 || opts.allowFailure) resolve(result);
          else reject(new CommandFailedError(result));
        });
      });
    },

    spawnDetached(argv, opts = {}) {
      const [cmd, ...args] = argv;
      if (!cmd) throw new BangerError('internal', 'runner: empty argv');
      let fd: number | 'ignore' = 'ignore';
      if (opts.logPath) fd = openSync(opts.logPath, 'a', 0o600);
      try {
        const child = childProcess().spawn(cmd, args, {
          cwd: opts.cwd,
          env: opts.env ?? process.env,
          detached: true,
          stdio: ['ignore', fd, fd],
          shell: false,
        });
        child.on('error', () => undefined);
        child.unref();
        if (child.pid === undefined) throw new BangerError('operation_failed', `cannot start ${cmd}`);
        return child.pid;
      } finally {
        if (typeof fd === 'number') closeSync(fd);
      }
    },

    runInteractive(argv, opts = {}) {
      return new Promise((resolve, reject) => {
        const [cmd, ...args] = argv;
        if (!cmd) {
          reject(new BangerError('internal', 'runner: empty argv'));
          return;
        }
        const child = childProcess().spawn(cmd, args, { stdio: 'inherit', env: opts.env ?? process.env, shell: false });
        child.on('error', (e) => reject(new BangerError('operation_failed', `cannot run ${cmd}: ${e.message}`)));
        child.on('close', (code, signal) => resolve(code ?? (signal ? 128 + signalNumber(signal) : 1)));
      });
    },
  };
}

function signalNumber(sig: NodeJS.Signals): number {
  const table: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };
  return table[sig] ?? 1;
}
