/**
 * A cold boot's SSH readiness, read through the guest agent instead of
 * proven by an SSH login: the guest unit finished with status 0 (it
 * installed authorized_keys and the host key; ssh.service starts after it),
 * sshd listens on port 22 (/proc/net/tcp or tcp6), and the host key sshd
 * loads is read from its .pub file so the daemon can pin it under the VM's
 * name before anyone connects. Reading three small files through the agent
 * starts no process in the guest; an SSH login cost a key exchange and an
 * authentication under TCG (SSH answered ~2 s after sshd listened).
 *
 * The guest writes every byte read here (hostile peer): sizes are bounded
 * by the agent's readFile, the tables are parsed field by field, and the
 * key is checked for shape here and fully by verifyOrPin when pinned. When
 * the guest unit reports a failure, or the agent fails, the answer is
 * "unsure" and the caller falls back to waiting for an SSH login.
 */
import { BangerError, messageOf } from '../errors/errors.js';
import { clip } from '../model/text.js';
import { GUEST_DONE_FILE, SSH_HOST_KEY } from '../images/guest-files.js';
import { AgentCommandError, connectAgent, type GuestAgent, type WaitForAgentOptions } from './agent.js';

export const SSH_PORT = 22;
/** Pause between looks (each look is a few agent commands; no guest process). */
const POLL_MS = 100;
/** Largest /proc/net/tcp accepted (a fresh guest has a handful of sockets). */
const MAX_TCP_TABLE_BYTES = 1024 * 1024;
const MAX_PUBKEY_BYTES = 16 * 1024;

export type SshdReadiness =
  | { kind: 'listening'; hostKey: { keyType: string; keyBase64: string } }
  | { kind: 'unsure'; reason: string };

/** Whether a /proc/net/tcp or tcp6 table shows a socket in LISTEN (state 0A) on `port`. */
export function listensOn(table: string, port: number): boolean {
  const suffix = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // sl local_address rem_address st ...
    if (f.length >= 4 && f[3] === '0A' && /^[0-9A-F]+:[0-9A-F]{4}$/.test(f[1]!) && f[1]!.endsWith(suffix)) return true;
  }
  return false;
}

/** `TYPE BASE64 [comment]` from a .pub file; undefined when it is not one line of that shape. */
export function parsePublicKey(text: string): { keyType: string; keyBase64: string } | undefined {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (lines.length !== 1) return undefined;
  const m = /^(ssh-[a-z0-9-]+|ecdsa-sha2-nistp(?:256|384|521)) ([A-Za-z0-9+/]+={0,2})(?: .*)?$/.exec(lines[0]!.trim());
  return m ? { keyType: m[1]!, keyBase64: m[2]! } : undefined;
}

async function readIfThere(agent: GuestAgent, path: string, maxBytes: number): Promise<string | undefined> {
  try {
    return (await agent.readFile(path, maxBytes)).toString('utf8');
  } catch (e) {
    // A file that is not there yet (the agent's open fails); anything else is the caller's.
    if (e instanceof AgentCommandError) return undefined;
    throw e;
  }
}

/**
 * Waits (through the agent on socketPath) until sshd listens after the guest
 * unit succeeded, and returns the host key it serves; "unsure" when the unit
 * failed or the agent misbehaved. Throws 'timeout' at the deadline and
 * 'interrupted' on abort.
 */
export async function waitForSshd(socketPath: string, opts: WaitForAgentOptions): Promise<SshdReadiness> {
  const agent = await connectAgent(socketPath, opts);
  try {
    for (;;) {
      if (opts.signal?.aborted) throw new BangerError('interrupted', `waiting for sshd through the guest agent on ${socketPath} was interrupted`);
      if (Date.now() >= opts.deadlineMs) {
        throw new BangerError('timeout', 'sshd did not start listening in the guest in time', 'the console log (`banger vm logs`) shows how far the boot got');
      }
      let done: string | undefined;
      try {
        done = await readIfThere(agent, GUEST_DONE_FILE, 64);
        if (done !== undefined) {
          const status = done.trim();
          if (status !== '0') return { kind: 'unsure', reason: `banger-guest-config ended with status ${clip(status, 40)}` };
          const tables = [await readIfThere(agent, '/proc/net/tcp', MAX_TCP_TABLE_BYTES), await readIfThere(agent, '/proc/net/tcp6', MAX_TCP_TABLE_BYTES)];
          if (tables.some((t) => t !== undefined && listensOn(t, SSH_PORT))) {
            const pub = await readIfThere(agent, `${SSH_HOST_KEY}.pub`, MAX_PUBKEY_BYTES);
            const hostKey = pub === undefined ? undefined : parsePublicKey(pub);
            if (!hostKey) return { kind: 'unsure', reason: `sshd listens but ${SSH_HOST_KEY}.pub is missing or not a public key` };
            return { kind: 'listening', hostKey };
          }
        }
      } catch (e) {
        if (opts.signal?.aborted) throw new BangerError('interrupted', `waiting for sshd through the guest agent on ${socketPath} was interrupted`);
        return { kind: 'unsure', reason: `the guest agent failed: ${clip(messageOf(e), 300)}` };
      }
      await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(0, opts.deadlineMs - Date.now()))));
    }
  } finally {
    agent.close();
  }
}
