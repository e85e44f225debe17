/** Human sizes ("512M", "2G", "1.5GiB", "1048576") to bytes, strictly. */
import { badRequest } from '../errors/errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m?.[2]?.toLowerCase() ?? '';
  if (!m || !(unit in UNITS)) {
    throw badRequest(`${what}: ${JSON.stringify(text)} is not a size`, 'write a size like "512M", "4G" or "1T"');
  }
  const bytes = Math.floor(Number(m[1]) * UNITS[unit]!);
  if (!Number.isFinite(bytes) || bytes <= 0) {
    throw badRequest(`${what}: ${JSON.stringify(text)} must be greater than zero`, 'write a size like "4G"');
  }
  return bytes;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}
