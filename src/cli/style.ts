/** Colour only on a TTY and never with NO_COLOR. */
const enabled = (stream: NodeJS.WriteStream) =>
  stream.isTTY === true && process.env.NO_COLOR === undefined && process.env.TERM !== 'dumb';

const wrap = (open: number, close: number) => (text: string, stream: NodeJS.WriteStream = process.stdout) =>
  enabled(stream) ? `\x1b[${open}m${text}\x1b[${close}m` : text;

export const style = {
  pass: wrap(32, 39),
  fail: wrap(31, 39),
  warn: wrap(33, 39),
  dim: wrap(2, 22),
  bold: wrap(1, 22),
};

/** Plain aligned columns (no borders), like `docker ps`. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** "key  value" lines with the keys padded to one width (vm show, image show …). */
export function keyValues(rows: Array<[string, string]>): string {
  const w = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}
