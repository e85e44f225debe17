import { describe, it, expect } from 'vitest';
import { ByteBudget, LineReader, parseJson, type OverflowReason } from './line-reader.js';

function reader(maxLine: number, budget = new ByteBudget(1 << 20), syncByte?: number) {
  const lines: string[] = [];
  const overflows: OverflowReason[] = [];
  let syncs = 0;
  const r = new LineReader({
    maxLine,
    budget,
    syncByte,
    onLine: (l) => lines.push(l.toString('utf8')),
    onOverflow: (reason) => overflows.push(reason),
    onSync: () => syncs++,
  });
  return { r, lines, overflows, syncs: () => syncs, budget };
}

describe('LineReader', () => {
  it('splits lines across chunks and skips empty ones', () => {
    const t = reader(100);
    t.r.push('{"a":');
    t.r.push('1}\n\n{"b"');
    t.r.push(':2}\n{"c":3}\n');
    expect(t.lines).toEqual(['{"a":1}', '{"b":2}', '{"c":3}']);
    expect(t.r.pending).toBe(0);
    expect(t.budget.used).toBe(0);
  });

  it('refuses a line as soon as it passes maxLine, before any newline, and stops', () => {
    const t = reader(10);
    t.r.push('12345');
    t.r.push('678901');
    expect(t.overflows).toEqual(['line_too_long']);
    t.r.push('\n{"late":1}\n');
    expect(t.lines).toEqual([]);
    expect(t.budget.used).toBe(0);
  });

  it('refuses a complete line that is too long', () => {
    const t = reader(4);
    t.r.push('12345\n');
    expect(t.overflows).toEqual(['line_too_long']);
  });

  it('shares one budget: the reader that would pass it overflows, the others keep going', () => {
    const budget = new ByteBudget(10);
    const a = reader(100, budget);
    const b = reader(100, budget);
    a.r.push('1234567');
    b.r.push('12345');
    expect(b.overflows).toEqual(['budget_exhausted']);
    expect(a.overflows).toEqual([]);
    a.r.push('\n');
    expect(a.lines).toEqual(['1234567']);
    expect(budget.used).toBe(0);
  });

  it('release gives held bytes back', () => {
    const t = reader(100);
    t.r.push('abc');
    expect(t.budget.used).toBe(3);
    t.r.release();
    expect(t.budget.used).toBe(0);
  });

  it('a sync byte drops the partial line', () => {
    const t = reader(100, undefined, 0xff);
    t.r.push(Buffer.concat([Buffer.from('garbage'), Buffer.from([0xff]), Buffer.from('{"return":1}\n')]));
    expect(t.lines).toEqual(['{"return":1}']);
    expect(t.syncs()).toBe(1);
  });

  it('stays linear: a 4 MiB line in 1-byte-ish chunks is fast', () => {
    const t = reader(8 << 20, new ByteBudget(16 << 20));
    const chunk = Buffer.alloc(64, 0x61);
    const started = Date.now();
    for (let i = 0; i < (4 << 20) / 64; i++) t.r.push(chunk);
    t.r.push('\n');
    expect(t.lines[0]!.length).toBe(4 << 20);
    // Quadratic rescanning took seconds for this; linear takes milliseconds.
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('parseJson never throws', () => {
    expect(parseJson('{')).toEqual({ ok: false });
    expect(parseJson('['.repeat(200000) + ']'.repeat(200000)).ok).toBeTypeOf('boolean');
    expect(parseJson('null')).toEqual({ ok: true, value: null });
  });
});
