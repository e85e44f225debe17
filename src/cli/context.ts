/** What every command needs: layout, runner, and a lazily opened SDK connection. */
import { resolveLayout, type Layout } from '../paths/paths.js';
import { createRunner, type Runner } from '../system/runner.js';
import type { ProgressEvent } from '../model/types.js';
import type { Banger } from '../sdk/banger.js';
import { style } from './style.js';

export interface CliContext {
  layout: Layout;
  runner: Runner;
  /** The SDK, connected (bangerd started when needed); progress goes to stderr. */
  banger(): Promise<Banger>;
  progress(ev: ProgressEvent): void;
  close(): void;
}

export function createContext(): CliContext {
  const layout = resolveLayout();
  const runner = createRunner();
  let client: Promise<Banger> | undefined;
  /** A transient progress line is on the terminal (cleared before the next line). */
  let transientShown = false;
  const ctx: CliContext = {
    layout,
    runner,
    banger() {
      // Loaded on first use: --version, --help and refused flags never load the RPC stack.
      client ??= import('../sdk/banger.js').then(({ Banger }) => Banger.connect({ onProgress: (ev) => ctx.progress(ev) }));
      return client;
    },
    progress(ev) {
      const err = process.stderr;
      const tty = err.isTTY === true;
      if (ev.transient) {
        if (!tty) return;
        err.write(`\r\x1b[K${style.dim(`• ${ev.message.slice(0, Math.max(20, (err.columns || 80) - 3))}`, err)}`);
        transientShown = true;
        return;
      }
      if (transientShown) {
        err.write('\r\x1b[K');
        transientShown = false;
      }
      if (ev.level === 'warn') err.write(`${style.warn('warning:', err)} ${ev.message}\n`);
      else err.write(style.dim(`• ${ev.message}`, err) + '\n');
    },
    close() {
      void client?.then((c) => c.close()).catch(() => undefined);
    },
  };
  return ctx;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function parseIntFlag(flag: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value.trim())) {
      // Thrown inside commander's parser; main.ts renders it like any coded error.
      throw new FlagError(`${flag} must be a whole number, got ${JSON.stringify(value)}`);
    }
    return Number(value);
  };
}

export class FlagError extends Error {}
