/**
 * The CLI's side of the RPC. One connection carries many requests; the
 * connection itself matters: an ephemeral VM (vm run --rm) lives only as
 * long as the connection that created it.
 */
import { connect, type Socket } from 'node:net';
import { BangerError, type ErrorShape } from '../errors/errors.js';
import type { ProgressEvent } from '../model/types.js';
import { encode, LineSplitter, type ServerMessage } from './framing.js';
import type { z } from 'zod';
import { methods, PROTOCOL_VERSION } from './methods.js';
import type { MethodTable } from './server.js';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  onProgress?: (ev: ProgressEvent) => void;
}

/** A client for any method table (methods.ts for the daemon, the helper's ops). */
export class TableClient<T extends MethodTable> {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closedError: BangerError | undefined;
  /** What the peer answered to the hello (its version, and for the helper its bridge and subnet). */
  hello: unknown = undefined;

  protected constructor(
    private readonly socket: Socket,
    private readonly peer: string,
  ) {
    socket.setEncoding('utf8');
    const splitter = new LineSplitter((line) => this.onLine(line));
    socket.on('data', (c: string) => splitter.push(c));
    const fail = () => {
      this.closedError ??= new BangerError('unavailable', `the ${this.peer} closed the connection`, `check the ${this.peer}'s log`);
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
    };
    socket.on('close', fail);
    socket.on('error', fail);
  }

  /** Connects and says hello (which checks the protocol version). */
  static async open<T extends MethodTable>(
    socketPath: string,
    o: { table: T; helloMethod: keyof T & string; protocol: number; client: string; peer: string },
  ): Promise<TableClient<T>> {
    const client = new TableClient<T>(await connectSocket(socketPath), o.peer);
    client.hello = await client.call(o.helloMethod, { protocol: o.protocol, client: o.client } as z.input<T[typeof o.helloMethod]['params']>);
    return client;
  }

  call<M extends keyof T & string>(
    method: M,
    params: z.input<T[M]['params']>,
    onProgress?: (ev: ProgressEvent) => void,
  ): Promise<T[M]['result']> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise<T[M]['result']>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onProgress });
      this.socket.write(encode({ id, method, params }));
    });
  }

  close(): void {
    this.closedError ??= new BangerError('unavailable', 'connection closed');
    this.socket.end();
    this.socket.destroy();
  }

  private onLine(line: string): void {
    let msg: ServerMessage;
    try {
      msg = JSON.parse(line) as ServerMessage;
    } catch {
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) {
      if ('error' in msg) this.closedError = BangerError.fromShape(msg.error as ErrorShape);
      return;
    }
    if ('progress' in msg) {
      p.onProgress?.(msg.progress);
      return;
    }
    this.pending.delete(msg.id);
    if ('error' in msg) p.reject(BangerError.fromShape(msg.error));
    else p.resolve(msg.result);
  }
}

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
export type RpcClient = TableClient<typeof methods>;
export const RpcClient = {
  connect(socketPath: string, clientVersion: string): Promise<RpcClient> {
    return TableClient.open(socketPath, { table: methods, helloMethod: 'rpc.hello', protocol: PROTOCOL_VERSION, client: clientVersion, peer: 'daemon' });
  },
};
