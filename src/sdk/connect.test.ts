/**
 * The CLI starting bangerd, end to end: the real CLI and daemon, run by node
 * from a transpiled copy of src/ (no type check, a second or two; dist/ may
 * be stale or absent), each with its own BANGER_*_DIR temp dirs.
 */
import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import ts from 'typescript';
import Database from 'better-sqlite3';
import { MIGRATIONS } from '../store/migrations.js';
import { isSameProcess, killProcess, waitForExit } from '../system/proc.js';

const repo = join(import.meta.dirname, '..', '..');
let build: string;
let work: string;
const made: Dirs[] = [];

function transpileTree(): string {
  const out = mkdtempSync(join(tmpdir(), 'banger-build-'));
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) {
        const js = ts.transpileModule(readFileSync(p, 'utf8'), {
          fileName: p,
          compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
        }).outputText;
        const dest = join(out, relative(repo, p)).replace(/\.ts$/, '.js');
        mkdirSync(dirname(dest), { recursive: true });
        writeFileSync(dest, js);
      }
    }
  };
  walk(join(repo, 'src'));
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string };
  writeFileSync(join(out, 'package.json'), JSON.stringify({ name: 'banger', version: pkg.version, type: 'module' }));
  symlinkSync(join(repo, 'node_modules'), join(out, 'node_modules'));
  return out;
}

interface Dirs {
  state: string;
  runtime: string;
  config: string;
  cache: string;
}

function dirs(name: string): Dirs {
  const base = join(work, name);
  const d = { state: join(base, 'state'), runtime: join(base, 'run'), config: join(base, 'config'), cache: join(base, 'cache') };
  mkdirSync(base, { mode: 0o700 });
  made.push(d);
  return d;
}

function envFor(d: Dirs): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: work,
    BANGER_STATE_DIR: d.state,
    BANGER_RUNTIME_DIR: d.runtime,
    BANGER_CONFIG_DIR: d.config,
    BANGER_CACHE_DIR: d.cache,
    BANGER_HELPER_SOCKET: join(work, 'no-helper.sock'),
    NO_COLOR: '1',
  };
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function run(script: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [join(build, script), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

const cli = (args: string[], d: Dirs) => run('src/cli/main.js', args, envFor(d));

/**
 * Ends the daemons this file's tests started (whatever the code under test
 * did): each runtime dir's lock names its daemon as "pid starttime".
 */
async function stopDaemons(): Promise<void> {
  for (const d of made.splice(0)) {
    const lock = join(d.runtime, 'bangerd.lock');
    let text = '';
    try {
      if (!lstatSync(lock).isSymbolicLink()) text = readFileSync(lock, 'utf8');
    } catch {
      continue;
    }
    const [pidText, start] = text.trim().split(' ');
    const pid = Number(pidText);
    if (!(pid > 0) || !start || !isSameProcess(pid, start)) continue;
    process.kill(pid, 'SIGTERM');
    if (!(await waitForExit(pid, start, 5000))) killProcess(pid, start, 'SIGKILL');
  }
}

beforeAll(() => {
  build = transpileTree();
  work = mkdtempSync(join(tmpdir(), 'banger-connect-'));
}, 60_000);

afterEach(stopDaemons);

afterAll(() => {
  rmSync(build, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
});

describe('the CLI starting bangerd', () => {
  it('a corrupt state.db: the CLI fails at once with the daemon\'s coded error, not stale bangerd.out text', async () => {
    const d = dirs('corrupt');
    mkdirSync(d.state, { mode: 0o700 });
    writeFileSync(join(d.state, 'state.db'), Buffer.alloc(16384, 0x5a));
    writeFileSync(join(d.state, 'bangerd.out'), 'bangerd: STALE TEXT FROM AN OLDER START\n');
    const r = await cli(['vm', 'list'], d);
    expect(r.code).toBe(1);
    expect(r.ms).toBeLessThan(5000);
    expect(r.stderr).toContain(`${join(d.state, 'state.db')} is not a usable state database`);
    expect(r.stderr).toContain('move it aside');
    expect(r.stderr).not.toContain('STALE TEXT');
    expect(r.stderr).not.toContain('did not start within');
  });

  it('a state.db from a newer banger: the CLI fails at once with the schema hint', async () => {
    const d = dirs('newer');
    mkdirSync(d.state, { mode: 0o700 });
    const db = new Database(join(d.state, 'state.db'));
    const newer = (MIGRATIONS.at(-1)?.version ?? 0) + 5;
    db.pragma(`user_version = ${newer}`);
    db.close();
    const r = await cli(['vm', 'list'], d);
    expect(r.code).toBe(1);
    expect(r.ms).toBeLessThan(5000);
    expect(r.stderr).toContain(`state.db is at schema version ${newer}, newer than this banger understands`);
    expect(r.stderr).toContain('use the newer banger that wrote it');
  });

  it('a group/world-writable runtime dir is refused by the CLI before it connects or starts anything', async () => {
    const d = dirs('open-runtime');
    mkdirSync(d.runtime);
    chmodSync(d.runtime, 0o777);
    // another user's socket, planted where the CLI looks for bangerd's: it must never be dialled
    let dialled = 0;
    const planted = createServer((s) => {
      dialled++;
      s.destroy();
    });
    await new Promise<void>((res) => planted.listen(join(d.runtime, 'bangerd.sock'), res));
    const status = await cli(['daemon', 'status'], d);
    expect(status.code).toBe(1);
    expect(status.stderr).toMatch(/unsafe runtime dir: .* is writable by others \(mode 0777\)/);
    expect(status.stderr).toContain('chmod 700');
    const r = await cli(['vm', 'list'], d);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unsafe runtime dir/);
    await new Promise((res) => planted.close(res));
    expect(dialled).toBe(0);
    expect(readdirSync(d.runtime)).toEqual([]);
    expect(existsSync(join(d.state, 'bangerd.out'))).toBe(false); // no daemon was started
  });

  it('the daemon itself refuses a 0777 runtime dir (and one owned by another uid) and writes nothing into it', async () => {
    const root = process.getuid?.() === 0; // chown to another uid needs root (the suite runs as root)
    for (const how of root ? (['0777', 'other-uid'] as const) : (['0777'] as const)) {
      const d = dirs(`daemon-${how}`);
      mkdirSync(d.runtime, { mode: 0o700 });
      if (how === '0777') chmodSync(d.runtime, 0o777);
      else chownSync(d.runtime, 4242, 4242);
      const r = await run('src/daemon/main.js', [], envFor(d), 10_000);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(how === '0777' ? /unsafe runtime dir: .* writable by others/ : /unsafe runtime dir: .* owned by uid 4242/);
      expect(r.stderr).toMatch(/^bangerd-start-failure \{"code":"operation_failed"/m);
      expect(readdirSync(d.runtime)).toEqual([]);
    }
  });

  it('a runtime dir that is a symlink is refused', async () => {
    const d = dirs('linked-runtime');
    const real = join(work, 'linked-runtime', 'real');
    mkdirSync(real, { mode: 0o700 });
    symlinkSync(real, d.runtime);
    const r = await cli(['vm', 'list'], d);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unsafe runtime dir: .* is a symbolic link/);
    expect(readdirSync(real)).toEqual([]);
  });

  it('pid and lock files planted as symlinks to a victim: the daemon starts, the victim is untouched', async () => {
    const d = dirs('pid-link');
    mkdirSync(d.runtime, { mode: 0o700 });
    const victim = join(work, 'pid-link', 'victim');
    writeFileSync(victim, 'precious\n', { mode: 0o600 });
    symlinkSync(victim, join(d.runtime, 'bangerd.pid'));
    symlinkSync(victim, join(d.runtime, 'bangerd.lock'));
    const r = await cli(['daemon', 'status', '--json'], d);
    expect(r.code).toBe(3); // not running: status never starts it
    const list = await cli(['vm', 'list', '--json'], d);
    expect(list.stderr).toBe('');
    expect(list.code).toBe(0);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
    expect(lstatSync(join(d.runtime, 'bangerd.pid')).isSymbolicLink()).toBe(false);
    expect(statSync(join(d.runtime, 'bangerd.pid')).mode & 0o777).toBe(0o600);
    expect(lstatSync(join(d.runtime, 'bangerd.lock')).isSymbolicLink()).toBe(false);
    expect(statSync(d.runtime).mode & 0o777).toBe(0o700);
  });
});
