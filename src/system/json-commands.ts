/**
 * The pending-command table behind QEMU's JSON command protocols (QMP and
 * qemu-guest-agent). Each command goes out as one line
 * {"execute", "arguments", "id"} and the peer echoes the id in its reply
 * ({"return": ...} or {"error": {"class", "desc"}}), so a reply settles
 * exactly its own command, and a reply that arrives after its command timed
 * out finds nothing pending and is dropped. Closing rejects whatever is
 * still pending and wakes the close waiters.
 *
 * The peer is not trusted (the guest agent is guest root's to write): a
 * reply is validated before any field is read — its envelope here
 * (`replyEnvelope`), its error body and its "return" value against the
 * schema the caller gave for that command — and a reply of the wrong shape
 * rejects that one command with a coded error instead of handing the caller
 * a value of the wrong type. Text from the peer that reaches an error
 * message is clipped (`clip`).
 *
 * Framing, handshakes, events and which id an id-less reply belongs to stay
 * with each protocol's client.
 */
import { z } from 'zod';
import { parseJson } from './line-reader.js';
import { clip } from '../model/text.js';

/** The first problem zod found, for a message: where and what (never the value), clipped. */
export function describeIssues(err: z.ZodError): string {
  const first = err.issues[0];
  if (!first) return 'it does not have the expected shape';
  const where = first.path.length > 0 ? first.path.map(String).join('.') : 'the value';
  return clip(`${where}: ${first.message}`);
}

/** Deepest nesting of arrays/objects accepted in a peer's line (QMP and agent replies nest a few levels). */
export const MAX_JSON_DEPTH = 32;

/**
 * Parses one line a peer sent: fails (never throws) on bad JSON and on
 * nesting deeper than `maxDepth`, which is checked on the raw bytes first so
 * a hostile line of a million brackets costs one linear scan, not a parse.
 */
export function parsePeerLine(line: Buffer, maxDepth = MAX_JSON_DEPTH): { ok: true; value: unknown } | { ok: false; reason: string } {
  if (nestingDepth(line) > maxDepth) return { ok: false, reason: `a message nested deeper than ${maxDepth} levels` };
  const parsed = parseJson(line.toString('utf8'));
  return parsed.ok ? parsed : { ok: false, reason: 'a line that is not JSON' };
}

/** Deepest [ / { nesting outside strings (UTF-8 never puts these ASCII bytes inside a multi-byte character). */
function nestingDepth(buf: Buffer): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i]!;
    if (inString) {
      if (b === 0x5c) i++; // backslash: skip the escaped byte
      else if (b === 0x22) inString = false;
    } else if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) {
      if (++depth > max) max = depth;
    } else if (b === 0x5d || b === 0x7d) depth--;
  }
  return max;
}

/**
 * A reply line's envelope, before anything in it is trusted: a JSON object
 * whose "id", "return" and "error" may each be anything (each is checked
 * where it is used). JSON has no undefined, so a field is present exactly
 * when it is not undefined here.
 */
export const replyEnvelope = z.object({
  id: z.unknown().optional(),
  return: z.unknown().optional(),
  error: z.unknown().optional(),
});
export type ReplyEnvelope = z.output<typeof replyEnvelope>;

/** {"error": {"class", "desc"}} as QMP and the agent send it. */
const errorBody = z.object({ class: z.string(), desc: z.string() });

/** The "return" of a command whose result nobody reads (QEMU sends {}). */
export const anyResult = z.unknown();

export interface JsonCommandsOptions {
  /** Every id this table hands out starts with this. */
  idPrefix: string;
  /** The error for a command that got no reply within its timeout. */
  timeoutError: (command: string, timeoutMs: number) => Error;
  /** The error for an {"error": {"class", "desc"}} reply (class and desc already clipped). */
  replyError: (command: string, errorClass: string, desc: string) => Error;
  /** The error for a reply of the wrong shape (`detail` says what was wrong, never echoing the value). */
  malformedReply: (command: string, detail: string) => Error;
}

interface Pending {
  command: string;
  result: z.ZodType;
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
   * promise settles with the reply's "return" value once `result` accepts
   * it (and with a malformedReply error when it does not), its error, a
   * timeout or close() — whichever comes first.
   */
  execute<T>(
    command: string,
    args: Record<string, unknown> | undefined,
    timeoutMs: number,
    write: (line: string) => void,
    result: z.ZodType<T>,
  ): Promise<T> {
    const id = `${this.opts.idPrefix}${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(this.opts.timeoutError(command, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { command, result, resolve: resolve as (v: unknown) => void, reject, timer });
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
   * Settles the command `id` with a reply: a well-formed "error" rejects
   * with replyError, a "return" the command's schema accepts resolves, and
   * anything else (an error body that is not {class, desc}, a return of the
   * wrong shape, neither field) rejects with malformedReply. False when
   * nothing is pending under `id` (a late reply to a command that timed
   * out, or someone else's).
   */
  settle(id: string, reply: ReplyEnvelope): boolean {
    const p = this.pending.get(id);
    if (!p) return false;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (reply.error !== undefined) {
      const err = errorBody.safeParse(reply.error);
      if (err.success) p.reject(this.opts.replyError(p.command, clip(err.data.class, 64), clip(err.data.desc)));
      else p.reject(this.opts.malformedReply(p.command, `its "error" is not {class, desc} (${describeIssues(err.error)})`));
    } else if (reply.return !== undefined) {
      const value = p.result.safeParse(reply.return);
      if (value.success) p.resolve(value.data);
      else p.reject(this.opts.malformedReply(p.command, describeIssues(value.error)));
    } else {
      p.reject(this.opts.malformedReply(p.command, 'it has neither "return" nor "error"'));
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
