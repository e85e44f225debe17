/**
 * The CLI's side of the RPC. One connection carries many requests; the
 * connection itself matters: an ephemeral VM (vm run --rm) lives only as
 * long as the connection that created it.
 */
import { connect, type Socket } from 'node:net';
import { BangerError, type ErrorShape } from '../errors/errors.js';
import type { ProgressEvent } from '../model/types.js';
import { encode, LineSplitter, type ServerMessage } from './framing.js';
import { PROTOCOL_VERSION, type MethodName, type ParamsOf, type ResultOf } from './methods.js';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  onProgress?: (ev: ProgressEvent) => void;
}

export class RpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closedError: BangerError | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    const splitter = new LineSplitter((line) => this.onLine(line));
    socket.on('data', (c: string) => splitter.push(c));
    const fail = () => {
      this.closedError ??= new BangerError('unavailable', 'the daemon closed the connection', 'check `banger daemon status` and the daemon log');
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
    };
    socket.on('close', fail);
    socket.on('error', fail);
  }

  static async connect(socketPath: string, clientVersion: string): Promise<RpcClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(socketPath);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
    const client = new RpcClient(socket);
    await client.call('rpc.hello', { protocol: PROTOCOL_VERSION, client: clientVersion });
    return client;
  }

  call<M extends MethodName>(
    method: M,
    params: ParamsOf<M>,
    onProgress?: (ev: ProgressEvent) => void,
  ): Promise<ResultOf<M>> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise<ResultOf<M>>((resolve, reject) => {
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
