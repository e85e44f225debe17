/**
 * npm run bench -- --tuning [--pairs N]: the tuned default image against an
 * untuned one of the same packages (Debian's stock boot: no masked units or
 * generators, sshd's full PAM stack and `sshd -t`, MODULES=most initrd;
 * src/images/tuning.ts), both cold, alternately:
 *   tuned:   `banger vm run --rm --cold --image bookworm -- true`
 *   untuned: `banger vm run --rm --cold --image bookworm-stock -- true`
 * The untuned image is built first when missing (`banger image build
 * bookworm-stock --no-tuning`; not timed) and kept for later runs. Prints
 * each side's min/median/max and last `ratio tuned/untuned: X.XX` (median of
 * the per-pair ratios). Before each sample it waits until no template build
 * runs (the first cold create of a shape without a snapshot starts one in
 * the background, and it would share the CPUs). A benchmark: it never fails on time.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createRunner } from '../../src/system/runner.js';
import { imagePaths, type Layout } from '../../src/paths/paths.js';
import { repoRoot } from '../smoke/harness.js';
import { alternatePairs, median, spread } from './stages.js';
import { waitNoTemplateBuild } from './warm.js';

const TUNED = 'bookworm';
const UNTUNED = 'bookworm-stock';
const runner = createRunner();
const bangerBin = join(repoRoot, 'bin', 'banger.js');
const banger = (args: string[]) => runner.run([process.execPath, bangerBin, ...args], { allowFailure: true, env: { ...process.env, NO_COLOR: '1' } });
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

async function coldRun(layout: Layout, image: string): Promise<number> {
  await waitNoTemplateBuild(layout);
  const t0 = performance.now();
  const r = await banger(['vm', 'run', '--rm', '--cold', '--image', image, '--', 'true']);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`banger vm run --image ${image} → exit ${r.code}: ${r.stderr.trim().split('\n').slice(-4).join(' | ')}`);
  return ms;
}

export async function tuningBench({ layout, pairs }: { layout: Layout; pairs: number }): Promise<void> {
  console.log(`bench tuning: ${pairs} pairs of \`banger vm run --rm --cold --image IMAGE -- true\`, alternating ${TUNED} (tuned) and ${UNTUNED} (untuned)`);
  if (!existsSync(imagePaths(layout, UNTUNED).rootfs)) {
    console.log(`bench: building ${UNTUNED} without boot tuning (banger image build ${UNTUNED} --no-tuning; not timed)…`);
    const b = await banger(['image', 'build', UNTUNED, '--no-tuning']);
    if (b.code !== 0) throw new Error(`image build ${UNTUNED}: ${b.stderr.trim().split('\n').slice(-4).join(' | ')}`);
  }
  console.log('bench: warm-up, one of each (page cache; not counted)…');
  for (const img of [TUNED, UNTUNED]) console.log(`  warm-up ${img}: ${s(await coldRun(layout, img))}`);
  const { a: tuned, b: untuned, ratios } = await alternatePairs(
    pairs,
    { label: 'tuned', run: () => coldRun(layout, TUNED) },
    { label: 'untuned', run: () => coldRun(layout, UNTUNED) },
  );
  console.log(`tuned (${TUNED}): ${spread(tuned, s)} over ${pairs}`);
  console.log(`untuned (${UNTUNED}): ${spread(untuned, s)} over ${pairs}`);
  console.log(`per-pair ratio tuned/untuned: ${spread(ratios, (r) => r.toFixed(2))}`);
  console.log(`ratio tuned/untuned: ${median(ratios).toFixed(2)}`);
}
