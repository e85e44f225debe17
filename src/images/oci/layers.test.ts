/**
 * The layer applier against hand-built tars (ustar/pax/GNU blocks written
 * here, so hostile entries can be crafted) and against node-tar's writer.
 * Runs as root on the CI machines (ownership is asserted when root).
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as tar from 'tar';
import { BangerError } from '../../errors/errors.js';
import { applyLayer, applyLayers, type LayerBlob } from './layers.js';
import { parsePax } from './pax.js';

const TAR = 'application/vnd.oci.image.layer.v1.tar';
const GZ = 'application/vnd.oci.image.layer.v1.tar+gzip';
const DOCKER_GZ = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
const ZST = 'application/vnd.oci.image.layer.v1.tar+zstd';
const isRoot = process.getuid?.() === 0;

// ---- a tiny tar writer ----------------------------------------------------

interface Ent {
  path: string;
  /** Tar type flag; '0' by default, '5' when the path ends in '/'. */
  type?: string;
  body?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkpath?: string;
  pax?: Record<string, string | Buffer>;
}

function octal(n: number, len: number): string {
  return `${n.toString(8).padStart(len - 1, '0')}\0`;
}

function header(e: { path: string; type: string; size: number; mode: number; uid: number; gid: number; mtime: number; linkpath?: string }): Buffer {
  const b = Buffer.alloc(512);
  b.write(e.path, 0, 100, 'utf8');
  b.write(octal(e.mode, 8), 100, 'latin1');
  b.write(octal(e.uid, 8), 108, 'latin1');
  b.write(octal(e.gid, 8), 116, 'latin1');
  b.write(octal(e.size, 12), 124, 'latin1');
  b.write(octal(e.mtime, 12), 136, 'latin1');
  b.write('        ', 148, 'latin1');
  b.write(e.type, 156, 'latin1');
  b.write(e.linkpath ?? '', 157, 100, 'utf8');
  b.write('ustar\0' + '00', 257, 'latin1');
  let sum = 0;
  for (const c of b) sum += c;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

function paxData(rec: Record<string, string | Buffer>): Buffer {
  const out: Buffer[] = [];
  for (const [k, v] of Object.entries(rec)) {
    const kv = Buffer.concat([Buffer.from(` ${k}=`), Buffer.isBuffer(v) ? v : Buffer.from(v), Buffer.from('\n')]);
    let len = kv.length + 1;
    while (String(len).length + kv.length !== len) len = String(len).length + kv.length;
    out.push(Buffer.concat([Buffer.from(String(len)), kv]));
  }
  return Buffer.concat(out);
}

function pad(b: Buffer): Buffer {
  const rest = (512 - (b.length % 512)) % 512;
  return Buffer.concat([b, Buffer.alloc(rest)]);
}

function tarOf(entries: Ent[], opts: { end?: boolean } = {}): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? (e.path.endsWith('/') ? '5' : '0');
    const body = typeof e.body === 'string' ? Buffer.from(e.body) : (e.body ?? Buffer.alloc(0));
    const base = { mode: e.mode ?? (type === '5' ? 0o755 : 0o644), uid: e.uid ?? 0, gid: e.gid ?? 0, mtime: e.mtime ?? 1_700_000_000 };
    if (e.pax !== undefined) {
      const data = paxData(e.pax);
      blocks.push(header({ ...base, path: 'PaxHeaders/x', type: 'x', size: data.length }), pad(data));
    }
    blocks.push(header({ ...base, path: e.path, type, size: body.length, linkpath: e.linkpath }), pad(body));
  }
  if (opts.end !== false) blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

// ---- fixtures -------------------------------------------------------------

let tmp: string;
let root: string;
let outside: string;
let seq = 0;

beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'banger-layers-'));
  root = join(tmp, 'root');
  outside = join(tmp, 'outside');
  mkdirSync(root);
  mkdirSync(join(outside, 'dir'), { recursive: true });
  writeFileSync(join(outside, 'keep'), 'keep');
  writeFileSync(join(outside, 'dir', 'file'), 'file');
});

afterEach(() => {
  rmSync(tmp, { recursive: true, force: true });
});

function blob(data: Buffer, mediaType = TAR): LayerBlob {
  const path = join(tmp, `layer-${seq++}`);
  writeFileSync(path, data);
  return { path, mediaType, digest: `sha256:${createHash('sha256').update(data).digest('hex')}` };
}

const layer = (entries: Ent[]): LayerBlob => blob(tarOf(entries));

/** Everything under `dir`: name, type, mode, content or link target. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      const r = `${rel}${name}`;
      if (st.isSymbolicLink()) out.push(`${r} -> ${readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.push(`${r}/ ${(st.mode & 0o7777).toString(8)}`);
        walk(p, `${r}/`);
      } else out.push(`${r} ${(st.mode & 0o7777).toString(8)} ${readFileSync(p, 'utf8')}`);
    }
  };
  walk(dir, '');
  return out;
}

/** The files next to root and outside: nothing new may appear there. */
const tmpListing = (): string[] => readdirSync(tmp).filter((n) => !n.startsWith('layer-')).sort();

async function refused(p: Promise<unknown>, message: RegExp, code = 'operation_failed'): Promise<BangerError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BangerError);
  const be = e as BangerError;
  expect(be.code).toBe(code);
  expect(be.message).toMatch(message);
  expect(be.hint).toBeTruthy();
  return be;
}

const mode = (p: string): number => lstatSync(p).mode & 0o7777;

// ---- tests ----------------------------------------------------------------

describe('applyLayer: contents', () => {
  it('extracts files, directories and implicit parents', async () => {
    const r = await applyLayer(root, layer([{ path: 'etc/', mode: 0o755 }, { path: 'etc/hostname', body: 'box\n' }, { path: 'usr/share/doc/x', body: 'doc' }]));
    expect(readFileSync(join(root, 'etc/hostname'), 'utf8')).toBe('box\n');
    expect(readFileSync(join(root, 'usr/share/doc/x'), 'utf8')).toBe('doc');
    expect(mode(join(root, 'usr/share'))).toBe(0o755);
    expect(r.entries).toBe(3);
    expect(r.bytes).toBe(7);
  });

  it('keeps setuid, setgid and sticky bits and exact directory modes, whatever the umask', async () => {
    const old = process.umask(0o077);
    try {
      await applyLayer(root, layer([
        { path: 'usr/bin/passwd', mode: 0o4755, body: 'x' },
        { path: 'usr/bin/chage', mode: 0o2755, gid: 42, body: 'x' },
        { path: 'tmp/', mode: 0o1777 },
        { path: 'ro/', mode: 0o555 },
        { path: 'ro/inside', mode: 0o600, body: 'x' },
        { path: 'plain', mode: 0o664, body: 'x' },
      ]));
    } finally {
      process.umask(old);
    }
    expect(mode(join(root, 'usr/bin/passwd'))).toBe(0o4755);
    expect(mode(join(root, 'usr/bin/chage'))).toBe(0o2755); // chown to gid 42 must not clear it
    expect(mode(join(root, 'tmp'))).toBe(0o1777);
    expect(mode(join(root, 'ro'))).toBe(0o555);
    expect(mode(join(root, 'ro/inside'))).toBe(0o600);
    expect(mode(join(root, 'plain'))).toBe(0o664);
  });

  it.runIf(isRoot)('keeps owners of files, directories and symlinks (as root)', async () => {
    await applyLayer(root, layer([
      { path: 'home/u/', uid: 1234, gid: 5678, mode: 0o700 },
      { path: 'home/u/f', uid: 1234, gid: 5678, body: 'x' },
      { path: 'home/u/l', type: '2', linkpath: 'f', uid: 1234, gid: 5678 },
    ]));
    for (const p of ['home/u', 'home/u/f', 'home/u/l']) {
      const st = lstatSync(join(root, p));
      expect([p, st.uid, st.gid]).toEqual([p, 1234, 5678]);
    }
  });

  it('does not chown when told not to keep owners, and says so', async () => {
    const r = await applyLayer(root, layer([{ path: 'f', uid: 1234, gid: 5678, body: 'x' }]), { preserveOwner: false });
    expect(statSync(join(root, 'f')).uid).toBe(process.getuid!());
    expect(r.warnings.join('\n')).toMatch(/owners are not kept/);
  });

  it('stores symlinks verbatim: absolute, relative, and ones pointing above the root', async () => {
    await applyLayer(root, layer([
      { path: 'usr/lib/x86_64-linux-gnu/ld.so', body: 'ld' },
      { path: 'lib', type: '2', linkpath: 'usr/lib' },
      { path: 'lib64/ld-linux.so', type: '2', linkpath: '/lib/x86_64-linux-gnu/ld.so' },
      { path: 'etc/localtime', type: '2', linkpath: '/usr/share/zoneinfo/Etc/UTC' },
      { path: 'bin/far', type: '2', linkpath: '../../../../../x' },
    ]));
    expect(readlinkSync(join(root, 'lib'))).toBe('usr/lib');
    expect(readlinkSync(join(root, 'lib64/ld-linux.so'))).toBe('/lib/x86_64-linux-gnu/ld.so');
    expect(readlinkSync(join(root, 'etc/localtime'))).toBe('/usr/share/zoneinfo/Etc/UTC');
    expect(readlinkSync(join(root, 'bin/far'))).toBe('../../../../../x');
  });

  it('keeps mtimes of files, symlinks and directories written into afterwards (pax sub-second included)', async () => {
    await applyLayer(root, layer([
      { path: 'd/', mtime: 1_500_000_000 },
      { path: 'd/f', mtime: 1_600_000_000, body: 'x' },
      { path: 'd/l', type: '2', linkpath: 'f', mtime: 1_400_000_000 },
      { path: 'd/p', body: 'x', pax: { mtime: '1600000000.5' } },
    ]));
    expect(statSync(join(root, 'd')).mtimeMs).toBe(1_500_000_000_000);
    expect(statSync(join(root, 'd/f')).mtimeMs).toBe(1_600_000_000_000);
    expect(lstatSync(join(root, 'd/l')).mtimeMs).toBe(1_400_000_000_000);
    expect(statSync(join(root, 'd/p')).mtimeMs).toBe(1_600_000_000_500);
  });

  it('hard links share an inode, and a later layer rewriting one name breaks the link', async () => {
    await applyLayer(root, layer([{ path: 'bin/a', body: 'same', mode: 0o755 }, { path: 'bin/b', type: '1', linkpath: 'bin/a' }, { path: 'bin/c', type: '1', linkpath: '/bin/a' }]));
    const a = statSync(join(root, 'bin/a'));
    expect(statSync(join(root, 'bin/b')).ino).toBe(a.ino);
    expect(statSync(join(root, 'bin/c')).ino).toBe(a.ino);
    expect(a.nlink).toBe(3);
    await applyLayer(root, layer([{ path: 'bin/a', body: 'new' }]));
    expect(readFileSync(join(root, 'bin/b'), 'utf8')).toBe('same');
    expect(readFileSync(join(root, 'bin/a'), 'utf8')).toBe('new');
  });

  it('replaces what a lower layer had with an entry of another type', async () => {
    await applyLayer(root, layer([{ path: 'a/', mode: 0o755 }, { path: 'a/deep/x', body: 'x' }, { path: 'b', body: 'file' }, { path: 'c/', mode: 0o755 }, { path: 'c/y', body: 'y' }]));
    await applyLayers(root, [layer([{ path: 'a', body: 'now a file' }, { path: 'b/', mode: 0o700 }, { path: 'b/inside', body: 'i' }, { path: 'c', type: '2', linkpath: '/etc' }])]);
    expect(readFileSync(join(root, 'a'), 'utf8')).toBe('now a file');
    expect(readFileSync(join(root, 'b/inside'), 'utf8')).toBe('i');
    expect(readlinkSync(join(root, 'c'))).toBe('/etc');
  });

  it('reads long names from pax and GNU headers, and tars node-tar writes', async () => {
    const long = `${'d'.repeat(120)}/${'f'.repeat(120)}`;
    const gnuName = `${'g'.repeat(150)}`;
    const gnu = Buffer.concat([
      header({ path: '././@LongLink', type: 'L', size: gnuName.length + 1, mode: 0, uid: 0, gid: 0, mtime: 0 }),
      pad(Buffer.from(`${gnuName}\0`)),
      header({ path: gnuName.slice(0, 100), type: '0', size: 3, mode: 0o644, uid: 0, gid: 0, mtime: 0 }),
      pad(Buffer.from('gnu')),
    ]);
    const data = Buffer.concat([tarOf([{ path: 'x', body: 'x', pax: { path: long } }], { end: false }), gnu, Buffer.alloc(1024)]);
    await applyLayer(root, blob(data));
    expect(readFileSync(join(root, long), 'utf8')).toBe('x');
    expect(readFileSync(join(root, gnuName), 'utf8')).toBe('gnu');

    const src = join(tmp, 'src');
    mkdirSync(join(src, 'a'.repeat(90), 'b'.repeat(90)), { recursive: true });
    writeFileSync(join(src, 'a'.repeat(90), 'b'.repeat(90), 'file'), 'node-tar');
    const made = join(tmp, 'made.tgz');
    await tar.c({ file: made, cwd: src, gzip: true }, ['.']);
    rmSync(src, { recursive: true });
    const r2 = await applyLayer(root, blob(readFileSync(made), GZ));
    expect(readFileSync(join(root, 'a'.repeat(90), 'b'.repeat(90), 'file'), 'utf8')).toBe('node-tar');
    expect(r2.entries).toBe(4);
  });

  it('skips device nodes and FIFOs with a warning, and reports every entry', async () => {
    const seen: string[] = [];
    const r = await applyLayer(root, layer([{ path: 'dev/null', type: '3' }, { path: 'run/fifo', type: '6' }, { path: 'ok', body: 'x' }]), { onEntry: (e) => seen.push(`${e.kind} ${e.path}`) });
    expect(existsSync(join(root, 'dev/null'))).toBe(false);
    expect(existsSync(join(root, 'run/fifo'))).toBe(false);
    expect(r.warnings.join('\n')).toMatch(/skipped "dev\/null", a device node/);
    expect(r.warnings.join('\n')).toMatch(/skipped "run\/fifo", a FIFO/);
    expect(seen).toEqual(['chardev dev/null', 'fifo run/fifo', 'file ok']);
  });
});

describe('applyLayers: whiteouts', () => {
  it('a whiteout deletes a lower file and is not extracted', async () => {
    const base = layer([{ path: 'a/f1', body: '1' }, { path: 'a/f2', body: '2' }]);
    await applyLayers(root, [base, layer([{ path: 'a/.wh.f1' }])]);
    expect(readdirSync(join(root, 'a'))).toEqual(['f2']);
  });

  it('a whiteout deletes a whole lower tree', async () => {
    const base = layer([{ path: 't/' }, { path: 't/sub/' }, { path: 't/sub/x', body: 'x' }, { path: 't/y', body: 'y' }, { path: 'u', body: 'u' }]);
    await applyLayers(root, [base, layer([{ path: '.wh.t' }])]);
    expect(readdirSync(root)).toEqual(['u']);
  });

  it('an opaque directory keeps what its own layer puts there, before and after the marker', async () => {
    const base = layer([{ path: 'd/old', body: 'o' }, { path: 'd/sub/deep', body: 'd' }, { path: 'e/old', body: 'e' }]);
    const upper = layer([{ path: 'd/' }, { path: 'd/before', body: 'b' }, { path: 'd/.wh..wh..opq' }, { path: 'd/after', body: 'a' }]);
    await applyLayers(root, [base, upper]);
    expect(readdirSync(join(root, 'd')).sort()).toEqual(['after', 'before']);
    expect(readdirSync(join(root, 'e'))).toEqual(['old']);
  });

  it('a whiteout does not delete what its own layer adds, and aufs meta names are skipped', async () => {
    await applyLayers(root, [layer([{ path: 'f', body: 'old' }]), layer([{ path: 'f', body: 'new' }, { path: '.wh.f' }, { path: '.wh..wh.plnk/' }, { path: '.wh..wh.aufs', body: 'x' }])]);
    expect(readdirSync(root)).toEqual(['f']);
    expect(readFileSync(join(root, 'f'), 'utf8')).toBe('new');
  });

  it('a whiteout naming "." or ".." is refused', async () => {
    mkdirSync(join(root, 'a/b'), { recursive: true });
    await refused(applyLayer(root, layer([{ path: 'a/b/.wh...' }])), /names the parent directory/);
    await refused(applyLayer(root, layer([{ path: 'a/b/.wh..' }])), /names its own directory/);
    expect(existsSync(join(root, 'a/b'))).toBe(true);
  });
});

describe('applyLayers: containment', () => {
  it('refuses an entry with ".." and writes nothing at all', async () => {
    const before = tmpListing();
    const far = `escaped-${basename(tmp)}`; // lands next to tmp if the check fails
    await refused(applyLayer(root, layer([{ path: 'fine', body: 'x' }, { path: '../escaped', body: 'x' }, { path: `a/../../../${far}`, body: 'x' }])), /entry "\.\.\/escaped".*"\.\." component/);
    expect(tmpListing()).toEqual(before);
    expect(existsSync(join(tmp, '..', far))).toBe(false);
    expect(readdirSync(root)).toEqual([]); // the first pass refused the layer before anything changed
    const e = await refused(applyLayer(root, layer([{ path: 'x/../../y', body: 'x' }])), /"\.\." component/);
    expect(e.hint).toMatch(/would reach outside its root/);
  });

  it('reads an absolute entry name inside the root', async () => {
    const target = join(outside, 'abs-pwned');
    await applyLayer(root, layer([{ path: target, body: 'x' }, { path: '/etc/abs', body: 'y' }]));
    expect(existsSync(target)).toBe(false);
    expect(readFileSync(join(root, target), 'utf8')).toBe('x');
    expect(readFileSync(join(root, 'etc/abs'), 'utf8')).toBe('y');
  });

  it('never writes through a symlink a lower layer planted (absolute or ../..)', async () => {
    const before = snapshot(outside);
    const l1 = layer([{ path: 'evil', type: '2', linkpath: outside }, { path: 'rel', type: '2', linkpath: '../outside' }, { path: 'etc/passwd', type: '2', linkpath: join(outside, 'keep') }]);
    const l2 = layer([
      { path: 'evil/pwned', body: 'x' },
      { path: 'evil/keep', body: 'overwritten' },
      { path: 'evil/newdir/', mode: 0o777 },
      { path: 'rel/dir/file', body: 'overwritten' },
      { path: 'rel/dir/', mode: 0o777 },
      { path: 'etc/passwd', body: 'root:x:0:0::/root:/bin/sh\n', mode: 0o644 },
    ]);
    const r = await applyLayers(root, [l1, l2]);
    expect(snapshot(outside)).toEqual(before);
    expect(readlinkSync(join(root, 'evil'))).toBe(outside);
    expect(lstatSync(join(root, 'etc/passwd')).isFile()).toBe(true); // the link itself was replaced, its target untouched
    expect(r.warnings.filter((w) => /is a symlink, and nothing is written through one/.test(w))).toHaveLength(5);
  });

  it('never writes through a symlink planted earlier in the same layer', async () => {
    const before = snapshot(outside);
    await applyLayer(root, layer([{ path: 'evil', type: '2', linkpath: outside }, { path: 'evil/pwned', body: 'x' }, { path: 'evil/dir/file', body: 'x' }]));
    expect(snapshot(outside)).toEqual(before);
    expect(tmpListing()).toEqual(['outside', 'root']);
  });

  it('refuses hard links that leave the root, go through a symlink, or name nothing', async () => {
    await applyLayer(root, layer([{ path: 'evil', type: '2', linkpath: outside }]));
    await refused(applyLayer(root, layer([{ path: 'stolen', type: '1', linkpath: '../../etc/passwd' }])), /entry "stolen": the hard link's target "\.\.\/\.\.\/etc\/passwd": the name has a "\.\." component/);
    await refused(applyLayer(root, layer([{ path: 'stolen', type: '1', linkpath: 'evil/keep' }])), /reached through the symlink "evil"/);
    await refused(applyLayer(root, layer([{ path: 'stolen', type: '1', linkpath: join(outside, 'keep') }])), /does not exist/);
    await refused(applyLayer(root, layer([{ path: 'stolen', type: '1', linkpath: 'nothing/here' }])), /does not exist/);
    expect(existsSync(join(root, 'stolen'))).toBe(false);
    expect(statSync(join(outside, 'keep')).nlink).toBe(1);
  });

  it('a whiteout or opaque marker under a symlinked directory deletes nothing', async () => {
    const before = snapshot(outside);
    const l1 = layer([{ path: 'evil', type: '2', linkpath: outside }, { path: 'rel', type: '2', linkpath: '../outside' }]);
    const l2 = layer([{ path: 'evil/.wh.keep' }, { path: 'rel/.wh.dir' }, { path: 'evil/dir/.wh..wh..opq' }, { path: 'rel/.wh..wh..opq' }]);
    const r = await applyLayers(root, [l1, l2]);
    expect(snapshot(outside)).toEqual(before);
    expect(r.warnings.join('\n')).toMatch(/whiteout of evil\/keep ignored: evil is a symlink/);
  });

  it('a whiteout of a symlink, or of a tree holding one, deletes the link and not its target', async () => {
    const before = snapshot(outside);
    const l1 = layer([{ path: 'evil', type: '2', linkpath: outside }, { path: 'd/' }, { path: 'd/ln', type: '2', linkpath: outside }, { path: 'd/rel', type: '2', linkpath: '../../outside/dir' }]);
    await applyLayers(root, [l1, layer([{ path: '.wh.evil' }, { path: '.wh.d' }])]);
    expect(readdirSync(root)).toEqual([]);
    expect(snapshot(outside)).toEqual(before);
  });
});

describe('applyLayer: formats and damage', () => {
  const content = (): Buffer => tarOf([{ path: 'etc/os-release', body: 'ID=debian\n' }]);

  it('applies gzip (OCI and Docker media types) and zstd layers', async () => {
    await applyLayer(root, blob(gzipSync(Buffer.concat([content(), Buffer.alloc(9 * 1024)])), GZ)); // GNU tar's record padding

    expect(readFileSync(join(root, 'etc/os-release'), 'utf8')).toBe('ID=debian\n');
    rmSync(join(root, 'etc'), { recursive: true });
    await applyLayer(root, blob(gzipSync(content()), DOCKER_GZ));
    expect(existsSync(join(root, 'etc/os-release'))).toBe(true);
    rmSync(join(root, 'etc'), { recursive: true });
    const zst = execFileSync('/usr/bin/zstd', ['-q', '-c', '-19'], { input: content() });
    expect(zst.subarray(0, 4)).toEqual(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    await applyLayer(root, blob(zst, ZST));
    expect(readFileSync(join(root, 'etc/os-release'), 'utf8')).toBe('ID=debian\n');
  });

  it('refuses a blob whose first bytes do not match its media type', async () => {
    const zst = execFileSync('/usr/bin/zstd', ['-q', '-c'], { input: content() });
    await refused(applyLayer(root, blob(content(), GZ)), /media type says gzip, but its first bytes are not gzip/);
    await refused(applyLayer(root, blob(gzipSync(content()), TAR)), /says an uncompressed tar, but its first bytes are gzip/);
    await refused(applyLayer(root, blob(gzipSync(content()), ZST)), /says zstd, but its first bytes are gzip/);
    await refused(applyLayer(root, blob(zst, GZ)), /says gzip, but its first bytes are zstd/);
    await refused(applyLayer(root, blob(content(), 'application/vnd.oci.image.layer.v1.tar+bzip2')), /media type "application\/vnd\.oci\.image\.layer\.v1\.tar\+bzip2" is not one banger applies/);
    expect(readdirSync(root)).toEqual([]);
  });

  it('refuses truncated or damaged layers, naming the layer', async () => {
    const big = tarOf([{ path: 'a', body: Buffer.alloc(200_000, 7) }, { path: 'b', body: 'b' }]);
    const gz = gzipSync(big);
    const b1 = blob(gz.subarray(0, gz.length - 10), GZ);
    const e = await refused(applyLayer(root, b1), /damaged: gzip: unexpected end of file/);
    expect(e.message).toContain(b1.digest);
    const zst = execFileSync('/usr/bin/zstd', ['-q', '-c'], { input: big });
    await refused(applyLayer(root, blob(zst.subarray(0, zst.length - 20), ZST)), /damaged: zstd/);
    await refused(applyLayer(root, blob(big.subarray(0, 100_000))), /entry "a": the archive ends inside this entry/);
    await refused(applyLayer(root, blob(tarOf([{ path: 'a', body: 'x' }], { end: false }))), /without its end-of-archive marker/);
    const bad = Buffer.from(big);
    bad[10] = 0x41; // a byte of the first header's name: the checksum no longer matches
    await refused(applyLayer(root, blob(bad)), /checksum mismatch/);
    await refused(applyLayer(root, blob(Buffer.from('not a tar at all'.repeat(64)))), /checksum mismatch/);
    await refused(applyLayer(root, blob(Buffer.concat([content(), Buffer.alloc(2 * 1024 * 1024)]))), /more than 1048576 bytes follow the end-of-archive marker/);
    await refused(applyLayer(root, { path: join(tmp, 'missing'), mediaType: TAR, digest: 'sha256:00' }), /is missing/);
    expect(readdirSync(root)).toEqual([]);
  });

  it('bounds entries, bytes (over all layers) and name length', async () => {
    const five = [1, 2, 3, 4, 5].map((i) => ({ path: `f${i}`, body: 'x' }));
    await refused(applyLayer(root, layer(five), { maxEntries: 3 }), /more than 3 entries/);
    await refused(applyLayer(root, layer([{ path: 'big', body: Buffer.alloc(100) }]), { maxBytes: 10 }), /more than 10 bytes/);
    const hundred = (): LayerBlob => layer([{ path: `h${seq}`, body: Buffer.alloc(100) }]);
    await refused(applyLayers(root, [hundred(), hundred()], { maxBytes: 150 }), /more than 50 bytes/);
    await refused(applyLayer(root, layer([{ path: 'x', body: 'x', pax: { path: `${'a/'.repeat(40)}b` } }]), { maxPathBytes: 64 }), /81 bytes long \(at most 64\)/);
    await refused(applyLayer(root, layer([{ path: 'x', body: 'x', pax: { path: 'n'.repeat(256) } }])), /longer than 255 bytes/);
    await refused(applyLayer(root, layer([{ path: 'l', type: '2', linkpath: 'x', pax: { linkpath: 't'.repeat(4096) } }])), /symlink's target is 4096 bytes long \(at most 4095\)/);
    const e = await refused(applyLayer(root, layer([{ path: 'd/.wh.' }])), /a whiteout without a name/);
    expect(e.hint).toMatch(/damaged/);
  });

  it('refuses a root directory that does not exist', async () => {
    await refused(applyLayer(join(tmp, 'nope'), layer([{ path: 'a', body: 'x' }])), /cannot apply layers onto .*nope/, 'internal');
  });

  it('stops when its signal is aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    await refused(applyLayer(root, layer([{ path: 'a', body: 'x' }]), { signal: ac.signal }), /interrupted/, 'interrupted');
  });
});

describe('extended attributes', () => {
  const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x0a, 0xff, 0x00, 0x3d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);

  it('returns a pax security.capability xattr byte for byte', async () => {
    const r = await applyLayer(root, layer([
      { path: 'usr/bin/ping', mode: 0o755, body: 'ELF', pax: { 'SCHILY.xattr.security.capability': cap, 'SCHILY.xattr.user.k': 'v=1' } },
      { path: 'usr/bin/arping', body: 'ELF', pax: { 'LIBARCHIVE.xattr.user.%41': Buffer.from('hi').toString('base64') } },
    ]));
    expect(r.xattrs).toEqual([
      { path: 'usr/bin/arping', name: 'user.A', value: Buffer.from('hi') },
      { path: 'usr/bin/ping', name: 'security.capability', value: cap },
      { path: 'usr/bin/ping', name: 'user.k', value: Buffer.from('v=1') },
    ]);
  });

  it('a later layer\'s replacement or whiteout drops the earlier xattrs; hard links share them', async () => {
    const l1 = layer([
      { path: 'a', body: 'x', pax: { 'SCHILY.xattr.security.capability': cap } },
      { path: 'b', body: 'x', pax: { 'SCHILY.xattr.user.b': 'b' } },
      { path: 'd/c', body: 'x', pax: { 'SCHILY.xattr.user.c': 'c' } },
      { path: 'e', body: 'x', pax: { 'SCHILY.xattr.user.e': 'e' } },
      { path: 'e2', type: '1', linkpath: 'e' },
      { path: 'dd/', pax: { 'SCHILY.xattr.user.dd': 'dd' } },
    ]);
    const l2 = layer([{ path: 'a', body: 'replaced' }, { path: '.wh.d' }, { path: 'b', body: 'x', pax: { 'SCHILY.xattr.user.b2': 'b2' } }, { path: 'dd/' }]);
    const r = await applyLayers(root, [l1, l2]);
    expect(r.xattrs.map((x) => `${x.path} ${x.name}=${x.value.toString()}`)).toEqual(['b user.b2=b2', 'e user.e=e', 'e2 user.e=e']);
  });

  it('parses pax records as bytes (a value holding "\\n" and "=")', () => {
    const rec = parsePax(paxData({ 'SCHILY.xattr.user.x': Buffer.from('a\nb=c'), path: 'p', mtime: '12.5' }));
    expect(rec).toEqual({ xattrs: [{ name: 'user.x', value: Buffer.from('a\nb=c') }], sparse: false, path: 'p', mtime: 12.5 });
    expect(() => parsePax(Buffer.from('99 path=x\n'))).toThrow(/malformed pax record/);
  });
});

describe('owners not kept (not root): recorded for the ext4 stage', () => {
  it("returns each entry's uid, gid and mode as the layers leave them; whiteouts and replacements forget theirs; links share their target's", async () => {
    const r = await applyLayers(
      root,
      [
        layer([
          { path: 'srv/', uid: 0, gid: 50, mode: 0o2775 },
          { path: 'srv/a', uid: 1234, gid: 5678, mode: 0o4755, body: 'a' },
          { path: 'srv/b', uid: 7, gid: 7, body: 'b' },
          { path: 'srv/gone/', uid: 9, gid: 9 },
          { path: 'srv/gone/f', uid: 9, gid: 9, body: 'f' },
        ]),
        layer([
          { path: 'srv/.wh.gone', body: '' },
          { path: 'srv/b', uid: 8, gid: 8, mode: 0o600, body: 'b2' },
          { path: 'srv/link', type: '1', linkpath: 'srv/a' },
        ]),
      ],
      { preserveOwner: false },
    );
    const byPath = new Map((r.owners ?? []).map((o) => [o.path, o]));
    expect(byPath.get('srv')).toEqual({ path: 'srv', uid: 0, gid: 50, mode: 0o2775 });
    expect(byPath.get('srv/a')).toEqual({ path: 'srv/a', uid: 1234, gid: 5678, mode: 0o4755 });
    expect(byPath.get('srv/b')).toEqual({ path: 'srv/b', uid: 8, gid: 8, mode: 0o600 });
    expect(byPath.has('srv/gone')).toBe(false);
    expect(byPath.has('srv/gone/f')).toBe(false);
    expect(byPath.has('srv/link')).toBe(false);
    expect(r.warnings.some((w) => /owners are not kept/.test(w))).toBe(true);
  });

  it('as root, owners are kept on the tree and nothing is recorded', async () => {
    if (!isRoot) return;
    const r = await applyLayers(root, [layer([{ path: 'f', uid: 1234, gid: 5678, body: 'x' }])]);
    expect(r.owners).toBeUndefined();
    expect(lstatSync(join(root, 'f')).uid).toBe(1234);
  });
});
