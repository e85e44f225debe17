import { describe, it, expect } from 'vitest';
import { generateVmName, validateVmName, vmNameProblem, VM_NAME_RULE } from './names.js';
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
