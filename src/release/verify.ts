/**
 * The one verification module every download goes through (issue 13):
 *
 * - sha256 of every artifact (`sha256Hex`, `sha256File`, `checkSha256`);
 * - ECDSA P-256 over SHA-256 signatures of a manifest's exact bytes, in
 *   cosign's blob-signature encoding: base64 of the DER signature (what
 *   `cosign sign-blob --key` and `openssl dgst -sha256 -sign KEY | base64`
 *   write), checked against a PEM public key: banger's own (keys.ts) unless
 *   the caller passes another (`--pubkey-file`).
 *
 * A signature is checked before the manifest is parsed, and a digest before
 * the artifact is used: nothing unverified is ever read as data.
 */
import { createHash, createPublicKey, verify as verifySig, type KeyObject } from 'node:crypto';
import { createReadStream, readFileSync, statSync } from 'node:fs';
import { BangerError } from '../errors/errors.js';
import { RELEASE_PUBLIC_KEY } from './keys.js';

/** A signature file is a line of base64 (a DER P-256 signature is at most 72 bytes). */
export const MAX_SIGNATURE_BYTES = 1024;
/** A PEM key file is read only up to this size. */
export const MAX_KEY_FILE_BYTES = 16 * 1024;

/** Names a key file in errors: what it is (`--pubkey-file x`, `kernel_catalog_pubkey x`), the hint, the RPC field. */
export interface KeyFileRef {
  path: string;
  what: string;
  hint: string;
  field?: string;
}

/** A PEM key file's text, bounded: a missing, unreadable or oversized file is a coded error naming it. */
export function readKeyFile(ref: KeyFileRef): string {
  const opts = ref.field === undefined ? undefined : { field: ref.field };
  let size: number;
  try {
    size = statSync(ref.path).size;
  } catch (e) {
    throw new BangerError('not_found', `${ref.what}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`, ref.hint, opts);
  }
  if (size > MAX_KEY_FILE_BYTES) throw new BangerError('bad_request', `${ref.what} is larger than ${MAX_KEY_FILE_BYTES} bytes`, ref.hint, opts);
  try {
    return readFileSync(ref.path, 'utf8');
  } catch (e) {
    throw new BangerError('not_found', `${ref.what}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`, ref.hint, opts);
  }
}

/** The public key in `ref`'s file, or banger's embedded release key when there is no file. */
export function publicKeyFrom(ref: KeyFileRef | undefined): KeyObject {
  return ref === undefined ? parsePublicKey(RELEASE_PUBLIC_KEY, 'the embedded release key') : parsePublicKey(readKeyFile(ref), ref.what);
}
const SHA256_HEX = /^[0-9a-f]{64}$/;

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The sha256 of a file, read as a stream. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export function isSha256(s: string): boolean {
  return SHA256_HEX.test(s);
}

/** Refuses `actual` unless it is `expected` (both lowercase hex); `what` names the artifact. */
export function checkSha256(what: string, expected: string, actual: string): void {
  if (!isSha256(expected)) throw new BangerError('verification_failed', `${what}: the expected sha256 is not 64 hex characters`, 'the manifest is malformed; nothing was used');
  if (actual !== expected) {
    throw new BangerError('verification_failed', `${what}: sha256 ${actual} does not match the signed manifest's ${expected}`, 'the download is corrupt or was tampered with; nothing was used');
  }
}

/** A PEM public key, accepted only when it is ECDSA on P-256 (the only kind banger signs with). */
export function parsePublicKey(pem: string, source: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch {
    throw new BangerError('bad_request', `${source} is not a PEM public key`, 'pass the release public key (-----BEGIN PUBLIC KEY-----)');
  }
  const curve = key.asymmetricKeyType === 'ec' ? key.asymmetricKeyDetails?.namedCurve : undefined;
  if (curve !== 'prime256v1') {
    throw new BangerError('bad_request', `${source} is a ${key.asymmetricKeyType}${curve ? ` ${curve}` : ''} key, not ECDSA P-256`, 'banger releases are signed with an ECDSA P-256 key');
  }
  return key;
}

/**
 * Checks `signature` (the text of a `.sig` file: base64 of a DER ECDSA
 * signature, surrounding whitespace allowed) over `message` with `key`.
 * Throws verification_failed, naming `what`, on any mismatch.
 */
export function verifyBlobSignature(what: string, message: Buffer, signature: string | Buffer, key: KeyObject): void {
  const text = (typeof signature === 'string' ? signature : signature.toString('latin1')).trim();
  const refuse = (why: string) => new BangerError('verification_failed', `${what}: ${why}`, 'it was not signed with the expected key (or was changed after signing); nothing was used');
  if (text.length === 0 || text.length > MAX_SIGNATURE_BYTES || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) throw refuse('the signature is not base64');
  const der = Buffer.from(text, 'base64');
  let ok: boolean;
  try {
    ok = verifySig('sha256', message, { key, dsaEncoding: 'der' }, der);
  } catch {
    ok = false;
  }
  if (!ok) throw refuse('the signature does not verify');
}
