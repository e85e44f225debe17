/**
 * A small QMP (QEMU Machine Protocol) client over QEMU's unix control socket.
 *
 * Wire format: one JSON object per line. QEMU greets with {"QMP": {...}};
 * the client must send qmp_capabilities before anything else. Every command
 * we send carries an "id" that QEMU echoes in its reply, so replies are
 * matched to commands even with asynchronous events ({"event": ...})
 * interleaved, and a reply that arrives after its command timed out is
 * recognised and dropped.
 */
import { createConnection, type Socket } from 'node:net';
import { BangerError, messageOf } from '../../errors/errors.js';
import { JsonCommands } from '../../system/json-commands.js';

export interface QmpGreeting {
  version?: { qemu?: { major: number; minor: number; micro: number }; package?: string };
  capabilities?: string[];
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpStatus {
  status: string;
  running: boolean;
  singlestep?: boolean;
}

export interface QmpConnectOptions {
  /** Give up connecting (and on the greeting/handshake) after this long. Default 5000 ms. */
  timeoutMs?: number;
  /** Default per-command timeout. Default 10000 ms. */
  commandTimeoutMs?: number;
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

const MAX_LINE = 16 * 1024 * 1024;

export class QmpClient {
  readonly greeting: QmpGreeting;
  private readonly sock: Socket;
  private readonly commands = new JsonCommands({
    idPrefix: 'banger-',
    timeoutError: (command, timeoutMs) => new BangerError('timeout', `QMP ${command} got no answer within ${timeoutMs} ms`),
    replyError: (command, errorClass, desc) => new QmpCommandError(command, errorClass, desc),
  });
  private readonly listeners = new Set<(ev: QmpEvent) => void>();
  private buf = '';
  private readonly commandTimeoutMs: number;

  private constructor(sock: Socket, greeting: QmpGreeting, leftover: string, commandTimeoutMs: number) {
    this.sock = sock;
    this.greeting = greeting;
    this.commandTimeoutMs = commandTimeoutMs;
    sock.on('data', (chunk: Buffer) => this.onData(chunk.toString('utf8')));
    sock.on('error', () => undefined); // 'close' follows and rejects what is pending
    sock.on('close', () => this.onClose());
    if (leftover) this.onData(leftover);
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
        const { sock, greeting, leftover } = await openAndGreet(socketPath, deadline);
        const client = new QmpClient(sock, greeting, leftover, opts.commandTimeoutMs ?? 10_000);
        try {
          await client.execute('qmp_capabilities', undefined, { timeoutMs: Math.max(100, deadline - Date.now()) });
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

  get closed(): boolean {
    return this.commands.closed;
  }

  /** Runs a QMP command and resolves with its "return" value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<T> {
    if (this.commands.closed) {
      return Promise.reject(new BangerError('unavailable', `QMP ${command}: the connection is closed`));
    }
    return this.commands.execute<T>(command, args, opts.timeoutMs ?? this.commandTimeoutMs, (line) => this.sock.write(line));
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
    return this.execute<QmpStatus>('query-status');
  }

  /** ACPI power button: a guest with the button driver shuts down cleanly. */
  async systemPowerdown(): Promise<void> {
    await this.execute('system_powerdown');
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

  private onData(text: string): void {
    this.buf += text;
    if (this.buf.length > MAX_LINE) {
      this.sock.destroy(new Error('QMP message too large'));
      return;
    }
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // not JSON: ignore
    }
    if (typeof msg.event === 'string') {
      for (const l of [...this.listeners]) {
        try {
          l(msg as unknown as QmpEvent);
        } catch {
          // a listener's bug must not break the connection
        }
      }
      return;
    }
    if (!('return' in msg) && !('error' in msg)) return;
    // QEMU echoes ids; a reply without one (e.g. to an unparsable command) goes to the oldest command.
    const id = typeof msg.id === 'string' ? msg.id : this.commands.oldestId();
    if (id !== undefined) this.commands.settle(id, msg); // a late reply to a command that timed out settles nothing
  }

  private onClose(): void {
    this.commands.close((command) => new BangerError('unavailable', `QMP ${command}: the connection closed before QEMU answered`));
  }
}

/** Connects and waits for the {"QMP": ...} greeting line. */
function openAndGreet(socketPath: string, deadline: number): Promise<{ sock: Socket; greeting: QmpGreeting; leftover: string }> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    let buf = '';
    let done = false;
    const finish = (err: Error | null, value?: { sock: Socket; greeting: QmpGreeting; leftover: string }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('error', onError);
      sock.off('close', onClose);
      if (err) {
        sock.destroy();
        reject(err);
      } else resolve(value!);
    };
    const timer = setTimeout(
      () => finish(new BangerError('timeout', `no QMP greeting on ${socketPath}`, 'another client may hold the QMP socket')),
      Math.max(1, deadline - Date.now()),
    );
    const onError = (e: Error) => finish(e);
    const onClose = () => finish(new BangerError('unavailable', `QMP socket ${socketPath} closed before the greeting`));
    const onData = (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > MAX_LINE) finish(new BangerError('operation_failed', `QMP greeting on ${socketPath} too large`));
        return;
      }
      const line = buf.slice(0, nl);
      try {
        const msg = JSON.parse(line) as { QMP?: QmpGreeting };
        if (!msg.QMP) throw new Error('not a QMP greeting');
        finish(null, { sock, greeting: msg.QMP, leftover: buf.slice(nl + 1) });
      } catch (e) {
        finish(new BangerError('operation_failed', `${socketPath} is not a QMP socket: ${messageOf(e)}`));
      }
    };
    sock.on('data', onData);
    sock.on('error', onError);
    sock.on('close', onClose);
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
