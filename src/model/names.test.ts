import { describe, it, expect } from 'vitest';
import { generateVmId, generateVmName, quoteInput, validateImageName, validateVmId, validateVmName, vmNameProblem, VM_NAME_RULE } from './names.js';
import { imageNameSchema, vmIdSchema, vmNameSchema } from './name-schemas.js';
import { BangerError } from '../errors/errors.js';

describe('VM names', () => {
  it.each(['a', 'box', 'my-vm-1', '0', '123', 'a'.repeat(63), 'a-b'])('accepts %j', (n) => {
    expect(vmNameProblem(n)).toBeUndefined();
    expect(validateVmName(n)).toBe(n);
  });

  it.each([
    ['', 'empty'],
    ['a'.repeat(64), 'max 63'],
    ['-a', 'starts or ends'],
    ['a-', 'starts or ends'],
    ['Bad_Name', '"B"'],
    ['UPPER', '"U"'],
    ['has space', '" "'],
    ['new\nline', '"\\n"'],
    ['tab\t', '"\\t"'],
    ['dot.name', '"."'],
    ['slash/x', '"/"'],
    ['box/../evil', '"/"'],
    ['colon:x', '":"'],
    ['eq=x', '"="'],
    ["quote'x", `"'"`],
    ['ünï', '"ü"'],
    ['ctl\u0001', '"\\u0001"'],
  ])('rejects %j (%s)', (n, why) => {
    expect(vmNameProblem(n)).toContain(why);
    try {
      validateVmName(n);
      expect.fail('should throw');
    } catch (e) {
      expect(e).toBeInstanceOf(BangerError);
      expect((e as BangerError).code).toBe('bad_request');
      expect((e as BangerError).hint).toBe(VM_NAME_RULE);
    }
  });

  it('generates valid names', () => {
    for (let i = 0; i < 200; i++) expect(vmNameProblem(generateVmName())).toBeUndefined();
  });
});

describe('the one schema per kind of name', () => {
  it.each(['../victim', '..', '.', '', '/etc', 'a/b', 'x'.repeat(64), 'x'.repeat(1_000_000)])('vm and image names refuse %#', (n) => {
    for (const schema of [vmNameSchema, imageNameSchema]) {
      const r = schema.safeParse(n);
      expect(r.success).toBe(false);
      expect(r.error!.issues[0]!.message.length).toBeLessThan(120); // never the whole input
    }
    expect(() => validateImageName(n, 'name')).toThrow(expect.objectContaining({ code: 'bad_request', field: 'name' }));
  });

  it('the validators bound what they echo', () => {
    const huge = '/'.repeat(1_000_000);
    for (const f of [() => validateVmName(huge), () => validateImageName(huge), () => validateVmId(huge)]) {
      expect(f).toThrow(BangerError);
      try {
        f();
      } catch (e) {
        expect((e as BangerError).message.length).toBeLessThan(200);
      }
    }
    expect(quoteInput('abc')).toBe('"abc"');
    expect(quoteInput('a'.repeat(100), 10)).toBe(`"${'a'.repeat(10)}"… (100 characters)`);
  });

  it('VM ids are 12 lowercase hex characters, as generated', () => {
    for (let i = 0; i < 50; i++) expect(vmIdSchema.safeParse(generateVmId()).success).toBe(true);
    for (const bad of ['../x', 'abc123', 'ABCDEF012345', '0123456789abc', '01234567890g', '', '012345/6789a']) {
      expect(vmIdSchema.safeParse(bad).success).toBe(false);
      expect(() => validateVmId(bad)).toThrow(expect.objectContaining({ code: 'bad_request' }));
    }
  });
});
