/**
 * Random hex for ids and temp-file names. node:crypto is loaded on first use
 * (process.getBuiltinModule), not imported: loading it costs ~7 ms, and every
 * CLI command loads this module's users but few of them need a random name.
 */
export function randomHex(bytes: number): string {
  return process.getBuiltinModule('node:crypto').randomBytes(bytes).toString('hex');
}
