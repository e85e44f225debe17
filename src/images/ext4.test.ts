import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunner } from '../system/runner.js';
import { applyXattrs, makeExt4 } from './ext4.js';

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
