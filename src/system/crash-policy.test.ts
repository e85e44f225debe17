import { describe, it, expect, vi, afterEach } from 'vitest';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { AsyncLocalStorage } from 'node:async_hooks';
import { installCrashPolicy } from './crash-policy.js';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk, _e, cb) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

let uninstall: (() => void) | undefined;
afterEach(() => {
  uninstall?.();
  vi.restoreAllMocks();
});

describe('crash policy', () => {
  it('an unhandled rejection is logged with the op id it ran for, and the process keeps going', async () => {
    const cap = capture();
    const als = new AsyncLocalStorage<{ opId: string; method: string }>();
    const shutdown = vi.fn();
    uninstall = installCrashPolicy({ log: cap.log, currentOp: () => als.getStore(), shutdown });
    als.run({ opId: 'op-1234abcd', method: 'vm.show' }, () => {
      process.emit('unhandledRejection', new Error('stray'), Promise.resolve());
    });
    await new Promise((r) => setTimeout(r, 20));
    const line = cap.lines.find((l) => l.err === 'stray');
    expect(line?.opId).toBe('op-1234abcd');
    expect(line?.method).toBe('vm.show');
    expect(shutdown).not.toHaveBeenCalled();
  });

  it('an uncaught exception runs the clean shutdown once, then exits 1', async () => {
    const cap = capture();
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const shutdown = vi.fn(async () => undefined);
    uninstall = installCrashPolicy({ log: cap.log, currentOp: () => undefined, shutdown });
    process.emit('uncaughtException', new Error('boom'));
    process.emit('uncaughtException', new Error('again'));
    await new Promise((r) => setTimeout(r, 20));
    expect(shutdown).toHaveBeenCalledTimes(1);
    expect(exit).toHaveBeenCalledWith(1);
    expect(cap.lines.some((l) => l.err === 'boom' && l.level === 60)).toBe(true);
  });
});
