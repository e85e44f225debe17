/**
 * A small QMP (QEMU Machine Protocol) client over QEMU's unix control socket.
 *
 * Wire format: one JSON object per line. QEMU greets with {"QMP": {...}};
 * the client must send qmp_capabilities before anything else. Every command
 * we send carries an "id" that QEMU echoes in its reply, so replies are
 * matched to commands even with asynchronous events ({"event": ...})
 * interleaved, and a reply that arrives after its command timed out is
 * recognised and dropped.
 *
 * QEMU is ours, but its socket is still read as a hostile peer would write
 * it: bounded lines (QMP_MAX_LINE_BYTES, the process-wide ByteBudget),
 * parsing that never throws, and a schema check of the greeting, every
 * reply envelope, every event and the result of each command we read
 * before any field is used. A reply of the wrong shape fails that command
 * with a coded error; a line that is not a JSON object, too long or too
 * deep closes the connection and fails what is pending.
 */
import { createConnection, type Socket } from 'node:net';
import { z } from 'zod';
import { BangerError, messageOf } from '../../errors/errors.js';
import { clip } from '../../model/text.js';
import { anyResult, describeIssues, JsonCommands, parsePeerLine, replyEnvelope } from '../../system/json-commands.js';
import { LineReader } from '../../system/line-reader.js';

const qmpGreeting = z.object({
  version: z
    .object({
      qemu: z.object({ major: z.int(), minor: z.int(), micro: z.int() }).optional(),
      package: z.string().optional(),
    })
    .optional(),
  capabilities: z.array(z.string()).optional(),
});
export type QmpGreeting = z.output<typeof qmpGreeting>;

const qmpEvent = z.object({
  event: z.string(),
  data: z.record(z.string(), z.unknown()).optional(),
  timestamp: z.object({ seconds: z.number(), microseconds: z.number() }).optional(),
});
export type QmpEvent = z.output<typeof qmpEvent>;

const qmpStatus = z.object({
  status: z.string(),
  running: z.boolean(),
  singlestep: z.boolean().optional(),
});
export type QmpStatus = z.output<typeof qmpStatus>;

/** The result of commands that return nothing but {} (qmp_capabilities, system_powerdown, quit). */
const emptyResult = z.object({});

export interface QmpConnectOptions {
  /** Give up connecting (and on the greeting/handshake) after this long. Default 5000 ms. */
  timeoutMs?: number;
  /** Default per-command timeout. Default 10000 ms. */
  commandTimeoutMs?: number;
  /** Longest line accepted from QEMU (default QMP_MAX_LINE_BYTES). */
  maxLineBytes?: number;
  signal?: AbortSignal;
}

/** An error QEMU returned for a command ({"error": {"class", "desc"}}). */
export class QmpCommandError extends BangerError {
  readonly errorClass: string;
  constructor(command: string, errorClass: string, desc: string) {
    super('operation_failed', `QMP ${command} failed: ${desc} (${errorClass})`);
    this.errorClass = errorClass;
  }
}

/**
 * Longest QMP line accepted. The commands banger sends answer in well under
 * a kilobyte; 1 MiB leaves room for larger queries (query-qmp-schema is
 * about 200 KiB) without letting one connection hold much memory.
 */
export const QMP_MAX_LINE_BYTES = 1024 * 1024;

export class QmpClient {
  private greetingValue: QmpGreeting | undefined;
  private greetingWait: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private readonly reader: LineReader;
  private readonly commands = new JsonCommands({
    idPrefix: 'banger-',
    timeoutError: (command, timeoutMs) => new BangerError('timeout', `QMP ${command} got no answer within ${timeoutMs} ms`),
    replyError: (command, errorClass, desc) => new QmpCommandError(command, errorClass, desc),
    malformedReply: (command, detail) => new BangerError('operation_failed', `QEMU sent a malformed QMP reply to ${command}: ${detail}`),
  });
  private readonly listeners = new Set<(ev: QmpEvent) => void>();
  /** Set when we closed the connection because of what QEMU sent. */
  private failure: string | undefined;

  private constructor(
    private readonly sock: Socket,
    private readonly socketPath: string,
    private readonly commandTimeoutMs: number,
    maxLineBytes: number,
  ) {
    this.reader = new LineReader({
      maxLine: maxLineBytes,
      onLine: (line) => this.onLine(line),
      onOverflow: (_reason, detail) => this.fail(`QEMU sent ${detail}`),
    });
    sock.on('data', (chunk: Buffer) => this.reader.push(chunk));
    sock.on('error', () => undefined); // 'close' follows and rejects what is pending
    sock.on('close', () => this.onClose());
  }

  /**
   * Connects, reads the greeting and negotiates capabilities. Retries while
   * the socket does not exist yet or refuses connections (QEMU starting), up
   * to timeoutMs.
   */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const deadline = Date.now() + timeoutMs;
    let lastErr: unknown;
    for (;;) {
      if (opts.signal?.aborted) throw new BangerError('interrupted', `QMP connect to ${socketPath} interrupted`);
      try {
        const sock = await openSocket(socketPath, deadline);
        const client = new QmpClient(sock, socketPath, opts.commandTimeoutMs ?? 10_000, opts.maxLineBytes ?? QMP_MAX_LINE_BYTES);
        try {
          await client.waitGreeting(deadline);
          await client.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(100, deadline - Date.now()), result: emptyResult });
        } catch (e) {
          client.close();
          throw e;
        }
        return client;
      } catch (e) {
        lastErr = e;
        const code = (e as NodeJS.ErrnoException).code;
        const retriable = code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN';
        if (!retriable || Date.now() + 50 >= deadline) break;
        await sleep(50);
      }
    }
    if (lastErr instanceof BangerError) throw lastErr;
    throw new BangerError(
      'unavailable',
      `cannot connect to QMP socket ${socketPath}: ${messageOf(lastErr)}`,
      'is the VM running? `banger vm show NAME` shows its state',
      { cause: lastErr },
    );
  }

  /** QEMU's greeting (read during connect). */
  get greeting(): QmpGreeting {
    return this.greetingValue ?? {};
  }

  get closed(): boolean {
    return this.commands.closed;
  }

  /**
   * Runs a QMP command and resolves with its "return" value, validated by
   * `result` when given (a value it refuses fails the command with a coded
   * error); without a schema the value is `unknown`.
   */
  execute(command: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<unknown>;
  execute<T>(command: string, args: Record<string, unknown> | undefined, opts: { timeoutMs?: number; result: z.ZodType<T> }): Promise<T>;
  execute<T>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number; result?: z.ZodType<T> } = {}): Promise<unknown> {
    if (this.commands.closed) {
      return Promise.reject(this.failure !== undefined ? this.closedError(command) : new BangerError('unavailable', `QMP ${command}: the connection is closed`));
    }
    const write = (line: string) => void this.sock.write(line);
    return this.commands.execute<unknown>(command, args, opts.timeoutMs ?? this.commandTimeoutMs, write, opts.result ?? anyResult);
  }

  /** Subscribes to asynchronous events; returns an unsubscribe function. */
  onEvent(listener: (ev: QmpEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves with the next event named `name`. */
  waitForEvent(name: string, timeoutMs: number): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new BangerError('timeout', `no QMP ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onEvent((ev) => {
        if (ev.event !== name) return;
        clearTimeout(timer);
        off();
        resolve(ev);
      });
    });
  }

  queryStatus(): Promise<QmpStatus> {
    return this.execute('query-status', undefined, { result: qmpStatus });
  }

  /** ACPI power button: a guest with the button driver shuts down cleanly. */
  async systemPowerdown(): Promise<void> {
    await this.execute('system_powerdown', undefined, { result: emptyResult });
  }

  /**
   * Ends QEMU immediately (no guest shutdown). QEMU may close the socket
   * before or after its reply: both count as success.
   */
  async quit(timeoutMs = 5000): Promise<void> {
    if (this.commands.closed) return;
    const closed = this.waitClosed();
    try {
      await Promise.race([this.execute('quit', undefined, { timeoutMs }), closed]);
    } catch (e) {
      if (!this.commands.closed) throw e;
    }
  }

  /** Resolves once the connection is closed (by either side). */
  waitClosed(): Promise<void> {
    return this.commands.waitClosed();
  }

  close(): void {
    if (!this.sock.destroyed) this.sock.destroy();
    this.onClose();
  }

  /** Resolves once the {"QMP": ...} greeting has been read; rejects on a bad one, a close or the deadline. */
  private waitGreeting(deadline: number): Promise<void> {
    if (this.greetingValue) return Promise.resolve();
    if (this.commands.closed) return Promise.reject(this.greetingClosedError());
    return new Promise<void>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        cancelOnClose();
        this.greetingWait = undefined;
      };
      const timer = setTimeout(() => {
        done();
        reject(new BangerError('timeout', `no QMP greeting on ${this.socketPath}`, 'another client may hold the QMP socket'));
      }, Math.max(1, deadline - Date.now()));
      const cancelOnClose = this.commands.onClose(() => {
        done();
        reject(this.greetingClosedError());
      });
      this.greetingWait = {
        resolve: () => {
          done();
          resolve();
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
    });
  }

  private greetingClosedError(): BangerError {
    if (this.failure !== undefined) return new BangerError('operation_failed', `${this.socketPath} is not a QMP socket: ${this.failure}`);
    return new BangerError('unavailable', `QMP socket ${this.socketPath} closed before the greeting`);
  }

  /** One line from QEMU. Never throws: anything unexpected costs this connection only. */
  private onLine(line: Buffer): void {
    try {
      if (this.commands.closed) return; // the rest of a chunk that arrived with the line we closed over
      const parsed = parsePeerLine(line);
      if (!parsed.ok) return this.fail(`QEMU sent ${parsed.reason}`);
      if (this.greetingValue === undefined) return this.onGreeting(parsed.value);
      const ev = qmpEvent.safeParse(parsed.value);
      if (ev.success) return this.emit(ev.data);
      const msg = replyEnvelope.safeParse(parsed.value);
      if (!msg.success) return this.fail('QEMU sent a line that is not a JSON object');
      if (msg.data.return === undefined && msg.data.error === undefined) return; // a malformed event, or nothing we know: dropped
      // QEMU echoes ids; a reply without one (e.g. to an unparsable command)
      // goes to the oldest command; an id we never send is not ours.
      const id = msg.data.id === undefined ? this.commands.oldestId() : typeof msg.data.id === 'string' ? msg.data.id : undefined;
      if (id !== undefined) this.commands.settle(id, msg.data); // a late reply to a command that timed out settles nothing
    } catch (e) {
      this.fail(`handling a QMP message failed (${clip(messageOf(e))})`);
    }
  }

  private onGreeting(value: unknown): void {
    const g = z.object({ QMP: qmpGreeting }).safeParse(value);
    if (!g.success) return this.fail(`the first line is not a QMP greeting (${describeIssues(g.error)})`);
    this.greetingValue = g.data.QMP;
    this.greetingWait?.resolve();
  }

  private emit(ev: QmpEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(ev);
      } catch {
        // a listener's bug must not break the connection
      }
    }
  }

  /** Drops the connection because of what QEMU sent; what is pending fails with `reason`. */
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
      return new BangerError('operation_failed', `QMP ${command}: ${this.failure}; the connection to ${this.socketPath} was closed`);
    }
    return new BangerError('unavailable', `QMP ${command}: the connection closed before QEMU answered`);
  }
}

/** Connects to the socket (the caller retries ENOENT / ECONNREFUSED, which reject with their errno error). */
function openSocket(socketPath: string, deadline: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    const timer = setTimeout(
      () => {
        sock.destroy();
        reject(new BangerError('timeout', `connecting to QMP socket ${socketPath} timed out`));
      },
      Math.max(1, deadline - Date.now()),
    );
    const onError = (e: Error) => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    };
    sock.once('error', onError);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.off('error', onError);
      resolve(sock);
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
