import { describe, it, expect } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeTreeUnder } from './safe-remove.js';
import { BangerError } from '../errors/errors.js';

function setup() {
  const root = mkdtempSync(join(tmpdir(), 'saferm-'));
  const state = join(root, 'state', 'vms');
  mkdirSync(state, { recursive: true });
  const victim = join(root, 'victim');
  mkdirSync(victim);
  writeFileSync(join(victim, 'keep'), 'precious');
  return { root, state, victim };
}

describe('removeTreeUnder', () => {
  it('removes a tree strictly under root', () => {
    const { state } = setup();
    mkdirSync(join(state, 'a', 'b'), { recursive: true });
    writeFileSync(join(state, 'a', 'b', 'f'), 'x');
    removeTreeUnder(state, join(state, 'a'));
    expect(existsSync(join(state, 'a'))).toBe(false);
    expect(existsSync(state)).toBe(true);
  });

  it('refuses a path outside root, or root itself, and removes nothing', () => {
    const { state, victim } = setup();
    for (const p of [victim, join(state, '..', '..', 'victim'), state, join(state, '..')]) {
      expect(() => removeTreeUnder(state, p)).toThrow(BangerError);
    }
    expect(existsSync(join(victim, 'keep'))).toBe(true);
    expect(existsSync(state)).toBe(true);
  });

  it('refuses when a parent directory under root is a symlink that leads out of it', () => {
    const { state, root, victim } = setup();
    symlinkSync(root, join(state, 'escape'));
    expect(() => removeTreeUnder(state, join(state, 'escape', 'victim'))).toThrow(BangerError);
    expect(existsSync(join(victim, 'keep'))).toBe(true);
  });

  it('a missing target or parent is nothing to do', () => {
    const { state } = setup();
    expect(() => removeTreeUnder(state, join(state, 'nope', 'deeper'))).not.toThrow();
    expect(() => removeTreeUnder(state, join(state, 'nope'))).not.toThrow();
  });
});
