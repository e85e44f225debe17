/**
 * The maintainers' side of verify.ts (scripts/release): a P-256 key pair, and
 * cosign-compatible blob signatures (base64 of the DER ECDSA SHA-256
 * signature, one line), which `cosign verify-blob` and
 * `openssl dgst -sha256 -verify` accept too.
 */
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { BangerError } from '../errors/errors.js';

export function makeKeyPair(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** The `.sig` file text (with a newline) of `message`, signed with a PEM P-256 private key. */
export function signBlob(message: Buffer, privateKeyPem: string): string {
  let key;
  try {
    key = createPrivateKey({ key: privateKeyPem, format: 'pem' });
  } catch {
    throw new BangerError('bad_request', 'the signing key is not a PEM private key', 'make one with `scripts/release keygen DIR`');
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new BangerError('bad_request', 'the signing key is not ECDSA P-256', 'make one with `scripts/release keygen DIR`');
  }
  return sign('sha256', message, { key, dsaEncoding: 'der' }).toString('base64') + '\n';
}
