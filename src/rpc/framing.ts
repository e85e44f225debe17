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
import { z } from 'zod';
import { ERROR_CODES, type ErrorShape } from '../errors/errors.js';
import type { ProgressEvent } from '../model/types.js';

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

const requestId = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const requestSchema = z
  .object({
    id: requestId,
    method: z.string().min(1).max(128),
    params: z.unknown().optional(),
  })
  .strict();

const errorShapeSchema = z.object({
  code: z.string().max(64).transform((c): ErrorShape['code'] => ((ERROR_CODES as readonly string[]).includes(c) ? (c as ErrorShape['code']) : 'internal')),
  message: z.string().max(64 * 1024),
  hint: z.string().max(16 * 1024).optional(),
  opId: z.string().max(64).optional(),
  field: z.string().max(256).optional(),
});

const progressSchema = z.object({
  stage: z.string().max(256),
  message: z.string().max(64 * 1024),
  level: z.enum(['info', 'warn']).optional(),
  transient: z.boolean().optional(),
});

/** What the client accepts from the server (id -1: an error about no particular request). */
export const serverMessageSchema = z.union([
  z.object({ id: z.number().int(), result: z.unknown() }).strict(),
  z.object({ id: z.number().int(), error: errorShapeSchema }).strict(),
  z.object({ id: z.number().int(), progress: progressSchema }).strict(),
  z.object({ id: z.number().int(), chunk: z.string().max(MAX_RESPONSE_BYTES) }).strict(),
]);

export function encode(msg: RequestMessage | ServerMessage): string {
  return JSON.stringify(msg) + '\n';
}
