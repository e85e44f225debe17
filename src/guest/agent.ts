/**
 * qemu-guest-agent client over the VM's virtio-serial channel (QEMU exposes
 * it on the host as a unix socket).
 *
 * The channel is a byte stream that outlives any one client: replies to a
 * previous client's commands (or to our own earlier, timed-out attempts) can
 * still be in it, and the agent's JSON parser may hold half a request. So
 * every connection starts with guest-sync-delimited: we send 0xFF (which
 * resets the agent's parser) and a sync with a random id; the agent answers
 * 0xFF followed by {"return": id}. Everything before our own id is discarded.
 * After that, commands carry an "id" that the agent echoes, so a late reply
 * to a command that timed out is recognised and dropped.
 *
 * Guest root writes every byte of this channel, so it is read as a hostile
 * peer: lines are framed by a bounded LineReader (maxLineBytes, the
 * process-wide ByteBudget), parsed without throwing, and validated with a
 * schema before any field is read — the envelope, the sync reply and the
 * result of each command the daemon uses (guest-exec, guest-exec-status).
 * A reply of the wrong shape fails that one command with a coded error.
 * After the sync, a line that is not a JSON object, or is too long or too
 * deep, is a protocol violation: the connection is closed and what is
 * pending fails with a coded error. Nothing the guest sends can throw out
 * of the socket's handlers, and guest text in error messages is clipped.
 */
import { createConnection, type Socket } from 'node:net';
import { randomInt } from 'node:crypto';
import { z } from 'zod';
import { BangerError, messageOf } from '../errors/errors.js';
import { clip } from '../model/text.js';
import { anyResult, JsonCommands, parsePeerLine, replyEnvelope } from '../system/json-commands.js';
import { LineReader } from '../system/line-reader.js';

const DELIMITER = 0xff;
/**
 * Longest line accepted from the agent. guest-exec-status carries the
 * command's stdout and stderr base64-encoded in one line; the daemon's
 * guest commands (stats: meminfo + df, ports: ss, stop: sync/poweroff)
 * print kilobytes, so 4 MiB (about 3 MiB of output) leaves ample room.
 * A longer line closes the connection with a coded error.
 */
export const AGENT_MAX_LINE_BYTES = 4 * 1024 * 1024;
const DEFAULT_COMMAND_TIMEOUT_MS = 10_000;

export interface AgentConnectOptions {
  /** Connect + sync must finish within this (default 5000 ms). */
  timeoutMs?: number;
  /** Default per-command timeout (default 10000 ms). */
  commandTimeoutMs?: number;
  /** Longest reply line accepted (default AGENT_MAX_LINE_BYTES). */
  maxLineBytes?: number;
}

export interface ExecOptions {
  /** Return stdout/stderr (default true). */
  captureOutput?: boolean;
  /** Bytes for the command's stdin. */
  input?: string | Buffer;
  /** Environment as KEY=VALUE strings (replaces the agent's environment). */
  env?: string[];
  /** How long the command may run (default 60000 ms). The guest process is not killed on timeout. */
  timeoutMs?: number;
}

export interface ExecResult {
  /** Null when the process was killed by a signal. */
  exitCode: number | null;
  signal: number | null;
  stdout: string;
  stderr: string;
  /**
   * The agent keeps at most 16 MiB of each stream; this client accepts a
   * reply line of at most maxLineBytes (both streams, base64), so output
   * beyond about 3 MiB fails the exec with a coded error.
   */
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

export type ShutdownMode = 'powerdown' | 'halt' | 'reboot';

/**
 * How a guest-shutdown ended. The agent does not answer a successful
 * guest-shutdown, so success shows up as the channel closing (QEMU exited)
 * or as silence; an explicit error is thrown.
 */
export type ShutdownOutcome = 'closed' | 'no-reply' | 'acknowledged';

/** An error the agent returned ({"error": {"class", "desc"}}). */
export class AgentCommandError extends BangerError {
  readonly errorClass: string;
  constructor(command: string, errorClass: string, desc: string) {
    super('operation_failed', `guest agent ${command} failed: ${desc}`);
    this.errorClass = errorClass;
  }
}

/** The agent's answer to guest-sync-delimited (after its 0xFF): our id back. */
const syncReply = z.object({ return: z.number() });
/** guest-exec's result. */
const execStarted = z.object({ pid: z.int().positive() });
/** guest-exec-status's result (out-data / err-data are base64). */
const execStatus = z.object({
  exited: z.boolean(),
  exitcode: z.int().optional(),
  signal: z.int().optional(),
  'out-data': z.string().optional(),
  'err-data': z.string().optional(),
  'out-truncated': z.boolean().optional(),
  'err-truncated': z.boolean().optional(),
});
/** A result nobody reads but that must be an object (guest-ping answers {}). */
const emptyResult = z.object({});
/** guest-file-open's result: a handle. */
const fileHandle = z.int().nonnegative();
/** guest-file-read's result. */
const fileRead = z.object({ count: z.int().nonnegative(), 'buf-b64': z.string(), eof: z.boolean() });
/** Bytes asked for per guest-file-read. */
const FILE_READ_CHUNK = 64 * 1024;

interface SyncWait {
  id: number;
  resolve: () => void;
}

export class GuestAgent {
  private readonly reader: LineReader;
  /** True once a 0xFF has been seen and the sync reply is expected next. */
  private afterDelimiter = false;
  private syncWait: SyncWait | undefined;
  /** Set when we closed the channel because of what the guest sent. */
  private failure: string | undefined;
  private readonly commands = new JsonCommands({
    /** Per-connection id prefix: ids never collide with a previous client's. */
    idPrefix: `b${randomInt(0, 2 ** 31 - 1).toString(36)}-`,
    timeoutError: (command, timeoutMs) => new BangerError('timeout', `guest agent ${command} got no answer within ${timeoutMs} ms`),
    replyError: (command, errorClass, desc) => new AgentCommandError(command, errorClass, desc),
    malformedReply: (command, detail) => new BangerError('operation_failed', `the guest agent sent a malformed reply to ${command}: ${detail}`),
  });

  private constructor(
    private readonly sock: Socket,
    readonly socketPath: string,
    private readonly commandTimeoutMs: number,
    maxLineBytes: number,
  ) {
    this.reader = new LineReader({
      maxLine: maxLineBytes,
      syncByte: DELIMITER,
      onSync: () => {
        this.afterDelimiter = true;
      },
      onLine: (line) => this.onLine(line),
      onOverflow: (_reason, detail) => this.fail(`the guest agent sent ${detail}`),
    });
    sock.on('data', (c: Buffer) => this.reader.push(c));
    sock.on('error', () => undefined); // 'close' follows
    sock.on('close', () => this.onClose());
  }

  /** Connects and synchronises the channel (one attempt; see connectAgent for retries). */
  static async connect(socketPath: string, opts: AgentConnectOptions = {}): Promise<GuestAgent> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const started = Date.now();
    const sock = await openSocket(socketPath, timeoutMs);
    const agent = new GuestAgent(sock, socketPath, opts.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS, opts.maxLineBytes ?? AGENT_MAX_LINE_BYTES);
    try {
      await agent.resync(Math.max(1, timeoutMs - (Date.now() - started)));
    } catch (e) {
      agent.close();
      throw e;
    }
    return agent;
  }

  get closed(): boolean {
    return this.commands.closed;
  }

  /**
   * guest-sync-delimited: discards whatever is in the channel until the
   * agent echoes our random id after a 0xFF delimiter.
   */
  resync(timeoutMs = 5000): Promise<void> {
    if (this.commands.closed) return Promise.reject(this.closedError('guest-sync-delimited'));
    const id = randomInt(1, 2 ** 31 - 1);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.syncWait = undefined;
        cancelOnClose();
        reject(new BangerError('timeout', `the guest agent on ${this.socketPath} did not answer a sync within ${timeoutMs} ms`));
      }, timeoutMs);
      const cancelOnClose = this.commands.onClose(() => {
        clearTimeout(timer);
        this.syncWait = undefined;
        reject(this.closedError('guest-sync-delimited'));
      });
      this.syncWait = {
        id,
        resolve: () => {
          clearTimeout(timer);
          cancelOnClose();
          this.syncWait = undefined;
          resolve();
        },
      };
      // Our 0xFF resets the agent's parser and its answer starts with one,
      // which also drops any half line the reader holds.
      this.afterDelimiter = false;
      this.sock.write(
        Buffer.concat([Buffer.from([DELIMITER]), Buffer.from(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } }) + '\n')]),
      );
    });
  }

  /**
   * Runs an agent command and resolves with its "return" value, validated
   * by `result` when given (a value it refuses fails the command with a
   * coded error); without a schema the value is `unknown`.
   */
  execute(command: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<unknown>;
  execute<T>(command: string, args: Record<string, unknown> | undefined, opts: { timeoutMs?: number; result: z.ZodType<T> }): Promise<T>;
  execute<T>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number; result?: z.ZodType<T> } = {}): Promise<unknown> {
    if (this.commands.closed) return Promise.reject(this.closedError(command));
    const write = (line: string) => void this.sock.write(line);
    return this.commands.execute<unknown>(command, args, opts.timeoutMs ?? this.commandTimeoutMs, write, opts.result ?? anyResult);
  }

  async ping(timeoutMs?: number): Promise<void> {
    await this.execute('guest-ping', undefined, { result: emptyResult, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
  }

  /** Runs a program in the guest (no shell) and waits for it to finish. */
  async exec(path: string, args: string[] = [], opts: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    const capture = opts.captureOutput ?? true;
    const req: Record<string, unknown> = { path, arg: args, 'capture-output': capture };
    if (opts.env) req.env = opts.env;
    if (opts.input !== undefined) req['input-data'] = Buffer.from(opts.input).toString('base64');
    const { pid } = await this.execute('guest-exec', req, { timeoutMs: Math.min(this.commandTimeoutMs, timeoutMs), result: execStarted });
    let pollMs = 20;
    for (;;) {
      const left = deadline - Date.now();
      const st = await this.execute('guest-exec-status', { pid }, { timeoutMs: Math.max(1000, Math.min(this.commandTimeoutMs, left)), result: execStatus });
      if (st.exited) {
        return {
          exitCode: st.exitcode ?? null,
          signal: st.signal ?? null,
          stdout: decode(st['out-data']),
          stderr: decode(st['err-data']),
          stdoutTruncated: st['out-truncated'] === true,
          stderrTruncated: st['err-truncated'] === true,
        };
      }
      if (Date.now() + pollMs > deadline) {
        throw new BangerError(
          'timeout',
          `${path} did not finish in the guest within ${timeoutMs} ms (guest pid ${pid}, still running)`,
        );
      }
      await sleep(pollMs);
      // At most 100 ms between polls: a clone's identity step (~1 s) is waited
      // on by every warm create, and a poll costs the guest agent little.
      pollMs = Math.min(100, Math.round(pollMs * 1.5));
    }
  }

  /**
   * A small file's bytes, read through the agent's file commands (no
   * process starts in the guest). A file larger than maxBytes, or a read
   * that returns more than it was asked for, fails with a coded error; a
   * missing file fails with the agent's error (AgentCommandError).
   */
  async readFile(path: string, maxBytes = FILE_READ_CHUNK): Promise<Buffer> {
    const handle = await this.execute('guest-file-open', { path, mode: 'r' }, { result: fileHandle });
    try {
      const parts: Buffer[] = [];
      let total = 0;
      for (;;) {
        const r = await this.execute('guest-file-read', { handle, count: FILE_READ_CHUNK }, { result: fileRead });
        const buf = Buffer.from(r['buf-b64'], 'base64');
        if (buf.length > FILE_READ_CHUNK) {
          throw new BangerError('operation_failed', `the guest agent returned ${buf.length} bytes of ${clip(path)} for a read of ${FILE_READ_CHUNK}`);
        }
        total += buf.length;
        if (total > maxBytes) throw new BangerError('operation_failed', `${clip(path)} in the guest is larger than ${maxBytes} bytes`);
        parts.push(buf);
        if (r.eof || buf.length === 0) return Buffer.concat(parts);
      }
    } finally {
      await this.execute('guest-file-close', { handle }, { result: emptyResult }).catch(() => undefined);
    }
  }

  /** Flushes the guest's dirty pages to its disks (runs /bin/sync; no fsfreeze). */
  async sync(timeoutMs = 60_000): Promise<void> {
    const r = await this.exec('/bin/sync', [], { captureOutput: true, timeoutMs });
    if (r.exitCode !== 0) {
      throw new BangerError('operation_failed', `sync in the guest failed (${describeExit(r)})${r.stderr ? `: ${clip(r.stderr.trim())}` : ''}`);
    }
  }

  /**
   * Asks the guest to shut down. A successful guest-shutdown has no reply:
   * the channel closing (QEMU exited) and silence until timeoutMs both count
   * as "the request was accepted"; the caller verifies the VM actually stops.
   * An explicit error from the agent is thrown.
   */
  async shutdown(mode: ShutdownMode = 'powerdown', timeoutMs = 5000): Promise<ShutdownOutcome> {
    if (this.commands.closed) {
      if (this.failure !== undefined) throw this.closedError('guest-shutdown');
      return 'closed';
    }
    try {
      await this.execute('guest-shutdown', { mode }, { timeoutMs });
      return 'acknowledged';
    } catch (e) {
      if (e instanceof AgentCommandError) throw e;
      // a channel we closed over a bad reply is not a guest that went down
      if (this.commands.closed && this.failure === undefined) return 'closed';
      if (e instanceof BangerError && e.code === 'timeout') return 'no-reply';
      throw e;
    }
  }

  /** Resolves once the channel is closed (by either side). */
  waitClosed(): Promise<void> {
    return this.commands.waitClosed();
  }

  close(): void {
    if (!this.sock.destroyed) this.sock.destroy();
    this.onClose();
  }

  /** One line from the guest. Never throws: anything unexpected costs this connection only. */
  private onLine(line: Buffer): void {
    try {
      if (this.commands.closed) return; // the rest of a chunk that arrived with the line we closed over
      const afterDelimiter = this.afterDelimiter;
      this.afterDelimiter = false;
      const parsed = parsePeerLine(line);
      if (this.syncWait) {
        // Until synced the channel may hold anything (a previous client's
        // replies, half lines): only our own delimited sync reply counts.
        if (!afterDelimiter || !parsed.ok) return;
        const r = syncReply.safeParse(parsed.value);
        if (r.success && r.data.return === this.syncWait.id) this.syncWait.resolve();
        return;
      }
      if (!parsed.ok) return this.fail(`the guest agent sent ${parsed.reason}`);
      const msg = replyEnvelope.safeParse(parsed.value);
      if (!msg.success) return this.fail('the guest agent sent a line that is not a JSON object');
      // Id-less lines (the agent's answer to a line it could not parse) and
      // other ids answer nothing of ours; settle drops a late reply to a
      // command that timed out.
      if (typeof msg.data.id === 'string') this.commands.settle(msg.data.id, msg.data);
    } catch (e) {
      this.fail(`handling a guest agent message failed (${clip(messageOf(e))})`);
    }
  }

  /** Drops the connection because of what the guest sent; what is pending fails with `reason`. */
  private fail(reason: string): void {
    this.failure ??= reason;
    this.close();
  }

  private onClose(): void {
    this.reader.release();
    this.commands.close((command) => this.closedError(command));
  }

  private closedError(command: string): BangerError {
    if (this.failure !== undefined) {
      return new BangerError('operation_failed', `guest agent ${command}: ${this.failure}; the connection to ${this.socketPath} was closed`);
    }
    return new BangerError('unavailable', `guest agent ${command}: the channel ${this.socketPath} is closed`);
  }
}

export interface WaitForAgentOptions {
  /** Absolute time (ms since the epoch) to give up at. */
  deadlineMs: number;
  signal?: AbortSignal;
  /** Bound on one connect+sync+ping attempt (default 3000 ms). */
  attemptTimeoutMs?: number;
}

/**
 * Retries connect + sync + ping until the agent answers or the deadline
 * passes, and returns the synced client (the caller closes it).
 */
export async function connectAgent(socketPath: string, opts: WaitForAgentOptions): Promise<GuestAgent> {
  const attemptMs = opts.attemptTimeoutMs ?? 3000;
  let last: unknown;
  let attempts = 0;
  for (;;) {
    if (opts.signal?.aborted) throw new BangerError('interrupted', `waiting for the guest agent on ${socketPath} was interrupted`);
    const left = opts.deadlineMs - Date.now();
    if (left <= 0) break;
    attempts++;
    let agent: GuestAgent | undefined;
    try {
      const budget = Math.min(attemptMs, left);
      const t0 = Date.now();
      agent = await GuestAgent.connect(socketPath, { timeoutMs: budget });
      await agent.ping(Math.max(200, budget - (Date.now() - t0)));
      return agent;
    } catch (e) {
      agent?.close();
      last = e;
    }
    await abortableSleep(Math.min(250, Math.max(0, opts.deadlineMs - Date.now())), opts.signal);
  }
  throw new BangerError(
    'timeout',
    `the guest agent on ${socketPath} did not answer in time (${attempts} attempts; last: ${last === undefined ? 'none' : messageOf(last)})`,
    'the guest may still be booting or may lack qemu-guest-agent (and the virtio_console module); the console log shows how far it got',
  );
}

/** Resolves once the guest agent answers a ping (the connection is closed again). */
export async function waitForAgent(socketPath: string, deadlineMs: number, signal?: AbortSignal): Promise<void> {
  const agent = await connectAgent(socketPath, { deadlineMs, ...(signal ? { signal } : {}) });
  agent.close();
}

function openSocket(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new BangerError('timeout', `connecting to the guest agent socket ${path} timed out`));
    }, timeoutMs);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.off('error', onError);
      resolve(sock);
    });
    const onError = (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new BangerError(
          'unavailable',
          `cannot connect to the guest agent socket ${path}: ${e.code ?? e.message}`,
          'is the VM running?',
          { cause: e },
        ),
      );
    };
    sock.once('error', onError);
  });
}

function decode(b64: string | undefined): string {
  return b64 ? Buffer.from(b64, 'base64').toString('utf8') : '';
}

function describeExit(r: ExecResult): string {
  return r.signal !== null ? `killed by signal ${r.signal}` : `exit code ${r.exitCode}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
