import { describe, it, expect } from 'vitest';
import { runSteps, type Step } from './steps.js';
import { KeyedMutex } from './locks.js';

function step(name: string, log: string[], fail = false): Step {
  return {
    name,
    message: name,
    run: async () => {
      log.push(`run ${name}`);
      if (fail) throw new Error(`${name} failed`);
    },
    rollback: async () => {
      log.push(`rollback ${name}`);
    },
  };
}

describe('runSteps', () => {
  it('runs in order', async () => {
    const log: string[] = [];
    await runSteps([step('a', log), step('b', log)]);
    expect(log).toEqual(['run a', 'run b']);
  });

  it('rolls back in reverse, including the failed step, and rethrows the original error', async () => {
    const log: string[] = [];
    await expect(runSteps([step('a', log), step('b', log), step('c', log, true), step('d', log)])).rejects.toThrow('c failed');
    expect(log).toEqual(['run a', 'run b', 'run c', 'rollback c', 'rollback b', 'rollback a']);
  });

  it('a rollback error is reported, not thrown over the original', async () => {
    const log: string[] = [];
    const bad: Step = { name: 'x', message: 'x', run: async () => undefined, rollback: async () => Promise.reject(new Error('rb')) };
    const seen: string[] = [];
    await expect(
      runSteps([bad, step('y', log, true)], { onRollbackError: (s, e) => seen.push(`${s.name}:${(e as Error).message}`) }),
    ).rejects.toThrow('y failed');
    expect(seen).toEqual(['x:rb']);
  });

  it('stops and rolls back when aborted between steps', async () => {
    const log: string[] = [];
    const ac = new AbortController();
    const s1: Step = { ...step('a', log), run: async () => void (log.push('run a'), ac.abort()) };
    await expect(runSteps([s1, step('b', log)], { signal: ac.signal })).rejects.toMatchObject({ code: 'interrupted' });
    expect(log).toEqual(['run a', 'rollback a']);
  });
});

describe('KeyedMutex', () => {
  it('serialises one key and lets others run in parallel', async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    const slow = (k: string, tag: string, ms: number) =>
      m.run(k, async () => {
        order.push(`start ${tag}`);
        await new Promise((r) => setTimeout(r, ms));
        order.push(`end ${tag}`);
      });
    await Promise.all([slow('a', 'a1', 50), slow('a', 'a2', 1), slow('b', 'b1', 10)]);
    expect(order.indexOf('end a1')).toBeLessThan(order.indexOf('start a2'));
    expect(order.indexOf('start b1')).toBeLessThan(order.indexOf('end a1'));
    expect(m.isLocked('a')).toBe(false);
  });
});
