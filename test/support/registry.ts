/**
 * A real OCI registry on loopback for tests: Debian's `docker-registry`
 * (distribution 2.8.2) run from its binary with its own config, storage and
 * log in a directory the caller owns.
 *
 * - Port: the config asks for `127.0.0.1:0`; 2.8.2 logs `listening on
 *   127.0.0.1:PORT` once bound, and that line is where the port comes from
 *   (no probe-then-bind race).
 * - Auth (optional): htpasswd (HTTP Basic) with a bcrypt hash made by the
 *   system's libcrypt through `perl -e 'crypt(...)'` (perl-base is Essential
 *   in Debian; `htpasswd` from apache2-utils is not installed here). An
 *   unauthenticated request gets 401 with `WWW-Authenticate: Basic realm=…`.
 * - Life: `stop()` sends SIGTERM to the registry's PID (SIGKILL after 5 s);
 *   a process 'exit' hook SIGKILLs it if the caller never stopped it, and the
 *   registry runs under `setpriv --pdeathsig KILL` (util-linux, Essential)
 *   so it dies with the Node process even when that one is SIGKILLed.
 * - Storage: filesystem driver, `delete: enabled: true`; a blob lives at
 *   `blobPath(digest)` (`docker/registry/v2/blobs/sha256/XX/HEX/data`), so a
 *   test can corrupt or remove it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';

export const REGISTRY_BIN = '/usr/bin/docker-registry';

export interface RegistryAuth {
  username: string;
  password: string;
}

export interface RegistryOptions {
  /** The registry's own directory: config.yml, htpasswd, registry.log and storage/ go here (created if missing). */
  dir: string;
  /** Require HTTP Basic auth with these credentials (htpasswd, bcrypt). */
  auth?: RegistryAuth;
  /** How long to wait for the port and for `GET /v2/` to answer (default 20 s). */
  startTimeoutMs?: number;
}

export interface Registry {
  /** `127.0.0.1:PORT`, the form skopeo (`docker://127.0.0.1:PORT/REPO:TAG`) and image references use. */
  url: string;
  /** The filesystem driver's root directory (`dir/storage`). */
  storageDir: string;
  /** The registry process's PID (the caller must not kill it by any other means than `stop`). */
  pid: number;
  /** Its log (stdout and stderr). */
  logPath: string;
  /** The credentials it requires, if any. */
  auth?: RegistryAuth;
  /** Stops the registry (idempotent); resolves once the process has exited. */
  stop(): Promise<void>;
  /** Where the registry keeps the blob `sha256:HEX` on disk. */
  blobPath(digest: string): string;
}

/** Kill switches of the registries this process started and has not stopped yet (one 'exit' hook for all). */
const liveRegistries = new Set<() => void>();
let exitHookInstalled = false;

/** Starts a registry; rejects (and leaves no process behind) if it does not answer `GET /v2/` in time. */
export async function startRegistry(opts: RegistryOptions): Promise<Registry> {
  if (!existsSync(REGISTRY_BIN)) throw new Error(`${REGISTRY_BIN} is missing (apt-get install docker-registry; scripts/setup.sh --test)`);
  const dir = resolve(opts.dir);
  const storageDir = join(dir, 'storage');
  mkdirSync(storageDir, { recursive: true });
  const configPath = join(dir, 'config.yml');
  const logPath = join(dir, 'registry.log');
  let authYaml = '';
  if (opts.auth) {
    if (opts.auth.username.includes(':') || /\s/.test(opts.auth.username)) throw new Error(`htpasswd user names cannot hold ':' or spaces: ${opts.auth.username}`);
    const htpasswd = join(dir, 'htpasswd');
    writeFileSync(htpasswd, `${opts.auth.username}:${bcryptHash(opts.auth.password)}\n`, { mode: 0o600 });
    authYaml = `auth:\n  htpasswd:\n    realm: banger-test-registry\n    path: ${JSON.stringify(htpasswd)}\n`;
  }
  // JSON strings are valid YAML scalars: paths with odd characters stay quoted.
  writeFileSync(
    configPath,
    [
      'version: 0.1',
      'log:',
      '  level: info',
      '  formatter: text',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${JSON.stringify(storageDir)}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      '  addr: 127.0.0.1:0',
      `  secret: ${randomBytes(16).toString('hex')}`,
      '',
    ].join('\n') + authYaml,
  );

  const log = createWriteStream(logPath, { flags: 'a' });
  const usePdeathsig = existsSync('/usr/bin/setpriv');
  const [cmd, args] = usePdeathsig
    ? ['/usr/bin/setpriv', ['--pdeathsig', 'KILL', '--', REGISTRY_BIN, 'serve', configPath]]
    : [REGISTRY_BIN, ['serve', configPath]];
  // Not detached: a Ctrl-C to the terminal's process group reaches it too.
  // setpriv execs the registry: the PID is the registry's own.
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let spawnError: Error | undefined;
  child.on('error', (e) => (spawnError = e));
  const pid = child.pid;
  if (pid === undefined) {
    log.end();
    throw new Error(`could not start ${REGISTRY_BIN}${spawnError ? `: ${spawnError.message}` : ''}`);
  }
  let exited = false;
  const exitedP = new Promise<void>((r) =>
    child.once('exit', () => {
      exited = true;
      r();
    }),
  );
  const killNow = () => {
    // Only while it is our unreaped child: its PID cannot have been reused.
    if (!exited) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  liveRegistries.add(killNow);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const k of liveRegistries) k();
    });
  }

  let port: number | undefined;
  let recent = '';
  const onPort: Array<() => void> = [];
  const scan = (chunk: Buffer) => {
    log.write(chunk);
    recent = (recent + chunk.toString()).slice(-8192);
    if (port === undefined) {
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(recent);
      if (m) {
        port = Number(m[1]);
        for (const f of onPort.splice(0)) f();
      }
    }
  };
  child.stdout.on('data', scan);
  child.stderr.on('data', scan);
  child.on('close', () => log.end());

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (!exited) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          /* already gone */
        }
        const timer = setTimeout(killNow, 5000);
        await exitedP;
        clearTimeout(timer);
      }
      liveRegistries.delete(killNow);
    })());

  const timeoutMs = opts.startTimeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  try {
    await new Promise<void>((res, rej) => {
      if (port !== undefined) return res();
      const timer = setTimeout(() => rej(new Error(`no "listening on" line within ${timeoutMs} ms`)), timeoutMs);
      onPort.push(() => {
        clearTimeout(timer);
        res();
      });
      void exitedP.then(() => {
        clearTimeout(timer);
        rej(new Error(`exited before listening (code ${child.exitCode}, signal ${child.signalCode})`));
      });
    });
    const url = `127.0.0.1:${port}`;
    for (;;) {
      try {
        const r = await fetch(`http://${url}/v2/`, { signal: AbortSignal.timeout(2000) });
        await r.body?.cancel();
        // 200 open, 401 with auth: either way it serves the API.
        if (r.status === 200 || r.status === 401) break;
        throw new Error(`GET /v2/ answered ${r.status}`);
      } catch (e) {
        if (exited) throw new Error('exited while starting');
        if (Date.now() > deadline) throw new Error(`GET http://${url}/v2/ did not answer within ${timeoutMs} ms: ${String(e)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    return {
      url,
      storageDir,
      pid,
      logPath,
      auth: opts.auth,
      stop,
      blobPath: (digest) => blobPathIn(storageDir, digest),
    };
  } catch (e) {
    await stop();
    const tail = readLogTail(logPath) || recent;
    throw new Error(`docker-registry (${configPath}) failed to start: ${e instanceof Error ? e.message : String(e)}\n${tail}`);
  }
}

/** Where a filesystem-driver registry rooted at `storageDir` keeps the blob `sha256:HEX`. */
export function blobPathIn(storageDir: string, digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new Error(`not a sha256 digest: ${digest}`);
  const hex = m[1]!;
  return join(storageDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

/**
 * A bcrypt (`$2b$`, cost 10) hash of `password`, as htpasswd files hold.
 * Node has no bcrypt; Debian's libcrypt (libxcrypt) has, and perl's `crypt`
 * calls it (python3's `crypt` module does too but is gone in 3.13).
 */
export function bcryptHash(password: string, cost = 10): string {
  // bcrypt's salt: 16 bytes in its own base64 alphabet (22 characters, no padding).
  const std = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const bc = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  const salt = [...randomBytes(16).toString('base64').replace(/=+$/, '')].map((c) => bc[std.indexOf(c)]).join('');
  const setting = `$2b$${String(cost).padStart(2, '0')}$${salt}`;
  // The password goes through stdin, not argv (argv is world-readable in /proc).
  const r = spawnSync('perl', ['-e', 'my $p = do { local $/; <STDIN> }; print crypt($p, $ARGV[0]) // ""', setting], { input: password, encoding: 'utf8' });
  const hash = r.stdout ?? '';
  if (r.status !== 0 || !/^\$2b\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
    throw new Error(`bcrypt through perl's crypt() failed (status ${r.status}): ${r.error?.message ?? r.stderr}${hash ? ` → ${hash}` : ''}`);
  }
  return hash;
}

function readLogTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}
