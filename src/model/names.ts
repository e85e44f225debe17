/**
 * VM and image names, and VM ids: the ONE grammar for each, used wherever
 * they enter (CLI flags and arguments, RPC params, SQLite rows, files on
 * disk) and before any path is built from them (src/paths/paths.ts).
 *
 * A VM name becomes a hostname, a DNS label (<name>.vm), part of the kernel
 * command line and a store key, so it is validated as an RFC 1123 label and
 * never normalised: the name is what the user typed. Image names follow the
 * same grammar (they become directory names). A VM id is 12 lowercase hex
 * characters (generateVmId); it names the VM's directories.
 *
 * Messages never echo more than a bounded prefix of the input (quoteInput).
 */
import { BangerError } from '../errors/errors.js';
import { randomHex } from './random.js';

/** The longest name (a DNS label). */
export const NAME_MAX = 63;

export const VM_NAME_RULE =
  'a VM name must be 1-63 characters of lowercase a-z, 0-9 and "-", not starting or ending with "-"';
export const IMAGE_NAME_RULE =
  'an image name must be 1-63 characters of lowercase a-z, 0-9 and "-", not starting or ending with "-"';
export const VM_ID_RULE = 'a VM id is 12 lowercase hex characters (banger makes them)';

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const VM_ID = /^[0-9a-f]{12}$/;

/** At most `max` characters of untrusted input, JSON-quoted, with the length when cut. */
export function quoteInput(s: string, max = 64): string {
  if (s.length <= max) return JSON.stringify(s);
  return `${JSON.stringify(s.slice(0, max))}… (${s.length} characters)`;
}

export function vmNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'it is empty';
  if (name.length > NAME_MAX) return `it is ${name.length} characters long (max ${NAME_MAX})`;
  if (name.startsWith('-') || name.endsWith('-')) return 'it starts or ends with "-"';
  const bad = [...name].find((c) => !/[a-z0-9-]/.test(c));
  if (bad !== undefined) return `it contains ${JSON.stringify(bad)}`;
  if (!LABEL.test(name)) return 'it is not a valid DNS label';
  return undefined;
}

export function vmIdProblem(id: string): string | undefined {
  if (VM_ID.test(id)) return undefined;
  if (id.length !== 12) return `it is ${id.length} characters long (must be 12)`;
  return 'it is not lowercase hex';
}

/** `field`: the RPC param the name came in (the error carries it for the CLI to name its flag). */
export function validateVmName(name: string, field?: string): string {
  const problem = vmNameProblem(name);
  if (problem !== undefined) throw invalid(`invalid VM name ${quoteInput(name)}: ${problem}`, VM_NAME_RULE, field);
  return name;
}

export function validateImageName(name: string, field?: string): string {
  const problem = vmNameProblem(name);
  if (problem !== undefined) throw invalid(`invalid image name ${quoteInput(name)}: ${problem}`, IMAGE_NAME_RULE, field);
  return name;
}

export function validateVmId(id: string): string {
  const problem = vmIdProblem(id);
  if (problem !== undefined) throw invalid(`invalid VM id ${quoteInput(id)}: ${problem}`, VM_ID_RULE);
  return id;
}

function invalid(message: string, hint: string, field?: string): BangerError {
  return new BangerError('bad_request', message, hint, field !== undefined ? { field } : undefined);
}

/** A new VM id (12 hex characters). */
export function generateVmId(): string {
  return randomHex(6);
}

const ADJECTIVES = ['amber', 'brisk', 'calm', 'dusty', 'eager', 'fuzzy', 'gentle', 'hazy', 'icy', 'jolly', 'keen', 'lucky', 'misty', 'nimble', 'odd', 'proud', 'quiet', 'rapid', 'sly', 'tidy', 'vivid', 'witty'];
const NOUNS = ['badger', 'comet', 'delta', 'ember', 'falcon', 'gecko', 'heron', 'iris', 'jaguar', 'koala', 'lemur', 'maple', 'newt', 'otter', 'panda', 'quail', 'raven', 'salmon', 'tiger', 'urchin', 'viper', 'walrus'];

/** A generated name: adjective-noun-xxxx (always a valid label). */
export function generateVmName(random: () => number = Math.random): string {
  const pick = <T>(xs: T[]): T => xs[Math.floor(random() * xs.length)]!;
  const suffix = Math.floor(random() * 0x10000)
    .toString(16)
    .padStart(4, '0');
  return `${pick(ADJECTIVES)}-${pick(NOUNS)}-${suffix}`;
}
