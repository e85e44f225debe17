/**
 * Self-check of the registry test support (not part of vitest): a real
 * docker-registry with and without auth, layouts built from a small tree,
 * pushed with skopeo, read back over the distribution API, blobs found in
 * the registry's storage, the test images' layers inspected, docker save
 * archives, and no registry process left behind (also when the Node
 * process that started one exits without stopping it, or is SIGKILLed).
 *
 *   npx tsc -p tsconfig.json --outDir /tmp/regcheck && echo '{"type":"module"}' > /tmp/regcheck/package.json
 *   node /tmp/regcheck/test/support/registry-selfcheck.js [--debian]
 *
 * `--debian` also times mmdebstrap (minbase, and minbase plus
 * CONTRACT_PACKAGES) into the work dir and builds the whiteout and links
 * images on the minbase tar (slow: a minute or two, needs the mirror).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, linkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REGISTRY_BIN, startRegistry, type Registry } from './registry.js';
import { dockerSaveArchive, pushLayout, sha256File, writeOciLayout, MT, type Descriptor } from './oci-layout.js';
import { CONTRACT_PACKAGES, HOSTILE_KINDS, LINKS, WHITEOUT, hostileImage, linksImage, mmdebstrapTar, whiteoutImage } from './test-images.js';

const work = mkdtempSync(join(tmpdir(), 'banger-regcheck-'));
const debian = process.argv.includes('--debian');
let failures = 0;
const say = (s: string) => console.log(s);
const check = (cond: unknown, what: string) => {
  say(`${cond ? 'ok  ' : 'FAIL'} ${what}`);
  if (!cond) failures++;
};
const ACCEPT = [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList].join(', ');

async function getManifest(reg: Registry, repo: string, ref: string, auth?: string): Promise<{ status: number; digest: string | null; type: string | null; body: string }> {
  const r = await fetch(`http://${reg.url}/v2/${repo}/manifests/${ref}`, { headers: { Accept: ACCEPT, ...(auth ? { Authorization: auth } : {}) } });
  return { status: r.status, digest: r.headers.get('docker-content-digest'), type: r.headers.get('content-type'), body: await r.text() };
}

/** Every blob a manifest names is in the registry's storage, with bytes matching its digest. */
async function checkBlobs(reg: Registry, manifestBody: string, label: string): Promise<void> {
  const m = JSON.parse(manifestBody) as { config: Descriptor; layers: Descriptor[] };
  for (const d of [m.config, ...m.layers]) {
    const p = reg.blobPath(d.digest);
    const ok = existsSync(p) && `sha256:${await sha256File(p)}` === d.digest;
    check(ok, `${label}: blob ${d.digest.slice(0, 19)}… (${d.mediaType.split('.').pop()}, ${d.size} B) at ${p.slice(reg.storageDir.length + 1)}`);
  }
}

/** Registry processes (live; zombies have no argv) whose argv names this run's work dir. */
function ourRegistries(): number[] {
  const pids: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      if (argv.includes(REGISTRY_BIN) && argv.some((a) => a.startsWith(work))) pids.push(Number(e));
    } catch {
      /* raced with exit */
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z');
  } catch {
    return false;
  }
}

/** A tree with a fake os-release, a hard link and an executable: enough for push and pull checks. */
function smallTree(dir: string): void {
  mkdirSync(join(dir, 'etc'), { recursive: true, mode: 0o755 });
  mkdirSync(join(dir, 'usr', 'bin'), { recursive: true, mode: 0o755 });
  writeFileSync(join(dir, 'etc', 'os-release'), 'ID=bangertest\nNAME="banger test"\n');
  writeFileSync(join(dir, 'usr', 'bin', 'hello'), '#!/bin/sh\necho hello\n', { mode: 0o755 });
  linkSync(join(dir, 'usr', 'bin', 'hello'), join(dir, 'usr', 'bin', 'hello-again'));
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !alive(pid);
}

/** Starts a registry from a separate Node process and ends that process (exit without stop, or SIGKILL): the registry must go with it. */
async function orphanCheck(how: 'exit' | 'sigkill'): Promise<void> {
  const modUrl = new URL('./registry.js', import.meta.url).href;
  const dir = join(work, `orphan-${how}`);
  const code = `const m = await import(${JSON.stringify(modUrl)}); const r = await m.startRegistry({ dir: ${JSON.stringify(dir)} }); console.log(r.pid); ${how === 'exit' ? 'process.exit(0);' : 'setInterval(() => {}, 1000);'}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = await new Promise<number>((res, rej) => {
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /^(\d+)\n/.exec(out);
      if (m) res(Number(m[1]));
    });
    child.on('exit', () => setTimeout(() => rej(new Error(`child exited before printing a pid: ${out}`)), 100));
  });
  if (how === 'sigkill') child.kill('SIGKILL');
  await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once('exit', r)));
  check(await waitGone(pid, 5000), `registry ${pid} gone after its Node process ${how === 'exit' ? 'called process.exit() without stop()' : 'was SIGKILLed'}`);
}

async function main(): Promise<void> {
  say(`work dir ${work}`);
  const creds = { username: 'tester', password: 'p4ss:word with spaces' };
  const open = await startRegistry({ dir: join(work, 'reg-open') });
  const closed = await startRegistry({ dir: join(work, 'reg-auth'), auth: creds });
  say(`registry (open) ${open.url} pid ${open.pid}; registry (htpasswd) ${closed.url} pid ${closed.pid}`);
  try {
    const tree = join(work, 'tree');
    mkdirSync(tree, { mode: 0o755 });
    smallTree(tree);
    const layout = join(work, 'layout');
    let t0 = Date.now();
    const gz = await writeOciLayout(layout, { layers: [tree], tag: 'v1' });
    const zs = await writeOciLayout(layout, { layers: [{ path: tree, names: 'bare' }], tag: 'zstd', compression: 'zstd' });
    const multi = await writeOciLayout(layout, { layers: [tree], tag: 'multi', extraPlatforms: [{ architecture: 'arm64', variant: 'v8' }] });
    say(`layouts built in ${Date.now() - t0} ms: v1 ${gz.manifestDigest}, zstd ${zs.manifestDigest}, multi (index) ${multi.digest}`);
    const skopeoInspect = spawnSync('skopeo', ['inspect', '--raw', `oci:${layout}:v1`], { encoding: 'utf8' });
    check(skopeoInspect.status === 0 && skopeoInspect.stdout.includes(gz.configDigest), 'skopeo reads the layout (oci:DIR:v1)');

    t0 = Date.now();
    const pushed = await pushLayout(layout, open.url, 'banger-test/tiny:v1');
    say(`pushed banger-test/tiny:v1 in ${Date.now() - t0} ms → ${pushed}`);
    const m1 = await getManifest(open, 'banger-test/tiny', 'v1');
    say(`GET /v2/banger-test/tiny/manifests/v1 → ${m1.status}, Docker-Content-Digest ${m1.digest}, ${m1.type}`);
    check(m1.status === 200 && m1.digest === pushed && pushed === gz.manifestDigest, 'manifest digest = pushed digest = layout digest (OCI, gzip: no conversion)');
    await checkBlobs(open, m1.body, 'v1');

    const pz = await pushLayout(layout, open.url, 'banger-test/tiny:zstd');
    const mz = await getManifest(open, 'banger-test/tiny', 'zstd');
    check(pz === zs.manifestDigest && mz.body.includes(MT.ociLayerZstd), `zstd layer kept as ${MT.ociLayerZstd} (${pz})`);
    await checkBlobs(open, mz.body, 'zstd');

    const pv = await pushLayout(layout, open.url, 'banger-test/tiny:v2s2', { format: 'v2s2', sourceTag: 'v1' });
    const mv = await getManifest(open, 'banger-test/tiny', 'v2s2');
    check(mv.type === MT.dockerManifest && mv.digest === pv, `--format v2s2 gives ${mv.type} (${pv})`);

    const pm = await pushLayout(layout, open.url, 'banger-test/tiny:multi');
    const mm = await getManifest(open, 'banger-test/tiny', 'multi');
    const idx = JSON.parse(mm.body) as { manifests: Descriptor[] };
    check(pm === multi.digest && mm.type === MT.ociIndex && idx.manifests.length === 2, `index pushed with --all: ${idx.manifests.map((d) => `${d.platform?.os}/${d.platform?.architecture}${d.platform?.variant ? `/${d.platform.variant}` : ''}`).join(', ')}`);
    for (const d of idx.manifests) check((await getManifest(open, 'banger-test/tiny', d.digest)).status === 200, `index entry ${d.digest.slice(0, 19)}… fetchable by digest`);

    // Auth.
    const noAuth = await fetch(`http://${closed.url}/v2/`);
    await noAuth.body?.cancel();
    check(noAuth.status === 401 && !!noAuth.headers.get('www-authenticate'), `auth registry: GET /v2/ without credentials → ${noAuth.status}, WWW-Authenticate: ${noAuth.headers.get('www-authenticate')}`);
    const noAuthManifest = await getManifest(closed, 'banger-test/tiny', 'v1');
    check(noAuthManifest.status === 401, `auth registry: GET manifest without credentials → ${noAuthManifest.status} ${noAuthManifest.body.trim()}`);
    const refused = await pushLayout(layout, closed.url, 'banger-test/tiny:v1').then(
      () => 'pushed',
      (e: unknown) => (e instanceof Error ? e.message : String(e)),
    );
    check(refused !== 'pushed', `auth registry: push without credentials refused: …${refused.slice(-140)}`);
    const pa = await pushLayout(layout, closed.url, 'banger-test/tiny:v1', { creds });
    const basic = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    const ma = await getManifest(closed, 'banger-test/tiny', 'v1', basic);
    check(ma.status === 200 && ma.digest === pa, `auth registry: push and GET with credentials → ${ma.status} ${ma.digest}`);
    const wrong = await getManifest(closed, 'banger-test/tiny', 'v1', `Basic ${Buffer.from('tester:wrong').toString('base64')}`);
    check(wrong.status === 401, `auth registry: wrong password → ${wrong.status}`);
    await checkBlobs(closed, ma.body, 'auth v1');

    // Test images without a base layer (the layer logic; the smoke scenarios add a Debian base).
    const imgs = join(work, 'images');
    t0 = Date.now();
    const wh = await whiteoutImage(imgs, { tag: 'whiteout' });
    const ln = await linksImage(imgs, { tag: 'links' });
    say(`whiteout and links layouts (no base) built in ${Date.now() - t0} ms; links extras: ${JSON.stringify(ln.extras)}`);
    const listLayer = (digest: string) => spawnSync('tar', ['--xattrs', '--xattrs-include=*', '-tvzf', join(imgs, 'blobs', 'sha256', digest.slice(7))], { encoding: 'utf8' }).stdout.trim().split('\n');
    const whTop = listLayer(wh.layers[1]!.digest);
    say(`whiteout image layer 2 (${wh.layers[1]!.size} B):\n    ${whTop.join('\n    ')}`);
    check(whTop.some((l) => l.endsWith('./srv/banger-wh/opaque/.wh..wh..opq')) && whTop.some((l) => l.endsWith('./etc/.wh.issue.net')), `whiteout layer has ${WHITEOUT.opaqueDir}/.wh..wh..opq and /etc/.wh.issue.net`);
    const lnLayer = listLayer(ln.layers[0]!.digest);
    say(`links image layer (${ln.layers[0]!.size} B):\n    ${lnLayer.join('\n    ')}`);
    check(lnLayer.some((l) => /^-rwsr-xr-x\s+0\/0 .*\.\/usr\/local\/bin\/banger-suid$/.test(l)), `links layer: ${LINKS.setuid} is 4755 root`);
    check(lnLayer.filter((l) => / link to /.test(l)).length === 2, 'links layer: two hard-link entries to the first name');
    const x = join(work, 'x');
    mkdirSync(x);
    const blob = join(imgs, 'blobs', 'sha256', ln.layers[0]!.digest.slice(7));
    const caps = spawnSync('sh', ['-c', `tar --xattrs --xattrs-include='*' -xzf "$1" -C "$2" && getcap "$2$3" && getfattr -n "$4" "$2$5"`, 'sh', blob, x, LINKS.capability, LINKS.xattrName, LINKS.xattrFile], { encoding: 'utf8' });
    check(caps.stdout.includes(LINKS.capabilityText) && caps.stdout.includes(`${LINKS.xattrName}="${LINKS.xattrValue}"`), `links layer extracted with GNU tar keeps the capability and the user xattr: ${caps.stdout.trim().replace(/\n/g, ' | ')}`);
    await pushLayout(imgs, open.url, 'banger-test/whiteout:latest', { sourceTag: 'whiteout' });
    await pushLayout(imgs, open.url, 'banger-test/links:latest', { sourceTag: 'links' });
    check(true, 'whiteout and links images pushed');

    const escapeDir = join(work, 'escape');
    for (const kind of HOSTILE_KINDS) {
      const h = await hostileImage(join(work, 'hostile'), kind, escapeDir);
      say(`hostile ${kind}: ${h.image.layers.length} layer(s): ${h.entries.map((e) => e.replace(/^\S+ \S+\s+\d+ \S+ \S+ /, '')).join(' ; ')}`);
      await pushLayout(join(work, 'hostile'), open.url, `banger-test/hostile:${kind}`);
    }
    check(!readdirSync(escapeDir).some((n) => n !== 'banger-hostile-hardlink-target'), 'building the hostile images wrote nothing else into the escape dir');

    // docker save archives.
    for (const style of ['legacy', 'oci'] as const) {
      const out = join(work, `save-${style}.tar`);
      const s = await dockerSaveArchive(out, { layers: [tree, { path: tree, names: 'bare' }], repoTags: ['banger-test/tiny:v1'], style });
      const names = spawnSync('tar', ['-tf', out], { encoding: 'utf8' }).stdout.trim().split('\n');
      const manifest = spawnSync('tar', ['-xOf', out, 'manifest.json'], { encoding: 'utf8' }).stdout;
      say(`docker save (${style}): ${names.length} entries: ${names.map((n) => n.replace(/[0-9a-f]{64}/g, (h) => `${h.slice(0, 8)}…`)).join(' ')}`);
      const layersField = (JSON.parse(manifest) as Array<{ Layers: string[] }>)[0]!.Layers;
      check(layersField.length === 2 && layersField.every((l) => names.includes(l)) && s.diffIds.length === 2, `docker save (${style}): manifest.json names 2 layers present in the archive`);
      const skopeoSave = spawnSync('skopeo', ['inspect', '--raw', `docker-archive:${out}`], { encoding: 'utf8' });
      check(skopeoSave.status === 0, `docker save (${style}): skopeo reads it as docker-archive:${skopeoSave.status === 0 ? '' : ` ${skopeoSave.stderr.trim()}`}`);
    }

    if (debian) await debianPart(open);
  } finally {
    await open.stop();
    await closed.stop();
  }
  check(!alive(open.pid) && !alive(closed.pid), `stop(): registry processes ${open.pid} and ${closed.pid} gone`);
  await orphanCheck('exit');
  await orphanCheck('sigkill');
  const left = ourRegistries();
  check(left.length === 0, `no ${REGISTRY_BIN} process of this run left${left.length ? `: ${left.join(', ')}` : ''}`);
}

async function debianPart(reg: Registry): Promise<void> {
  const minbase = await mmdebstrapTar(join(work, 'minbase.tar'));
  say(`mmdebstrap --variant=minbase bookworm: ${minbase.seconds.toFixed(1)} s, ${(minbase.bytes / 1e6).toFixed(0)} MB`);
  const full = await mmdebstrapTar(join(work, 'full.tar'), { include: CONTRACT_PACKAGES });
  say(`mmdebstrap --variant=minbase --include=${CONTRACT_PACKAGES.join(',')} bookworm: ${full.seconds.toFixed(1)} s, ${(full.bytes / 1e6).toFixed(0)} MB`);
  const imgs = join(work, 'debian-images');
  let t0 = Date.now();
  const wh = await whiteoutImage(imgs, { baseTar: minbase.path, tag: 'whiteout' });
  say(`whiteout image on minbase: ${((Date.now() - t0) / 1000).toFixed(1)} s (base layer ${(wh.layers[0]!.size / 1e6).toFixed(0)} MB gzip)`);
  t0 = Date.now();
  await linksImage(imgs, { baseTar: minbase.path, tag: 'links' });
  say(`links image on minbase (base blob reused): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  t0 = Date.now();
  await pushLayout(imgs, reg.url, 'banger-test/whiteout-debian:latest', { sourceTag: 'whiteout' });
  await pushLayout(imgs, reg.url, 'banger-test/links-debian:latest', { sourceTag: 'links' });
  say(`pushed both: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  rmSync(join(work, 'full.tar'));
}

try {
  await main();
} catch (e) {
  failures++;
  say(`FAIL ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
}
say(failures ? `${failures} check(s) failed (work dir kept: ${work})` : 'all checks passed');
if (!failures) rmSync(work, { recursive: true, force: true });
process.exitCode = failures ? 1 : 0;
