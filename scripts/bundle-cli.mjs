// The build's second step (after tsc): bundles the CLI with rolldown.config.js,
// first removing the chunks of the previous build (their names carry hashes).
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'rolldown';
import config from '../rolldown.config.js';

const dir = config.output.dir;
for (const f of readdirSync(dir)) if (/^cli\.(bundle|chunk-.*)\.js$/.test(f)) rmSync(join(dir, f));
await build({ ...config, logLevel: 'warn' });
