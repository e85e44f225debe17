import { describe, it, expect } from 'vitest';
import { renderError, exitCodeFor, flagFor } from './render-error.js';
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

  it('unavailable says what is unavailable, not "daemon" (a registry, a catalog or a guest is as often the one)', () => {
    const text = renderError(new BangerError('unavailable', 'root@127.0.0.1:2222 closed the connection before the SSH handshake'), false);
    expect(text).toContain('banger: unavailable: root@127.0.0.1:2222 closed');
    expect(text).not.toContain('daemon');
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

describe('fields become flags only here', () => {
  const fieldError = (field: string, message: string) => new BangerError('bad_request', message, 'h', { field });

  it('names the flag the command takes the field as', () => {
    expect(renderError(fieldError('memoryMib', 'memory must be at least 256 MiB (got 1)'), false, 'vm run')).toContain(
      'banger: invalid input: --memory: memory must be at least 256 MiB (got 1)',
    );
    expect(renderError(fieldError('diskBytes', 'x'), false, 'vm set')).toContain('--disk-size: x');
    expect(renderError(fieldError('name', 'invalid VM name'), false, 'vm create')).toContain('--name: invalid VM name');
    expect(renderError(fieldError('name', 'invalid image name'), false, 'image delete')).toContain('NAME: invalid image name');
  });

  it('a field arriving over RPC (fromShape) is rendered the same way', () => {
    const e = BangerError.fromShape({ code: 'bad_request', message: 'must be at least 1', field: 'vcpu' });
    expect(renderError(e, false, 'vm create')).toContain('--vcpu: must be at least 1');
    expect(renderError(e, false, 'vm create')).not.toContain('vm.create');
  });

  it('maps per command, falls back to the field', () => {
    expect(flagFor('vm run', 'name')).toBe('--name');
    expect(flagFor('vm start', 'name')).toBe('NAME');
    expect(flagFor('vm prune', 'names.3')).toBe('NAME');
    expect(flagFor(undefined, 'memoryMib')).toBe('--memory');
    expect(flagFor('vm run', 'somethingNew')).toBe('somethingNew');
  });

  it('no field: the message as it is', () => {
    expect(renderError(new BangerError('bad_request', 'plain'), false, 'vm run')).toContain('banger: invalid input: plain');
  });
});
