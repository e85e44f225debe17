// Bundles the CLI (dist/src/cli/main.js, built by tsc) into dist/src/cli/cli.bundle.js
// plus one chunk per lazily loaded command. A CLI start then reads a handful of
// files instead of ~160 (zod alone is 95): that per-file loader work was most of
// a simple command's time. The chunks sit beside main.js, so paths the code
// derives from import.meta.url (the daemon's main, package.json) stay the same.
// Native and daemon-only packages stay external.
import { defineConfig } from 'rolldown';

export default defineConfig({
  input: { 'cli.bundle': 'dist/src/cli/main.js' },
  platform: 'node',
  external: [/^node:/, 'ssh2', 'better-sqlite3', 'pino', 'undici', 'tar', 'fzstd', 'dns-packet'],
  output: {
    dir: 'dist/src/cli',
    format: 'esm',
    entryFileNames: '[name].js',
    chunkFileNames: 'cli.chunk-[name]-[hash].js',
    sourcemap: false,
  },
});
