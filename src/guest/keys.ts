/**
 * banger's own SSH keypair (ed25519, no passphrase, comment "banger").
 *
 * Created on first use with ssh-keygen into a temp name in the same
 * directory, then published with link(2), which fails if the key already
 * exists: of two processes racing, exactly one key wins and both return it,
 * and no reader ever sees a half-written key. The public key is always
 * derived from the private key (so a stale or missing `.pub` can never hand
 * out a key that does not match); the `.pub` file is rewritten atomically
 * when it is missing or disagrees.
 */
import { linkSync, mkdirSync, readFileSync, renameSync, rmSync, chmodSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import ssh2 from 'ssh2';
import type { ParsedKey } from 'ssh2';
import { BangerError } from '../errors/errors.js';
import type { Runner } from '../system/runner.js';
import { writeFileAtomic } from '../system/fs.js';

export interface Keypair {
  privateKeyPath: string;
  /** One line, OpenSSH authorized_keys format: `ssh-ed25519 AAAA… banger`. */
  publicKey: string;
}

const COMMENT = 'banger';

export async function ensureKeypair(runner: Runner, keyPath: string): Promise<Keypair> {
  const privateKeyPath = resolve(keyPath);
  const existing = loadKeypair(privateKeyPath);
  if (existing) return existing;

  const dir = dirname(privateKeyPath);
  const created = mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (created !== undefined) chmodSync(dir, 0o700);

  const tmp = join(dir, `.${basename(privateKeyPath)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await runner.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', COMMENT, '-f', tmp]);
    chmodSync(tmp, 0o600);
    publishExclusive(tmp, privateKeyPath);
  } finally {
    rmSync(tmp, { force: true });
    rmSync(`${tmp}.pub`, { force: true });
  }
  const pair = loadKeypair(privateKeyPath);
  if (!pair) throw new BangerError('internal', `ssh key ${privateKeyPath} vanished right after it was created`);
  return pair;
}

/** Puts `tmp` at `dest` only if `dest` does not exist yet (losing a race is fine: the winner's key stays). */
function publishExclusive(tmp: string, dest: string): void {
  try {
    linkSync(tmp, dest);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'EXDEV') {
      // A filesystem without hard links: fall back to rename (atomic, but last
      // writer wins if two processes race on first use).
      renameSync(tmp, dest);
      return;
    }
    throw e;
  }
}

/** The keypair at `privateKeyPath`, or undefined when there is no key there yet. */
function loadKeypair(privateKeyPath: string): Keypair | undefined {
  let data: Buffer;
  try {
    data = readFileSync(privateKeyPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new BangerError('operation_failed', `cannot read ssh key ${privateKeyPath}: ${(e as Error).message}`);
  }
  const parsed = ssh2.utils.parseKey(data);
  // ssh2 returns an array for a file holding several keys; its types only say ParsedKey | Error.
  const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey | undefined) : parsed;
  if (!key || key instanceof Error || !key.isPrivateKey()) {
    const why = key instanceof Error ? key.message : 'not a private key';
    throw new BangerError(
      'operation_failed',
      `${privateKeyPath} is not a usable unencrypted SSH private key (${why})`,
      `remove ${privateKeyPath} and ${privateKeyPath}.pub; banger creates a new keypair on next use`,
    );
  }
  const publicKey = `${key.type} ${key.getPublicSSH().toString('base64')} ${COMMENT}`;
  syncPublicFile(`${privateKeyPath}.pub`, publicKey);
  return { privateKeyPath, publicKey };
}

function syncPublicFile(pubPath: string, publicKey: string): void {
  let current = '';
  try {
    current = readFileSync(pubPath, 'utf8');
  } catch {
    // missing: written below
  }
  const [type, blob] = current.trim().split(/\s+/);
  const [wantType, wantBlob] = publicKey.split(' ');
  if (type === wantType && blob === wantBlob) return;
  writeFileAtomic(pubPath, `${publicKey}\n`, 0o644);
}
