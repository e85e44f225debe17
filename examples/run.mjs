// run.mjs: a command in a throwaway VM, like `banger vm run --rm`.
//
//   node examples/run.mjs [REPO] [-- CMD [ARG...]]
//   node examples/run.mjs ./my-repo -- make test
//   node examples/run.mjs -- uname -a
//
// banger.run creates a VM, copies REPO (a directory in a git repo; optional)
// to /root/repo, runs CMD there and deletes the VM, also when something fails.
// The command's output streams to this process's stdout and stderr as it is
// produced, and this process exits with the command's exit code.
// The VM's name comes from BANGER_EXAMPLE_NAME (default: a generated one).
import { Banger, isBangerError } from 'banger';

// Arguments: an optional repo, then `--` and the command (default: uname -a).
const args = process.argv.slice(2);
const dash = args.indexOf('--');
const before = dash === -1 ? args : args.slice(0, dash);
const cmd = dash === -1 ? ['uname', '-a'] : args.slice(dash + 1);
const repo = before[0];
if (before.length > 1 || cmd.length === 0) {
  console.error('usage: node examples/run.mjs [REPO] [-- CMD [ARG...]]');
  process.exit(2);
}

const banger = await Banger.connect();
try {
  const res = await banger.run({
    cmd, // an argv: every element arrives in the guest byte-identical (no shell quoting to get right)
    repo,
    name: process.env.BANGER_EXAMPLE_NAME,
    // Streamed as the command runs; res.stdout/res.stderr also hold the output once it is done.
    onStdout: (buf) => process.stdout.write(buf),
    onStderr: (buf) => process.stderr.write(buf),
    onReady: (vm, created) => console.error(`[run] ${vm.name} ready in ${(created.bootMs / 1000).toFixed(1)} s`),
  });
  console.error(`[run] ${res.name}: exit ${res.exitCode}${res.workspace ? `, ${res.workspace.workspace.files} repo files` : ''}; VM deleted`);
  process.exitCode = res.exitCode;
} catch (e) {
  // Failures of banger itself (not of the command) are BangerErrors: a code, a message, a hint.
  if (!isBangerError(e)) throw e;
  console.error(`[run] ${e.code}: ${e.message}${e.hint ? `\n[run] hint: ${e.hint}` : ''}`);
  process.exitCode = 1;
} finally {
  banger.close();
}
