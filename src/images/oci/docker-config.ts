/**
 * Registry credentials from Docker's client config (`$DOCKER_CONFIG/config.json`,
 * by default `~/.docker/config.json`), as `docker login` writes them: the
 * `auths` map, keyed by registry (`ghcr.io`, `https://index.docker.io/v1/`,
 * `http://host:5000/v2/`), each entry with `auth` (base64 of `user:password`)
 * or `username` + `password`.
 *
 * Not supported, and said so in the auth-required error only when the
 * registry has no plain entry: credential helpers (`credsStore`,
 * `credHelpers`: banger runs no helper programs) and `identitytoken`
 * entries (OAuth refresh tokens that need a helper-style exchange). An
 * anonymous pull of a public image still works with either configured.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { BangerError } from '../../errors/errors.js';
import { quoteInput } from '../../model/names.js';
import { DOCKER_HUB, DOCKER_HUB_API } from '../oci-ref.js';

export interface Credentials {
  username: string;
  password: string;
  /** Where they came from (the config file), for messages. */
  source: string;
}

export interface CredentialLookup {
  credentials?: Credentials;
  /** Why no credentials were found although the config mentions the registry (a helper, a token): for the auth-required hint. */
  note?: string;
  /** The config file consulted (it may not exist). */
  configPath: string;
}

const MAX_CONFIG_BYTES = 1024 * 1024;

const EntrySchema = z.object({
  auth: z.string().max(16 * 1024).optional(),
  username: z.string().max(4096).optional(),
  password: z.string().max(16 * 1024).optional(),
  identitytoken: z.string().max(64 * 1024).optional(),
});

const ConfigSchema = z.object({
  auths: z.record(z.string(), EntrySchema).optional(),
  credsStore: z.string().max(256).optional(),
  credHelpers: z.record(z.string(), z.string().max(256)).optional(),
});

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.DOCKER_CONFIG && env.DOCKER_CONFIG.length > 0 ? env.DOCKER_CONFIG : join(env.HOME || homedir(), '.docker');
  return join(dir, 'config.json');
}

/** An `auths` key reduced to host[:port]: scheme and path dropped, lower case. */
function keyHost(key: string): string {
  return key
    .replace(/^[a-z]+:\/\//i, '')
    .split('/')[0]!
    .toLowerCase();
}

/** The host names one registry is known by in a config (Docker Hub has several). */
function aliases(registry: string): string[] {
  const r = registry.toLowerCase();
  return r === DOCKER_HUB ? [DOCKER_HUB, 'index.docker.io', DOCKER_HUB_API] : [r];
}

function configError(path: string, why: string): BangerError {
  return new BangerError('bad_request', `the Docker config ${path} ${why}`, `fix the file (or point DOCKER_CONFIG at another directory); \`docker login\` writes a valid one`);
}

function decodeAuth(auth: string, path: string, key: string): { username: string; password: string } {
  const text = /^[A-Za-z0-9+/]*={0,2}$/.test(auth) ? Buffer.from(auth, 'base64').toString('utf8') : '';
  const colon = text.indexOf(':');
  if (colon <= 0) throw configError(path, `has an "auth" for ${quoteInput(key)} that is not base64 of "user:password"`);
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

/**
 * The credentials for `registry` (host[:port] as in an ImageRef). A missing
 * file means none; an unreadable or malformed file is a bad_request naming it.
 */
export function credentialsFor(registry: string, opts: { path?: string; env?: NodeJS.ProcessEnv } = {}): CredentialLookup {
  const configPath = opts.path ?? dockerConfigPath(opts.env);
  let text: string;
  try {
    const buf = readFileSync(configPath);
    if (buf.length > MAX_CONFIG_BYTES) throw configError(configPath, `is ${buf.length} bytes (max ${MAX_CONFIG_BYTES})`);
    text = buf.toString('utf8');
  } catch (e) {
    if (e instanceof BangerError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return { configPath };
    throw configError(configPath, `cannot be read (${(e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw configError(configPath, 'is not valid JSON');
  }
  const parsed = ConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw configError(configPath, `is not a Docker config (${issue ? `${issue.path.join('.')}: ${issue.message}` : 'unexpected shape'})`);
  }
  const cfg = parsed.data;
  const names = aliases(registry);
  const auths = Object.entries(cfg.auths ?? {});
  // An exact key first (as `docker login` writes it), then keys with a scheme or path.
  const entry = auths.find(([k]) => names.includes(k.toLowerCase())) ?? auths.find(([k]) => names.includes(keyHost(k)));

  let note: string | undefined;
  if (entry) {
    const [key, e] = entry;
    if (e.auth !== undefined && e.auth.length > 0) {
      return { configPath, credentials: { ...decodeAuth(e.auth, configPath, key), source: configPath } };
    }
    if (e.username !== undefined && e.username.length > 0 && e.password !== undefined) {
      return { configPath, credentials: { username: e.username, password: e.password, source: configPath } };
    }
    if (e.identitytoken !== undefined) {
      note = `the entry for ${quoteInput(key)} in ${configPath} holds only an identity token, which banger does not use: add "auth" (base64 of user:password or user:access-token) to it`;
    }
  }
  const helper = names.map((n) => cfg.credHelpers?.[n]).find((h) => h !== undefined) ?? cfg.credsStore;
  if (note === undefined && helper !== undefined && helper.length > 0) {
    note =
      `${configPath} keeps credentials in the credential helper ${quoteInput(`docker-credential-${helper}`)}, which banger does not run: ` +
      `add a plain "auths" entry for ${registry} ({"auth": base64 of "user:password"}) to ${configPath}, or to a config.json in a directory DOCKER_CONFIG points at`;
  }
  return note !== undefined ? { configPath, note } : { configPath };
}
