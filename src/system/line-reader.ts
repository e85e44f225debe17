/**
 * Bounded line framing for every byte stream a peer controls: the RPC
 * socket (both ends), QMP and the guest agent. Each reader
 *   - scans only the bytes that just arrived for the delimiter (a frame
 *     that comes in a million small chunks costs linear time, not quadratic);
 *   - refuses a line longer than `maxLine` as soon as it is seen to be too
 *     long (not once the newline finally arrives);
 *   - holds its partial line against a process-wide ByteBudget, so many
 *     peers each holding a big half-line cannot add up to unbounded memory.
 * A reader never throws: an oversized line or an exhausted budget calls
 * `onOverflow` once and the reader stops (the owner drops that connection).
 */

/** A process-wide cap on bytes held in partial lines across every reader. */
export class ByteBudget {
  private usedBytes = 0;
  constructor(readonly limit: number) {}

  get used(): number {
    return this.usedBytes;
  }

  /** Takes n bytes; false (and nothing taken) when that would pass the limit. */
  take(n: number): boolean {
    if (this.usedBytes + n > this.limit) return false;
    this.usedBytes += n;
    return true;
  }

  give(n: number): void {
    this.usedBytes = Math.max(0, this.usedBytes - n);
  }
}

/**
 * The budget every reader in this process shares unless given its own: one
 * bound on memory held for peers' unfinished lines (a property of the
 * process, hence a module-level value).
 */
export const processBudget = new ByteBudget(32 * 1024 * 1024);

export type OverflowReason = 'line_too_long' | 'budget_exhausted';

export interface LineReaderOptions {
  /** Longest line accepted, in bytes (without the delimiter). */
  maxLine: number;
  onLine: (line: Buffer) => void;
  onOverflow: (reason: OverflowReason, detail: string) => void;
  budget?: ByteBudget;
  /** A byte that discards the partial line and calls onSync (the guest agent's 0xFF). */
  syncByte?: number;
  onSync?: () => void;
}

const NL = 0x0a;

export class LineReader {
  private parts: Buffer[] = [];
  private held = 0;
  private stopped = false;
  private readonly budget: ByteBudget;

  constructor(private readonly opts: LineReaderOptions) {
    this.budget = opts.budget ?? processBudget;
  }

  /** Bytes held for the unfinished line. */
  get pending(): number {
    return this.held;
  }

  get overflowed(): boolean {
    return this.stopped;
  }

  push(chunk: Buffer | string): void {
    if (this.stopped) return;
    let buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    while (buf.length > 0 && !this.stopped) {
      const nl = buf.indexOf(NL);
      const sync = this.opts.syncByte !== undefined ? buf.indexOf(this.opts.syncByte) : -1;
      if (sync >= 0 && (nl < 0 || sync < nl)) {
        this.drop();
        buf = buf.subarray(sync + 1);
        this.opts.onSync?.();
        continue;
      }
      if (nl < 0) {
        this.hold(buf);
        return;
      }
      const head = buf.subarray(0, nl);
      if (this.held + head.length > this.opts.maxLine) {
        this.overflow('line_too_long', `a message longer than ${this.opts.maxLine} bytes`);
        return;
      }
      const line = this.parts.length === 0 ? head : Buffer.concat([...this.parts, head]);
      this.drop();
      buf = buf.subarray(nl + 1);
      if (line.length > 0) this.opts.onLine(line);
    }
  }

  /** Gives the held bytes back to the budget (call when the connection closes). */
  release(): void {
    this.drop();
  }

  private hold(b: Buffer): void {
    if (this.held + b.length > this.opts.maxLine) {
      this.overflow('line_too_long', `a message longer than ${this.opts.maxLine} bytes`);
      return;
    }
    if (!this.budget.take(b.length)) {
      this.overflow('budget_exhausted', `this process already holds ${this.budget.used} bytes of unfinished messages`);
      return;
    }
    // Copy: the chunk may be a view into a larger pooled buffer.
    this.parts.push(Buffer.from(b));
    this.held += b.length;
  }

  private drop(): void {
    if (this.held > 0) this.budget.give(this.held);
    this.parts = [];
    this.held = 0;
  }

  private overflow(reason: OverflowReason, detail: string): void {
    this.drop();
    this.stopped = true;
    this.opts.onOverflow(reason, detail);
  }
}

/** JSON.parse that returns undefined instead of throwing (bad JSON, or nesting too deep for the stack). */
export function parseJson(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}
