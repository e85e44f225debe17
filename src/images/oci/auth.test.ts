import { describe, it, expect, afterEach } from 'vitest';
import { BangerError } from '../../errors/errors.js';
import { Authenticator, parseChallenges } from './auth.js';
import { Transport, type Response } from './http.js';

describe('parseChallenges', () => {
  it('reads a Docker Hub style Bearer challenge', () => {
    expect(parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"')).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/debian:pull' } },
    ]);
  });

  it('keeps commas and escaped quotes inside quoted strings', () => {
    const [c] = parseChallenges('Bearer realm="https://a/t?x=1,y=2", scope="repository:a:pull,push", error="say \\"hi\\""');
    expect(c!.params).toEqual({ realm: 'https://a/t?x=1,y=2', scope: 'repository:a:pull,push', error: 'say "hi"' });
  });

  it('splits several challenges in one value and across repeated headers', () => {
    const got = parseChallenges(['Basic realm="r1", Bearer realm="https://t", service=svc', 'Negotiate']);
    expect(got.map((c) => c.scheme)).toEqual(['basic', 'bearer', 'negotiate']);
    expect(got[1]!.params).toEqual({ realm: 'https://t', service: 'svc' });
  });

  it('is case-insensitive in scheme and names, takes the first of a repeated name, reads token68', () => {
    expect(parseChallenges('BEARER Realm="a", REALM="b"')).toEqual([{ scheme: 'bearer', params: { realm: 'a' } }]);
    expect(parseChallenges('Custom abc123==')).toEqual([{ scheme: 'custom', params: {}, token68: 'abc123==' }]);
    expect(parseChallenges('Basic')).toEqual([{ scheme: 'basic', params: {} }]);
  });

  it('returns nothing for malformed or oversize values', () => {
    expect(parseChallenges('Bearer realm="unterminated')).toEqual([]);
    expect(parseChallenges('Bearer realm="a", service=@')).toEqual([]);
    expect(parseChallenges('Bearer realm="a" junk"')).toEqual([]);
    // `realm=` alone is a token68 by the grammar, not an empty parameter.
    expect(parseChallenges('Bearer realm=')[0]!.params).toEqual({});
    expect(parseChallenges('"quoted-scheme"')).toEqual([]);
    expect(parseChallenges(`Bearer realm="${'a'.repeat(9000)}"`)).toEqual([]);
    expect(parseChallenges(undefined)).toEqual([]);
  });
});

describe('Authenticator realm checks', () => {
  const transports: Transport[] = [];
  afterEach(async () => {
    await Promise.all(transports.splice(0).map((t) => t.close()));
  });

  const challenge = (value: string) => ({ statusCode: 401, headers: { 'www-authenticate': value } }) as unknown as Response;
  async function attempt(host: string, value: string, insecure = false): Promise<BangerError> {
    const transport = new Transport({ host, insecure, userAgent: 't' });
    transports.push(transport);
    const auth = new Authenticator({ transport, registry: host, repository: 'a/b', credentials: { username: 'u', password: 'p', source: '/x/config.json' } });
    try {
      await auth.onUnauthorized(challenge(value), 'test');
    } catch (e) {
      return e as BangerError;
    }
    throw new Error('no error');
  }

  it('never sends credentials to an http realm named by an https registry', async () => {
    const e = await attempt('registry.example', 'Bearer realm="http://127.0.0.1:1/token",service=x');
    expect(e.code).toBe('operation_failed');
    expect(e.message).toMatch(/token realm "http:\/\/127\.0\.0\.1:1\/token" over plain HTTP/);
  });

  it('refuses realms that are not http(s) URLs', async () => {
    expect((await attempt('registry.example', 'Bearer realm="file:///etc/passwd"')).message).toMatch(/not http\(s\)/);
    expect((await attempt('registry.example', 'Bearer realm="not a url"')).message).toMatch(/not a URL/);
  });

  it('with --insecure an http realm is allowed (and here unreachable: unavailable, not refused)', async () => {
    const e = await attempt('registry.example', 'Bearer realm="http://127.0.0.1:1/token"', true);
    expect(e.code).toBe('unavailable');
  });

  it('a 401 without a usable challenge is an authentication error naming the registry', async () => {
    const e = await attempt('registry.example', 'Negotiate');
    expect(e.message).toMatch(/registry registry\.example refused the credentials of "u" from \/x\/config\.json/);
  });
});
