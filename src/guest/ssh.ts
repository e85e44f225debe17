/**
 * SSH into guests: commands over ssh2 (no ssh binary needed), readiness
 * polling, and argv for the OpenSSH client for interactive sessions.
 *
 * Host keys are verified against banger's own known_hosts (known-hosts.ts)
 * with trust on first use. How the check is wired into ssh2:
 *   - ssh2 calls `hostVerifier` with the server's key blob during key
 *     exchange, before the server has proven it holds the key (the exchange
 *     signature is checked afterwards) and before any authentication.
 *     Our verifier is synchronous (returns a boolean; no callback, so there is
 *     no await gap and no way to answer twice): a known key → accept; a
 *     different key → reject (ssh2 then disconnects and we surface the coded
 *     host_key_mismatch error instead of ssh2's generic one); nothing pinned
 *     → accept provisionally.
 *   - The pin itself is written on the 'handshake' event, which ssh2 emits
 *     only after the signature verified, and before it even requests the
 *     user-auth service. verifyOrPin re-checks under the file lock, so if a
 *     concurrent connection pinned a different key meanwhile we still refuse
 *     before logging in.
 */
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import { sink } from '../system/streams.js';
/** timers/promises on first use: this module is on every vm command's load path (src/model/random.ts says why). */
const sleep: typeof import('node:timers/promises').setTimeout = (...a) => process.getBuiltinModule('node:timers/promises').setTimeout(...a);
import type { ClientChannel } from 'ssh2';
import { BangerError, isBangerError, messageOf } from '../errors/errors.js';
import { shellJoin } from '../model/quote.js';
import type { SshTarget } from '../model/types.js';
import { checkHost, validateAlias, verifyOrPin } from './known-hosts.js';

export type { SshTarget };

export interface SshExecIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Forwarded to the command; when absent the command gets EOF at once. */
  stdin?: NodeJS.ReadableStream | null;
  /** Aborting sends the command SIGTERM, closes the connection and rejects with 'interrupted'. */
  signal?: AbortSignal;
  /** Budget for TCP connect + handshake + authentication (default 20 s). */
  connectTimeoutMs?: number;
}

export interface SshExecResult {
  /** The remote exit status; a command killed by signal N gives 128+N, like a shell. */
  exitCode: number;
  /** e.g. 'SIGKILL' when the remote command was killed by a signal. */
  signal?: string;
}

export interface WaitForSshOptions {
  /**
   * How long to keep trying, in ms from now. (A value that is clearly an
   * epoch timestamp, > 1e12, is taken as an absolute deadline.)
   */
  deadlineMs: number;
  signal?: AbortSignal;
  /** Pause between attempts (default 250 ms: an attempt before sshd listens is refused at once). */
  intervalMs?: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 20_000;
/** Per-attempt cap in waitForSsh, so one stuck attempt cannot eat the whole budget. */
const WAIT_ATTEMPT_CAP_MS = 12_000;
/**
 * The first attempts get a short budget: one made before the guest's network
 * is up hangs in slirp's SYN backoff, so giving up early and retrying is
 * faster. Each cut-off attempt gets 2 s more, up to the cap, so a slow but
 * live handshake (TCG under load) still completes.
 */
const WAIT_FIRST_ATTEMPT_MS = 4_000;
/**
 * ssh2 keepalives (off by default in ssh2): a guest that vanishes mid-command
 * is noticed after about interval × (countMax + 1) instead of never.
 */
const KEEPALIVE_INTERVAL_MS = 15_000;
const KEEPALIVE_COUNT_MAX = 3;

// ------------------------------------------------------------------ exec

let ssh2Module: Promise<typeof import('ssh2')> | undefined;
/**
 * ssh2, loaded on first use (~40-90 ms of module loading that `vm list` and
 * the like never need). `vm run` calls this before it asks the daemon for
 * the VM, so the loading overlaps the boot.
 */
export function loadSsh2(): Promise<typeof import('ssh2')> {
  ssh2Module ??= import('ssh2');
  return ssh2Module;
}

/** How long sshExec waits before each retry of a connection lost before the handshake (3.5 s in all). */
const LOST_BEFORE_HANDSHAKE_RETRIES_MS = [500, 1000, 2000];

export async function sshExec(target: SshTarget, command: string, io: SshExecIo): Promise<SshExecResult> {
  validateAlias(target.hostKeyAlias);
  const privateKey = readPrivateKey(target.privateKeyPath);
  try {
    return await execWithKey(target, privateKey, command, io);
  } catch (e) {
    // The TCP connection was cut, reset or refused before the SSH handshake
    // (seen under load right after a warm clone's boot, once as a reset on a
    // bridge clone, once twice in a row 0.5 s apart): nothing was sent, no
    // command ran, so more attempts are safe, a little further apart each
    // time. Every other failure is final.
    let last = e;
    for (const ms of LOST_BEFORE_HANDSHAKE_RETRIES_MS) {
      if (!(last instanceof LostBeforeHandshake) || io.signal?.aborted) throw last;
      await sleep(ms);
      try {
        return await execWithKey(target, privateKey, command, io);
      } catch (again) {
        last = again;
      }
    }
    throw last;
  }
}

/** The connection closed before the SSH handshake: no command can have run. */
class LostBeforeHandshake extends BangerError {}

function readPrivateKey(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new BangerError(
      'operation_failed',
      `cannot read ssh key ${path}: ${messageOf(e)}`,
      'banger creates its key on first use; check the state directory is readable',
    );
  }
}

function where(t: SshTarget): string {
  return `${t.user}@${t.host}:${t.port}`;
}

function interrupted(t: SshTarget): BangerError {
  return new BangerError('interrupted', `ssh command on ${where(t)} was interrupted`);
}

/** `command` null: authenticate and disconnect, running nothing (the readiness probe). */
async function execWithKey(target: SshTarget, privateKey: Buffer, command: string | null, io: SshExecIo): Promise<SshExecResult> {
  const { Client } = await loadSsh2();
  return new Promise<SshExecResult>((resolve, reject) => {
    if (io.signal?.aborted) {
      reject(interrupted(target));
      return;
    }
    const client = new Client();
    let settled = false;
    let hostKeyError: BangerError | undefined;
    let provisional: { keyType: string; keyBase64: string } | undefined;
    let channel: ClientChannel | undefined;
    let ready = false;
    let exit: { code: number | null; signal?: string } | undefined;

    const cleanup = () => {
      io.signal?.removeEventListener('abort', onAbort);
      if (channel && io.stdin) io.stdin.unpipe(channel as unknown as NodeJS.WritableStream);
      // Not end(): that waits for the peer's FIN, and a guest that is gone (a
      // deleted VM on a bridge: no one answers, not even with a reset) would
      // keep the socket, and our process, alive for minutes. Every byte of
      // the command's output has been read by now: close the socket.
      client.destroy();
    };
    const fail = (err: BangerError) => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(err);
    };
    const succeed = (r: SshExecResult) => {
      if (settled) return;
      settled = true;
      cleanup();
      resolve(r);
    };
    const onAbort = () => {
      if (channel) {
        try {
          channel.signal('TERM');
        } catch {
          // best effort: closing the connection below also ends the session
        }
      }
      fail(interrupted(target));
    };
    io.signal?.addEventListener('abort', onAbort, { once: true });

    client.on('handshake', () => {
      if (!provisional || hostKeyError) return;
      // The server proved it holds this key: pin it (or find a racing pin).
      try {
        verifyOrPin(target.knownHostsPath, target.hostKeyAlias, provisional.keyType, provisional.keyBase64);
      } catch (e) {
        hostKeyError = isBangerError(e) ? e : new BangerError('operation_failed', messageOf(e));
        client.destroy();
        fail(hostKeyError);
      }
    });

    client.on('ready', () => {
      ready = true;
      if (command === null) {
        succeed({ exitCode: 0 });
        return;
      }
      client.exec(command, (err, stream) => {
        if (err) {
          fail(new BangerError('operation_failed', `cannot start a command on ${where(target)}: ${err.message}`));
          return;
        }
        if (settled) {
          stream.close();
          return;
        }
        channel = stream;
        runChannel(stream);
      });
    });

    const finish = () => {
      if (!exit) return false;
      if (exit.code !== null) succeed({ exitCode: exit.code });
      else {
        const sig = exit.signal ?? 'SIGKILL';
        const n = (osConstants.signals as Record<string, number | undefined>)[sig] ?? 0;
        succeed({ exitCode: 128 + n, signal: sig });
      }
      return true;
    };

    const runChannel = (stream: ClientChannel) => {
      let pending = 3; // stdout end, stderr end, channel close
      const done = () => {
        if (--pending > 0) return;
        if (!finish()) {
          fail(
            new BangerError(
              'operation_failed',
              `the connection to ${where(target)} closed before the command reported an exit status`,
              'the VM may have stopped or rebooted; check `banger vm show`',
            ),
          );
        }
      };
      stream.on('exit', (code: number | null, signal?: string) => {
        exit = { code: typeof code === 'number' ? code : null, signal };
      });
      stream.on('error', () => undefined);
      stream.stderr.on('error', () => undefined);
      stream.once('end', done);
      stream.stderr.once('end', done);
      stream.once('close', done);
      stream.pipe(io.stdout, { end: false });
      stream.stderr.pipe(io.stderr, { end: false });
      if (io.stdin) io.stdin.pipe(stream as unknown as NodeJS.WritableStream);
      else stream.end();
    };

    client.on('error', (err: Error & { level?: string; code?: unknown }) => {
      if (hostKeyError) return fail(hostKeyError);
      fail(mapClientError(target, err, ready));
    });
    client.on('close', () => {
      if (hostKeyError) return fail(hostKeyError);
      if (finish()) return; // the command had already reported its status: keep it
      fail(
        new BangerError(
          ready ? 'operation_failed' : 'unavailable',
          ready
            ? `the connection to ${where(target)} was lost while the command ran`
            : `${where(target)} closed the connection before SSH was ready`,
        ),
      );
    });

    try {
      client.connect({
        host: target.host,
        port: target.port,
        username: target.user,
        privateKey,
        readyTimeout: io.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
        keepaliveInterval: KEEPALIVE_INTERVAL_MS,
        keepaliveCountMax: KEEPALIVE_COUNT_MAX,
        hostVerifier: (key: Buffer): boolean => {
          try {
            const presented = { keyType: keyTypeOf(key), keyBase64: key.toString('base64') };
            if (checkHost(target.knownHostsPath, target.hostKeyAlias, presented.keyType, presented.keyBase64) === 'unknown') {
              provisional = presented;
            }
            return true;
          } catch (e) {
            hostKeyError = isBangerError(e) ? e : new BangerError('operation_failed', messageOf(e));
            return false;
          }
        },
      });
    } catch (e) {
      // ssh2 throws synchronously for a bad config, e.g. an unparsable key
      fail(new BangerError('operation_failed', `cannot connect to ${where(target)}: ${messageOf(e)}`));
    }
  });
}

/** The key type string at the start of an SSH public key blob. */
function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) throw new BangerError('operation_failed', 'server sent a malformed host key');
  const len = blob.readUInt32BE(0);
  if (len > blob.length - 4) throw new BangerError('operation_failed', 'server sent a malformed host key');
  return blob.subarray(4, 4 + len).toString('latin1');
}

function mapClientError(target: SshTarget, err: Error & { level?: string; code?: unknown }, ready: boolean): BangerError {
  const at = where(target);
  if (err.level === 'client-authentication') {
    return new BangerError(
      'operation_failed',
      `authentication to ${at} with key ${target.privateKeyPath} was refused`,
      "the guest does not (yet) accept banger's public key",
    );
  }
  if (err.level === 'client-timeout') {
    return ready
      ? new BangerError('timeout', `${at} stopped answering keepalives; the connection was dropped`)
      : new BangerError('timeout', `timed out waiting for the SSH handshake with ${at}`);
  }
  // Cut (closed, reset) or refused before the handshake: nothing was sent, so sshExec may try again.
  if (!ready && (/before handshake/i.test(err.message) || err.code === 'ECONNRESET' || err.code === 'ECONNREFUSED')) {
    const how = err.code === 'ECONNREFUSED' ? 'refused the connection' : err.code === 'ECONNRESET' ? 'reset the connection' : 'closed the connection';
    return new LostBeforeHandshake('unavailable', `${at} ${how} before the SSH handshake${typeof err.code === 'string' ? ` (${err.code})` : ''}`, 'the guest may be overloaded or its sshd restarting; try again');
  }
  if (err.level === 'client-socket' || typeof err.code === 'string') {
    return new BangerError(
      ready ? 'operation_failed' : 'unavailable',
      `${ready ? 'connection to' : 'cannot connect to'} ${at}: ${err.message}`,
    );
  }
  return new BangerError('operation_failed', `ssh to ${at} failed: ${err.message}`);
}

// ------------------------------------------------------------------ wait

/**
 * Retries connect + host key check + authentication until they work or the
 * deadline passes (then BangerError 'timeout' with what was last seen); it
 * opens no session: a session (sshd's PAM session, the shell) cost ~0.3 s
 * more per attempt under TCG, and the login it proves works is the
 * readiness (root's authorized_keys live on the work disk at /root). A host
 * key mismatch or an abort fails at once.
 */
export async function waitForSsh(target: SshTarget, opts: WaitForSshOptions): Promise<void> {
  validateAlias(target.hostKeyAlias);
  const started = Date.now();
  const deadline = opts.deadlineMs > 1e12 ? opts.deadlineMs : started + opts.deadlineMs;
  const interval = opts.intervalMs ?? 250;
  const privateKey = readPrivateKey(target.privateKeyPath);
  let lastSeen = 'no attempt finished';
  let lastInformative: string | undefined;
  let attempts = 0;
  let cutOff = 0;

  for (;;) {
    if (opts.signal?.aborted) throw interrupted(target);
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    attempts++;
    const budget = Math.min(remaining, WAIT_ATTEMPT_CAP_MS, WAIT_FIRST_ATTEMPT_MS + 2_000 * cutOff);
    // One stuck attempt (e.g. a handshake that never finishes) is cut off at its budget.
    const attempt = new AbortController();
    const timer = setTimeout(() => attempt.abort(), budget);
    const forward = () => attempt.abort();
    opts.signal?.addEventListener('abort', forward, { once: true });
    try {
      // Logged in (no command runs: the result is always exit 0).
      await execWithKey(target, privateKey, null, {
        stdout: sink(),
        stderr: sink(),
        signal: attempt.signal,
        connectTimeoutMs: budget,
      });
      return;
    } catch (e) {
      if (opts.signal?.aborted) throw interrupted(target);
      if (isBangerError(e) && (e.code === 'host_key_mismatch' || e.code === 'bad_request')) throw e;
      if (isBangerError(e) && (e.code === 'interrupted' || e.code === 'timeout')) {
        // Cut off by its budget: say so, but keep what an earlier attempt saw
        // (the last attempt before the deadline is often just a few ms long).
        cutOff++;
        const cut = `an attempt got no answer within ${budget} ms`;
        lastSeen = lastInformative ? `${cut}; before that: ${lastInformative}` : cut;
      } else {
        lastSeen = lastInformative = messageOf(e);
      }
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', forward);
    }
    const pause = Math.min(interval, deadline - Date.now());
    if (pause > 0) {
      try {
        await sleep(pause, undefined, { signal: opts.signal });
      } catch {
        throw interrupted(target);
      }
    }
  }
  throw new BangerError(
    'timeout',
    `ssh on ${target.host}:${target.port} did not become ready within ${Math.round((Date.now() - started) / 1000)} s ` +
      `(${attempts} attempt${attempts === 1 ? '' : 's'}); last seen: ${lastSeen}`,
    'check the VM console log (`banger vm logs`); a slow host (no KVM) boots much slower',
  );
}

// ------------------------------------------------------------------ OpenSSH argv

/**
 * Arguments for the OpenSSH client (`ssh`, not included) for an interactive
 * session against the same pinned key: strict checking against banger's
 * file, banger's key only. `--` ends ssh's options before the destination,
 * so nothing after it (user, host, the command) can be taken as an option.
 * With remoteArgv, the command goes as ONE shell-quoted argument: ssh joins
 * its arguments with spaces and the remote shell re-splits them, so each
 * argument arrives byte-identical.
 */
export function sshCommandArgs(target: SshTarget, remoteArgv?: readonly string[]): string[] {
  validateAlias(target.hostKeyAlias);
  const args = [
    ...identityArgs(target.privateKeyPath),
    '-p',
    String(target.port),
    '-o',
    `HostKeyAlias=${target.hostKeyAlias}`,
    '-o',
    `UserKnownHostsFile=${opensshPath(target.knownHostsPath, true)}`,
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    'IdentitiesOnly=yes',
    // Not in the user's hands via ~/.ssh/config: with these on, ssh would
    // write IP or extra key entries into banger's file behind its lock.
    '-o',
    'CheckHostIP=no',
    '-o',
    'UpdateHostKeys=no',
    '-o',
    'LogLevel=ERROR',
    '--',
    `${target.user}@${target.host}`,
  ];
  if (remoteArgv && remoteArgv.length > 0) args.push(shellJoin(remoteArgv));
  return args;
}

/**
 * `-i key`, except for a path with a `%`: ssh checks a -i path exists as
 * given but later expands %-tokens in it, so no spelling works there; the
 * same path as `-o IdentityFile=` (escaped) does.
 */
function identityArgs(path: string): string[] {
  const abs = resolvePath(path);
  if (!abs.includes('%')) return ['-i', opensshPath(abs, false)];
  return ['-o', `IdentityFile=${opensshPath(abs, true)}`];
}

/**
 * A path as OpenSSH reads it: made absolute (no `~` expansion), `%` doubled
 * (ssh expands %-tokens in IdentityFile and UserKnownHostsFile), and, for
 * `-o` values (split on whitespace by ssh's config parser), double-quoted
 * when needed. `${` cannot be escaped for ssh, so it is refused.
 */
function opensshPath(path: string, configValue: boolean): string {
  const abs = resolvePath(path);
  if (abs.includes('${') || /[\n\r]/.test(abs)) {
    throw new BangerError('bad_request', `path ${JSON.stringify(abs)} cannot be passed to the OpenSSH client`);
  }
  const escaped = abs.replace(/%/g, '%%');
  if (!configValue || /^[A-Za-z0-9_@%+=:,./~-]+$/.test(escaped)) return escaped;
  return `"${escaped.replace(/[\\"]/g, '\\$&')}"`;
}
