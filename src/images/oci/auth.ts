/**
 * Registry authentication (issue 11), as the distribution spec's token flow
 * and Docker's client do it: every request goes out anonymous (or with the
 * token already obtained); a 401 carries `WWW-Authenticate`, which this
 * module parses (RFC 7235: several challenges, quoted strings with commas
 * and escapes) and answers once:
 *
 * - `Bearer realm=…,service=…` → GET realm?service=…&scope=repository:REPO:pull,
 *   with Basic credentials when there are some; the answer (≤ 1 MiB, zod
 *   checked) holds `token` or `access_token`, cached for the client's life
 *   and fetched again when a later request gets a 401.
 * - `Basic` → the credentials, when there are some.
 *
 * The realm must be http(s); an http realm is used only when the registry
 * itself is spoken to in plain HTTP (loopback or --insecure), so credentials
 * never travel in clear text to a realm an https registry names. Without
 * usable credentials, a 401/403 is an error that says where credentials go.
 */
import { z } from 'zod';
import { BangerError } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';
import type { Credentials } from './docker-config.js';
import { discard, readBounded, type Response, type Transport } from './http.js';

export interface Challenge {
  /** Lower case (`bearer`, `basic`). */
  scheme: string;
  /** Parameter names in lower case; the first of a repeated name wins. */
  params: Record<string, string>;
  token68?: string;
}

const MAX_CHALLENGE_CHARS = 8 * 1024;
const MAX_TOKEN_RESPONSE = 1024 * 1024;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/;

/**
 * Parses a WWW-Authenticate value (or several, as undici hands repeated
 * headers over). Returns [] for a value that is not well formed.
 */
export function parseChallenges(value: string | string[] | undefined): Challenge[] {
  if (value === undefined) return [];
  if (Array.isArray(value)) return value.flatMap((v) => parseChallenges(v));
  if (value.length > MAX_CHALLENGE_CHARS) return [];
  const out: Challenge[] = [];
  let s = value;
  const skip = (re: RegExp) => {
    s = s.replace(re, '');
  };
  const readToken = (): string | undefined => {
    const m = TOKEN.exec(s);
    if (!m) return undefined;
    s = s.slice(m[0].length);
    return m[0];
  };
  const readQuoted = (): string | undefined => {
    let v = '';
    for (let i = 1; i < s.length; i++) {
      const c = s[i]!;
      if (c === '\\' && i + 1 < s.length) v += s[++i];
      else if (c === '"') {
        s = s.slice(i + 1);
        return v;
      } else v += c;
    }
    return undefined; // unterminated
  };
  skip(/^[\s,]+/);
  while (s.length > 0) {
    const scheme = readToken();
    if (scheme === undefined) return [];
    const ch: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(ch);
    skip(/^[ \t]+/);
    const t68 = /^[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(,|$))/.exec(s);
    if (t68 && !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+[ \t]*=[ \t]*[^=\s,]/.test(s)) {
      ch.token68 = t68[0];
      s = s.slice(t68[0].length);
    }
    // auth-params until something that is not `name=` (the next challenge's scheme).
    for (;;) {
      skip(/^[\s,]+/);
      const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*/.exec(s);
      if (!m) break;
      s = s.slice(m[0].length);
      const v = s.startsWith('"') ? readQuoted() : readToken();
      if (v === undefined) return [];
      const name = m[1]!.toLowerCase();
      if (!(name in ch.params)) ch.params[name] = v;
    }
  }
  return out;
}

const TokenResponseSchema = z
  .object({
    token: z.string().min(1).max(32 * 1024).optional(),
    access_token: z.string().min(1).max(32 * 1024).optional(),
  })
  .refine((r) => r.token !== undefined || r.access_token !== undefined, { message: 'it has neither "token" nor "access_token"' });

export interface AuthOptions {
  transport: Transport;
  /** The registry as the user wrote it (docker.io), for messages. */
  registry: string;
  repository: string;
  credentials?: Credentials | undefined;
  /** Why configured credentials could not be used (a credential helper), for the hint. */
  note?: string | undefined;
  /** The Docker config consulted, for the hint. */
  configPath?: string | undefined;
}

export class Authenticator {
  private authorization: string | undefined;
  private pending: Promise<void> | undefined;

  constructor(private readonly o: AuthOptions) {}

  /** The Authorization header to send, if any. */
  headers(): Record<string, string> {
    return this.authorization !== undefined ? { authorization: this.authorization } : {};
  }

  /**
   * Answers a 401 (its body already discarded): obtains a token or picks
   * Basic credentials so that one retry may succeed; throws when it cannot.
   * Concurrent callers share one token request.
   */
  async onUnauthorized(res: Response, what: string): Promise<void> {
    if (this.pending) return this.pending;
    this.pending = this.answer(res, what);
    try {
      await this.pending;
    } finally {
      this.pending = undefined;
    }
  }

  private async answer(res: Response, what: string): Promise<void> {
    const challenges = parseChallenges(res.headers['www-authenticate']);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    if (bearer) return this.tokenFlow(bearer, what);
    if (challenges.some((c) => c.scheme === 'basic') && this.o.credentials) {
      if (this.authorization?.startsWith('Basic ')) throw this.denied(401);
      const { username, password } = this.o.credentials;
      this.authorization = `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
      return;
    }
    throw this.denied(401);
  }

  private async tokenFlow(c: Challenge, what: string): Promise<void> {
    const { transport: t, registry, repository, credentials } = this.o;
    let realm: URL;
    try {
      realm = new URL(c.params.realm!);
    } catch {
      throw this.badRealm(`${quoteInput(c.params.realm!, 100)}, which is not a URL`);
    }
    if (realm.protocol !== 'https:' && realm.protocol !== 'http:') throw this.badRealm(`${quoteInput(realm.href, 100)}, which is not http(s)`);
    if (realm.protocol === 'http:' && !t.plainHttp) throw this.badRealm(`${quoteInput(realm.href, 100)} over plain HTTP while the registry is spoken to over HTTPS`);
    if (c.params.service !== undefined) realm.searchParams.set('service', c.params.service);
    realm.searchParams.set('scope', `repository:${repository}:pull`);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (credentials) headers.authorization = `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
    const tokenWhat = `the token for ${registry}/${repository} (${what})`;
    const r = await t.get(realm.href, headers, tokenWhat);
    if (r.statusCode === 401 || r.statusCode === 403) {
      await discard(r);
      throw this.denied(r.statusCode);
    }
    if (r.statusCode !== 200) {
      await discard(r);
      throw new BangerError('operation_failed', `${tokenWhat}: the token service ${realm.host} answered HTTP ${r.statusCode}`, 'retry later; if it persists, the registry is misbehaving');
    }
    const body = await readBounded(t, r, MAX_TOKEN_RESPONSE, tokenWhat);
    let json: unknown;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      json = undefined;
    }
    const parsed = TokenResponseSchema.safeParse(json);
    const token = parsed.success ? (parsed.data.token ?? parsed.data.access_token)! : undefined;
    if (token === undefined || !/^[\x21-\x7e]+$/.test(token)) {
      throw new BangerError('operation_failed', `${tokenWhat}: the token service ${realm.host} sent no usable token`, 'retry later; if it persists, the registry is misbehaving');
    }
    this.authorization = `Bearer ${token}`;
  }

  private badRealm(why: string): BangerError {
    return new BangerError(
      'operation_failed',
      `registry ${this.o.registry} sends clients to the token realm ${why}; banger refuses to authenticate there`,
      'check the registry host; a registry on a trusted network path can be pulled with --insecure',
    );
  }

  /** The error for a request that still got a 401 with the authorization answered: Basic credentials were refused, a token did not grant the pull. */
  deniedAfterRetry(): BangerError {
    return this.denied(401, this.authorization?.startsWith('Basic ') ? 'refused' : 'forbidden');
  }

  /**
   * The error for a 401/403 that authentication cannot get past: `refused`
   * when the credentials themselves were turned down, `forbidden` when they
   * (or a token obtained with them) do not allow pulling the repository.
   */
  denied(status: number, reason: 'refused' | 'forbidden' = status === 403 ? 'forbidden' : 'refused'): BangerError {
    const { registry, repository, credentials, note } = this.o;
    const config = this.o.configPath ?? '~/.docker/config.json';
    if (!credentials) {
      return new BangerError(
        'operation_failed',
        `registry ${registry} requires authentication to pull ${repository} (HTTP ${status}; or the repository does not exist)`,
        note ??
          `check the name; for a private image, run \`docker login ${registry}\` or add an "auths" entry for ${registry} with "auth" (base64 of "user:password") to ${config}`,
      );
    }
    if (reason === 'forbidden') {
      return new BangerError(
        'operation_failed',
        `registry ${registry} denied ${quoteInput(credentials.username)} access to ${repository} (HTTP ${status}; or the repository does not exist)`,
        `check the name, and that this account may pull it; the credentials come from ${credentials.source}`,
      );
    }
    return new BangerError(
      'operation_failed',
      `registry ${registry} refused the credentials of ${quoteInput(credentials.username)} from ${credentials.source}`,
      `log in again (\`docker login ${registry}\`) or fix the "auths" entry for ${registry} in ${credentials.source}`,
    );
  }
}
