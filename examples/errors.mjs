// errors.mjs: what a failure looks like to SDK code.
//
//   node examples/errors.mjs
//
// Every failure of banger is a BangerError with a stable `code` to branch on
// (bad_request, not_found, not_running, interrupted, …), a `message` that says
// what happened and, usually, a `hint` that says what to do. A command that
// exits non-zero is not an error: vm.exec and banger.run return its exitCode.
// Each case prints one JSON line. BANGER_EXAMPLE_NAME names the VM of case 3
// (default: errors-<random>); it is created without booting, then deleted.
import { Banger, BangerError } from 'banger';

const name = process.env.BANGER_EXAMPLE_NAME ?? `errors-${Math.random().toString(16).slice(2, 6)}`;

/** Runs `fn`, expecting it to fail; prints the error's code, message and hint. */
async function show(what, fn) {
  try {
    await fn();
    console.log(JSON.stringify({ example: 'errors', case: what, failed: false }));
  } catch (e) {
    if (!(e instanceof BangerError)) throw e; // anything else is a bug, in banger or here
    console.log(JSON.stringify({ example: 'errors', case: what, failed: true, code: e.code, message: e.message, hint: e.hint ?? null }));
    return e;
  }
}

const banger = await Banger.connect();
try {
  // 1. Invalid input is refused before anything happens: VM names are DNS labels.
  const e = await show('bad-name', () => banger.createVm({ name: 'Bad_Name' }));
  if (e?.code === 'bad_request') console.error(`[errors] ${e.message}\n[errors] hint: ${e.hint}`);

  // 2. Asking for a VM that does not exist.
  await show('not-found', () => banger.getVm(`${name}-missing`));

  // 3. A VM that exists but is not running: exec needs it up (start: false makes the disks only).
  const vm = await banger.createVm({ name, start: false });
  try {
    await show('not-running', () => vm.exec(['true']));
  } finally {
    await vm.delete();
  }
} finally {
  banger.close();
}
