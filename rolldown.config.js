// Bundles the CLI (dist/src/cli/main.js, built by tsc) into dist/src/cli/cli.bundle.js
// plus one chunk per lazily loaded command. A CLI start then reads a handful of
// files instead of ~160 (zod alone is 95): that per-file loader work was most of
// a simple command's time. The chunks sit beside main.js, so paths the code
// derives from import.meta.url (the daemon's main, package.json) stay the same.
// Native and daemon-only packages stay external.
//
// Chunks: each file a command loads costs ~1 ms however small (read, cache
// lookup, link), and automatic splitting made ~16 for `vm list`. So what main
// loads statically is one chunk (`core`: commander, errors, paths, the
// runner), and the vm command with the SDK and everything they import is
// another (`vm`); other commands and lazily loaded parts (config, doctor's
// checks, which load zod) stay chunks of their own. main.js itself stays in
// the entry: it awaits its command's import at top level, and a chunk that
// imports core while core awaits it would never settle (the build runs
// `--help`, which loads every command, to catch that).

import { defineConfig } from 'rolldown';

/**
 * `import { x } from "node:fs"` costs ~5 ms: a built-in's ESM facade reads
 * every export, and fs's `promises` getter loads fs/promises and readline.
 * In the bundle, each such import becomes `const { x } =
 * process.getBuiltinModule("node:fs")`, the module object itself, no facade
 * (same bindings: a built-in's exports are never reassigned). The chunks
 * import each other without cycles, so no code runs before these lines.
 */
function builtinsWithoutFacades() {
  const line = /^import \{([^}]*)\} from "(node:[a-z_/]+)";$/gm;
  return {
    name: 'builtins-without-facades',
    renderChunk(code) {
      const out = code.replace(line, (_m, names, mod) => {
        const fields = names
          .split(',')
          .map((n) => n.trim())
          .filter(Boolean)
          .map((n) => n.replace(/^(\S+) as (\S+)$/, '$1: $2'));
        return `const { ${fields.join(', ')} } = process.getBuiltinModule(${JSON.stringify(mod)});`;
      });
      const left = /^import\b[^;]*"node:[^"]*";$/m.exec(out);
      if (left) throw new Error(`builtins-without-facades: an import form it does not rewrite: ${left[0]}`);
      return out;
    },
  };
}

export default defineConfig({
  input: { 'cli.bundle': 'dist/src/cli/main.js' },
  platform: 'node',
  plugins: [builtinsWithoutFacades()],
  external: [/^node:/, 'ssh2', 'better-sqlite3', 'pino', 'undici', 'tar', 'fzstd', 'dns-packet'],
  output: {
    dir: 'dist/src/cli',
    format: 'esm',
    entryFileNames: '[name].js',
    chunkFileNames: 'cli.chunk-[name]-[hash].js',
    codeSplitting: {
      groups: [
        { name: 'core', tags: ['$initial'], test: (id) => !id.endsWith('/dist/src/cli/main.js'), priority: 2 },
        { name: 'vm', test: /dist\/src\/(cli\/commands\/vm|sdk\/banger)\.js$/, priority: 1 },
      ],
    },
    sourcemap: false,
  },
});
