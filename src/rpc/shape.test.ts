/**
 * The shape checker the client reads the wire with: each check refuses what
 * it should, with the path of the first problem, and never echoes the input.
 */
import { describe, it, expect } from 'vitest';
import { array, boolean, literal, never, number, object, oneOf, string, union, unknown } from './shape.js';

const issue = (r: { success: boolean; error?: { issues: Array<{ path: Array<string | number>; message: string }> } }) => r.error?.issues[0];

describe('primitives', () => {
  it('string: type, min, max, pattern', () => {
    const s = string({ min: 1, max: 3, pattern: /^[a-z]*$/, patternMessage: 'lowercase only' });
    expect(s.parse('ab')).toBe('ab');
    expect(issue(s.safeParse(1))!.message).toBe('expected a string, got number');
    expect(issue(s.safeParse(''))!.message).toBe('must not be empty');
    expect(issue(s.safeParse('abcd'))!.message).toBe('must be at most 3 characters');
    expect(issue(s.safeParse('aB'))!.message).toBe('lowercase only');
  });

  it('number: finite, whole (a safe integer), bounds', () => {
    expect(number().parse(1.5)).toBe(1.5);
    for (const bad of [NaN, Infinity, -Infinity, '1', null]) expect(number().safeParse(bad).success).toBe(false);
    const n = number({ int: true, min: 0, max: 10 });
    expect(n.parse(10)).toBe(10);
    expect(issue(n.safeParse(1.5))!.message).toBe('expected a whole number');
    expect(n.safeParse(2 ** 60).success).toBe(false);
    expect(issue(n.safeParse(-1))!.message).toBe('must be at least 0');
    expect(issue(n.safeParse(11))!.message).toBe('must be at most 10');
  });

  it('boolean, literal, oneOf, never, unknown', () => {
    expect(boolean().safeParse(0).success).toBe(false);
    expect(literal(true).safeParse(false).success).toBe(false);
    expect(oneOf(['a', 'b'] as const).parse('b')).toBe('b');
    expect(issue(oneOf(['a', 'b'] as const).safeParse('c'))!.message).toBe('expected one of a, b');
    expect(issue(never('no such method').safeParse(1))!.message).toBe('no such method');
    expect(unknown().parse({ x: 1 })).toEqual({ x: 1 });
  });

  it('nullable, refine, map', () => {
    expect(string().nullable().parse(null)).toBeNull();
    expect(string().safeParse(null).success).toBe(false);
    const even = number({ int: true }).refine((n) => (n % 2 ? 'must be even' : undefined));
    expect(issue(even.safeParse(3))!.message).toBe('must be even');
    expect(string().map((s) => s.length).parse('abc')).toBe(3);
  });
});

describe('objects and arrays', () => {
  const item = object({ name: string({ max: 8 }), size: number({ int: true }).optional(), note: string().nullable() });

  it('drops unknown keys, keeps the known, omits a missing optional key', () => {
    expect(item.parse({ name: 'a', note: null, extra: { deep: 1 } })).toEqual({ name: 'a', note: null });
    expect(item.parse({ name: 'a', size: undefined, note: 'n' })).toEqual({ name: 'a', note: 'n' });
  });

  it('a missing required key, or one set to undefined, is named', () => {
    expect(issue(item.safeParse({ note: null }))).toEqual({ path: ['name'], message: 'required' });
    expect(issue(item.safeParse({ name: 'a', note: undefined }))).toEqual({ path: ['note'], message: 'required' });
  });

  it('strict refuses an unknown key, by name', () => {
    const s = object({ id: number() }, { strict: true });
    expect(issue(s.safeParse({ id: 1, evil: true }))).toEqual({ path: ['evil'], message: 'unexpected key' });
  });

  it('the path of a nested problem runs from the top', () => {
    const list = object({ items: array(item, { max: 5 }) });
    expect(issue(list.safeParse({ items: [{ name: 'a', note: null }, { name: 'toolongname', note: null }] }))).toEqual({
      path: ['items', 1, 'name'],
      message: 'must be at most 8 characters',
    });
    expect(issue(list.safeParse({ items: new Array(6).fill({ name: 'a', note: null }) }))!.message).toBe('must have at most 5 items');
  });

  it('refuses non-objects, arrays and null as objects', () => {
    for (const bad of [null, [], 'x', 1]) expect(item.safeParse(bad).success).toBe(false);
  });

  it('a JSON __proto__ key neither pollutes nor survives', () => {
    const parsed = item.parse(JSON.parse('{"name":"a","note":null,"__proto__":{"polluted":true}}'));
    expect(Object.getPrototypeOf(parsed)).toBe(Object.prototype);
    expect((parsed as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('extend adds and replaces keys', () => {
    const more = item.extend({ size: string(), tags: array(string(), { max: 2 }) });
    expect(more.parse({ name: 'a', note: null, size: 'big', tags: [] })).toEqual({ name: 'a', note: null, size: 'big', tags: [] });
    expect(more.safeParse({ name: 'a', note: null, size: 1, tags: [] }).success).toBe(false);
  });

  it('messages never echo the input', () => {
    const huge = 'x'.repeat(100_000);
    const r = item.safeParse({ name: huge, note: null });
    expect(JSON.stringify(r.error).length).toBeLessThan(200);
  });
});

describe('union', () => {
  const msg = union(object({ id: number(), result: unknown() }, { strict: true }), object({ id: number(), error: string() }, { strict: true }));

  it('takes the first that matches', () => {
    expect(msg.parse({ id: 1, error: 'boom' })).toEqual({ id: 1, error: 'boom' });
    expect(msg.parse({ id: 1, result: null })).toEqual({ id: 1, result: null });
  });

  it('refuses what none matches', () => {
    expect(msg.safeParse({ id: 1 }).success).toBe(false);
    expect(msg.safeParse({ id: 1, result: 1, error: 'x' }).success).toBe(false);
  });
});
