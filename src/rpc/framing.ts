/**
 * Wire format: one JSON object per line over a Unix socket.
 *   request       {"id":1,"method":"vm.create","params":{...}}
 *   response      {"id":1,"result":...} | {"id":1,"error":{code,message,hint,opId}}
 *   notification  {"id":1,"progress":{stage,message,level}}   (server → client, before the response)
 * The first request on every connection is rpc.hello, which checks the
 * protocol version.
 */
import type { ErrorShape } from '../errors/errors.js';
import type { ProgressEvent } from '../model/types.js';

export interface RequestMessage {
  id: number;
  method: string;
  params: unknown;
}

export type ServerMessage =
  | { id: number; result: unknown }
  | { id: number; error: ErrorShape }
  | { id: number; progress: ProgressEvent };

export const MAX_LINE_BYTES = 16 * 1024 * 1024;

/** Splits a byte stream into lines; throws if one line grows past the limit. */
export class LineSplitter {
  private buf = '';
  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: string): void {
    this.buf += chunk;
    let nl = this.buf.indexOf('\n');
    while (nl >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line.trim().length > 0) this.onLine(line);
      nl = this.buf.indexOf('\n');
    }
    if (this.buf.length > MAX_LINE_BYTES) {
      this.buf = '';
      throw new Error(`message longer than ${MAX_LINE_BYTES} bytes`);
    }
  }
}

export function encode(msg: RequestMessage | ServerMessage): string {
  return JSON.stringify(msg) + '\n';
}
