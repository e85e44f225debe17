/**
 * banger's own known_hosts file (never ~/.ssh/known_hosts): trust on first
 * use, exact match afterwards.
 *
 * Entries are keyed by a host alias (banger uses `<vmname>.vm`), written in
 * OpenSSH's format (`alias keytype base64`) so the OpenSSH client accepts the
 * same file with `-o HostKeyAlias=<alias> -o UserKnownHostsFile=<file>`.
 * The parser understands the rest of the format too (comments, comma host
 * lists, `*`/`?` patterns, `!` negation, hashed `|1|` hosts, `@revoked` and
 * `@cert-authority` markers) so a hand-edited file still works.
 *
 * Concurrency: every read-modify-write runs under a lock file
 * (`<file>.lock`, O_EXCL, holder's pid inside, stale locks of dead pids are
 * broken) and replaces the file atomically (temp + rename), so readers never
 * see a torn file and two processes pinning at once never lose an entry.
 * Everything here is synchronous: within one process nothing can interleave,
 * and ssh2's host verifier can call it without an await gap.
 */
import { closeSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
/** node:crypto on first use: this module is on every CLI command's import path (src/model/random.ts). */
const crypto = () => process.getBuiltinModule('node:crypto');
import { dirname } from 'node:path';
import { BangerError } from '../errors/errors.js';
import { ensureDir, writeFileAtomic } from '../system/fs.js';

export type PinResult = 'pinned' | 'match';

export interface HostKey {
  keyType: string;
  keyBase64: string;
}

/** Aliases we accept: what OpenSSH matches literally (lowercase, no pattern or list characters). */
const ALIAS_RE = /^[a-z0-9[][a-z0-9._:[\]-]*$/;

export function validateAlias(alias: string): void {
  if (!ALIAS_RE.test(alias)) {
    throw new BangerError(
      'bad_request',
      `invalid host key alias ${JSON.stringify(alias)}`,
      'an alias is lowercase letters, digits, ".", "-", ":" or brackets (banger uses <vmname>.vm)',
    );
  }
}

/** The key must be well-formed and its type must be the one inside the blob (else OpenSSH skips the line). */
function validateKey(keyType: string, keyBase64: string): void {
  const blob = /^[A-Za-z0-9+/]+={0,2}$/.test(keyBase64) ? Buffer.from(keyBase64, 'base64') : Buffer.alloc(0);
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  const inner = len >= 0 && len <= blob.length - 4 ? blob.subarray(4, 4 + len).toString('latin1') : undefined;
  if (!/^[A-Za-z0-9@._+-]+$/.test(keyType) || inner !== keyType) {
    throw new BangerError('bad_request', `invalid host key (${keyType})`);
  }
}

/** OpenSSH-style fingerprint of a key blob: `SHA256:` + unpadded base64 of its SHA-256. */
export function fingerprintSha256(keyBase64: string): string {
  const digest = crypto().createHash('sha256').update(Buffer.from(keyBase64, 'base64')).digest('base64');
  return `SHA256:${digest.replace(/=+$/, '')}`;
}

// ---------------------------------------------------------------- parsing

interface Line {
  raw: string;
  /** Undefined for blank lines, comments and lines we cannot parse (kept verbatim). */
  entry?: {
    marker?: string;
    hosts: string;
    keyType: string;
    keyBase64: string;
  };
}

function parseLines(text: string): Line[] {
  const raws = text.split('\n');
  if (raws.length > 0 && raws[raws.length - 1] === '') raws.pop();
  return raws.map((raw) => {
    const trimmed = raw.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return { raw };
    const fields = trimmed.split(/[ \t]+/);
    let marker: string | undefined;
    if (fields[0]?.startsWith('@')) marker = fields.shift();
    const [hosts, keyType, keyBase64] = fields;
    if (!hosts || !keyType || !keyBase64) return { raw };
    return { raw, entry: { marker, hosts, keyType, keyBase64 } };
  });
}

/** OpenSSH's match_pattern: `*` and `?` wildcards, case-insensitive (OpenSSH lowercases patterns). */
function matchPattern(name: string, pattern: string): boolean {
  const re = new RegExp(
    '^' +
      pattern
        .toLowerCase()
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*/g, '.*')
        .replace(/\?/g, '.') +
      '$',
  );
  return re.test(name);
}

function matchHashed(name: string, hashed: string): boolean {
  // |1|base64(salt)|base64(HMAC-SHA1(salt, name))
  const parts = hashed.split('|');
  if (parts.length !== 4 || parts[1] !== '1') return false;
  const salt = Buffer.from(parts[2] ?? '', 'base64');
  const want = parts[3] ?? '';
  return crypto().createHmac('sha1', salt).update(name).digest('base64') === want;
}

/** True when the host list of an entry matches `alias` (any positive match, no negated match). */
function hostsMatch(hosts: string, alias: string, literalOnly = false): boolean {
  if (hosts.startsWith('|')) return matchHashed(alias, hosts);
  let positive = false;
  for (const item of hosts.split(',')) {
    if (item.startsWith('!')) {
      if (!literalOnly && matchPattern(alias, item.slice(1))) return false;
      continue;
    }
    if (literalOnly ? item.toLowerCase() === alias : matchPattern(alias, item)) positive = true;
  }
  return positive;
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw new BangerError('operation_failed', `cannot read ${file}: ${(e as Error).message}`, undefined, {
      cause: e,
    });
  }
}

/** Keys pinned for `alias` (ordinary entries only; `@revoked`/`@cert-authority` lines are not pins). */
export function lookupHost(file: string, alias: string): HostKey[] {
  validateAlias(alias);
  return parseLines(readText(file))
    .filter((l) => l.entry && l.entry.marker === undefined && hostsMatch(l.entry.hosts, alias))
    .map((l) => ({ keyType: l.entry!.keyType, keyBase64: l.entry!.keyBase64 }));
}

function isRevoked(lines: Line[], alias: string, keyBase64: string): boolean {
  return lines.some(
    (l) =>
      l.entry?.marker === '@revoked' &&
      hostsMatch(l.entry.hosts, alias) &&
      sameKey(l.entry.keyBase64, keyBase64),
  );
}

function sameKey(a: string, b: string): boolean {
  return Buffer.from(a, 'base64').equals(Buffer.from(b, 'base64'));
}

// ---------------------------------------------------------------- errors

function vmLabel(alias: string): string {
  return alias.endsWith('.vm') ? `VM ${alias.slice(0, -3)} (${alias})` : `host ${alias}`;
}

function mismatchError(file: string, alias: string, pinned: HostKey[], presented: HostKey): BangerError {
  const expected = pinned.map((k) => `${fingerprintSha256(k.keyBase64)} (${k.keyType})`).join(', ');
  const vmName = alias.endsWith('.vm') ? alias.slice(0, -3) : alias;
  return new BangerError(
    'host_key_mismatch',
    `the SSH host key of ${vmLabel(alias)} has changed: expected ${expected}, ` +
      `but it presented ${fingerprintSha256(presented.keyBase64)} (${presented.keyType}). ` +
      `This may mean the VM was replaced by a new one with the same name, ` +
      `or that someone is intercepting the connection; the connection was refused before logging in.`,
    `if the VM was recreated, \`banger vm delete -f ${vmName}\` removes it and its pinned key so a new VM re-pins; ` +
      `otherwise, once you trust the new key, remove the line for ${alias} from ${file}`,
  );
}

function revokedError(file: string, alias: string, presented: HostKey): BangerError {
  return new BangerError(
    'host_key_mismatch',
    `${vmLabel(alias)} presented the revoked host key ${fingerprintSha256(presented.keyBase64)} ` +
      `(${presented.keyType}); the connection was refused`,
    `see the @revoked line in ${file}`,
  );
}

/**
 * Checks `alias`'s presented key against the file without changing it.
 * Returns 'match', 'unknown' (nothing pinned yet), or throws the
 * host_key_mismatch error.
 */
export function checkHost(file: string, alias: string, keyType: string, keyBase64: string): 'match' | 'unknown' {
  validateAlias(alias);
  validateKey(keyType, keyBase64);
  return check(parseLines(readText(file)), file, alias, { keyType, keyBase64 });
}

function check(lines: Line[], file: string, alias: string, presented: HostKey): 'match' | 'unknown' {
  if (isRevoked(lines, alias, presented.keyBase64)) throw revokedError(file, alias, presented);
  const pinned = lines
    .filter((l) => l.entry && l.entry.marker === undefined && hostsMatch(l.entry.hosts, alias))
    .map((l) => ({ keyType: l.entry!.keyType, keyBase64: l.entry!.keyBase64 }));
  if (pinned.length === 0) return 'unknown';
  if (pinned.some((k) => sameKey(k.keyBase64, presented.keyBase64))) return 'match';
  throw mismatchError(file, alias, pinned, presented);
}

// ---------------------------------------------------------------- writing

/**
 * Trust on first use: pins the key when `alias` has no entry yet, returns
 * 'match' when the key is one already pinned, and throws
 * BangerError('host_key_mismatch') otherwise. The file is never changed on a
 * mismatch.
 */
export function verifyOrPin(file: string, alias: string, keyType: string, keyBase64: string): PinResult {
  validateAlias(alias);
  validateKey(keyType, keyBase64);
  const presented = { keyType, keyBase64 };
  // Fast path without the lock: the file is only ever replaced atomically.
  if (check(parseLines(readText(file)), file, alias, presented) === 'match') return 'match';
  ensureDir(dirname(file), 0o700);
  return withLock(file, () => {
    const text = readText(file);
    if (check(parseLines(text), file, alias, presented) === 'match') return 'match';
    const sep = text === '' || text.endsWith('\n') ? '' : '\n';
    writeFileAtomic(file, `${text}${sep}${alias} ${keyType} ${keyBase64}\n`, 0o600);
    return 'pinned';
  });
}

/**
 * Drops every ordinary entry naming `alias` literally (the whole line, like
 * `ssh-keygen -R`); wildcard lines are left alone. Returns how many lines went.
 */
export function removeHost(file: string, alias: string): number {
  validateAlias(alias);
  const named = (l: Line) => !!l.entry && l.entry.marker === undefined && hostsMatch(l.entry.hosts, alias, true);
  if (!parseLines(readText(file)).some(named)) return 0;
  return withLock(file, () => {
    const lines = parseLines(readText(file));
    const keep = lines.filter((l) => !named(l));
    const removed = lines.length - keep.length;
    if (removed > 0) writeFileAtomic(file, keep.map((l) => `${l.raw}\n`).join(''), 0o600);
    return removed;
  });
}

// ---------------------------------------------------------------- locking

const LOCK_TIMEOUT_MS = 10_000;
const sleepCell = new Int32Array(new SharedArrayBuffer(4));

function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the lock when its holder is gone (dead pid, or empty and old). Returns true if removed. */
function breakStaleLock(lockPath: string): boolean {
  let content: string;
  let mtimeMs: number;
  try {
    content = readFileSync(lockPath, 'utf8').trim();
    mtimeMs = statSync(lockPath).mtimeMs;
  } catch {
    return true; // vanished: just retry
  }
  const pid = Number(content);
  const stale =
    content === '' ? Date.now() - mtimeMs > 5_000 : !Number.isInteger(pid) || pid <= 0 || !pidAlive(pid);
  if (stale) rmSync(lockPath, { force: true });
  return stale;
}

/** Runs fn holding `<file>.lock` (O_EXCL create; released in finally). */
export function withLock<T>(file: string, fn: () => T, timeoutMs = LOCK_TIMEOUT_MS): T {
  const lockPath = `${file}.lock`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let fd: number | undefined;
    try {
      fd = openSync(lockPath, 'wx', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new BangerError('operation_failed', `cannot lock ${file}: ${(e as Error).message}`, undefined, {
          cause: e,
        });
      }
    }
    if (fd !== undefined) {
      try {
        writeSync(fd, String(process.pid));
      } finally {
        closeSync(fd);
      }
      break;
    }
    if (breakStaleLock(lockPath)) continue;
    if (Date.now() > deadline) {
      throw new BangerError(
        'unavailable',
        `${file} stayed locked for ${timeoutMs} ms`,
        `another banger process holds ${lockPath}; if none is running, remove that file`,
      );
    }
    sleepSync(5 + Math.floor(Math.random() * 20));
  }
  try {
    return fn();
  } finally {
    rmSync(lockPath, { force: true });
  }
}
