/**
 * The catalog kernel stage (`image pull --kernel`): vmlinuz and initrd.img
 * copied into the image, the modules archive applied to the tree's
 * /lib/modules (through a merged-/usr symlink), hostile archives refused.
 * Real tar archives, made by tar and by Python's tarfile.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../errors/errors.js';
import { catalogKernel } from './kernel.js';
import type { LocalKernel } from './kernels.js';
import type { StageContext } from './pipeline.js';

let root: string;
let ctx: StageContext;
const progress: string[] = [];

function kernelDir(modules?: Buffer): LocalKernel {
  const dir = join(root, 'kernels', 'generic-test');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'vmlinuz'), 'KERNEL');
  writeFileSync(join(dir, 'initrd.img'), 'INITRD');
  if (modules) writeFileSync(join(dir, 'modules.tar'), modules);
  return {
    name: 'generic-test',
    version: '6.1.0-test',
    arch: 'x86_64',
    sha256: { kernel: '0'.repeat(64), initrd: '1'.repeat(64), ...(modules ? { modules: '2'.repeat(64) } : {}) },
    source: 'http://127.0.0.1/catalog.json',
    pulledAt: 'now',
    dir,
  };
}

/** A tar (gzip with `z`) of `files` (name → content), made by Python's tarfile so names can be hostile. */
function tarOf(files: Record<string, string>, z = false): Buffer {
  const script = `
import io, json, sys, tarfile
files = json.loads(sys.argv[1])
out = io.BytesIO()
with tarfile.open(fileobj=out, mode='w:gz' if sys.argv[2] == 'z' else 'w') as t:
    for name, body in files.items():
        data = body.encode()
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        t.addfile(info, io.BytesIO(data))
sys.stdout.buffer.write(out.getvalue())
`;
  return execFileSync('python3', ['-c', script, JSON.stringify(files), z ? 'z' : '-'], { maxBuffer: 1 << 24 });
}

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'banger-kstage-'));
  const rootDir = join(root, 'tree');
  mkdirSync(join(rootDir, 'usr', 'lib'), { recursive: true });
  symlinkSync('usr/lib', join(rootDir, 'lib')); // merged /usr, as Debian has it
  mkdirSync(join(root, 'stage'));
  progress.length = 0;
  ctx = { name: 't', workDir: root, rootDir, stageDir: join(root, 'stage'), run: async () => ({ code: 0, stdout: '', stderr: '' }), progress: (_s: string, m: string) => progress.push(m), checkAbort: () => {} } as unknown as StageContext;
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const failure = (p: Promise<unknown>) => p.then(() => 'no error', (e: unknown) => (isBangerError(e) ? `${e.code}: ${e.message}` : String(e)));

describe('catalogKernel', () => {
  it('copies the kernel and initrd and applies a gzip modules archive under /lib/modules (through the /lib link)', async () => {
    const stage = catalogKernel(kernelDir(tarOf({ '6.1.0-test/modules.dep': 'dep', '6.1.0-test/kernel/virtio_console.ko': 'ko' }, true)));
    expect(stage).toMatchObject({ kind: 'catalog', catalog: 'generic-test' });
    expect(await stage.install(ctx)).toBe('6.1.0-test');
    expect(readFileSync(join(root, 'stage', 'vmlinuz'), 'utf8')).toBe('KERNEL');
    expect(readFileSync(join(root, 'stage', 'initrd.img'), 'utf8')).toBe('INITRD');
    expect(readFileSync(join(root, 'tree', 'usr', 'lib', 'modules', '6.1.0-test', 'kernel', 'virtio_console.ko'), 'utf8')).toBe('ko');
    expect(progress.join('\n')).toContain('its modules added');
  });

  it('without a modules archive: the files only, and it says the drivers must be built in', async () => {
    expect(await catalogKernel(kernelDir()).install(ctx)).toBe('6.1.0-test');
    expect(existsSync(join(root, 'tree', 'usr', 'lib', 'modules'))).toBe(false);
    expect(progress.join('\n')).toContain('must be built in');
  });

  it('refuses an archive that reaches out of the modules directory; nothing is written outside', async () => {
    const got = await failure(catalogKernel(kernelDir(tarOf({ '6.1.0-test/modules.dep': 'dep', '../../../escaped': 'x' }))).install(ctx));
    expect(got).toMatch(/^operation_failed/);
    expect(existsSync(join(root, 'escaped'))).toBe(false);
    expect(existsSync(join(root, 'tree', 'escaped'))).toBe(false);
  });

  it('refuses an archive without VERSION/modules.dep (entries named otherwise)', async () => {
    const got = await failure(catalogKernel(kernelDir(tarOf({ 'lib/modules/6.1.0-test/modules.dep': 'dep' }))).install(ctx));
    expect(got).toBe('operation_failed: kernel generic-test: its modules archive has no 6.1.0-test/modules.dep');
  });

  it('refuses a version that is not a kernel release when modules are named by it', async () => {
    const k = { ...kernelDir(tarOf({ 'x/modules.dep': 'dep' })), version: '../x' };
    expect(await failure(catalogKernel(k).install(ctx))).toMatch(/is not a kernel release/);
  });
});
