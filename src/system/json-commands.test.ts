import { describe, it, expect } from 'vitest';
import { z } from 'zod';
import { anyResult, JsonCommands, MAX_JSON_DEPTH, parsePeerLine, replyEnvelope } from './json-commands.js';

class MalformedError extends Error {
  constructor(
    readonly command: string,
    readonly detail: string,
  ) {
    super(`malformed reply to ${command}: ${detail}`);
  }
}

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
    malformedReply: (command, detail) => new MalformedError(command, detail),
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
    const a = commands.execute('a', undefined, 5000, write, anyResult);
    const b = commands.execute('b', { x: 1 }, 5000, write, z.string());
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
  });

  it('times a command out and drops its late reply', async () => {
    const { commands, write } = table();
    const err = await commands.execute('slow', undefined, 20, write, anyResult).catch((e: unknown) => e);
    expect((err as Error).message).toBe('slow timed out after 20');
    expect(commands.settle('t-1', { return: 'late' })).toBe(false);
    expect(commands.settle('nobody', { return: 1 })).toBe(false);
  });

  it('close rejects what is pending, then wakes the close waiters, once', async () => {
    const { commands, write } = table();
    const order: string[] = [];
    const pending = commands.execute('hang', undefined, 5000, write, anyResult).catch((e: unknown) => {
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

describe('JsonCommands against a peer of bad faith', () => {
  const status = z.object({ status: z.string(), running: z.boolean() });

  it('a "return" of the wrong shape rejects that command; it never resolves with a wrong type', async () => {
    const { commands, write } = table();
    const bad = [ 'wrong type', null, 42, [], { status: 1, running: true }, { status: 'running' }, { status: 'running', running: 'yes' } ];
    for (const [i, value] of bad.entries()) {
      const p = commands.execute('query-status', undefined, 5000, write, status);
      expect(commands.settle(`t-${i + 1}`, { return: value })).toBe(true);
      const err = await p.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MalformedError);
      expect((err as MalformedError).command).toBe('query-status');
    }
    const ok = commands.execute('query-status', undefined, 5000, write, status);
    commands.settle(`t-${bad.length + 1}`, { return: { status: 'running', running: true, extra: { deep: 1 } } });
    expect(await ok).toEqual({ status: 'running', running: true }); // unknown fields dropped
  });

  it('does not trust the shape of "error" either, nor a reply with neither field', async () => {
    const { commands, write } = table();
    const bad: unknown[] = [null, 'boom', 7, [], {}, { class: 'X' }, { desc: 'y' }, { class: {}, desc: 'y' }, { class: 'X', desc: ['y'] }];
    for (const [i, error] of bad.entries()) {
      const p = commands.execute('cmd', undefined, 5000, write, anyResult);
      commands.settle(`t-${i + 1}`, { error });
      const err = await p.catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MalformedError);
      expect((err as MalformedError).detail).toMatch(/"error" is not \{class, desc\}/);
    }
    const neither = commands.execute('cmd', undefined, 5000, write, anyResult);
    commands.settle(`t-${bad.length + 1}`, { id: `t-${bad.length + 1}` });
    await expect(neither).rejects.toMatchObject({ detail: 'it has neither "return" nor "error"' });
  });

  it('clips a long class and desc before they reach the error', async () => {
    const { commands, write } = table();
    const p = commands.execute('cmd', undefined, 5000, write, anyResult);
    commands.settle('t-1', { error: { class: 'C'.repeat(10_000), desc: 'd'.repeat(1_000_000) } });
    const err = (await p.catch((e: unknown) => e)) as ReplyError;
    expect(err.desc.length).toBeLessThan(300);
    expect(err.errorClass.length).toBeLessThan(100);
    expect(err.desc).toContain('(1000000 characters)');
  });

  it('the envelope schema refuses non-objects and keeps each field unknown', () => {
    for (const v of [null, [], 42, 'x', true]) expect(replyEnvelope.safeParse(v).success).toBe(false);
    expect(replyEnvelope.parse({ id: {}, return: null })).toEqual({ id: {}, return: null });
  });

  it('parsePeerLine never throws: bad JSON and deep nesting are refused, the depth counted outside strings', () => {
    expect(parsePeerLine(Buffer.from('{"a": [1, {"b": null}]}'))).toEqual({ ok: true, value: { a: [1, { b: null }] } });
    expect(parsePeerLine(Buffer.from('{"return": '))).toMatchObject({ ok: false, reason: 'a line that is not JSON' });
    expect(parsePeerLine(Buffer.from([0xff, 0xfe, 0x7b]))).toMatchObject({ ok: false });
    const deep = Buffer.from('['.repeat(1_000_000) + ']'.repeat(1_000_000));
    const t0 = Date.now();
    expect(parsePeerLine(deep)).toMatchObject({ ok: false, reason: `a message nested deeper than ${MAX_JSON_DEPTH} levels` });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(parsePeerLine(Buffer.from('['.repeat(MAX_JSON_DEPTH) + ']'.repeat(MAX_JSON_DEPTH))).ok).toBe(true);
    // brackets inside strings (and escaped quotes) are not nesting
    const inString = JSON.stringify({ s: '[{'.repeat(1000) + '\\"[[[' });
    expect(parsePeerLine(Buffer.from(inString))).toEqual({ ok: true, value: JSON.parse(inString) });
  });
});
