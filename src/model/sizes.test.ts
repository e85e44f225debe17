import { describe, it, expect } from 'vitest';
import { formatSize, parseSize } from './sizes.js';

describe('sizes', () => {
  it('parses units', () => {
    expect(parseSize('512M', 'x')).toBe(512 * 1024 ** 2);
    expect(parseSize('4G', 'x')).toBe(4 * 1024 ** 3);
    expect(parseSize('1.5GiB', 'x')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('1048576', 'x')).toBe(1048576);
  });
  it.each(['', 'abc', '4X', '-1G', '0', '0M', '1 2G'])('rejects %j naming the thing', (t) => {
    expect(() => parseSize(t, 'disk_size')).toThrow(/disk_size/);
  });
  it('formats', () => {
    expect(formatSize(4 * 1024 ** 3)).toBe('4.0 GiB');
    expect(formatSize(100)).toBe('100 B');
  });
});
