import { describe, it, expect } from 'vitest';
import { JsonCommands } from './json-commands.js';

class ReplyError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`${command}: ${desc} (${errorClass})`);
  }
}

function table(): { commands: JsonCommands; lines: Array<Record<string, unknown>>; write: (line: string) => void } {
  const commands = new JsonCommands({
    idPrefix: 't-',
    timeoutError: (command, ms) => new Error(`${command} timed out after ${ms}`),
    replyError: (command, errorClass, desc) => new ReplyError(command, errorClass, desc),
  });
  const lines: Array<Record<string, unknown>> = [];
  const write = (line: string) => {
    expect(line.endsWith('\n')).toBe(true);
    lines.push(JSON.parse(line) as Record<string, unknown>);
  };
  return { commands, lines, write };
}

describe('JsonCommands', () => {
  it('writes one line per command with a fresh id and settles each from its own reply', async () => {
    const { commands, lines, write } = table();
    const a = commands.execute('a', undefined, 5000, write);
    const b = commands.execute('b', { x: 1 }, 5000, write);
    expect(lines).toEqual([
      { execute: 'a', id: 't-1' },
      { execute: 'b', id: 't-2', arguments: { x: 1 } },
    ]);
    expect(commands.oldestId()).toBe('t-1');
    expect(commands.settle('t-2', { return: 'B', id: 't-2' })).toBe(true);
    expect(commands.settle('t-1', { error: { class: 'CommandNotFound', desc: 'no a' } })).toBe(true);
    expect(await b).toBe('B');
    const err = await a.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ReplyError);
    expect(err).toMatchObject({ command: 'a', errorClass: 'CommandNotFound', desc: 'no a' });
    expect(commands.oldestId()).toBeUndefined();
    // an error reply without class/desc gets the defaults
    const c = commands.execute('c', undefined, 5000, write);
    commands.settle('t-3', { error: null });
    await expect(c).rejects.toMatchObject({ errorClass: 'GenericError', desc: 'unknown error' });
  });

  it('times a command out and drops its late reply', async () => {
    const { commands, write } = table();
    const err = await commands.execute('slow', undefined, 20, write).catch((e: unknown) => e);
    expect((err as Error).message).toBe('slow timed out after 20');
    expect(commands.settle('t-1', { return: 'late' })).toBe(false);
    expect(commands.settle('nobody', { return: 1 })).toBe(false);
  });

  it('close rejects what is pending, then wakes the close waiters, once', async () => {
    const { commands, write } = table();
    const order: string[] = [];
    const pending = commands.execute('hang', undefined, 5000, write).catch((e: unknown) => {
      order.push('rejected');
      return e;
    });
    const waited = commands.waitClosed().then(() => order.push('waited'));
    const calls: string[] = [];
    commands.onClose(() => calls.push('kept'));
    const cancel = commands.onClose(() => calls.push('cancelled'));
    cancel();
    expect(commands.closed).toBe(false);

    commands.close((command) => new Error(`${command}: closed`));
    commands.close(() => new Error('second close must do nothing'));
    expect(commands.closed).toBe(true);
    expect(calls).toEqual(['kept']);
    expect(((await pending) as Error).message).toBe('hang: closed');
    await waited;
    expect(order).toEqual(['rejected', 'waited']);
    await commands.waitClosed(); // already closed: resolves at once
    expect(commands.oldestId()).toBeUndefined();
  });
});
