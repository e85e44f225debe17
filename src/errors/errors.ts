/**
 * Coded errors. Every error a user can see carries a stable `code` and a
 * `hint` that says what to do. The CLI renders them in one place
 * (src/cli/render-error.ts); anything that is not a BangerError is a bug and
 * shows its stack only with --debug.
 */
export const ERROR_CODES = [
  'bad_request',
  'not_found',
  'already_exists',
  'not_running',
  'conflict',
  'timeout',
  'operation_failed',
  'bad_version',
  'unknown_method',
  'unavailable',
  'host_key_mismatch',
  'interrupted',
  'verification_failed',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export interface ErrorShape {
  code: ErrorCode;
  message: string;
  hint?: string;
  opId?: string;
  /**
   * The input the error is about, as an RPC param path ("memoryMib",
   * "names.0"). The message then reads as a sentence about that input; only
   * the CLI turns the field into a flag name (src/cli/render-error.ts).
   */
  field?: string;
}

export class BangerError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  opId: string | undefined;
  readonly field: string | undefined;

  constructor(code: ErrorCode, message: string, hint?: string, options?: { cause?: unknown; field?: string }) {
    super(message, options);
    this.name = 'BangerError';
    this.code = code;
    this.hint = hint;
    this.field = options?.field;
  }

  toShape(): ErrorShape {
    const shape: ErrorShape = { code: this.code, message: this.message };
    if (this.hint !== undefined) shape.hint = this.hint;
    if (this.opId !== undefined) shape.opId = this.opId;
    if (this.field !== undefined) shape.field = this.field;
    return shape;
  }

  static fromShape(shape: ErrorShape): BangerError {
    const code = (ERROR_CODES as readonly string[]).includes(shape.code) ? shape.code : 'internal';
    const field = typeof shape.field === 'string' ? shape.field : undefined;
    const err = new BangerError(code, shape.message, shape.hint, field !== undefined ? { field } : undefined);
    err.opId = shape.opId;
    return err;
  }
}

export function isBangerError(e: unknown): e is BangerError {
  return e instanceof BangerError;
}

export const badRequest = (message: string, hint?: string) => new BangerError('bad_request', message, hint);
export const notFound = (message: string, hint?: string) => new BangerError('not_found', message, hint);
export const operationFailed = (message: string, hint?: string, cause?: unknown) =>
  new BangerError('operation_failed', message, hint, { cause });

/** Best-effort message of an unknown thrown value. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
