/**
 * POSIX shell quoting for commands sent to the guest over SSH. SSH joins
 * its arguments with spaces and the remote shell re-splits them, so each
 * argument is single-quoted and the whole command sent as one string: it
 * arrives byte-identical (the seeds' exit-code bug came from not doing this).
 */
export function shellQuote(arg: string): string {
  if (arg.length > 0 && /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function shellJoin(argv: readonly string[]): string {
  return argv.map(shellQuote).join(' ');
}
