import { describe, it, expect } from 'vitest';
import { createRunner, CommandFailedError, formatArgv } from './runner.js';
import { BangerError } from '../errors/errors.js';

const runner = createRunner();

describe('runner', () => {
  it('captures stdout and exit code without a shell', async () => {
    const r = await runner.run(['printf', '%s|', 'a b', '$HOME', '`id`']);
    expect(r.stdout).toBe('a b|$HOME|`id`|');
    expect(r.code).toBe(0);
  });

  it('a failure names argv, exit code and the stderr tail', async () => {
    const e = (await runner.run(['sh', '-c', 'echo oops >&2; exit 3']).catch((x: unknown) => x)) as CommandFailedError;
    expect(e).toBeInstanceOf(CommandFailedError);
    expect(e.code).toBe('operation_failed');
    expect(e.message).toContain('sh -c');
    expect(e.message).toContain('exited with code 3');
    expect(e.message).toContain('oops');
  });

  it('allowFailure resolves with the code', async () => {
    const r = await runner.run(['false'], { allowFailure: true });
    expect(r.code).toBe(1);
  });

  it('a missing program is a coded error with an install hint', async () => {
    const e = (await runner.run(['definitely-not-a-program-xyz']).catch((x: unknown) => x)) as BangerError;
    expect(e.code).toBe('operation_failed');
    expect(e.hint).toContain('setup.sh');
  });

  it('kills on timeout', async () => {
    const r = await runner.run(['sleep', '5'], { timeoutMs: 200, allowFailure: true });
    expect(r.timedOut).toBe(true);
    expect(r.signal).toBe('SIGKILL');
  });

  it('feeds input', async () => {
    expect((await runner.run(['cat'], { input: 'hello' })).stdout).toBe('hello');
  });

  it('formats argv for messages', () => {
    expect(formatArgv(['qemu-img', 'create', 'a b'])).toBe('qemu-img create "a b"');
  });
});
