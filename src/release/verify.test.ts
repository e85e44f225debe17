/**
 * The verification module against signatures and keys made by openssl, so
 * the format is the interoperable one (cosign's blob signature: base64 of a
 * DER ECDSA P-256 SHA-256 signature), not only self-consistent.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../errors/errors.js';
import { RELEASE_PUBLIC_KEY } from './keys.js';
import { makeKeyPair, signBlob } from './sign.js';
import { checkSha256, parsePublicKey, publicKeyFrom, readKeyFile, sha256File, sha256Hex, verifyBlobSignature } from './verify.js';

let dir: string;
const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return isBangerError(e) ? e.code : String(e);
  }
  return 'no error';
};

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'banger-verify-'));
  openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'key.pem');
  openssl('ec', '-in', 'key.pem', '-pubout', '-out', 'pub.pem');
  writeFileSync(join(dir, 'manifest.json'), '{"version":"0.2.0","artifacts":[]}\n');
  // What `cosign sign-blob --key` writes: base64 of the DER signature.
  openssl('dgst', '-sha256', '-sign', 'key.pem', '-out', 'manifest.sig.der', 'manifest.json');
  writeFileSync(join(dir, 'manifest.json.sig'), readFileSync(join(dir, 'manifest.sig.der')).toString('base64') + '\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('signatures', () => {
  it('accepts an openssl-made signature with the openssl-made public key', () => {
    const key = parsePublicKey(readFileSync(join(dir, 'pub.pem'), 'utf8'), 'pub.pem');
    verifyBlobSignature('manifest.json', readFileSync(join(dir, 'manifest.json')), readFileSync(join(dir, 'manifest.json.sig'), 'utf8'), key);
  });

  it('what banger signs, openssl verifies (with a key openssl made)', () => {
    const msg = Buffer.from('{"version":"1.0.0"}');
    writeFileSync(join(dir, 'ours.json'), msg);
    writeFileSync(join(dir, 'ours.sig.der'), Buffer.from(signBlob(msg, readFileSync(join(dir, 'key.pem'), 'utf8')).trim(), 'base64'));
    expect(openssl('dgst', '-sha256', '-verify', 'pub.pem', '-signature', 'ours.sig.der', 'ours.json').toString()).toContain('Verified OK');
  });

  it('a key pair banger makes is one openssl reads as P-256', () => {
    const { privateKeyPem, publicKeyPem } = makeKeyPair();
    writeFileSync(join(dir, 'made.pem'), privateKeyPem);
    expect(openssl('ec', '-in', 'made.pem', '-noout', '-text').toString()).toContain('prime256v1');
    const msg = Buffer.from('x');
    verifyBlobSignature('x', msg, signBlob(msg, privateKeyPem), parsePublicKey(publicKeyPem, 'made'));
  });

  it('refuses one flipped byte of the message, another key, and garbage signatures', () => {
    const key = parsePublicKey(readFileSync(join(dir, 'pub.pem'), 'utf8'), 'pub.pem');
    const msg = readFileSync(join(dir, 'manifest.json'));
    const sig = readFileSync(join(dir, 'manifest.json.sig'), 'utf8');
    const flipped = Buffer.from(msg);
    flipped[5] ^= 0x01;
    expect(code(() => verifyBlobSignature('m', flipped, sig, key))).toBe('verification_failed');
    expect(code(() => verifyBlobSignature('m', msg, sig, parsePublicKey(makeKeyPair().publicKeyPem, 'other')))).toBe('verification_failed');
    expect(code(() => verifyBlobSignature('m', msg, sig, parsePublicKey(RELEASE_PUBLIC_KEY, 'embedded')))).toBe('verification_failed');
    for (const bad of ['', 'not base64!', 'A'.repeat(5000), Buffer.from('MEUCIQ==').toString(), sig.slice(0, 20)]) {
      expect(code(() => verifyBlobSignature('m', msg, bad, key)), bad.slice(0, 20)).toBe('verification_failed');
    }
  });

  it('the message is named and no input is echoed', () => {
    const key = parsePublicKey(readFileSync(join(dir, 'pub.pem'), 'utf8'), 'pub.pem');
    try {
      verifyBlobSignature('manifest.json from http://x/', Buffer.from('m'), 'A'.repeat(5000), key);
    } catch (e) {
      expect((e as Error).message).toBe('manifest.json from http://x/: the signature is not base64');
    }
  });
});

describe('public keys', () => {
  it('the embedded key is a P-256 public key', () => {
    expect(parsePublicKey(RELEASE_PUBLIC_KEY, 'embedded').asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('refuses what is not a P-256 public key, naming its source', () => {
    openssl('ecparam', '-name', 'secp384r1', '-genkey', '-noout', '-out', 'p384.pem');
    openssl('ec', '-in', 'p384.pem', '-pubout', '-out', 'p384.pub.pem');
    openssl('genrsa', '-out', 'rsa.pem', '2048');
    openssl('rsa', '-in', 'rsa.pem', '-pubout', '-out', 'rsa.pub.pem');
    expect(() => parsePublicKey(readFileSync(join(dir, 'p384.pub.pem'), 'utf8'), 'k.pem')).toThrow('k.pem is a ec secp384r1 key, not ECDSA P-256');
    expect(() => parsePublicKey(readFileSync(join(dir, 'rsa.pub.pem'), 'utf8'), 'k.pem')).toThrow('k.pem is a rsa key, not ECDSA P-256');
    expect(() => parsePublicKey('hello', 'k.pem')).toThrow('k.pem is not a PEM public key');
  });

  it('key files: read bounded; a missing or oversized one is a coded error naming it (and its field); none means the embedded key', () => {
    const ref = (name: string) => ({ path: join(dir, name), what: `--pubkey-file ${name}`, hint: 'pass a PEM public key', field: 'pubkey' });
    expect(publicKeyFrom(ref('pub.pem')).asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(publicKeyFrom(undefined).export({ format: 'pem', type: 'spki' })).toBe(parsePublicKey(RELEASE_PUBLIC_KEY, 'e').export({ format: 'pem', type: 'spki' }));
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return isBangerError(e) ? { code: e.code, message: e.message, field: e.field } : String(e);
      }
      return 'no error';
    };
    expect(err(() => readKeyFile(ref('absent.pem')))).toEqual({ code: 'not_found', message: '--pubkey-file absent.pem: ENOENT', field: 'pubkey' });
    writeFileSync(join(dir, 'huge.pem'), Buffer.alloc(17 * 1024, 65));
    expect(err(() => readKeyFile(ref('huge.pem')))).toEqual({ code: 'bad_request', message: '--pubkey-file huge.pem is larger than 16384 bytes', field: 'pubkey' });
    expect(err(() => publicKeyFrom(ref('manifest.json')))).toMatchObject({ message: '--pubkey-file manifest.json is not a PEM public key' });
  });

  it('signing refuses a key that is not P-256', () => {
    expect(() => signBlob(Buffer.from('x'), readFileSync(join(dir, 'rsa.pem'), 'utf8'))).toThrow('not ECDSA P-256');
  });
});

describe('sha256', () => {
  it('of a file equals sha256sum and of its bytes', async () => {
    const f = join(dir, 'blob');
    writeFileSync(f, Buffer.alloc(3 * 1024 * 1024, 7));
    const want = execFileSync('sha256sum', [f]).toString().split(' ')[0]!;
    expect(await sha256File(f)).toBe(want);
    expect(sha256Hex(readFileSync(f))).toBe(want);
  });

  it('checkSha256 refuses a mismatch and a malformed expectation', () => {
    const h = sha256Hex('a');
    expect(code(() => checkSha256('a.tgz', h, h))).toBe('no error');
    expect(code(() => checkSha256('a.tgz', h, sha256Hex('b')))).toBe('verification_failed');
    expect(code(() => checkSha256('a.tgz', 'ABC', 'ABC'))).toBe('verification_failed');
  });
});
