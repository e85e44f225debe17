/**
 * VM and image names. A VM name becomes a hostname, a DNS label
 * (<name>.vm), part of the kernel command line and a store key, so it is
 * validated as an RFC 1123 label and never normalised: the name is what the
 * user typed.
 */
import { badRequest } from '../errors/errors.js';

export const VM_NAME_RULE =
  'a VM name must be 1-63 characters of lowercase a-z, 0-9 and "-", not starting or ending with "-"';

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function vmNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'it is empty';
  if (name.length > 63) return `it is ${name.length} characters long (max 63)`;
  if (name.startsWith('-') || name.endsWith('-')) return 'it starts or ends with "-"';
  const bad = [...name].find((c) => !/[a-z0-9-]/.test(c));
  if (bad !== undefined) return `it contains ${JSON.stringify(bad)}`;
  if (!LABEL.test(name)) return 'it is not a valid DNS label';
  return undefined;
}

export function validateVmName(name: string): string {
  const problem = vmNameProblem(name);
  if (problem !== undefined) {
    throw badRequest(`invalid VM name ${JSON.stringify(name)}: ${problem}`, VM_NAME_RULE);
  }
  return name;
}

/** Image names follow the same grammar (they become directory names). */
export function validateImageName(name: string): string {
  const problem = vmNameProblem(name);
  if (problem !== undefined) {
    throw badRequest(
      `invalid image name ${JSON.stringify(name)}: ${problem}`,
      'an image name must be 1-63 characters of lowercase a-z, 0-9 and "-", not starting or ending with "-"',
    );
  }
  return name;
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
