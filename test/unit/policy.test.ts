/** Layering rules, pinned. */
import { describe, it, expect } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const root = join(import.meta.dirname, '..', '..');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return files(p);
    return p.endsWith('.ts') && !p.endsWith('.test.ts') ? [p] : [];
  });
}

const src = files(join(root, 'src')).map((p) => ({ path: relative(root, p), text: readFileSync(p, 'utf8') }));

/** The repo-relative paths a file imports (relative specifiers only). */
function importsOf(f: { path: string; text: string }): string[] {
  return [...f.text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => relative(root, resolve(root, dirname(f.path), m[1]!)));
}

/** What a file loads when it is loaded: static imports and re-exports, not `import type`, not `import()`. */
function staticImportsOf(f: { path: string; text: string }): string[] {
  return [...f.text.matchAll(/^(?:import|export)\s+(?!type\b)(?:[^;']*?\sfrom\s+)?'([^']+)'/gm)].map((m) =>
    m[1]!.startsWith('.') ? relative(root, resolve(root, dirname(f.path), m[1]!)).replace(/\.js$/, '.ts') : m[1]!,
  );
}

/** Every module (files and packages) loading `entries` loads. */
function loadClosure(entries: string[]): Set<string> {
  const byPath = new Map(src.map((f) => [f.path, f]));
  const seen = new Set<string>();
  const todo = [...entries];
  while (todo.length) {
    const p = todo.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    const f = byPath.get(p);
    if (f) todo.push(...staticImportsOf(f));
  }
  return seen;
}

describe('layering', () => {
  it('only src/system imports node:child_process', () => {
    const offenders = src.filter((f) => /from 'node:child_process'|from 'child_process'|require\('child_process'\)|getBuiltinModule\('(node:)?child_process'\)/.test(f.text) && !f.path.startsWith('src/system/'));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('nothing passes shell: true', () => {
    expect(src.filter((f) => /shell:\s*true/.test(f.text)).map((f) => f.path)).toEqual([]);
  });

  it('the CLI never imports daemon internals', () => {
    const offenders = src.filter((f) => f.path.startsWith('src/cli/') && /from '\.\.\/(\.\.\/)?daemon\//.test(f.text));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('the SDK (src/sdk) never imports the CLI or the daemon: it is the layer the CLI stands on', () => {
    const offenders = src.filter((f) => f.path.startsWith('src/sdk/') && importsOf(f).some((i) => i.startsWith('src/cli/') || i.startsWith('src/daemon/')));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('the CLI reaches bangerd only through the SDK (no RPC client of its own)', () => {
    const offenders = src.filter((f) => f.path.startsWith('src/cli/') && importsOf(f).some((i) => i === 'src/rpc/client.js'));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it("a simple command (vm list) loads no zod and no node:crypto: they cost a CLI start ~20 ms and ~7 ms", () => {
    // What `banger vm list` loads: main, the vm command, the SDK, the RPC client (src/rpc/shape.ts checks results, not zod).
    const loaded = loadClosure(['src/cli/main.ts', 'src/cli/commands/vm.ts', 'src/sdk/banger.ts', 'src/rpc/client.ts']);
    expect(loaded.has('src/rpc/results.ts')).toBe(true); // the closure is real
    expect([...loaded].filter((m) => m === 'zod' || m.startsWith('zod/') || m === 'node:crypto')).toEqual([]);
  });

  it('src/model does no I/O', () => {
    const offenders = src.filter((f) => f.path.startsWith('src/model/') && /from 'node:(fs|net|child_process|http)/.test(f.text));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('src/daemon reaches a VMM only through its driver: nothing in it imports src/vmm/qemu', () => {
    const offenders = src.filter((f) => f.path.startsWith('src/daemon/') && importsOf(f).some((i) => i.startsWith('src/vmm/qemu/')));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('outside src/vmm/qemu only src/vmm/drivers.ts imports the QEMU driver\'s modules', () => {
    const offenders = src.filter((f) => !f.path.startsWith('src/vmm/qemu/') && f.path !== 'src/vmm/drivers.ts' && importsOf(f).some((i) => i.startsWith('src/vmm/qemu/')));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });

  it('no module-level mutable state in services (no top-level let)', () => {
    const offenders = src.filter((f) => f.path.startsWith('src/daemon/') && /^let /m.test(f.text));
    expect(offenders.map((f) => f.path)).toEqual([]);
  });
});
