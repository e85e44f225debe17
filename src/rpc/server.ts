/**
 * The daemon's side of the RPC: accepts connections on a Unix socket (mode
 * 0600), checks the protocol version with rpc.hello, validates params with
 * the method table's schemas and dispatches to typed handlers. Every request
 * gets an operation id that appears in its log line and in any error.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, chownSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { BangerError, isBangerError, messageOf } from '../errors/errors.js';
import type { ProgressEvent } from '../model/types.js';
import type { z } from 'zod';
import { encode, LineSplitter, type RequestMessage, type ServerMessage } from './framing.js';
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
  progress(ev: ProgressEvent): void;
  log: Logger;
}

export type Handlers = {
  [M in MethodName]: (params: ValidParamsOf<M>, ctx: RequestContext) => Promise<ResultOf<M>>;
};

/** Any method table: zod params and a phantom result type per method (methods.ts, the helper's ops). */
export type MethodTable = Record<string, { params: z.ZodType; result: unknown }>;

export type HandlersFor<T extends MethodTable> = {
  [M in keyof T & string]: (params: z.output<T[M]['params']>, ctx: RequestContext<keyof T & string>) => Promise<T[M]['result']>;
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
}

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

  const server: Server = createServer((socket) => {
    sockets.add(socket);
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
    const send = (msg: ServerMessage) => {
      if (!socket.destroyed && socket.writable) socket.write(encode(msg));
    };
    const finish = () => {
      if (conn.closed) return;
      conn.closed = true;
      sockets.delete(socket);
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
    socket.setEncoding('utf8');

    const handle = async (req: RequestMessage) => {
      const opId = newOpId();
      const started = Date.now();
      const method = req.method;
      const reqLog = log.child({ opId, method, conn: conn.id });
      try {
        if (typeof req.id !== 'number' || typeof method !== 'string') {
          throw new BangerError('bad_request', 'malformed request: needs a numeric id and a method');
        }
        if (!isMethod(method)) {
          throw new BangerError('unknown_method', `unknown method ${JSON.stringify(method)}`, 'upgrade banger so the CLI and daemon match');
        }
        if (!helloDone && method !== opts.helloMethod) {
          throw new BangerError('bad_version', `the first request on a connection must be ${opts.helloMethod}`, 'use the banger CLI that matches this daemon');
        }
        const parsed = table[method]!.params.safeParse(req.params ?? {});
        if (!parsed.success) {
          const issue = parsed.error.issues[0];
          const where = issue?.path.length ? issue.path.join('.') : 'params';
          throw new BangerError('bad_request', `${method}: ${where}: ${issue?.message ?? 'invalid'}`, 'check the values you passed');
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
          { ms: Date.now() - started, code: err.code, err: err.message, stack: isBangerError(e) ? undefined : (e as Error)?.stack },
          'request failed',
        );
        send({ id: typeof req.id === 'number' ? req.id : -1, error: err.toShape() });
      }
    };

    const splitter = new LineSplitter((line) => {
      let req: RequestMessage;
      try {
        req = JSON.parse(line) as RequestMessage;
      } catch {
        send({ id: -1, error: { code: 'bad_request', message: 'request is not valid JSON' } });
        return;
      }
      void handle(req);
    });
    socket.on('data', (chunk: string) => {
      try {
        splitter.push(chunk);
      } catch (e) {
        send({ id: -1, error: { code: 'bad_request', message: messageOf(e) } });
        socket.destroy();
      }
    });
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
