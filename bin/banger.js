#!/usr/bin/env node
// Node's compile cache (22.1+) keeps compiled code between runs; older Node
// has no enableCompileCache and runs without it.
import module from 'node:module';

module.enableCompileCache?.();
await import('../dist/src/cli/cli.bundle.js');
