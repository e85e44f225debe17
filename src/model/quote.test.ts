import { describe, it, expect } from 'vitest';
import { shellJoin, shellQuote } from './quote.js';
import { createRunner } from '../system/runner.js';

describe('shell quoting', () => {
  it('leaves plain words alone and quotes the rest', () => {
    expect(shellQuote('echo')).toBe('echo');
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote("c'd")).toBe(`'c'\\''d'`);
    expect(shellQuote('')).toBe("''");
    expect(shellQuote('$HOME')).toBe("'$HOME'");
  });

  it('round-trips through a real POSIX shell byte for byte', async () => {
    const args = ['a b', "c'd", '"dq"', '$HOME', 'back\\slash', 'new\nline', '*', '', '; rm -rf /', '`id`', 'tab\there', 'ünïcödé'];
    const script = `for a in ${shellJoin(args)}; do printf '[%s]\\n' "$a"; done`;
    const r = await createRunner().run(['sh', '-c', script]);
    expect(r.stdout).toBe(args.map((a) => `[${a}]\n`).join(''));
  });
});
