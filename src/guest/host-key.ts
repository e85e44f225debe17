/**
 * SSH host keys the daemon makes for its guests (ed25519, from the host's
 * RNG through ssh2): a warm clone's (written by the clone script) and a VM's
 * at its first cold boot (on the config disk, installed by the guest unit).
 * Under TCG, ssh-keygen in the guest took 0.4–0.8 s on the path to sshd.
 * The daemon knows the key before the guest serves it; it still pins what
 * the guest reports (sshd-ready.ts), so an image that makes its own key
 * works the same.
 */
import ssh2 from 'ssh2';

export interface HostKey {
  /** OpenSSH private key file (PEM, no passphrase), without a trailing newline. */
  privateKey: string;
  /** One line: `ssh-ed25519 BASE64 root@HOSTNAME`. */
  publicLine: string;
  keyType: string;
  keyBase64: string;
}

const PRIVATE_KEY_SHAPE = /^-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END OPENSSH PRIVATE KEY-----$/;
const PUBLIC_LINE_SHAPE = /^(ssh-ed25519) ([A-Za-z0-9+/]+={0,2}) root@[A-Za-z0-9-]+$/;

/** A fresh ed25519 host key for the guest called `hostname` (a DNS label). */
export function newHostKey(hostname: string): HostKey {
  const k = ssh2.utils.generateKeyPairSync('ed25519', { comment: `root@${hostname}` });
  const key = { privateKey: k.private.trimEnd(), publicLine: k.public.trim(), keyType: '', keyBase64: '' };
  const m = PUBLIC_LINE_SHAPE.exec(key.publicLine);
  if (!m || !PRIVATE_KEY_SHAPE.test(key.privateKey)) throw new Error('ssh2 made a host key of an unexpected shape');
  return { ...key, keyType: m[1]!, keyBase64: m[2]! };
}

/** Whether `k` has the shape newHostKey gives (it reaches a guest shell script and a disk: nothing else may). */
export function isHostKey(k: HostKey): boolean {
  const m = PUBLIC_LINE_SHAPE.exec(k.publicLine);
  return PRIVATE_KEY_SHAPE.test(k.privateKey) && m !== null && m[1] === k.keyType && m[2] === k.keyBase64;
}
