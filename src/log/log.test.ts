import { describe, it, expect } from 'vitest';
import { mkdtempSync, readFileSync, statSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileLogger } from './log.js';

describe('fileLogger', () => {
  it('rotates at maxBytes, keeping one previous file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'log-'));
    const path = join(dir, 'bangerd.log');
    const log = fileLogger(path, 'info', 8192);
    for (let i = 0; i < 2000; i++) log.info({ i, pad: 'x'.repeat(100) }, 'line');
    expect(statSync(path).size).toBeLessThanOrEqual(8192);
    expect(statSync(`${path}.1`).size).toBeLessThanOrEqual(8192);
    expect(existsSync(`${path}.2`)).toBe(false);
    const last = readFileSync(path, 'utf8').trim().split('\n').at(-1)!;
    expect(JSON.parse(last).i).toBe(1999);
  });

  it('never writes through a symlink planted at the log path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'log-'));
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    symlinkSync(victim, join(dir, 'bangerd.log'));
    expect(() => fileLogger(join(dir, 'bangerd.log'))).toThrow(/ELOOP/);
    expect(readFileSync(victim, 'utf8')).toBe('precious\n');
  });
});
