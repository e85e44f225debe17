/**
 * `banger update` against real signed releases (issue 13): this checkout is
 * installed root-owned into a temporary prefix (`system install --prefix
 * --unit-dir`: nothing under /usr/local or /etc is touched), scripts/release
 * (src/release/tool.ts) builds a release 0.2.0-smoke.0 of it signed with a
 * key made for this run, and a loopback HTTP server serves it, plus two
 * tampered copies: one whose manifest changed after signing, one whose
 * artifact has a flipped byte. The INSTALLED banger runs the update.
 *
 * Every scenario checks the install is untouched afterwards: the same files
 * with the same contents and modes, `current` where it was, no staging or
 * download left beside it.
 */
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { makeKeyPair } from '../../src/release/sign.js';
import { installArtifactName, writeRelease } from '../../src/release/publish.js';
import { check, repoRoot, runLogged, type Banger, type CliResult, type RunDirs } from './harness.js';
import type { Scenario } from './scenarios.js';

const NEW_VERSION = '0.2.0-smoke.0';
const BROKEN_VERSION = '0.2.1-smoke.broken';

interface Fixture {
  root: string;
  prefix: string;
  unitDir: string;
  pubkey: string;
  otherPubkey: string;
  /** The release directory's top manifest, and the tampered ones'. */
  url: { good: string; badSig: string; badSha: string; broken: string };
  installedVersion: string;
  close(): void;
}

/** Made by the first update scenario of a run, shared by the rest, removed when the run's process exits. */
let fixture: Promise<Fixture> | undefined;
let made: Fixture | undefined;

/** Files, links and modes under the install, with content hashes: what "untouched" compares. */
function census(prefix: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      const st = lstatSync(p);
      const rel = relative(prefix, p);
      if (st.isSymbolicLink()) out.push(`${rel} -> ${readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.push(`${rel}/ ${(st.mode & 0o7777).toString(8)} ${st.uid}`);
        walk(p);
      } else out.push(`${rel} ${(st.mode & 0o7777).toString(8)} ${st.uid} ${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)}`);
    }
  };
  walk(prefix);
  return out;
}

function untouched(f: Fixture, before: string[]): void {
  const after = census(f.prefix);
  const gone = before.filter((l) => !after.includes(l));
  const added = after.filter((l) => !before.includes(l));
  check(gone.length === 0 && added.length === 0, `the install changed: ${[...gone.slice(0, 3).map((l) => `- ${l}`), ...added.slice(0, 3).map((l) => `+ ${l}`)].join(' | ')}`);
  const litter = readdirSync(join(f.prefix, 'lib', 'banger')).filter((n) => n.startsWith('.'));
  check(litter.length === 0, `left beside the install: ${litter.join(', ')}`);
}

function serve(dir: string): Promise<{ server: Server; base: string }> {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = join(dir, path);
    if (!file.startsWith(dir + sep) || !existsSync(file) || lstatSync(file).isDirectory()) {
      res.writeHead(404);
      return res.end();
    }
    res.end(readFileSync(file));
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${(server.address() as { port: number }).port}` })),
  );
}

async function makeFixture(dirs: RunDirs, log: (l: string) => void): Promise<Fixture> {
  const root = mkdtempSync(join(tmpdir(), 'banger-smoke-update-'));
  chmodSync(root, 0o755); // `nobody` runs the installed CLI in update_no_root
  const prefix = join(root, 'prefix');
  const unitDir = join(root, 'units');
  mkdirSync(unitDir);
  const env = { ...dirs.env };
  const node = process.execPath;
  const step = async (what: string, file: string, args: string[], cwd = repoRoot, timeoutMs = 5 * 60_000): Promise<CliResult> => {
    const r = await runLogged(log, file, args, { cwd, env, timeoutMs, label: what });
    check(r.code === 0, `${what} ${args.join(' ')} → exit ${r.code}: ${r.stderr.trim().split('\n').slice(-4).join(' | ')}`);
    return r;
  };
  await step('banger', node, [join(repoRoot, 'bin', 'banger.js'), 'system', 'install', '--prefix', prefix, '--unit-dir', unitDir, '--user', 'root']);
  // PREFIX/bin/banger is a wrapper that runs the install's node: it is run as a program, not by a node.
  const installedVersion = (await step('installed banger', join(prefix, 'bin', 'banger'), ['--version'])).stdout.trim();

  const keys = makeKeyPair();
  writeFileSync(join(root, 'release.key.pem'), keys.privateKeyPem, { mode: 0o600 });
  writeFileSync(join(root, 'release.pub.pem'), keys.publicKeyPem);
  writeFileSync(join(root, 'other.pub.pem'), makeKeyPair().publicKeyPem);
  const rel = join(root, 'releases');
  await step('scripts/release', node, [join(repoRoot, 'dist', 'src', 'release', 'tool.js'), 'build', '--key', join(root, 'release.key.pem'), '--out', join(rel, 'good'), '--version', NEW_VERSION]);

  // The manifest changed after it was signed (an artifact's digest swapped for another's).
  cpSync(join(rel, 'good'), join(rel, 'bad-sig'), { recursive: true });
  const m = readFileSync(join(rel, 'bad-sig', 'manifest.json'), 'utf8');
  writeFileSync(join(rel, 'bad-sig', 'manifest.json'), m.replace(/"sha256": "([0-9a-f])/, (_x, c: string) => `"sha256": "${c === '0' ? '1' : '0'}`));
  // A signed manifest, and an artifact with one flipped byte.
  cpSync(join(rel, 'good'), join(rel, 'bad-sha'), { recursive: true });
  const art = readdirSync(join(rel, 'bad-sha', NEW_VERSION)).find((n) => n.endsWith('.tar.gz'))!;
  const bytes = readFileSync(join(rel, 'bad-sha', NEW_VERSION, art));
  bytes[Math.floor(bytes.length / 2)] ^= 0x01;
  writeFileSync(join(rel, 'bad-sha', NEW_VERSION, art), bytes);

  // A release whose bangerd passes --check-migrations but exits 1 as a daemon.
  const brokenTree = join(root, 'broken-tree');
  mkdirSync(brokenTree);
  await step('tar', 'tar', ['-xzf', join(rel, 'good', NEW_VERSION, art), '-C', brokenTree]);
  const daemonMain = join(brokenTree, 'dist', 'src', 'daemon', 'main.js');
  writeFileSync(daemonMain, `if (!process.argv.includes('--check-migrations')) { console.error('bangerd: broken on purpose'); process.exit(1); }\n${readFileSync(daemonMain, 'utf8')}`);
  const pkgFile = join(brokenTree, 'package.json');
  writeFileSync(pkgFile, JSON.stringify({ ...(JSON.parse(readFileSync(pkgFile, 'utf8')) as object), version: BROKEN_VERSION }, null, 2));
  const brokenArt = join(root, installArtifactName(BROKEN_VERSION));
  await step('tar', 'tar', ['--owner=0', '--group=0', '--numeric-owner', '-czf', brokenArt, '-C', brokenTree, '.']);
  await writeRelease({ outDir: join(rel, 'broken'), version: BROKEN_VERSION, files: [brokenArt], privateKeyPem: keys.privateKeyPem });

  const { server, base } = await serve(rel);
  server.unref(); // the run's end does not wait for it; the exit handler removes the fixture
  log(`releases of ${NEW_VERSION} served at ${base} (good/, bad-sig/, bad-sha/); installed ${installedVersion} in ${prefix}`);
  return {
    root,
    prefix,
    unitDir,
    pubkey: join(root, 'release.pub.pem'),
    otherPubkey: join(root, 'other.pub.pem'),
    url: { good: `${base}/good/manifest.json`, badSig: `${base}/bad-sig/manifest.json`, badSha: `${base}/bad-sha/manifest.json`, broken: `${base}/broken/manifest.json` },
    installedVersion,
    close() {
      server.close();
      server.closeAllConnections();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

async function getFixture(dirs: RunDirs, log: (l: string) => void): Promise<Fixture> {
  if (!fixture) {
    fixture = makeFixture(dirs, log);
    process.once('exit', () => made?.close());
  }
  made = await fixture;
  return made;
}

/** Runs `body` with the run's fixture and the installed CLI's `update`, then checks the install is untouched. */
async function withFixture(dirs: RunDirs, log: (l: string) => void, body: (f: Fixture, update: (args: string[], asUser?: string) => Promise<CliResult>) => Promise<void>): Promise<void> {
  const f = await getFixture(dirs, log);
  const update = (args: string[], asUser?: string) => {
    const argv = ['update', '--prefix', f.prefix, ...args];
    const bin = join(f.prefix, 'bin', 'banger');
    return asUser
      ? runLogged(log, 'runuser', ['-u', asUser, '--', bin, ...argv], { cwd: '/', env: dirs.env, timeoutMs: 5 * 60_000, label: 'runuser' })
      : runLogged(log, bin, argv, { cwd: '/', env: dirs.env, timeoutMs: 5 * 60_000, label: 'installed banger' });
  };
  const before = census(f.prefix);
  await body(f, update);
  untouched(f, before);
  check(readlinkSync(join(f.prefix, 'lib', 'banger', 'current')) === f.installedVersion, 'current moved');
}

const failed = (r: CliResult, code: string, text: string, what: string) =>
  check(r.code !== 0 && r.stderr.includes(text), `${what} → exit ${r.code}, stderr ${JSON.stringify(r.stderr.trim().slice(0, 400))} (want a failure saying ${JSON.stringify(text)}, ${code})`);

export const updateScenarios: Scenario[] = [
  {
    name: 'update_check',
    needs: 'root',
    description: 'update --check against a signed release: reports the newer version; a manifest signed by another key is refused',
    run: async ({ dirs, log }) =>
      withFixture(dirs, log, async (f, update) => {
        const r = await update(['--check', '--json', '--manifest-url', f.url.good, '--pubkey-file', f.pubkey]);
        check(r.code === 0, `update --check → exit ${r.code}: ${r.stderr}`);
        const j = JSON.parse(r.stdout) as { current: string; latest: string; updateAvailable: boolean };
        check(j.current === f.installedVersion && j.latest === NEW_VERSION && j.updateAvailable, `update --check --json → ${r.stdout}`);
        const text = await update(['--check', '--manifest-url', f.url.good, '--pubkey-file', f.pubkey]);
        check(text.code === 0 && text.stdout.includes(`banger ${NEW_VERSION} is available`), `update --check → ${text.stdout}`);
        failed(await update(['--check', '--manifest-url', f.url.good, '--pubkey-file', f.otherPubkey]), 'verification_failed', 'the signature does not verify', 'update --check with another key');
        failed(await update(['--check', '--manifest-url', f.url.good]), 'verification_failed', 'the signature does not verify', 'update --check with the embedded key');
      }),
  },
  {
    name: 'update_to_unknown',
    needs: 'root',
    description: 'update --to a version the release directory lacks fails before anything is touched',
    run: async ({ dirs, log }) =>
      withFixture(dirs, log, async (f, update) => {
        failed(await update(['--to', '9.9.9', '--manifest-url', f.url.good, '--pubkey-file', f.pubkey]), 'not_found', 'there is no release 9.9.9', 'update --to 9.9.9');
        failed(await update(['--to', '../../etc', '--manifest-url', f.url.good, '--pubkey-file', f.pubkey]), 'bad_request', 'is not a version', 'update --to ../../etc');
      }),
  },
  {
    name: 'update_no_root',
    needs: 'root',
    description: 'update without root is refused before anything is read; the install is untouched',
    run: async ({ dirs, log }) =>
      withFixture(dirs, log, async (f, update) => {
        failed(await update(['--manifest-url', f.url.good, '--pubkey-file', f.pubkey], 'nobody'), 'bad_request', 'needs root', 'update as nobody');
        failed(await update(['--dry-run', '--manifest-url', f.url.good, '--pubkey-file', f.pubkey], 'nobody'), 'bad_request', 'needs root', 'update --dry-run as nobody');
        const check2 = await update(['--check', '--manifest-url', f.url.good, '--pubkey-file', f.pubkey], 'nobody');
        check(check2.code === 0 && check2.stdout.includes(NEW_VERSION), `update --check as nobody → exit ${check2.code}: ${check2.stderr}`);
      }),
  },
  {
    name: 'update_dry_run',
    needs: 'root',
    description: 'update --dry-run downloads, verifies and stages the release, runs its bangerd --check-migrations on the live state, then stops: version unchanged',
    run: async ({ dirs, log }) =>
      withFixture(dirs, log, async (f, update) => {
        const r = await update(['--dry-run', '--json', '--user', 'root', '--manifest-url', f.url.good, '--pubkey-file', f.pubkey]);
        check(r.code === 0, `update --dry-run → exit ${r.code}: ${r.stderr}`);
        const j = JSON.parse(r.stdout) as { staged: string; updated: boolean; migrations: string; sha256: string };
        check(j.staged === NEW_VERSION && j.updated === false && /schema version|does not exist yet/.test(j.migrations), `update --dry-run --json → ${r.stdout}`);
        const v = await runLogged(log, join(f.prefix, 'bin', 'banger'), ['--version'], { cwd: '/', env: dirs.env, timeoutMs: 60_000, label: 'installed banger' });
        check(v.stdout.trim() === f.installedVersion, `installed banger --version → ${v.stdout.trim()} after a dry run`);
      }),
  },
  // A tampered release is refused, by --dry-run and by the real run alike, with nothing left behind.
  ...(
    [
      ['update_bad_signature', 'a manifest changed after signing is refused before anything is downloaded or staged', 'badSig', 'the signature does not verify', 'a re-written manifest'],
      ['update_bad_sha', 'an artifact with one flipped byte is refused after download, before extraction; nothing is left beside the install', 'badSha', 'does not match the signed manifest', 'a corrupt artifact'],
    ] as const
  ).map(
    ([name, description, url, says, what]): Scenario => ({
      name,
      needs: 'root',
      description,
      run: async ({ dirs, log }) =>
        withFixture(dirs, log, async (f, update) => {
          failed(await update(['--dry-run', '--manifest-url', f.url[url], '--pubkey-file', f.pubkey]), 'verification_failed', says, `update --dry-run of ${what}`);
          failed(await update(['--manifest-url', f.url[url], '--pubkey-file', f.pubkey]), 'verification_failed', says, `update of ${what}`);
        }),
    }),
  ),
  {
    name: 'update_keeps_vm_alive',
    needs: 'root',
    exclusive: true,
    description: 'a real update of a root-owned install whose daemon owns a running VM: the daemon comes back as the new version, the VM answers SSH with the same boot_id',
    run: async ({ banger, dirs, log }) => withOwnInstall(banger, dirs, log, 'alive', async (f, installed, update) => {
        const vm = 'smoke-upd-alive';
        try {
          const c = await installed(['vm', 'create', '--name', vm]);
          check(c.code === 0, `installed vm create → exit ${c.code}: ${c.stderr.trim().slice(-300)}`);
          const bootId = async () => {
            const r = await installed(['vm', 'exec', vm, '--', 'cat', '/proc/sys/kernel/random/boot_id']);
            check(r.code === 0, `vm exec → exit ${r.code}: ${r.stderr.trim().slice(-300)}`);
            return r.stdout.trim();
          };
          const before = await bootId();
          const u = await update(['--json', '--user', 'root', '--manifest-url', f.url.good, '--pubkey-file', f.pubkey]);
          check(u.code === 0, `update → exit ${u.code}: ${u.stderr.trim().slice(-500)}`);
          const j = JSON.parse(u.stdout) as { current: string; previous: string; updated: boolean };
          check(j.updated && j.current === NEW_VERSION && j.previous === f.installedVersion, `update --json → ${u.stdout}`);
          const st = JSON.parse((await installed(['daemon', 'status', '--json'])).stdout) as { running: boolean; version: string };
          check(st.running && st.version === NEW_VERSION, `after the update the daemon is ${JSON.stringify(st)}`);
          const after = await bootId();
          check(after === before, `the VM rebooted (boot_id ${before} → ${after})`);
          const v = await installed(['--version']);
          check(v.stdout.trim() === NEW_VERSION, `installed banger --version → ${v.stdout.trim()}`);
        } finally {
          await installed(['vm', 'delete', '--force', vm]);
        }
      }),
  },
  {
    name: 'update_rollback_keeps_vm_alive',
    needs: 'root',
    exclusive: true,
    description: 'an update to a release whose daemon cannot start rolls back: the previous version is current and running again, the VM kept running',
    run: async ({ banger, dirs, log }) => withOwnInstall(banger, dirs, log, 'rollback', async (f, installed, update) => {
        const vm = 'smoke-upd-rollback';
        try {
          const c = await installed(['vm', 'create', '--name', vm]);
          check(c.code === 0, `installed vm create → exit ${c.code}: ${c.stderr.trim().slice(-300)}`);
          const bootId = async () => (await installed(['vm', 'exec', vm, '--', 'cat', '/proc/sys/kernel/random/boot_id'])).stdout.trim();
          const before = await bootId();
          const u = await update(['--user', 'root', '--manifest-url', f.url.broken, '--pubkey-file', f.pubkey]);
          check(u.code !== 0 && u.stderr.includes(`rolled back to ${f.installedVersion}`), `update to the broken release → exit ${u.code}: ${u.stderr.trim().slice(-500)}`);
          const st = JSON.parse((await installed(['daemon', 'status', '--json'])).stdout) as { running: boolean; version: string };
          check(st.running && st.version === f.installedVersion, `after the rollback the daemon is ${JSON.stringify(st)}`);
          const after = await bootId();
          check(after === before && after.length > 0, `the VM rebooted or is gone (boot_id ${before} → ${after})`);
        } finally {
          await installed(['vm', 'delete', '--force', vm]);
        }
      }),
  },
  {
    name: 'update_systemd',
    needs: 'root',
    description:
      'where PID 1 is systemd (a guest: this host has none): system install enables and starts the helper and daemon units; update swaps and restarts both (new main PIDs) and the daemon answers as the new version, run by systemd from the install',
    run: async ({ banger, dirs, log }) => {
      const f = await getFixture(dirs, log);
      // What the guest gets on its stdin (it has no curl): node, the installed tree; its update fetches the release
      // through QEMU's user networking, where 10.0.2.2 is this host's loopback.
      const share = join(f.root, 'guest');
      if (!existsSync(share)) {
        mkdirSync(share);
        const gz = spawnSync('sh', ['-c', 'gzip -1 -c "$1" > "$2"', 'sh', process.execPath, join(share, 'node.gz')], { encoding: 'utf8' });
        check(gz.status === 0, `gzip node: ${gz.stderr}`);
        const tar = spawnSync('tar', ['--owner=0', '--group=0', '--numeric-owner', '-czf', join(share, 'installed.tgz'), '-C', join(f.prefix, 'lib', 'banger', f.installedVersion), '.'], { encoding: 'utf8' });
        check(tar.status === 0, `tar of the install: ${tar.stderr}`);
      }
      const base = f.url.good.replace(/\/good\/manifest\.json$/, '').replace('127.0.0.1', '10.0.2.2');
      const vm = 'smoke-upd-systemd';
      const sh = async (what: string, script: string, input?: Buffer) => {
        const r = await banger(['vm', 'exec', vm, '--', 'sh', '-euc', script], { timeoutMs: 10 * 60_000, ...(input ? { input } : {}) });
        check(r.code === 0, `${what} (in the guest) → exit ${r.code}: ${r.stdout.trim().slice(-400)} ${r.stderr.trim().slice(-600)}`);
        return r.stdout.trim();
      };
      const pids = async () => (await sh('unit pids', 'systemctl show -p MainPID --value banger-helper.service bangerd-dev.service')).split(/\s+/);
      const status = async () => JSON.parse(await sh('daemon status', 'runuser -u dev -- /usr/local/bin/banger daemon status --json || true')) as { running: boolean; version: string; pid: number };
      try {
        const c = await banger(['vm', 'create', '--name', vm, '--nat', '--memory', '2048']);
        check(c.code === 0, `vm create → exit ${c.code}: ${c.stderr.trim().slice(-400)}`);
        check((await sh('pid 1', 'cat /proc/1/comm')) === 'systemd', 'PID 1 in the guest is not systemd');
        await sh('node', 'mkdir -p /opt/node/bin; gunzip > /opt/node/bin/node; chmod 755 /opt/node/bin/node; /opt/node/bin/node --version', readFileSync(join(share, 'node.gz')));
        await sh('the installed tree', 'mkdir -p /opt/banger-src; tar -xz -C /opt/banger-src', readFileSync(join(share, 'installed.tgz')));
        await sh('the release key', 'cat > /root/release.pub.pem', readFileSync(f.pubkey));
        await sh('a user', 'id dev >/dev/null 2>&1 || useradd -m dev');
        await sh('system install', '/opt/node/bin/node /opt/banger-src/bin/banger.js system install --user dev --node /opt/node/bin/node');
        await sh('units active', 'systemctl is-active banger-helper.service bangerd-dev.service >/dev/null || { systemctl status --no-pager banger-helper.service bangerd-dev.service; exit 1; }');
        // The daemon unit answers (it may take a few seconds to listen under TCG).
        let st = { running: false, version: '', pid: 0 };
        for (let i = 0; i < 60 && !st.running; i++) {
          st = await status();
          if (!st.running) await new Promise((r) => setTimeout(r, 1000));
        }
        check(st.running && st.version === f.installedVersion, `the installed daemon: ${JSON.stringify(st)}`);
        const before = await pids();
        check(before.length === 2 && before.every((p) => Number(p) > 0), `unit main PIDs before: ${before.join(' ')}`);
        const u = await sh('update', `/usr/local/bin/banger update --json --user dev --manifest-url ${base}/good/manifest.json --pubkey-file /root/release.pub.pem`);
        const j = JSON.parse(u) as { current: string; previous: string; updated: boolean; restart?: string };
        check(j.updated && j.current === NEW_VERSION && j.previous === f.installedVersion, `update --json → ${u}`);
        const after = await pids();
        check(after.length === 2 && after.every((p, i) => Number(p) > 0 && p !== before[i]), `systemd did not restart both units: main PIDs ${before.join(' ')} → ${after.join(' ')}`);
        st = await status();
        check(st.running && st.version === NEW_VERSION && String(st.pid) === after[1], `after the update the daemon is ${JSON.stringify(st)} (unit main PID ${after[1]})`);
        const where = await sh('what the units run', `readlink /usr/local/lib/banger/current; tr '\\0' ' ' < /proc/${after[1]}/cmdline; ls /usr/local/lib/banger`);
        check(where.split('\n')[0] === NEW_VERSION && where.includes('/usr/local/lib/banger/current/bin/bangerd.js') && where.includes(f.installedVersion), `after the update: ${where}`);
        log(`systemd restarted banger-helper and bangerd-dev: main PIDs ${before.join(' ')} → ${after.join(' ')}; daemon ${st.version}`);
      } finally {
        await banger(['vm', 'delete', '--force', vm]);
      }
    },
  },
];

/**
 * A root-owned install of this checkout of its own (`PREFIX` under the
 * fixture) whose daemon serves this run's state: the checkout's daemon is
 * stopped first and the installed one's stopped at the end, so the next
 * scenario's command starts the checkout's again.
 */
async function withOwnInstall(
  banger: Banger,
  dirs: RunDirs,
  log: (l: string) => void,
  name: string,
  body: (f: Fixture, installed: (args: string[]) => Promise<CliResult>, update: (args: string[]) => Promise<CliResult>) => Promise<void>,
): Promise<void> {
  const f = await getFixture(dirs, log);
  const prefix = join(f.root, `prefix-${name}`);
  const run = (file: string, args: string[], label: string, timeoutMs = 10 * 60_000) => runLogged(log, file, args, { cwd: '/', env: dirs.env, timeoutMs, label });
  const inst = await run(process.execPath, [join(repoRoot, 'bin', 'banger.js'), 'system', 'install', '--prefix', prefix, '--unit-dir', f.unitDir, '--user', 'root'], 'banger');
  check(inst.code === 0, `system install --prefix ${prefix} → exit ${inst.code}: ${inst.stderr.trim().slice(-300)}`);
  const installed = (args: string[]) => run(join(prefix, 'bin', 'banger'), args, 'installed banger');
  const update = (args: string[]) => run(join(prefix, 'bin', 'banger'), ['update', '--prefix', prefix, ...args], 'installed banger');
  const stop = await banger(['daemon', 'stop']);
  check(stop.code === 0, `daemon stop → exit ${stop.code}: ${stop.stderr.trim()}`);
  try {
    await body(f, installed, update);
  } finally {
    await installed(['daemon', 'stop']);
    rmSync(prefix, { recursive: true, force: true });
  }
}
