import { describe, it, expect } from 'vitest';
import ssh2 from 'ssh2';
import { isHostKey, newHostKey } from './host-key.js';

describe('newHostKey', () => {
  it('makes an ed25519 key pair that ssh2 parses, private and public halves matching, named root@HOST', () => {
    const k = newHostKey('box-1');
    expect(k.keyType).toBe('ssh-ed25519');
    expect(k.publicLine).toBe(`ssh-ed25519 ${k.keyBase64} root@box-1`);
    const priv = ssh2.utils.parseKey(k.privateKey);
    expect(priv).not.toBeInstanceOf(Error);
    const p = priv as ssh2.ParsedKey;
    expect(p.type).toBe('ssh-ed25519');
    expect(p.getPublicSSH().toString('base64')).toBe(k.keyBase64);
    const data = Buffer.from('banger');
    expect(p.verify(data, p.sign(data))).toBe(true);
  });

  it('is new every time', () => {
    expect(newHostKey('a').keyBase64).not.toBe(newHostKey('a').keyBase64);
  });

  it('isHostKey accepts what newHostKey makes, and nothing of another shape', () => {
    const k = newHostKey('box');
    expect(isHostKey(k)).toBe(true);
    expect(isHostKey({ ...k, privateKey: `${k.privateKey}\n; reboot` })).toBe(false);
    expect(isHostKey({ ...k, publicLine: `${k.publicLine}\nssh-rsa AAAA` })).toBe(false);
    expect(isHostKey({ ...k, keyBase64: newHostKey('box').keyBase64 })).toBe(false);
    expect(isHostKey({ ...k, publicLine: k.publicLine.replace('root@box', 'root@$(reboot)') })).toBe(false);
  });
});
