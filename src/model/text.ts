/** Text from a peer, made safe to put into a message or a log line. No I/O. */

/** Longest piece of peer-sent text put into an error message or a log line, unless a caller says otherwise. */
export const PEER_TEXT_MAX = 200;

/** `text` cut to `max` characters (never half a surrogate pair), saying how long it was when cut. */
export function clip(text: string, max = PEER_TEXT_MAX): string {
  if (text.length <= max) return text;
  let end = max;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}… (${text.length} characters)`;
}
