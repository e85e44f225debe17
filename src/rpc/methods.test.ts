/** The method table's params: every name is the one grammar, every string is bounded. */
import { describe, it, expect } from 'vitest';
import type { z } from 'zod';
import { methods } from './methods.js';

type Shape = Record<string, z.ZodType>;
const shapes = Object.entries(methods).map(([m, def]) => [m, (def.params as unknown as { shape: Shape }).shape] as const);

describe('methods.ts params', () => {
  it('every method takes an object schema', () => {
    for (const [m, shape] of shapes) expect(shape, m).toBeTypeOf('object');
  });

  it.each(shapes.filter(([, s]) => 'name' in s))('%s: name is checked by the name grammar', (_m, shape) => {
    const name = shape['name']!;
    for (const bad of ['../victim', '../../../..', '..', '', '/etc', 'a/b', 'UPPER', 'x'.repeat(64)]) {
      expect(name.safeParse(bad).success, bad).toBe(false);
    }
    expect(name.safeParse('bookworm').success).toBe(true);
  });

  it('vm.prune names are checked by the name grammar too', () => {
    expect(methods['vm.prune'].params.safeParse({ names: ['ok', '../x'] }).success).toBe(false);
    expect(methods['vm.prune'].params.safeParse({ names: ['ok'] }).success).toBe(true);
  });

  it('no param accepts a 100 000-character string, and no issue message echoes it', () => {
    const huge = 'a'.repeat(100_000);
    for (const [m, shape] of shapes) {
      for (const [key, schema] of Object.entries(shape)) {
        const r = schema.safeParse(huge);
        expect(r.success, `${m}.${key}`).toBe(false);
        expect(JSON.stringify(r.error!.issues).length, `${m}.${key}`).toBeLessThan(2000);
      }
    }
  });

  it('disk sizes are bounded at 2 TiB, resources are whole numbers in range', () => {
    const create = methods['vm.create'].params;
    expect(create.safeParse({ diskBytes: 2 * 1024 ** 4 }).success).toBe(true);
    expect(create.safeParse({ diskBytes: 2 * 1024 ** 4 + 1 }).success).toBe(false);
    expect(methods['vm.set'].params.safeParse({ name: 'a', diskBytes: 3 * 1024 ** 4 }).success).toBe(false);
    expect(create.safeParse({ vcpu: 0 }).success).toBe(false);
    expect(create.safeParse({ vcpu: 1.5 }).success).toBe(false);
    expect(create.safeParse({ memoryMib: 1e300 }).success).toBe(false);
  });
});
