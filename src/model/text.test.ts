import { describe, it, expect } from 'vitest';
import { clip } from './text.js';

describe('clip', () => {
  it('keeps short text and cuts long text without splitting a surrogate pair', () => {
    expect(clip('short')).toBe('short');
    expect(clip('x'.repeat(500))).toBe(`${'x'.repeat(200)}… (500 characters)`);
    const emoji = 'a' + '😀'.repeat(300);
    expect(clip(emoji, 4)).toBe('a😀… (601 characters)');
  });
});
