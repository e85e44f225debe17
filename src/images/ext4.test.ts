import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { chownSync, lchownSync, linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../system/runner.js';
import { applyXattrs, makeExt4, setOwners } from './ext4.js';

const runner = createRunner();
const run = (argv: string[]) => runner.run(argv);
/** cap_net_raw=ep, as setcap writes it (VFS_CAP_REVISION_2). */
const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');
/** A POSIX ACL as the kernel's xattr carries it: user::rwx user:1234:rwx group::r-x mask::rwx other::r-x. */
const ACL = Buffer.from('0200000001000700ffffffff02000700d204000004000500ffffffff10000700ffffffff20000500ffffffff', 'hex');

let tmp: string;
beforeEach(() => {
  tmp = mkdtempSync(join(tmpdir(), 'banger-ext4-'));
});
afterEach(() => rmSync(tmp, { recursive: true, force: true }));

async function xattrsOf(img: string, path: string): Promise<string> {
  return (await runner.run(['debugfs', '-R', `ea_list "${path}"`, img])).stdout;
}

describe('applyXattrs', () => {
  it('sets a file capability on the image, on a path with a space, without mounting it', async () => {
    mkdirSync(join(tmp, 'tree/usr/bin'), { recursive: true });
    writeFileSync(join(tmp, 'tree/usr/bin/ping'), 'x');
    mkdirSync(join(tmp, 'tree/a b'));
    writeFileSync(join(tmp, 'tree/a b/c'), 'x');
    const img = join(tmp, 'img');
    await makeExt4(run, join(tmp, 'tree'), img, 64 * 1024 * 1024);
    const warnings = await applyXattrs(
      run,
      img,
      [
        { path: 'usr/bin/ping', name: 'security.capability', value: CAP },
        { path: './a b/c', name: 'user.note', value: Buffer.from('hi') },
        { path: 'a b', name: 'system.posix_acl_default', value: ACL },
      ],
      join(tmp, 'scratch'),
    );
    expect(warnings).toEqual([]);
    expect(await xattrsOf(img, '/usr/bin/ping')).toMatch(/security\.capability \(20\) = 01 00 00 02 00 20/);
    expect(await xattrsOf(img, '/a b/c')).toMatch(/user\.note \(2\) = "hi"/);
    expect(await xattrsOf(img, '/a b')).toMatch(/system\.posix_acl_default \(28\) = 01 00 00 00 01 00 07 00 02 00 07 00 d2 04/);
  });

  it('skips, and reports, a path or name that could escape the debugfs command', async () => {
    mkdirSync(join(tmp, 'tree'));
    writeFileSync(join(tmp, 'tree/f'), 'x');
    const img = join(tmp, 'img');
    await makeExt4(run, join(tmp, 'tree'), img, 64 * 1024 * 1024);
    const outside = join(tmp, 'dumped');
    const warnings = await applyXattrs(
      run,
      img,
      [
        { path: `f" user.x\ndump /f ${outside}\n#`, name: 'user.a', value: Buffer.from('1') },
        { path: 'f', name: 'user.a b', value: Buffer.from('1') },
        { path: 'f', name: 'system.nfs4_acl', value: Buffer.from('1') },
        { path: '../f', name: 'user.up', value: Buffer.from('1') },
        { path: 'missing', name: 'user.gone', value: Buffer.from('1') },
      ],
      join(tmp, 'scratch'),
    );
    expect(warnings.filter((w) => w.includes('not kept'))).toHaveLength(4);
    expect(warnings.some((w) => w.startsWith('debugfs:') && /missing|not found/i.test(w))).toBe(true);
    expect(await xattrsOf(img, '/f')).not.toMatch(/user\./);
    expect(() => rmSync(outside)).toThrow();
  });
});

describe('setOwners (an image made without root)', () => {
  it("gives the layers' owners and modes where known and root's everywhere else, once per hard-linked inode", async () => {
    const tree = join(tmp, 'tree');
    mkdirSync(join(tree, 'srv/sub'), { recursive: true });
    writeFileSync(join(tree, 'srv/app'), 'x');
    writeFileSync(join(tree, 'srv/sub/mod.ko'), 'x');
    linkSync(join(tree, 'srv/app'), join(tree, 'srv/app-link'));
    symlinkSync('app', join(tree, 'srv/rel'));
    // As the daemon user would have made them: everything theirs, no setgid.
    for (const p of ['', 'srv', 'srv/sub', 'srv/app', 'srv/sub/mod.ko']) chownSync(join(tree, p), 1000, 1000);
    lchownSync(join(tree, 'srv/rel'), 1000, 1000);
    const img = join(tmp, 'img');
    await makeExt4(run, tree, img, 64 * 1024 * 1024);
    const warnings = await setOwners(
      run,
      img,
      tree,
      [
        { path: 'srv/app', uid: 1234, gid: 2345, mode: 0o2755 },
        { path: 'srv', uid: 0, gid: 50, mode: 0o1777 },
      ],
      join(tmp, 'scratch'),
    );
    expect(warnings).toEqual([]);
    const stat = async (p: string) => (await runner.run(['debugfs', '-R', `stat "${p}"`, img])).stdout;
    expect(await stat('/srv/app')).toMatch(/User:\s+1234\s+Group:\s+2345/);
    expect(await stat('/srv/app')).toMatch(/Mode:\s+02755/);
    expect(await stat('/srv/app-link')).toMatch(/User:\s+1234/); // the same inode
    expect(await stat('/srv')).toMatch(/User:\s+0\s+Group:\s+50/);
    expect(await stat('/srv')).toMatch(/Mode:\s+01777/);
    expect(await stat('/srv/sub/mod.ko')).toMatch(/User:\s+0\s+Group:\s+0/); // not from a layer: root's
    expect(await stat('/srv/rel')).toMatch(/User:\s+0\s+Group:\s+0/);
    expect(await stat('/')).toMatch(/User:\s+0\s+Group:\s+0/);
  });
});
