/** Layering rules, pinned. */
import { describe, it, expect } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = join(import.meta.dirname, '..', '..');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return files(p);
    return p.endsWith('.ts') && !p.endsWith('.test.ts') ? [p] : [];
  });
}

const src = files(join(root, 'src')).map((p) => ({ path: relative(root, p), text: readFileSync(p, 'utf8') }));

describe('layering', () => {
  it('only src/system imports node:child_process', () => {
    const offenders = src.filter((f) => /from 'node:child_process'|from 'child_process'|require\('child_process'\)/.test(f.text) && !f.path.startsWith('src/system/'));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('nothing passes shell: true', () => {
    expect(src.filter((f) => /shell:\s*true/.test(f.text)).map((f) => f.path)).toEqual([]);
  });

  it('the CLI never imports daemon internals', () => {
    const offenders = src.filter((f) => f.path.startsWith('src/cli/') && /from '\.\.\/(\.\.\/)?daemon\//.test(f.text));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('src/model does no I/O', () => {
    const offenders = src.filter((f) => f.path.startsWith('src/model/') && /from 'node:(fs|net|child_process|http)/.test(f.text));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('no module-level mutable state in services (no top-level let)', () => {
    const offenders = src.filter((f) => f.path.startsWith('src/daemon/') && /^let /m.test(f.text));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });
});
