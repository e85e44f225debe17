/**
 * Images users choose (issue 11): `banger image pull` from a real registry
 * (Debian's docker-registry on loopback, started here with its own storage)
 * of OCI images this file builds itself (test/support/test-images.ts) and
 * pushes with skopeo.
 *
 * The bootable base is a Debian rootfs from mmdebstrap (minbase plus the
 * guest contract's packages), made once per run and shared by the images
 * built on it. Only `image_pull_boot` boots a VM; the other scenarios look
 * at the published image file with debugfs (no mount, exact inode data).
 */
import { chmodSync, chownSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { spawnSync } from 'node:child_process';
import { check, ok, repoRoot, type Banger, type RunDirs } from './harness.js';
import type { Scenario } from './scenarios.js';
import { startRegistry, type Registry } from '../support/registry.js';
import { dockerSaveArchive, pushLayout, writeOciLayout } from '../support/oci-layout.js';
import { CONTRACT_PACKAGES, HOSTILE_KINDS, LINKS, WHITEOUT, hostileImage, linksImage, mmdebstrapTar, rootfsImage, whiteoutImage } from '../support/test-images.js';

interface Fixture {
  registry: Registry;
  baseTar: string;
  dir: string;
}

/** One registry and one base rootfs per smoke run, made by the first scenario that needs them. */
const fixtures = new Map<string, Promise<Fixture>>();

export function fixture(dirs: RunDirs, log: (l: string) => void): Promise<Fixture> {
  const key = dirs.root;
  let f = fixtures.get(key);
  if (!f) {
    f = (async () => {
      const dir = join(dirs.root, 'oci');
      mkdirSync(dir, { recursive: true });
      const registry = await startRegistry({ dir: join(dir, 'registry') });
      process.once('exit', () => void registry.stop());
      log(`registry on ${registry.url} (pid ${registry.pid})`);
      const base = await mmdebstrapTar(join(dir, 'base.tar'), { variant: 'minbase', include: CONTRACT_PACKAGES });
      log(`base rootfs: ${(base.bytes / 1048576).toFixed(0)} MiB tar in ${base.seconds.toFixed(0)} s`);
      return { registry, baseTar: base.path, dir };
    })();
    fixtures.set(key, f);
  }
  return f;
}

/** Stops the registries of this run (main.ts calls it once the scenarios are done). */
export async function stopImageFixtures(): Promise<void> {
  for (const f of fixtures.values()) await f.then((x) => x.registry.stop()).catch(() => undefined);
  fixtures.clear();
}

/** debugfs on a published image: `stat PATH` (mode, links, uid, inode) without mounting it. */
function debugfs(dirs: RunDirs, image: string, cmd: string): string {
  const img = join(dirs.stateDir, 'images', image, 'rootfs.ext4');
  const r = spawnSync('debugfs', ['-R', cmd, img], { encoding: 'utf8' });
  return r.stdout;
}

function inodeOf(stat: string): { inode: number; links: number; mode: string; uid: number; gid: number } {
  const inode = Number(/Inode: (\d+)/.exec(stat)?.[1] ?? -1);
  const links = Number(/Links: (\d+)/.exec(stat)?.[1] ?? -1);
  const mode = /Mode:\s+(0?[0-7]+)/.exec(stat)?.[1] ?? '?';
  const uid = Number(/User:\s+(\d+)/.exec(stat)?.[1] ?? -1);
  const gid = Number(/Group:\s+(\d+)/.exec(stat)?.[1] ?? -1);
  return { inode, links, mode: mode.replace(/^0(?=\d{4})/, ''), uid, gid };
}

async function imageRow(banger: Banger, name: string): Promise<{ sourceKind: string; sourceRef: string } | undefined> {
  const list = JSON.parse(await ok(banger, ['image', 'list', '--json'])) as Array<{ name: string; sourceKind: string; sourceRef: string }>;
  return list.find((i) => i.name === name);
}

export const imageScenarios: Scenario[] = [
  {
    name: 'image_pull_boot',
    description: 'image pull from a local registry (whiteouts, opaque dir), then vm run --image boots it; a second pull downloads nothing',
    run: async ({ banger, dirs, log }) => {
      const fx = await fixture(dirs, log);
      await whiteoutImage(join(fx.dir, 'wh'), { baseTar: fx.baseTar, tag: '1' });
      await pushLayout(join(fx.dir, 'wh'), fx.registry.url, 'smoke/whiteouts:1');
      const ref = `${fx.registry.url}/smoke/whiteouts:1`;
      const pulled = await banger(['image', 'pull', ref, '--name', 'smoke-wh']);
      check(pulled.code === 0, `pull: exit ${pulled.code}: ${pulled.stderr.slice(-800)}`);
      check(/layer 1\/3 .*: [\d.]+ \S+ in [\d.]+ s/.test(pulled.stderr), `no per-layer download line: ${pulled.stderr.slice(-600)}`);
      const row = await imageRow(banger, 'smoke-wh');
      check(row?.sourceKind === 'oci', `image list: ${JSON.stringify(row)}`);
      check(row.sourceRef.startsWith(`${ref}@sha256:`), `reference without its digest: ${row.sourceRef}`);
      try {
        const script = [
          '. /etc/os-release; echo "os=$ID-$VERSION_CODENAME"',
          `test -e ${WHITEOUT.deletedFile} && echo LEFT:deletedFile`,
          `test -e ${WHITEOUT.deletedDir} && echo LEFT:deletedDir`,
          `test -e ${WHITEOUT.baseDeleted} && echo LEFT:baseDeleted`,
          `echo "kept=$(cat ${WHITEOUT.keptFile})"`,
          `echo "opaque=$(ls -A ${WHITEOUT.opaqueDir} | tr '\\n' ,)"`,
          `test -f ${WHITEOUT.replaced} && echo "replaced=$(cat ${WHITEOUT.replaced})"`,
          `find / -xdev -name '${WHITEOUT.whiteoutPrefix}*' 2>/dev/null | head -3 | sed 's/^/WHITEOUT:/'`,
          'echo done',
        ].join('; ');
        const r = await banger(['vm', 'run', '--rm', '--image', 'smoke-wh', '--name', 'smoke-pulled', '--', 'sh', '-c', script]);
        check(r.code === 0, `vm run: exit ${r.code}: ${r.stderr.slice(-800)}`);
        const out = r.stdout;
        check(out.includes('os=debian-bookworm'), `os-release: ${out}`);
        check(!out.includes('LEFT:'), `whiteouts not applied: ${out}`);
        check(out.includes(`kept=${WHITEOUT.keptContent.trim()}`), `kept file: ${out}`);
        check(out.includes(`opaque=${WHITEOUT.opaqueListing.join(',')},`), `opaque dir: ${out}`);
        check(out.includes(`replaced=${WHITEOUT.replacedContent.trim()}`), `replaced dir: ${out}`);
        check(!out.includes('WHITEOUT:'), `whiteout files left in the image: ${out}`);
        check(out.includes('done'), `script did not finish: ${out}`);
      } finally {
        await banger(['vm', 'delete', '-f', 'smoke-pulled']);
      }
      const again = await banger(['image', 'pull', ref, '--name', 'smoke-wh', '--force']);
      check(again.code === 0, `second pull: exit ${again.code}: ${again.stderr.slice(-600)}`);
      check((again.stderr.match(/: in the cache/g) ?? []).length === 3, `second pull downloaded a layer: ${again.stderr.slice(-800)}`);
      await ok(banger, ['image', 'delete', 'smoke-wh']);
    },
  },
  {
    name: 'image_pull_links',
    description: 'a pulled image keeps hard links (one inode), setuid, setgid and sticky modes, numeric owners, symlinks and file capabilities',
    run: async ({ banger, dirs, log }) => {
      const fx = await fixture(dirs, log);
      const img = await linksImage(join(fx.dir, 'links'), { baseTar: fx.baseTar, tag: '1' });
      await pushLayout(join(fx.dir, 'links'), fx.registry.url, 'smoke/links:1');
      await ok(banger, ['image', 'pull', `${fx.registry.url}/smoke/links:1`, '--name', 'smoke-links']);
      try {
        const links = LINKS.hardlinks.map((p) => inodeOf(debugfs(dirs, 'smoke-links', `stat ${p}`)));
        check(links[0]!.inode > 0 && links.every((l) => l.inode === links[0]!.inode), `hard links do not share an inode: ${JSON.stringify(links)}`);
        check(links[0]!.links === 3, `link count ${links[0]!.links}, want 3`);
        const suid = inodeOf(debugfs(dirs, 'smoke-links', `stat ${LINKS.setuid}`));
        check(suid.mode.endsWith(LINKS.setuidMode) && suid.uid === 0, `setuid binary: ${JSON.stringify(suid)}`);
        check(inodeOf(debugfs(dirs, 'smoke-links', `stat ${LINKS.setgidDir}`)).mode.endsWith(LINKS.setgidMode), 'setgid dir mode');
        check(inodeOf(debugfs(dirs, 'smoke-links', `stat ${LINKS.stickyDir}`)).mode.endsWith(LINKS.stickyMode), 'sticky dir mode');
        const owned = inodeOf(debugfs(dirs, 'smoke-links', `stat ${LINKS.owned}`));
        check(`${owned.uid}:${owned.gid}` === LINKS.ownedIds && owned.mode.endsWith(LINKS.ownedMode), `owned file: ${JSON.stringify(owned)}`);
        check(debugfs(dirs, 'smoke-links', `stat ${LINKS.symlinkAbsolute}`).includes(`Fast link dest: "${LINKS.symlinkAbsoluteTarget}"`), 'absolute symlink target changed');
        if (img.extras.capability) {
          check(/security\.capability \(20\)/.test(debugfs(dirs, 'smoke-links', `ea_list ${LINKS.capability}`)), 'file capability lost');
        } else log('setcap unavailable here: the capability check was not run');
        if (img.extras.xattr) {
          check(debugfs(dirs, 'smoke-links', `ea_list ${LINKS.xattrFile}`).includes(`${LINKS.xattrName} (${LINKS.xattrValue.length}) = "${LINKS.xattrValue}"`), 'user xattr lost');
        }
      } finally {
        await banger(['image', 'delete', 'smoke-links']);
      }
    },
  },
  {
    name: 'image_pull_integrate',
    description: 'a minimal Debian image (no systemd, sshd or agent) gets them installed once, at pull time, in a build VM; the image then boots without network',
    run: async ({ banger, dirs, log }) => {
      const fx = await fixture(dirs, log);
      const minbase = await mmdebstrapTar(join(fx.dir, 'minbase.tar'), { variant: 'minbase' });
      log(`minbase rootfs: ${(minbase.bytes / 1048576).toFixed(0)} MiB tar in ${minbase.seconds.toFixed(0)} s`);
      await rootfsImage(join(fx.dir, 'minimal'), { baseTar: minbase.path, tag: '1' });
      await pushLayout(join(fx.dir, 'minimal'), fx.registry.url, 'smoke/minimal:1');
      const pulled = await banger(['image', 'pull', `${fx.registry.url}/smoke/minimal:1`, '--name', 'smoke-minimal']);
      check(pulled.code === 0, `pull: exit ${pulled.code}: ${pulled.stderr.slice(-1000)}`);
      check(/lacks systemd .*installed at pull time/.test(pulled.stderr), `no integration step announced: ${pulled.stderr.slice(0, 1500)}`);
      check(pulled.stderr.includes('banger-install: done'), 'the build VM did not finish its install');
      check((JSON.parse(await ok(banger, ['vm', 'list', '--json'])) as unknown[]).length === 0, 'the build VM was left behind');
      try {
        const r = await banger(['vm', 'run', '--rm', '--image', 'smoke-minimal', '--name', 'smoke-minimal-vm', '--', 'sh', '-c',
          '. /etc/os-release; echo "os=$ID"; systemctl is-system-running; ls /etc/ssh | grep -c ssh_host_; test -s /etc/machine-id && echo machine-id-ok']);
        check(r.code === 0, `vm run: exit ${r.code}: ${r.stderr.slice(-800)}`);
        check(r.stdout.includes('os=debian'), `os-release: ${r.stdout}`);
        check(/^running$/m.test(r.stdout), `systemd state: ${r.stdout}`);
        // one host key pair, the daemon's (the build VM's keys were scrubbed)
        check(/^2$/m.test(r.stdout), `host keys: ${r.stdout}`);
        check(r.stdout.includes('machine-id-ok'), `machine-id: ${r.stdout}`);
      } finally {
        await banger(['vm', 'delete', '-f', 'smoke-minimal-vm']);
        await banger(['image', 'delete', 'smoke-minimal']);
      }
    },
  },
  {
    name: 'image_import_docker_save',
    description: 'image import of a docker save archive (no registry) boots, with a layer of its own on top of the base',
    run: async ({ banger, dirs, log }) => {
      const fx = await fixture(dirs, log);
      const marker = join(fx.dir, 'import-marker');
      mkdirSync(join(marker, 'etc'), { recursive: true });
      writeFileSync(join(marker, 'etc/banger-imported'), 'from a docker save archive\n');
      const archive = await dockerSaveArchive(join(fx.dir, 'saved.tar'), { layers: [fx.baseTar, { path: marker, names: 'dot' }], repoTags: ['smoke/saved:1'] });
      const r = await banger(['image', 'import', archive.path, '--name', 'smoke-imported']);
      check(r.code === 0, `import: exit ${r.code}: ${r.stderr.slice(-800)}`);
      const row = await imageRow(banger, 'smoke-imported');
      check(row?.sourceKind === 'oci-archive' && row.sourceRef.includes('saved.tar'), `image list: ${JSON.stringify(row)}`);
      try {
        const run = await banger(['vm', 'run', '--rm', '--image', 'smoke-imported', '--name', 'smoke-imported-vm', '--', 'sh', '-c', '. /etc/os-release; echo "os=$ID"; cat /etc/banger-imported']);
        check(run.code === 0, `vm run: exit ${run.code}: ${run.stderr.slice(-600)}`);
        check(run.stdout.includes('os=debian') && run.stdout.includes('from a docker save archive'), `guest: ${run.stdout}`);
      } finally {
        await banger(['image', 'delete', 'smoke-imported']);
      }
    },
  },
  {
    name: 'image_build_packages',
    description: 'image build --minimal --packages adds the package to a new Debian image (mmdebstrap); a VM of it has it, without network',
    run: async ({ banger }) => {
      try {
        const b = await banger(['image', 'build', 'smoke-pkgs', '--minimal', '--packages', 'tree']);
        check(b.code === 0, `image build: exit ${b.code}: ${b.stderr.slice(-800)}`);
        const show = JSON.parse(await ok(banger, ['image', 'show', 'smoke-pkgs', '--json'])) as { packages: string[]; sourceRef: string };
        check(show.packages.includes('tree') && !show.packages.includes('build-essential'), `packages: ${show.packages.join(',')}`);
        check(show.sourceRef.startsWith('bookworm, minimal, +tree'), `reference: ${show.sourceRef}`);
        const r = await banger(['vm', 'run', '--rm', '--image', 'smoke-pkgs', '--name', 'smoke-pkgs-vm', '--', 'tree', '--version']);
        check(r.code === 0 && /^tree v/m.test(r.stdout), `tree in the VM: exit ${r.code}: ${r.stdout} ${r.stderr.slice(-400)}`);
      } finally {
        await banger(['image', 'delete', 'smoke-pkgs']);
      }
    },
  },
  {
    name: 'vm_commit',
    description: 'a package installed in a VM (--nat) is in the image vm commit makes of it; its work disk and identity are not',
    run: async ({ banger }) => {
      const vm = 'smoke-commit';
      try {
        await ok(banger, ['vm', 'create', '--name', vm, '--nat']);
        const install = await banger(['vm', 'exec', vm, '--', 'sh', '-c',
          'apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tree >/dev/null && echo committed-root > /etc/banger-commit-marker && echo work > /root/work-marker && cat /etc/machine-id']);
        check(install.code === 0, `install in the VM: exit ${install.code}: ${install.stderr.slice(-600)}`);
        const machineId = install.stdout.trim();
        await ok(banger, ['vm', 'stop', vm]);
        const running = await banger(['vm', 'commit', vm, 'smoke-committed']);
        check(running.code === 0, `commit: exit ${running.code}: ${running.stderr.slice(-600)}`);
        const row = await imageRow(banger, 'smoke-committed');
        check(row?.sourceKind === 'vm' && row.sourceRef.startsWith(vm), `image list: ${JSON.stringify(row)}`);
        const r = await banger(['vm', 'run', '--rm', '--image', 'smoke-committed', '--name', 'smoke-committed-vm', '--', 'sh', '-c',
          'tree --version; cat /etc/banger-commit-marker; test -e /root/work-marker && echo WORK-DISK-LEAKED; cat /etc/machine-id']);
        check(r.code === 0, `vm run on the committed image: exit ${r.code}: ${r.stderr.slice(-600)}`);
        check(/^tree v/m.test(r.stdout), `the installed package is not in the image: ${r.stdout}`);
        check(r.stdout.includes('committed-root'), `root disk changes lost: ${r.stdout}`);
        check(!r.stdout.includes('WORK-DISK-LEAKED'), 'the work disk (/root) went into the image');
        check(!r.stdout.includes(machineId), `the new VM has the committed VM's machine-id ${machineId}`);
      } finally {
        await banger(['vm', 'delete', '-f', 'smoke-committed-vm']);
        await banger(['vm', 'delete', '-f', vm]);
        await banger(['image', 'delete', 'smoke-committed']);
      }
    },
  },
  {
    name: 'image_pull_not_a_guest',
    description: 'an image whose distribution cannot be integrated (Alpine: no systemd) is refused naming what it lacks and why; nothing published, no build VM',
    run: async ({ banger, dirs, log }) => {
      const fx = await fixture(dirs, log);
      const tree = join(fx.dir, 'bare-tree');
      mkdirSync(join(tree, 'etc'), { recursive: true });
      writeFileSync(join(tree, 'etc/os-release'), 'PRETTY_NAME="Alpine Linux v3.20"\nID=alpine\n');
      writeFileSync(join(tree, 'etc/shadow'), 'root:*:19000:0:99999:7:::\n');
      await writeOciLayout(join(fx.dir, 'bare'), { layers: [{ path: tree, names: 'dot' }], tag: '1' });
      await pushLayout(join(fx.dir, 'bare'), fx.registry.url, 'smoke/bare:1');
      const r = await banger(['image', 'pull', `${fx.registry.url}/smoke/bare:1`, '--name', 'smoke-bare']);
      check(r.code !== 0, 'an image without sshd or the agent was accepted');
      check(/cannot boot as a banger guest: it lacks systemd \(as \/sbin\/init\), an SSH server \(sshd\), qemu-guest-agent/.test(r.stderr), `unclear refusal: ${r.stderr.slice(-600)}`);
      check(/OpenRC/.test(r.stderr), `the refusal does not say why Alpine cannot be integrated: ${r.stderr.slice(-600)}`);
      check(!r.stderr.includes('build VM'), 'a build VM was booted for an image that cannot be integrated');
      check((await imageRow(banger, 'smoke-bare')) === undefined, 'image listed after a refused pull');
      check(!existsSync(join(dirs.stateDir, 'images', 'smoke-bare')), 'image directory left behind');
    },
  },
  {
    name: 'image_pull_unprivileged',
    needs: 'root',
    description: "a daemon that is not root pulls an image: owners, setuid and root's files come out right in the ext4 (debugfs, no fakeroot)",
    run: async ({ dirs, log }) => {
      const fx = await fixture(dirs, log);
      await linksImage(join(fx.dir, 'unpriv-links'), { baseTar: fx.baseTar, tag: '1' });
      await pushLayout(join(fx.dir, 'unpriv-links'), fx.registry.url, 'smoke/unpriv-links:1');
      const user = `bpull${process.pid % 100000}`;
      const base = mkdtempSync('/tmp/banger-unpriv-pull-');
      chmodSync(base, 0o755);
      const home = join(base, 'home');
      const sh = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8', timeout: 20 * 60_000 });
      check(sh('useradd', ['--home-dir', home, '--create-home', '--shell', '/bin/sh', user]).status === 0, 'useradd failed');
      const env = [`PATH=${process.env.PATH ?? ''}`, `HOME=${home}`, 'NO_COLOR=1', ...['state', 'run', 'config', 'cache'].map((d) => `BANGER_${d.toUpperCase()}_DIR=${join(base, d)}`)];
      // Code the user can read: the checkout, or a copy of what runs (a CI clone under a 0700 temp dir is not).
      let code = repoRoot;
      if (sh('runuser', ['-u', user, '--', 'test', '-r', join(repoRoot, 'dist', 'src', 'cli', 'main.js')]).status !== 0) {
        code = join(base, 'code');
        mkdirSync(code);
        for (const d of ['bin', 'dist', 'node_modules', 'package.json']) cpSync(join(repoRoot, d), join(code, d), { recursive: true });
        log(`copied the code to ${code} (the checkout is not readable by ${user})`);
      }
      const bangerJs = join(code, 'bin', 'banger.js');
      const runAs = (args: string[]) => {
        log(`$ (as ${user}) banger ${args.join(' ')}`);
        const r = sh('runuser', ['-u', user, '--', 'env', '-i', ...env, process.execPath, bangerJs, ...args]);
        log(`  → exit ${r.status}; stderr: ${(r.stderr ?? '').trim().split('\n').slice(-4).join(' | ')}`);
        return r;
      };
      try {
        for (const d of ['state/images', 'run', 'config', 'cache']) mkdirSync(join(base, d), { recursive: true, mode: 0o700 });
        // banger's kernel comes from the default image: root built it, the user gets a copy (adopted from its manifest).
        const img = join(dirs.stateDir, 'images', 'bookworm');
        mkdirSync(join(base, 'state/images/bookworm'));
        for (const f of ['image.json', 'vmlinuz', 'initrd.img', 'rootfs.ext4']) check(sh('cp', ['--sparse=always', join(img, f), join(base, 'state/images/bookworm', f)]).status === 0, `copying ${f}`);
        writeFileSync(join(base, 'config', 'config.toml'), 'network = "user"\n');
        check(sh('chown', ['-R', `${user}:${user}`, base]).status === 0, 'chown');
        chownSync(base, 0, 0);
        const r = runAs(['image', 'pull', `${fx.registry.url}/smoke/unpriv-links:1`, '--name', 'unpriv-links']);
        check(r.status === 0, `pull as ${user}: exit ${r.status}: ${(r.stderr ?? '').slice(-800)}`);
        check(/owners and modes of \d+ entries set with debugfs/.test(r.stderr ?? ''), `no owner step in the pull: ${(r.stderr ?? '').slice(-800)}`);
        const ext4 = join(base, 'state/images/unpriv-links/rootfs.ext4');
        const stat = (p: string) => inodeOf(spawnSync('debugfs', ['-R', `stat ${p}`, ext4], { encoding: 'utf8' }).stdout);
        const owned = stat(LINKS.owned);
        check(`${owned.uid}:${owned.gid}` === LINKS.ownedIds && owned.mode.endsWith(LINKS.ownedMode), `owned file: ${JSON.stringify(owned)}`);
        const suid = stat(LINKS.setuid);
        check(suid.uid === 0 && suid.mode.endsWith(LINKS.setuidMode), `setuid binary: ${JSON.stringify(suid)}`);
        check(stat(LINKS.setgidDir).mode.endsWith(LINKS.setgidMode), `setgid dir: ${JSON.stringify(stat(LINKS.setgidDir))}`);
        const shadow = stat('/etc/shadow');
        check(shadow.uid === 0 && shadow.gid === 42, `/etc/shadow is ${shadow.uid}:${shadow.gid}, want 0:42 (root:shadow)`);
        const unit = stat('/usr/local/libexec/banger-guest-config');
        check(unit.uid === 0 && unit.gid === 0, `banger's own file is ${unit.uid}:${unit.gid}, want root's`);
        const root = stat('/');
        check(root.uid === 0, `/ is owned by ${root.uid}`);
      } finally {
        runAs(['daemon', 'stop']);
        sh('pkill', ['-u', user]);
        sh('userdel', ['-r', '-f', user]);
        rmSync(base, { recursive: true, force: true });
      }
    },
  },
  {
    name: 'image_pull_corrupt_blob',
    description: "a layer corrupted in the registry's storage is refused by its digest, with nothing published or cached",
    run: async ({ banger, dirs, log }) => {
      const fx = await fixture(dirs, log);
      const img = await linksImage(join(fx.dir, 'corrupt'), { tag: '1' });
      await pushLayout(join(fx.dir, 'corrupt'), fx.registry.url, 'smoke/corrupt:1');
      const layer = img.layers.at(-1)!;
      const blob = fx.registry.blobPath(layer.digest);
      const bytes = readFileSync(blob);
      bytes[bytes.length >> 1] ^= 0xff;
      writeFileSync(blob, bytes);
      const r = await banger(['image', 'pull', `${fx.registry.url}/smoke/corrupt:1`, '--name', 'smoke-corrupt']);
      check(r.code !== 0, 'a corrupted layer was accepted');
      check(r.stderr.includes(layer.digest.slice(0, 19)), `the error does not name the digest ${layer.digest}: ${r.stderr.slice(-600)}`);
      check((await imageRow(banger, 'smoke-corrupt')) === undefined, 'image listed after a refused pull');
      check(!existsSync(join(dirs.stateDir, 'images', 'smoke-corrupt')), 'image directory left behind');
      const cached = join(dirs.root, 'cache', 'blobs', 'sha256');
      const hex = layer.digest.slice(7);
      check(!existsSync(cached) || !readdirSync(cached).some((f) => f.startsWith(hex)), 'the corrupt blob stayed in the cache');
    },
  },
  {
    name: 'image_pull_auth_required',
    description: 'a registry that requires credentials and gets none: a clear error naming the registry and where credentials go',
    run: async ({ banger, dirs, log }) => {
      const fx = await fixture(dirs, log);
      const auth = { username: 'smoke', password: 'pw-' + process.pid };
      const reg = await startRegistry({ dir: join(fx.dir, 'auth-registry'), auth });
      try {
        await linksImage(join(fx.dir, 'authimg'), { tag: '1' });
        await pushLayout(join(fx.dir, 'authimg'), reg.url, 'smoke/private:1', { creds: auth });
        // The daemon looks for credentials in its user's ~/.docker/config.json: none for this registry.
        const r = await banger(['image', 'pull', `${reg.url}/smoke/private:1`, '--name', 'smoke-private']);
        check(r.code !== 0, 'pull without credentials succeeded');
        check(/authentication|credentials|unauthori[sz]ed/i.test(r.stderr) && r.stderr.includes(reg.url), `unclear error: ${r.stderr.slice(-600)}`);
        check(/config\.json/.test(r.stderr), `the hint does not say where credentials go: ${r.stderr.slice(-600)}`);
        check((await imageRow(banger, 'smoke-private')) === undefined, 'image listed after a refused pull');
      } finally {
        await reg.stop();
      }
    },
  },
  {
    name: 'image_pull_resume',
    description: 'a pull cut off mid-layer fails, and the next pull resumes the layer with a Range request instead of starting over',
    run: async ({ banger, dirs, log }) => {
      const fx = await fixture(dirs, log);
      // zstd: a base layer of another digest than the gzip one the other scenarios may have cached.
      const img = await whiteoutImage(join(fx.dir, 'resume'), { baseTar: fx.baseTar, tag: '1', compression: 'zstd' });
      await pushLayout(join(fx.dir, 'resume'), fx.registry.url, 'smoke/resume:1');
      const big = img.layers[0]!;
      const proxy = await cuttingProxy(fx.registry.url, big.digest, Math.floor(big.size / 2));
      try {
        const ref = `127.0.0.1:${proxy.port}/smoke/resume:1`;
        const first = await banger(['image', 'pull', ref, '--name', 'smoke-resume']);
        check(first.code !== 0, 'the cut-off pull succeeded');
        const second = await banger(['image', 'pull', ref, '--name', 'smoke-resume']);
        check(second.code === 0, `resumed pull: exit ${second.code}: ${second.stderr.slice(-600)}`);
        check(proxy.ranges.some((r) => r.startsWith('bytes=') && !r.startsWith('bytes=0-')), `no Range request resumed the layer: ${JSON.stringify(proxy.ranges)}`);
        await ok(banger, ['image', 'delete', 'smoke-resume']);
      } finally {
        await proxy.close();
      }
    },
  },
  {
    name: 'image_pull_hostile_layers',
    description: 'layers with ../ or absolute names, or writing through a symlink or hard link to the host, change nothing outside the image',
    run: async ({ banger, dirs, log }) => {
      const fx = await fixture(dirs, log);
      for (const kind of HOSTILE_KINDS) {
        const escape = join(fx.dir, `escape-${kind}`);
        const h = await hostileImage(join(fx.dir, `hostile-${kind}`), kind, escape, { tag: '1' });
        await pushLayout(join(fx.dir, `hostile-${kind}`), fx.registry.url, `smoke/hostile-${kind}:1`);
        const r = await banger(['image', 'pull', `${fx.registry.url}/smoke/hostile-${kind}:1`, '--name', `smoke-hostile-${kind}`]);
        log(`${kind}: exit ${r.code}`);
        for (const p of h.mustNotExist) check(!existsSync(p), `${kind}: ${p} was written outside the image`);
        for (const k of h.mustKeep) check(readFileSync(k.path, 'utf8') === k.content, `${kind}: ${k.path} was changed`);
        await banger(['image', 'delete', `smoke-hostile-${kind}`]);
      }
    },
  },
];

/**
 * An HTTP proxy to the registry that cuts the connection once, after `cutAt`
 * bytes of the blob `digest`, and records the Range headers of that blob's requests.
 */
async function cuttingProxy(upstream: string, digest: string, cutAt: number): Promise<{ port: number; ranges: string[]; close: () => Promise<void> }> {
  const [host, port] = upstream.split(':') as [string, string];
  const ranges: string[] = [];
  let cut = false;
  const server: Server = createServer((req, res) => {
    const isBlob = req.url?.endsWith(`/blobs/${digest}`) === true;
    if (isBlob) ranges.push(String(req.headers.range ?? ''));
    const up = request({ host, port: Number(port), method: req.method, path: req.url, headers: req.headers }, (ur: IncomingMessage) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      if (!isBlob || cut) return void ur.pipe(res);
      let sent = 0;
      ur.on('data', (chunk: Buffer) => {
        if (cut) return;
        if (sent + chunk.length >= cutAt) {
          res.write(chunk.subarray(0, cutAt - sent));
          cut = true;
          ur.destroy();
          res.socket?.destroy();
          return;
        }
        sent += chunk.length;
        res.write(chunk);
      });
      ur.on('end', () => res.end());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address();
  if (!addr || typeof addr === 'string') throw new Error('proxy has no port');
  return { port: addr.port, ranges, close: () => new Promise<void>((r) => server.close(() => r())) };
}
