/**
 * The daemon's side of the RPC: accepts connections on a Unix socket (mode
 * 0600), checks the protocol version with rpc.hello, validates params with
 * the method table's schemas and dispatches to typed handlers. Every request
 * gets an operation id that appears in its log line and in any error.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, chownSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Logger } from 'pino';
import { BangerError, isBangerError, messageOf } from '../errors/errors.js';
import type { ProgressEvent } from '../model/types.js';
import type { z } from 'zod';
import { LineReader, parseJson, type ByteBudget } from '../system/line-reader.js';
import { drainedOrClosed } from '../system/streams.js';
import { clip } from '../model/text.js';
import type { Infer, Shape } from './shape.js';
import { CHUNK_BYTES, encode, MAX_REQUEST_BYTES, requestSchema, type RequestMessage, type ServerMessage } from './framing.js';
import { methods, PROTOCOL_VERSION, type MethodName, type ResultOf, type ValidParamsOf } from './methods.js';

export interface Connection {
  readonly id: string;
  readonly closed: boolean;
  onClose(cb: () => void): void;
}

export interface RequestContext<Name extends string = MethodName> {
  opId: string;
  method: Name;
  connection: Connection;
  progress: (ev: ProgressEvent) => void;
  /** Streams part of the result (raw bytes; the client reassembles them); resolves when the socket can take more. */
  sendChunk: (data: Buffer) => Promise<void>;
  log: Logger;
}

export type Handlers = {
  [M in MethodName]: (params: ValidParamsOf<M>, ctx: RequestContext) => Promise<ResultOf<M>>;
};

/**
 * Any method table: a zod schema for each method's params (checked by the
 * server) and a shape for its result (checked by the client,
 * src/rpc/client.ts): methods.ts, the helper's ops.
 */
export type MethodTable = Record<string, { params: z.ZodType; result: Shape<unknown> }>;

export type HandlersFor<T extends MethodTable> = {
  [M in keyof T & string]: (params: z.output<T[M]['params']>, ctx: RequestContext<keyof T & string>) => Promise<Infer<T[M]['result']>>;
};

export interface TableServerOptions<T extends MethodTable> {
  socketPath: string;
  table: T;
  handlers: HandlersFor<T>;
  log: Logger;
  version: string;
  protocol: number;
  /** The method that must come first on a connection; its params are {protocol, client}. */
  helloMethod: keyof T & string;
  /** Socket file mode (default 0600) and owner (default: ours). */
  mode?: number;
  owner?: { uid: number; gid: number };
  /** Bound on bytes held for unfinished requests (default: the process-wide budget). */
  budget?: ByteBudget;
  /** Connections served at once; more are closed at once (default 128). */
  maxConnections?: number;
  /** Requests one connection may have in flight (default 32). */
  maxInFlight?: number;
}

/** The op id of the request whose async work is running now (the crash policy logs it). */
export const currentOp = new AsyncLocalStorage<{ opId: string; method: string }>();

/** Bytes queued to a client that does not read before its connection is dropped. */
const MAX_QUEUED_WRITE_BYTES = 64 * 1024 * 1024;

export interface RpcServer {
  close(): Promise<void>;
}

export function newOpId(): string {
  return 'op-' + randomBytes(4).toString('hex');
}

/** The daemon's server: methods.ts with rpc.hello. */
export function startRpcServer(opts: { socketPath: string; handlers: Handlers; log: Logger; version: string }): Promise<RpcServer> {
  return serveTable({ ...opts, table: methods, protocol: PROTOCOL_VERSION, helloMethod: 'rpc.hello' });
}

export async function serveTable<T extends MethodTable>(opts: TableServerOptions<T>): Promise<RpcServer> {
  const { handlers, log, table } = opts;
  const isMethod = (m: string): m is keyof T & string => Object.prototype.hasOwnProperty.call(table, m);
  const sockets = new Set<Socket>();
  let connSeq = 0;

  const maxConnections = opts.maxConnections ?? 128;
  const maxInFlight = opts.maxInFlight ?? 32;

  const server: Server = createServer((socket) => {
    if (sockets.size >= maxConnections) {
      log.warn({ open: sockets.size }, 'too many connections: refusing one');
      socket.end(encode({ id: -1, error: { code: 'unavailable', message: `the daemon serves at most ${maxConnections} connections at once`, hint: 'close some clients and retry' } }));
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on('error', () => undefined);
    const closeCbs: Array<() => void> = [];
    const conn = {
      id: `c${++connSeq}`,
      closed: false,
      onClose(cb: () => void) {
        if (conn.closed) queueMicrotask(cb);
        else closeCbs.push(cb);
      },
    };
    let helloDone = false;
    let inFlight = 0;
    const send = (msg: ServerMessage) => {
      if (socket.destroyed || !socket.writable) return;
      socket.write(encode(msg));
      // A client that sends and never reads must not make us queue without end.
      if (socket.writableLength > MAX_QUEUED_WRITE_BYTES) {
        log.warn({ conn: conn.id, queued: socket.writableLength }, 'client does not read its answers: dropping it');
        socket.destroy();
      }
    };
    const sendChunk = async (id: number, data: Buffer) => {
      for (let off = 0; off < data.length; off += CHUNK_BYTES) {
        if (socket.destroyed) throw new BangerError('interrupted', 'the client went away');
        send({ id, chunk: data.subarray(off, off + CHUNK_BYTES).toString('base64') });
        if (socket.writableLength > 4 * CHUNK_BYTES) {
          await drainedOrClosed(socket);
        }
      }
    };
    const finish = () => {
      if (conn.closed) return;
      conn.closed = true;
      sockets.delete(socket);
      reader.release();
      for (const cb of closeCbs.splice(0)) {
        try {
          cb();
        } catch (e) {
          log.error({ err: messageOf(e), conn: conn.id }, 'connection close callback failed');
        }
      }
    };
    socket.on('close', finish);
    socket.on('error', () => finish());

    const handle = async (req: RequestMessage, opId: string) => {
      const started = Date.now();
      const method = req.method;
      const reqLog = log.child({ opId, method: clip(method, 64), conn: conn.id });
      try {
        if (!isMethod(method)) {
          throw new BangerError('unknown_method', `unknown method ${JSON.stringify(clip(method, 64))}`, 'upgrade banger so the CLI and daemon match');
        }
        if (!helloDone && method !== opts.helloMethod) {
          throw new BangerError('bad_version', `the first request on a connection must be ${opts.helloMethod}`, 'use the banger CLI that matches this daemon');
        }
        const parsed = table[method]!.params.safeParse(req.params ?? {});
        if (!parsed.success) {
          // The field goes as data (only the CLI names flags); messages are cut so huge input is never echoed.
          const issue = parsed.error.issues[0];
          const field = issue?.path.length ? issue.path.map(String).join('.').slice(0, 128) : undefined;
          const reason = (issue?.message ?? 'invalid').slice(0, 300);
          throw new BangerError('bad_request', field ? reason : `${method}: ${reason}`, 'check the values you passed', field ? { field } : undefined);
        }
        if (method === opts.helloMethod) {
          const p = parsed.data as { protocol: number; client: string };
          if (p.protocol !== opts.protocol) {
            throw new BangerError(
              'bad_version',
              `protocol mismatch: client ${p.client} speaks version ${p.protocol}, daemon ${opts.version} speaks ${opts.protocol}`,
              'stop the old daemon with `banger daemon stop` (the next command starts the matching one)',
            );
          }
          helloDone = true;
        }
        const ctx: RequestContext<keyof T & string> = {
          opId,
          method,
          connection: conn,
          log: reqLog,
          progress: (ev) => send({ id: req.id, progress: ev }),
          sendChunk: (data) => sendChunk(req.id, data),
        };
        const handler = handlers[method] as (p: unknown, c: RequestContext<keyof T & string>) => Promise<unknown>;
        const result = await handler(parsed.data, ctx);
        send({ id: req.id, result: result ?? null });
        reqLog.info({ ms: Date.now() - started }, 'request ok');
      } catch (e) {
        const err = isBangerError(e)
          ? e
          : new BangerError('internal', `internal error: ${messageOf(e)}`, 'this is a bug; the daemon log has the stack');
        err.opId = opId;
        reqLog.warn(
          { ms: Date.now() - started, code: err.code, err: clip(err.message, 2000), stack: isBangerError(e) ? undefined : (e as Error)?.stack },
          'request failed',
        );
        send({ id: req.id, error: err.toShape() });
      }
    };

    // Parse, then validate the envelope, before any field is read. A bad
    // line costs that request; a line that is too long costs the connection.
    const onLine = (line: Buffer) => {
      const parsed = parseJson(line.toString('utf8'));
      if (!parsed.ok) {
        send({ id: -1, error: { code: 'bad_request', message: 'request is not valid JSON', hint: 'send one JSON object per line' } });
        return;
      }
      const env = requestSchema.safeParse(parsed.value);
      if (!env.success) {
        const v = parsed.value as { id?: unknown } | null;
        const id = typeof v === 'object' && v !== null && typeof v.id === 'number' && Number.isSafeInteger(v.id) && v.id >= 0 ? v.id : -1;
        send({ id, error: { code: 'bad_request', message: 'malformed request: it needs {"id": <integer>, "method": <string>, "params": {...}} and nothing else', hint: 'use the banger CLI (or its client) that matches this daemon' } });
        return;
      }
      if (inFlight >= maxInFlight) {
        send({ id: env.data.id, error: { code: 'unavailable', message: `too many requests in flight on one connection (max ${maxInFlight})`, hint: 'wait for answers before sending more' } });
        return;
      }
      const opId = newOpId();
      inFlight++;
      currentOp
        .run({ opId, method: env.data.method }, () => handle(env.data, opId))
        .catch((e: unknown) => log.error({ opId, err: messageOf(e) }, 'request handler failed outside its error path'))
        .finally(() => inFlight--);
    };
    const reader = new LineReader({
      maxLine: MAX_REQUEST_BYTES,
      budget: opts.budget,
      onLine,
      onOverflow: (reason, detail) => {
        log.warn({ conn: conn.id, reason }, 'dropping a connection: request too large');
        send({
          id: -1,
          error:
            reason === 'line_too_long'
              ? { code: 'bad_request', message: `request too large: ${detail}`, hint: 'requests carry names and paths, never file contents' }
              : { code: 'unavailable', message: `the daemon is holding too much unfinished input (${detail})`, hint: 'retry in a moment' },
        });
        socket.end();
        setTimeout(() => socket.destroy(), 1000).unref();
      },
    });
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
  });

  try {
    unlinkSync(opts.socketPath);
  } catch {
    /* not there */
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const oldMask = process.umask(0o177);
    server.listen(opts.socketPath, () => {
      process.umask(oldMask);
      server.off('error', reject);
      resolve();
    });
  });
  if (opts.owner) chownSync(opts.socketPath, opts.owner.uid, opts.owner.gid);
  chmodSync(opts.socketPath, opts.mode ?? 0o600);

  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
