/**
 * The CLI's side of the RPC. One connection carries many requests; the
 * connection itself matters: an ephemeral VM (vm run --rm) lives only as
 * long as the connection that created it.
 */
import { connect, type Socket } from 'node:net';
import { BangerError, type ErrorShape } from '../errors/errors.js';
import type { ProgressEvent } from '../model/types.js';
import { LineReader, parseJson } from '../system/line-reader.js';
import { encode, MAX_RESPONSE_BYTES, PROTOCOL_VERSION, serverMessageSchema } from './framing.js';
import type { z } from 'zod';
import type { Methods } from './methods.js';
import { daemonResults, firstIssue } from './results.js';
import type { MethodTable } from './server.js';
import { never, type Infer, type Shape } from './shape.js';

interface Pending {
  method: string;
  /** The method's result shape: the result is checked with it before the call resolves. */
  result: Shape<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  onProgress?: (ev: ProgressEvent) => void;
  onChunk?: (data: Buffer) => void;
}

export interface CallOptions {
  onProgress?: (ev: ProgressEvent) => void;
  /** Streamed parts of the result, in order (e.g. an export's patch). */
  onChunk?: (data: Buffer) => void;
}

/** What a result is, as its table's shape makes it. */
export type TableResult<T extends MethodTable, M extends keyof T> = Infer<T[M]['result']>;

/**
 * Each method's result shape, by method, built on first call: what a client
 * reads of a table. (The daemon's is src/rpc/results.ts's daemonResults, so a
 * client never loads the params' zod; resultsOf makes one of any table.)
 */
export type ResultShapes<T extends MethodTable> = { readonly [M in keyof T]: () => T[M]['result'] };

/** The result shapes of a table whose entries are already built (the helper's ops). */
export function resultsOf<T extends MethodTable>(table: T): ResultShapes<T> {
  const out: Record<string, () => Shape<unknown>> = {};
  for (const m of Object.keys(table)) out[m] = () => table[m]!.result;
  return out as ResultShapes<T>;
}

/**
 * A client for any method table (methods.ts for the daemon, the helper's
 * ops). Every result is checked with its method's result schema: a peer that
 * answers with the wrong shape fails that call with a coded error
 * (operation_failed); the connection stays usable.
 */
export class TableClient<T extends MethodTable> {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closedError: BangerError | undefined;
  private unattributed: BangerError | undefined;
  /** What the peer answered to the hello (its version, and for the helper its bridge and subnet). */
  hello: unknown = undefined;

  protected constructor(
    private readonly socket: Socket,
    private readonly results: ResultShapes<T>,
    private readonly peer: string,
    /** The hint of a malformed result: what to check (versions), and where. */
    private readonly resultHint: string,
  ) {
    const reader = new LineReader({
      maxLine: MAX_RESPONSE_BYTES,
      onLine: (line) => this.onLine(line),
      onOverflow: (_reason, detail) => this.abandon(new BangerError('operation_failed', `the ${this.peer} sent ${detail}`, `this is a bug in the ${this.peer}; its log may say more`)),
    });
    socket.on('data', (c: Buffer) => reader.push(c));
    const fail = () => {
      reader.release();
      this.closedError ??= this.unattributed ?? new BangerError('unavailable', `the ${this.peer} closed the connection`, `check the ${this.peer}'s log`);
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
    };
    socket.on('close', fail);
    socket.on('error', fail);
  }

  /** Connects and says hello (which checks the protocol version). */
  static async open<T extends MethodTable>(
    socketPath: string,
    o: {
      results: ResultShapes<T>;
      helloMethod: keyof T & string;
      protocol: number;
      client: string;
      peer: string;
      /** Hint of the error a malformed result gives (default: the peer and this client may be different versions, or it is a bug). */
      resultHint?: string;
    },
  ): Promise<TableClient<T>> {
    const hint = o.resultHint ?? `the ${o.peer} and this client may be different versions, or this is a bug in the ${o.peer}; its log may say more`;
    const client = new TableClient<T>(await connectSocket(socketPath), o.results, o.peer, hint);
    try {
      client.hello = await client.call(o.helloMethod, { protocol: o.protocol, client: o.client } as z.input<T[typeof o.helloMethod]['params']>);
    } catch (e) {
      client.close(); // a refused hello (another protocol) must not keep the socket, and the process, alive
      throw e;
    }
    return client;
  }

  call<M extends keyof T & string>(
    method: M,
    params: z.input<T[M]['params']>,
    opts?: ((ev: ProgressEvent) => void) | CallOptions,
  ): Promise<TableResult<T, M>> {
    if (this.closedError) return Promise.reject(this.closedError);
    // A name outside the table still goes out (the peer refuses it, unknown_method); whatever comes back is then no result of ours.
    const shape = Object.prototype.hasOwnProperty.call(this.results, method) ? this.results[method]() : undefined;
    const id = this.nextId++;
    const o: CallOptions = typeof opts === 'function' ? { onProgress: opts } : (opts ?? {});
    return new Promise<TableResult<T, M>>((resolve, reject) => {
      this.pending.set(id, {
        method,
        result: shape ?? noResult,
        resolve: resolve as (v: unknown) => void,
        reject,
        onProgress: o.onProgress,
        onChunk: o.onChunk,
      });
      this.socket.write(encode({ id, method, params }));
    });
  }

  close(): void {
    this.closedError ??= new BangerError('unavailable', 'connection closed');
    this.socket.end();
    this.socket.destroy();
  }

  /** The peer broke the protocol: every pending call fails with `err` and the connection goes. */
  private abandon(err: BangerError): void {
    this.closedError ??= err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.socket.destroy();
  }

  private onLine(line: Buffer): void {
    const parsed = parseJson(line.toString('utf8'));
    const checked = parsed.ok ? serverMessageSchema.safeParse(parsed.value) : undefined;
    if (!checked?.success) {
      this.abandon(new BangerError('operation_failed', `the ${this.peer} sent a malformed message`, `this is a bug in the ${this.peer}, or the socket is not banger's`));
      return;
    }
    const msg = checked.data;
    const p = this.pending.get(msg.id);
    if (!p) {
      // An error about no request of ours (the server could not read a line,
      // or is about to drop us): it explains the close, if one follows.
      if ('error' in msg) this.unattributed = BangerError.fromShape(msg.error as ErrorShape);
      return;
    }
    if ('progress' in msg) {
      p.onProgress?.(msg.progress);
      return;
    }
    if ('chunk' in msg) {
      if (!p.onChunk) {
        this.pending.delete(msg.id);
        p.reject(new BangerError('operation_failed', `the ${this.peer} streamed data for a call that takes none`));
        return;
      }
      p.onChunk(Buffer.from(msg.chunk, 'base64'));
      return;
    }
    this.pending.delete(msg.id);
    if ('error' in msg) {
      p.reject(BangerError.fromShape(msg.error));
      return;
    }
    // The result is checked like any input: a wrong shape costs this call, not the connection.
    const result = p.result.safeParse(msg.result);
    if (result.success) {
      p.resolve(result.data);
      return;
    }
    const { path, problem } = firstIssue(result.error);
    p.reject(new BangerError('operation_failed', `the ${this.peer} sent a malformed result for ${p.method}: ${path ? `${path}: ` : ''}${problem}`, this.resultHint));
  }
}

/** The result "schema" of a method the table lacks: any result is refused. */
const noResult = never('this client has no such method');

function connectSocket(socketPath: string): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = connect(socketPath);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** The CLI's client of bangerd. */
export type RpcClient = TableClient<Methods>;
export const RpcClient = {
  connect(socketPath: string, clientVersion: string): Promise<RpcClient> {
    return TableClient.open<Methods>(socketPath, {
      results: daemonResults,
      helloMethod: 'rpc.hello',
      protocol: PROTOCOL_VERSION,
      client: clientVersion,
      peer: 'daemon',
      resultHint: 'the daemon and this client may be different versions (`banger daemon status` shows the daemon\'s), or this is a bug',
    });
  },
};
