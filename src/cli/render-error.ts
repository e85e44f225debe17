/**
 * The one place errors become text. Coded errors print their message, hint
 * and operation id (the same id is in the daemon's log line); anything
 * uncoded is a bug and shows a stack only with --debug.
 */
import { isBangerError, messageOf, type ErrorCode } from '../errors/errors.js';
import { style } from './style.js';

const LABELS: Partial<Record<ErrorCode, string>> = {
  bad_request: 'invalid input',
  not_found: 'not found',
  already_exists: 'already exists',
  not_running: 'not running',
  conflict: 'conflict',
  timeout: 'timed out',
  bad_version: 'version mismatch',
  unknown_method: 'unknown method',
  unavailable: 'unavailable',
  host_key_mismatch: 'HOST KEY MISMATCH',
  interrupted: 'interrupted',
  verification_failed: 'VERIFICATION FAILED',
  internal: 'internal error',
};

/**
 * RPC params → how the user typed them. The daemon's errors carry the param
 * (`field`, e.g. "memoryMib", "names.0") and never name a flag; this is the
 * only place that does. COMMAND_FIELDS overrides the default per command.
 */
const FIELD_FLAGS: Record<string, string> = {
  name: 'NAME',
  names: 'NAME',
  image: '--image',
  vcpu: '--vcpu',
  memoryMib: '--memory',
  diskBytes: '--disk-size',
  network: '--network',
  signal: '--signal',
  baseCommit: '--base-commit',
  mode: '--mode',
  path: 'PATH',
  includeUntracked: '--include-untracked',
  ephemeral: '--rm',
  suite: '--suite',
  from: '--from',
  packages: '--packages',
  platform: '--platform',
  ref: 'REF',
  kernel: '--kernel',
};

const COMMAND_FIELDS: Record<string, Record<string, string>> = {
  'vm run': { name: '--name' },
  'vm create': { name: '--name' },
  'image pull': { name: '--name', image: '--name', pubkey: '--pubkey-file' },
  'image import': { name: '--name', image: '--name', path: 'FILE', pubkey: '--pubkey-file' },
  'image export': { path: '--output', sign: '--sign' },
  'vm commit': { image: 'IMAGE', name: 'NAME' },
};

/** The flag (or argument) of `command` ("vm run") that carries RPC param `field`; the field itself when unknown. */
export function flagFor(command: string | undefined, field: string): string {
  const top = field.split('.')[0]!;
  return (command !== undefined ? COMMAND_FIELDS[command]?.[top] : undefined) ?? FIELD_FLAGS[top] ?? field;
}

/** `command`: the command being run ("vm run"), to name the flag of an error's field. */
export function renderError(e: unknown, debug: boolean, command?: string): string {
  const err = process.stderr;
  if (isBangerError(e)) {
    const label = LABELS[e.code];
    const subject = e.field !== undefined ? `${flagFor(command, e.field)}: ` : '';
    const lines = [`${style.fail('banger:', err)} ${label ? `${label}: ` : ''}${subject}${e.message}`];
    if (e.hint) lines.push(`  hint: ${e.hint}`);
    if (e.opId) lines.push(style.dim(`  (${e.opId}: grep for it in the daemon log)`, err));
    if (debug && e.stack) lines.push(style.dim(e.stack, err));
    return lines.join('\n');
  }
  const lines = [`${style.fail('banger:', err)} unexpected error: ${messageOf(e)}`];
  if (debug && e instanceof Error && e.stack) lines.push(e.stack);
  else lines.push('  hint: this is a bug in banger; run again with --debug for the stack');
  return lines.join('\n');
}

/** Exit code for an error: 2 for bad input, 1 otherwise. */
export function exitCodeFor(e: unknown): number {
  return isBangerError(e) && e.code === 'bad_request' ? 2 : 1;
}
