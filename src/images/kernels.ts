/**
 * The kernel catalog (issue 13): a signed `catalog.json` (+ `.sig`, checked
 * by src/release/verify.ts) lists kernels by name, each a kernel and an
 * initrd with their sha256 and size; `pull` puts one in the local store,
 *
 *   KERNELS/NAME/vmlinuz, initrd.img, [modules.tar,] kernel.json
 *
 * An entry may list a `modules` file: a tar (plain or gzip) of the
 * kernel's modules directory, its entries named `VERSION/...` (the entry's
 * version is then the kernel release, `uname -r`). `image pull --kernel`
 * applies it to the image's /lib/modules; a kernel without one must have
 * what a guest needs (virtio console, net and block, ext4) built in.
 *
 * downloaded into a sibling work directory, every file checked, kernel.json
 * written there, and the directory renamed into place: a reader sees a whole
 * kernel or none (the seeds' "unexpected end of JSON input" came from a
 * manifest written in place while a parallel create read it). Pulls of one
 * name are serialised by the caller's per-name lock; `ensure` re-checks
 * after taking it, so parallel creates that need the same kernel download
 * it once.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { BangerError } from '../errors/errors.js';
import { randomHex } from '../model/random.js';
import { downloadFile, fetchSigned } from '../release/fetch.js';
import { httpUrl } from '../release/manifest.js';
import { checkSha256 } from '../release/verify.js';

import { KERNEL_NAME_RE } from '../model/kernel-name.js';

export { KERNEL_NAME_RE };
const MAX_CATALOG_BYTES = 1024 * 1024;
const MAX_KERNEL_FILE_BYTES = 512 * 1024 * 1024;
export const KERNEL_FILES = { kernel: 'vmlinuz', initrd: 'initrd.img', modules: 'modules.tar' } as const;
const ROLES = ['kernel', 'initrd', 'modules'] as const;

export function checkKernelName(name: string, field?: string): string {
  if (!KERNEL_NAME_RE.test(name)) {
    throw new BangerError('bad_request', `invalid kernel name ${JSON.stringify(name.slice(0, 64))}`, 'a kernel name is lowercase letters, digits, dots and dashes (e.g. generic-6.12); `banger kernel list` shows them', field ? { field } : undefined);
  }
  return name;
}

const fileSchema = z
  .object({
    role: z.enum(ROLES),
    url: z.string().min(1).max(2048),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    size: z.number().int().min(1).max(MAX_KERNEL_FILE_BYTES),
  })
  .strict();

const entrySchema = z
  .object({
    name: z.string().regex(KERNEL_NAME_RE),
    version: z.string().min(1).max(128),
    arch: z.enum(['x86_64']),
    description: z.string().max(1024).optional(),
    files: z.array(fileSchema).min(2).max(3),
  })
  .strict()
  .refine((e) => new Set(e.files.map((f) => f.role)).size === e.files.length && e.files.some((f) => f.role === 'kernel') && e.files.some((f) => f.role === 'initrd'), {
    message: 'must have one kernel, one initrd and at most one modules archive',
  });

const catalogSchema = z.object({ kernels: z.array(entrySchema).max(1000) }).strict();

export type CatalogEntry = z.output<typeof entrySchema>;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);

/** What a pulled kernel's kernel.json says. */
const localSchema = z
  .object({
    name: z.string().regex(KERNEL_NAME_RE),
    version: z.string().min(1).max(128),
    arch: z.string().max(32),
    sha256: z.object({ kernel: sha256Hex, initrd: sha256Hex, modules: sha256Hex.optional() }).strict(),
    source: z.string().max(2048),
    pulledAt: z.string().max(64),
  })
  .strict();

export type LocalKernel = z.output<typeof localSchema> & { dir: string };

export interface Catalog {
  url: URL;
  kernels: CatalogEntry[];
}

/** The catalog at `url`: signature checked over its bytes, then parsed. */
export async function readCatalog(url: URL, key: KeyObject, signal?: AbortSignal): Promise<Catalog> {
  const bytes = await fetchSigned(url, key, { what: 'the kernel catalog', maxBytes: MAX_CATALOG_BYTES, signal });
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new BangerError('operation_failed', `${url.href} is not JSON`, 'this is not a banger kernel catalog');
  }
  const r = catalogSchema.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new BangerError('operation_failed', `${url.href}: ${i.path.join('.') || 'catalog'}: ${i.message}`.slice(0, 400), 'this is not a banger kernel catalog');
  }
  return { url, kernels: r.data.kernels };
}

export function catalogEntry(c: Catalog, name: string): CatalogEntry {
  const e = c.kernels.find((k) => k.name === name);
  if (!e) throw new BangerError('not_found', `the kernel catalog has no kernel ${name}`, `\`banger kernel list --catalog\` shows what it has`, { field: 'name' });
  return e;
}

/** A pulled kernel, or undefined when there is none (or its kernel.json is not valid: treated as absent). */
export function localKernel(kernelsDir: string, name: string): LocalKernel | undefined {
  checkKernelName(name);
  const dir = join(kernelsDir, name);
  try {
    const r = localSchema.safeParse(JSON.parse(readFileSync(join(dir, 'kernel.json'), 'utf8')));
    if (!r.success || r.data.name !== name) return undefined;
    const roles = ROLES.filter((role) => r.data.sha256[role] !== undefined);
    if (!roles.every((role) => existsSync(join(dir, KERNEL_FILES[role])))) return undefined;
    return { ...r.data, dir };
  } catch {
    return undefined;
  }
}

export function localKernels(kernelsDir: string): LocalKernel[] {
  let names: string[];
  try {
    names = readdirSync(kernelsDir);
  } catch {
    return [];
  }
  return names.filter((n) => KERNEL_NAME_RE.test(n)).flatMap((n) => localKernel(kernelsDir, n) ?? []);
}

/**
 * Downloads `entry` into the store. The caller holds the name's lock and
 * has checked it is not there. Nothing appears under its name unless every
 * file matched the catalog.
 */
export async function pullKernel(kernelsDir: string, catalog: Catalog, entry: CatalogEntry, signal?: AbortSignal): Promise<LocalKernel> {
  mkdirSync(kernelsDir, { recursive: true, mode: 0o700 });
  const work = join(kernelsDir, `.pull-${entry.name}-${randomHex(4)}`);
  mkdirSync(work, { mode: 0o700 });
  try {
    const sha256: { kernel: string; initrd: string; modules?: string } = { kernel: '', initrd: '' };
    for (const f of entry.files) {
      const got = await downloadFile(httpUrl(f.url, `the ${f.role} url of ${entry.name}`, catalog.url), join(work, KERNEL_FILES[f.role]), {
        what: `kernel ${entry.name} (${f.role})`,
        maxBytes: f.size,
        timeoutMs: 30 * 60_000,
        signal,
      });
      checkSha256(`kernel ${entry.name} (${f.role})`, f.sha256, got.sha256);
      sha256[f.role] = got.sha256;
    }
    const local = { name: entry.name, version: entry.version, arch: entry.arch, sha256, source: catalog.url.href, pulledAt: new Date().toISOString() };
    writeFileSync(join(work, 'kernel.json'), JSON.stringify(local, null, 2) + '\n');
    const dir = join(kernelsDir, entry.name);
    rmSync(dir, { recursive: true, force: true }); // an invalid leftover (localKernel said none)
    renameSync(work, dir);
    return { ...local, dir };
  } catch (e) {
    rmSync(work, { recursive: true, force: true });
    throw e;
  }
}
