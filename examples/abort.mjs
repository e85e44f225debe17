// abort.mjs: stopping a banger.run with an AbortSignal.
//
//   node examples/abort.mjs
//
// Two runs of a command that would take ten minutes:
//   1. aborted by an AbortController two seconds after the VM is ready (the command is running);
//   2. aborted by AbortSignal.timeout while the VM is still being made.
// Either way run() rejects with a BangerError of code `interrupted`, and only
// once the VM is gone: nothing is left to clean up. Each run prints one JSON line.
// VM names: BANGER_EXAMPLE_NAME-cmd and BANGER_EXAMPLE_NAME-boot
// (default base: abort-<random>); BANGER_EXAMPLE_ABORT_MS sets run 2's timeout (default 1000).
import { Banger, isBangerError } from 'banger';

const base = process.env.BANGER_EXAMPLE_NAME ?? `abort-${Math.random().toString(16).slice(2, 6)}`;
const bootTimeoutMs = Number(process.env.BANGER_EXAMPLE_ABORT_MS ?? 1000);

const banger = await Banger.connect();

/** Runs `sleep 600` in a throwaway VM until `signal` aborts; prints how it ended. */
async function attempt(phase, name, signal, onReady) {
  const t0 = Date.now();
  const line = { example: 'abort', phase, name, ready: false };
  try {
    const res = await banger.run({
      cmd: ['sleep', '600'],
      name,
      signal,
      // onReady: the VM is up, the command is about to start.
      onReady: (vm, created) => {
        line.ready = true;
        onReady?.(vm, created);
      },
    });
    Object.assign(line, { outcome: 'finished', exitCode: res.exitCode }); // not expected: sleep 600 was meant to be cut short
  } catch (e) {
    if (!isBangerError(e)) throw e;
    Object.assign(line, { outcome: 'rejected', code: e.code, message: e.message });
  }
  line.ms = Date.now() - t0;
  // When run() has settled, its VM is gone: the list no longer has it.
  line.listed = (await banger.listVms()).some((v) => v.name === name);
  console.log(JSON.stringify(line));
}

try {
  // 1. An AbortController: abort() whenever you decide (here: 2 s after the VM is ready).
  const controller = new AbortController();
  let timer;
  await attempt('command', `${base}-cmd`, controller.signal, (vm) => {
    console.error(`[abort] ${vm.name} is ready; aborting in 2 s`);
    timer = setTimeout(() => controller.abort(), 2000);
  });
  clearTimeout(timer);

  // 2. A deadline: AbortSignal.timeout aborts by itself, here before the VM is even up.
  await attempt('boot', `${base}-boot`, AbortSignal.timeout(bootTimeoutMs));
} finally {
  banger.close();
}
