// The build's second step (after tsc):
// 1. removes output whose source is gone (tsc never deletes: a moved or deleted
//    src/x.ts would leave dist/src/x.js behind, to be packed and shipped);
// 2. bundles the CLI with rolldown.config.js, first removing the chunks of the
//    previous build (their names carry hashes);
// 3. runs the bundle's `--help` (every command loaded): a chunk cycle under
//    main's top-level await would leave it unsettled (exit 13, no output).
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { build } from 'rolldown';
import config from '../rolldown.config.js';

const BUNDLE = /^cli\.(bundle|chunk-.*)\.js$/;

function prune(dir) {
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) {
      prune(p);
      continue;
    }
    const m = /^(.*?)\.(js|d\.ts|js\.map|d\.ts\.map)$/.exec(f);
    if (!m || BUNDLE.test(f)) continue;
    const source = join(relative('dist', dir), `${m[1]}.ts`);
    if (!existsSync(source)) rmSync(p);
  }
}
for (const top of ['dist/src', 'dist/test']) if (existsSync(top)) prune(top);

const dir = config.output.dir;
for (const f of readdirSync(dir)) if (BUNDLE.test(f)) rmSync(join(dir, f));
await build({ ...config, logLevel: 'warn' });

const help = spawnSync(process.execPath, ['bin/banger.js', '--help'], { encoding: 'utf8', timeout: 30_000 });
if (help.status !== 0 || !help.stdout.includes('Usage: banger')) {
  console.error(`bundle-cli: the bundled CLI does not run (\`banger --help\` exited ${help.status}):\n${help.stderr}`);
  process.exit(1);
}
