/**
 * Wire format: one JSON object per line over a Unix socket.
 *   request       {"id":1,"method":"vm.create","params":{...}}
 *   response      {"id":1,"result":...} | {"id":1,"error":{code,message,hint,opId}}
 *   notification  {"id":1,"progress":{stage,message,level}}   (server → client, before the response)
 *   data          {"id":1,"chunk":"<base64>"}                  (server → client: a streamed result, e.g. an export)
 * The first request on every connection is rpc.hello, which checks the
 * protocol version. Both ends read through a bounded LineReader and
 * validate each message's envelope with a schema before reading any field.
 */
import { ERROR_CODES, type ErrorShape } from '../errors/errors.js';
import type { ProgressEvent } from '../model/types.js';
import { boolean, number, object, oneOf, string, union, unknown, type Shape } from './shape.js';

/** Bump when a method's params or result change shape (src/rpc/methods.ts). */
export const PROTOCOL_VERSION = 9;

export interface RequestMessage {
  id: number;
  method: string;
  params?: unknown;
}

export type ServerMessage =
  | { id: number; result: unknown }
  | { id: number; error: ErrorShape }
  | { id: number; progress: ProgressEvent }
  | { id: number; chunk: string };

/** Longest request line the server reads (params are small: paths, names, flags). */
export const MAX_REQUEST_BYTES = 1024 * 1024;
/** Longest server message the client reads (a list of many VMs; streamed data comes in chunks). */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
/** Raw bytes per streamed chunk (base64 makes the line ~4/3 of this). */
export const CHUNK_BYTES = 512 * 1024;

const requestId = number({ int: true, min: 0, max: Number.MAX_SAFE_INTEGER });

export const requestSchema: Shape<RequestMessage> = object({ id: requestId, method: string({ min: 1, max: 128 }), params: unknown().optional() }, { strict: true });

const errorShapeSchema: Shape<ErrorShape> = object({
  // A code this client does not know (a newer peer's) reads as internal.
  code: string({ max: 64 }).map((c): ErrorShape['code'] => ((ERROR_CODES as readonly string[]).includes(c) ? (c as ErrorShape['code']) : 'internal')),
  message: string({ max: 64 * 1024 }),
  hint: string({ max: 16 * 1024 }).optional(),
  opId: string({ max: 64 }).optional(),
  field: string({ max: 256 }).optional(),
});

const progressSchema: Shape<ProgressEvent> = object({
  stage: string({ max: 256 }),
  message: string({ max: 64 * 1024 }),
  level: oneOf(['info', 'warn'] as const).optional(),
  transient: boolean().optional(),
});

const id = number({ int: true });

/** What the client accepts from the server (id -1: an error about no particular request). */
export const serverMessageSchema: Shape<ServerMessage> = union(
  object({ id, result: unknown() }, { strict: true }) as Shape<{ id: number; result: unknown }>,
  object({ id, error: errorShapeSchema }, { strict: true }),
  object({ id, progress: progressSchema }, { strict: true }),
  object({ id, chunk: string({ max: MAX_RESPONSE_BYTES }) }, { strict: true }),
);

export function encode(msg: RequestMessage | ServerMessage): string {
  return JSON.stringify(msg) + '\n';
}
