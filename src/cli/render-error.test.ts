import { describe, it, expect } from 'vitest';
import { renderError, exitCodeFor } from './render-error.js';
import { BangerError } from '../errors/errors.js';

describe('renderError', () => {
  it('shows label, message, hint and opId for coded errors', () => {
    const e = new BangerError('not_found', 'no VM named x', 'list VMs with `banger vm list`');
    e.opId = 'op-12345678';
    const text = renderError(e, false);
    expect(text).toContain('banger: not found: no VM named x');
    expect(text).toContain('hint: list VMs with `banger vm list`');
    expect(text).toContain('op-12345678');
    expect(text).not.toContain('at ');
  });

  it('hides the stack of an unexpected error unless --debug', () => {
    const e = new Error('kaboom');
    expect(renderError(e, false)).toContain('unexpected error: kaboom');
    expect(renderError(e, false)).not.toContain('render-error.test');
    expect(renderError(e, true)).toContain('render-error.test');
  });

  it('uses no colour when not on a TTY', () => {
    expect(renderError(new BangerError('conflict', 'x'), false)).not.toContain('\x1b[');
  });

  it('exit code 2 for bad input, 1 otherwise', () => {
    expect(exitCodeFor(new BangerError('bad_request', 'x'))).toBe(2);
    expect(exitCodeFor(new BangerError('timeout', 'x'))).toBe(1);
    expect(exitCodeFor(new Error('x'))).toBe(1);
  });
});
