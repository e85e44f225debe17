/**
 * The pending-command table behind QEMU's JSON command protocols (QMP and
 * qemu-guest-agent). Each command goes out as one line
 * {"execute", "arguments", "id"} and the peer echoes the id in its reply
 * ({"return": ...} or {"error": {"class", "desc"}}), so a reply settles
 * exactly its own command, and a reply that arrives after its command timed
 * out finds nothing pending and is dropped. Closing rejects whatever is
 * still pending and wakes the close waiters.
 *
 * Framing, handshakes, events and which id an id-less reply belongs to stay
 * with each protocol's client.
 */

export interface JsonCommandsOptions {
  /** Every id this table hands out starts with this. */
  idPrefix: string;
  /** The error for a command that got no reply within its timeout. */
  timeoutError: (command: string, timeoutMs: number) => Error;
  /** The error for an {"error": {"class", "desc"}} reply. */
  replyError: (command: string, errorClass: string, desc: string) => Error;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class JsonCommands {
  private readonly pending = new Map<string, Pending>();
  private readonly closeWaiters = new Set<() => void>();
  private nextId = 1;
  private closedFlag = false;

  constructor(private readonly opts: JsonCommandsOptions) {}

  get closed(): boolean {
    return this.closedFlag;
  }

  /**
   * Registers a command under a fresh id and hands its line to `write`. The
   * promise settles with the reply's "return" value, its error, a timeout
   * or close() — whichever comes first.
   */
  execute<T = unknown>(
    command: string,
    args: Record<string, unknown> | undefined,
    timeoutMs: number,
    write: (line: string) => void,
  ): Promise<T> {
    const id = `${this.opts.idPrefix}${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(this.opts.timeoutError(command, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      const msg: Record<string, unknown> = { execute: command, id };
      if (args !== undefined) msg.arguments = args;
      write(JSON.stringify(msg) + '\n');
    });
  }

  /** The id of the oldest command still waiting for its reply. */
  oldestId(): string | undefined {
    return this.pending.keys().next().value;
  }

  /**
   * Settles the command `id` with a parsed reply: its "error" rejects, else
   * its "return" resolves. False when nothing is pending under `id` (a late
   * reply to a command that timed out, or someone else's).
   */
  settle(id: string, reply: Record<string, unknown>): boolean {
    const p = this.pending.get(id);
    if (!p) return false;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if ('error' in reply) {
      const err = (reply.error ?? {}) as { class?: string; desc?: string };
      p.reject(this.opts.replyError(p.command, err.class ?? 'GenericError', err.desc ?? 'unknown error'));
    } else {
      p.resolve(reply.return);
    }
    return true;
  }

  /** Calls `fn` once, on close; returns a function that cancels that. */
  onClose(fn: () => void): () => void {
    this.closeWaiters.add(fn);
    return () => this.closeWaiters.delete(fn);
  }

  /** Resolves once close() has run. */
  waitClosed(): Promise<void> {
    if (this.closedFlag) return Promise.resolve();
    return new Promise((resolve) => this.closeWaiters.add(resolve));
  }

  /**
   * Marks the connection closed (once; later calls do nothing): rejects
   * every pending command with `errorFor(command)`, then runs the close
   * waiters.
   */
  close(errorFor: (command: string) => Error): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(errorFor(p.command));
    }
    for (const w of [...this.closeWaiters]) w();
    this.closeWaiters.clear();
  }
}
