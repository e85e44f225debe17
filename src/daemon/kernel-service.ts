/**
 * Kernels from the signed catalog (src/images/kernels.ts), in
 * STATE/kernels: list, show, pull, ensure (what a create that needs one
 * calls: pulled once however many ask at the same time), delete (refused
 * while something uses it). One lock per kernel name.
 */
import type { KeyObject } from 'node:crypto';
import { BangerError } from '../errors/errors.js';
import { catalogEntry, checkKernelName, localKernel, localKernels, pullKernel, readCatalog, type CatalogEntry, type LocalKernel } from '../images/kernels.js';
import { removeTreeUnder } from './safe-remove.js';
import { KeyedMutex } from './locks.js';
import { within } from '../paths/paths.js';
import { httpUrl } from '../release/manifest.js';
import type { Logger } from '../log/log.js';

export interface KernelServiceDeps {
  kernelsDir: string;
  /** The catalog's URL (config kernel_catalog_url); empty: none configured. */
  catalogUrl: string;
  /** The key the catalog is checked with (read on first use: a bad key file fails that call, not the daemon). */
  key: () => KeyObject;
  log: Logger;
  /** What uses a kernel (images, VMs), by name: a kernel in use cannot be deleted. */
  usersOf: (name: string) => string[];
}

/** A pulled kernel and what uses it (images, VMs, an image being made). */
export type KernelView = LocalKernel & { usedBy: string[] };

export class KernelService {
  private readonly locks = new KeyedMutex();
  /** Kernels held by work in progress (an image being made with one): not deleted meanwhile. */
  private readonly held = new Map<string, number>();

  constructor(private readonly deps: KernelServiceDeps) {}

  list(): KernelView[] {
    return localKernels(this.deps.kernelsDir).map((k) => this.view(k));
  }

  show(name: string): KernelView {
    const k = localKernel(this.deps.kernelsDir, checkKernelName(name, 'name'));
    if (!k) throw new BangerError('not_found', `kernel ${name} is not pulled`, `\`banger kernel pull ${name}\``, { field: 'name' });
    return this.view(k);
  }

  /** A kernel with what uses it. */
  private view(k: LocalKernel): KernelView {
    return { ...k, usedBy: [...this.deps.usersOf(k.name), ...(this.held.has(k.name) ? ['an image being made'] : [])] };
  }

  async catalog(signal?: AbortSignal): Promise<CatalogEntry[]> {
    return (await this.readCatalog(signal)).kernels;
  }

  /** `kernel pull NAME`: refused when it is there already (unless force). */
  async pull(name: string, opts: { force?: boolean; signal?: AbortSignal } = {}): Promise<KernelView> {
    checkKernelName(name, 'name');
    return this.locks.run(name, async () => {
      if (localKernel(this.deps.kernelsDir, name) && !opts.force) throw new BangerError('already_exists', `kernel ${name} is pulled already`, 'use it, or pull it again with --force');
      return this.view(await this.pullLocked(name, opts.signal));
    });
  }

  /** The kernel, pulled first when it is not there; callers asking at once wait for one pull. */
  async ensure(name: string, signal?: AbortSignal): Promise<LocalKernel> {
    checkKernelName(name, 'kernel');
    const have = localKernel(this.deps.kernelsDir, name);
    if (have) return have;
    return this.locks.run(name, async () => this.haveLocked(name, signal));
  }

  /** Runs fn with the kernel there (pulled first when missing) and held: `delete` is refused until fn ends. */
  async using<T>(name: string, signal: AbortSignal | undefined, fn: (k: LocalKernel) => Promise<T>): Promise<T> {
    const k = await this.locks.run(checkKernelName(name, 'kernel'), async () => {
      const got = await this.haveLocked(name, signal);
      this.held.set(name, (this.held.get(name) ?? 0) + 1);
      return got;
    });
    try {
      return await fn(k);
    } finally {
      const n = (this.held.get(name) ?? 1) - 1;
      if (n > 0) this.held.set(name, n);
      else this.held.delete(name);
    }
  }

  async delete(name: string): Promise<{ deleted: string }> {
    checkKernelName(name, 'name');
    return this.locks.run(name, async () => {
      const users = this.show(name).usedBy;
      if (users.length) throw new BangerError('conflict', `kernel ${name} is used by ${users.join(', ')}`, 'delete those first (`banger vm delete`, `banger image delete`)');
      removeTreeUnder(this.deps.kernelsDir, within(this.deps.kernelsDir, name));
      return { deleted: name };
    });
  }

  private async readCatalog(signal?: AbortSignal) {
    if (!this.deps.catalogUrl) throw new BangerError('not_found', 'no kernel catalog is configured', 'set kernel_catalog_url (the URL of a catalog.json) in config.toml');
    return readCatalog(httpUrl(this.deps.catalogUrl, 'kernel_catalog_url'), this.deps.key(), signal);
  }

  /** The kernel, pulled when it is not there; the caller holds the name's lock. */
  private async haveLocked(name: string, signal?: AbortSignal): Promise<LocalKernel> {
    return localKernel(this.deps.kernelsDir, name) ?? this.pullLocked(name, signal);
  }

  private async pullLocked(name: string, signal?: AbortSignal): Promise<LocalKernel> {
    const catalog = await this.readCatalog(signal);
    const started = Date.now();
    const k = await pullKernel(this.deps.kernelsDir, catalog, catalogEntry(catalog, name), signal);
    this.deps.log.info({ kernel: name, version: k.version, ms: Date.now() - started }, 'kernel pulled');
    return k;
  }
}
