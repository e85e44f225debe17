/** Paths built from names and ids stay under their root (src/paths/paths.ts: within, vmPaths, imagePaths). */
import { describe, it, expect } from 'vitest';
import { join } from 'node:path';
import { assertWithin, imagePaths, resolveLayout, vmPaths, within } from './paths.js';
import { BangerError } from '../errors/errors.js';

const layout = resolveLayout({ BANGER_STATE_DIR: '/s', BANGER_CACHE_DIR: '/c', BANGER_RUNTIME_DIR: '/r', BANGER_CONFIG_DIR: '/cfg', HOME: '/h' });

describe('within', () => {
  it('joins parts strictly under root', () => {
    expect(within('/s/vms', 'abc')).toBe('/s/vms/abc');
    expect(within('/s/vms', 'a', 'b')).toBe('/s/vms/a/b');
    expect(within('/s/vms/', 'a/./b')).toBe('/s/vms/a/b');
  });

  it.each([['..'], ['../x'], ['a/../../x'], ['/etc'], [''], ['.'], ['a/..']])('refuses %j (outside, or root itself)', (part) => {
    expect(() => within('/s/vms', part)).toThrow(BangerError);
  });

  it('assertWithin does not take a sibling with a common prefix for a child', () => {
    expect(() => assertWithin('/s/vms', '/s/vms-other/x')).toThrow(BangerError);
    expect(assertWithin('/s/vms', '/s/vms/x')).toBe('/s/vms/x');
  });
});

describe('vmPaths / imagePaths refuse invalid ids and names', () => {
  it('a valid id and name', () => {
    expect(vmPaths(layout, '0123456789ab').dir).toBe(join(layout.vmsDir, '0123456789ab'));
    expect(vmPaths(layout, '0123456789ab').socketsDir).toBe(join(layout.vmSocketsDir, '0123456789ab'));
    expect(imagePaths(layout, 'bookworm').dir).toBe(join(layout.imagesDir, 'bookworm'));
  });

  it.each(['../x', '..', '', 'abc', '../../../../etc'])('vmPaths(%j) throws bad_request', (id) => {
    expect(() => vmPaths(layout, id)).toThrow(expect.objectContaining({ code: 'bad_request' }));
  });

  it.each(['../victim', '..', '', '../../../..', 'a/b'])('imagePaths(%j) throws bad_request', (name) => {
    expect(() => imagePaths(layout, name)).toThrow(expect.objectContaining({ code: 'bad_request' }));
  });
});
