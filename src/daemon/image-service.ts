/**
 * Images: build (mmdebstrap → ext4 base + kernel + initrd), list, show,
 * delete. One lock per image name: two VMs that both need the default image
 * built wait for one build; the files appear atomically (built in a scratch
 * dir, renamed into place), so no torn image is ever visible.
 */
import { randomBytes } from 'node:crypto';
import { basename } from 'node:path';
import { readdirSync } from 'node:fs';
import { z } from 'zod';
import { BangerError } from '../errors/errors.js';
import { IMAGE_SOURCE_KINDS, type ImageRecord, type ImageSourceKind, type ProgressEvent } from '../model/types.js';
import { quoteInput, validateImageName } from '../model/names.js';
import { imageNameSchema } from '../model/name-schemas.js';
import { imagePaths, within, type ImagePaths, type Layout } from '../paths/paths.js';
import { invalidRowError, type Store } from '../store/store.js';
import type { Runner } from '../system/runner.js';
import { exists, readJsonFile } from '../system/fs.js';
import { removeTreeUnder } from './safe-remove.js';
import type { Logger } from '../log/log.js';
import type { Config } from '../config/config.js';
import { DEFAULT_RECIPE, MINIMAL_RECIPE, checkRecipe, type DebianRecipe, type buildDebianImage } from '../images/build.js';
import type { Suite } from '../images/source-debian.js';
import type { pullOciImage, PullOptions } from '../images/pull.js';
import { checkKernelName, type LocalKernel } from '../images/kernels.js';
import { KERNEL_NAME_RE } from '../model/kernel-name.js';
import { deriveImage } from '../images/derive.js';
import type { GuestInstaller } from '../images/pipeline.js';
import { defaultImageName, formatImageRef, parseImageRef, type ImageRef } from '../images/oci-ref.js';
import { DEFAULT_PLATFORM, parsePlatform, type Platform } from '../images/oci/manifest.js';
import { BlobStore } from '../images/oci/blob-store.js';
import { KeyedMutex } from './locks.js';

export const DEFAULT_IMAGE = 'bookworm';
/** The guest contract's packages only (no compilers or tools): built on first use like the default. */
export const MINIMAL_IMAGE = 'minimal';

/** The recipes of the images `ensure` builds on first use. */
const BUILTIN_RECIPES: Record<string, DebianRecipe> = { [DEFAULT_IMAGE]: DEFAULT_RECIPE, [MINIMAL_IMAGE]: MINIMAL_RECIPE };

export interface ImageServiceDeps {
  store: Store;
  runner: Runner;
  layout: Layout;
  config: Config;
  log: Logger;
  buildImage: typeof buildDebianImage;
  pullImage: typeof pullOciImage;
  /** Catalog kernels (`image pull --kernel`): `fn` runs with NAME pulled (first, when missing) and held against deletion. */
  withKernel?: <T>(name: string, signal: AbortSignal | undefined, fn: (k: LocalKernel) => Promise<T>) => Promise<T>;
}

export interface PullParams {
  /** A registry reference; or, with `archive`, only what the image is called in messages. */
  ref: string;
  /** image import: an OCI layout or docker save archive (absolute path) instead of a registry. */
  archive?: string;
  name?: string;
  /** os/arch[/variant]; default linux/amd64. */
  platform?: string;
  insecure?: boolean;
  force?: boolean;
  /** A catalog kernel the image boots (pulled first when missing) instead of banger's. */
  kernel?: string;
}

export interface BuildOptions {
  force?: boolean;
  /** Apply the image's boot tuning (default true; src/images/tuning.ts). */
  tuned?: boolean;
  /** Suite and packages (default: the image's built-in recipe, else the default one). */
  recipe?: DebianRecipe;
  /** Build from this image plus `recipe.packages` instead of from scratch (in a build VM). */
  from?: string;
  onProgress?: (ev: ProgressEvent) => void;
  signal?: AbortSignal;
}

export class ImageService {
  private readonly locks = new KeyedMutex();
  private readonly warned = new Set<number>();
  /** Pulls running now: a blob prune waits for none (a pull's layers are unreferenced until it publishes). */
  private activePulls = 0;
  /** Installs what a pulled image lacks, in a build VM (set by the composition root once VMs can be made). */
  private installer: GuestInstaller | undefined;

  constructor(private readonly deps: ImageServiceDeps) {}

  setInstaller(installer: GuestInstaller): void {
    this.installer = installer;
  }

  /** The valid images; an invalid row is skipped with a warning in the log (once per row per daemon). */
  list(): ImageRecord[] {
    this.adoptCopiedIn();
    const { valid, invalid } = this.deps.store.scanImages();
    for (const row of invalid) {
      if (this.warned.has(row.rowid)) continue;
      this.warned.add(row.rowid);
      this.deps.log.warn({ rowid: row.rowid, image: row.label, problem: row.problem }, 'state.db: skipping an invalid image row (left untouched)');
    }
    return valid;
  }

  show(name: string): ImageRecord {
    validateImageName(name);
    this.isComplete(name); // a directory copied in with its manifest becomes a row first
    const img = this.deps.store.findImage(name);
    if (!img) {
      const bad = this.deps.store.invalidImageNamed(name);
      throw bad ? invalidRowError(bad, this.deps.store.path) : notFoundImage(name);
    }
    return img;
  }

  /** True when the row exists and every file it needs is on disk. */
  isComplete(name: string): boolean {
    const p = imagePaths(this.deps.layout, name); // refuses an invalid name
    const files = exists(p.rootfs) && exists(p.kernel) && exists(p.initrd);
    // An invalid row of that name is left as it is (image list reports it), not overwritten.
    if (files && !this.deps.store.hasImageRow(name)) this.adopt(name);
    return this.deps.store.findImage(name) !== undefined && files;
  }

  /**
   * An image directory with its manifest but no row (copied in from another
   * banger: how an unprivileged daemon gets an image built by root) becomes
   * a row. A manifest that does not parse is left alone.
   */
  /** Every image directory with a valid name and no row is offered to isComplete (which adopts it). */
  private adoptCopiedIn(): void {
    let entries: string[];
    try {
      entries = readdirSync(this.deps.layout.imagesDir);
    } catch {
      return;
    }
    for (const e of entries) if (imageNameSchema.safeParse(e).success && !this.deps.store.hasImageRow(e)) this.isComplete(e);
  }

  private adopt(name: string): void {
    const parsed = manifestSchema.safeParse(readJsonFile<unknown>(imagePaths(this.deps.layout, name).manifest));
    if (!parsed.success || parsed.data.name !== name) {
      this.deps.log.warn({ image: name, problem: parsed.success ? 'its name differs' : parsed.error.issues[0]?.message }, 'image directory with an invalid manifest: not adopted');
      return;
    }
    const m = parsed.data;
    const kind = m.source?.kind ?? 'debian';
    const ref = m.source?.ref ?? `${m.suite ?? '?'} (${m.mirror ?? '?'})`;
    this.deps.store.upsertImage({
      name,
      source: `${describeSource(kind, ref)}${untunedNote(m.tuned)}, adopted from ${imagePaths(this.deps.layout, name).dir}`,
      sourceKind: kind,
      sourceRef: ref,
      kernelVersion: m.kernelVersion,
      kernel: m.kernel ?? null,
      rootfsBytes: m.rootfsBytes,
      packages: m.packages ?? [],
      createdAt: m.builtAt ?? new Date().toISOString(),
    });
    this.deps.log.info({ image: name }, 'adopted an image directory with a manifest and no row');
  }

  async build(name: string, opts: BuildOptions = {}): Promise<ImageRecord> {
    validateImageName(name);
    return this.locks.run(name, async () => {
      if (this.isComplete(name) && !opts.force) {
        throw new BangerError('already_exists', `image ${name} already exists`, `use it, or rebuild with \`banger image build ${name} --force\``);
      }
      // A rebuild would pull the base out from under VMs' overlays.
      const users = this.deps.store.vmsUsingImage(name);
      if (users.length > 0) {
        throw new BangerError('conflict', `image ${name} is in use by ${users.join(', ')}`, 'delete those VMs before rebuilding it');
      }
      return opts.from !== undefined ? this.deriveLocked(name, opts.from, opts) : this.buildLocked(name, opts);
    });
  }

  /** `image build NAME --from IMAGE --packages …`: the caller holds NAME's lock. */
  private async deriveLocked(name: string, from: string, opts: BuildOptions): Promise<ImageRecord> {
    validateImageName(from, 'from');
    if (from === name) throw new BangerError('bad_request', `--from names the image being built (${name})`, 'build a new image from it under another name', { field: 'from' });
    const packages = opts.recipe?.packages ?? [];
    if (packages.length === 0) throw new BangerError('bad_request', 'image build --from needs --packages (what to add to the image)', undefined, { field: 'packages' });
    if (!this.installer) throw new BangerError('unavailable', 'this daemon cannot boot build VMs');
    const base = this.show(from);
    const paths = imagePaths(this.deps.layout, name);
    const workDir = within(this.deps.layout.buildDir, `${name}-${randomBytes(4).toString('hex')}`);
    const r = await deriveImage(
      { runner: this.deps.runner, log: (m) => this.deps.log.info({ image: name }, m) },
      {
        name,
        base: { name: from, dir: imagePaths(this.deps.layout, from).dir, kernelVersion: base.kernelVersion, packages: base.packages },
        packages,
        outDir: paths.dir,
        workDir,
        installer: this.installer,
        signal: opts.signal,
        onProgress: (stage, message) => opts.onProgress?.({ stage: `image:${stage}`, message }),
      },
    );
    const record: ImageRecord = {
      name,
      source: describeSource('image', r.sourceRef),
      sourceKind: 'image',
      sourceRef: r.sourceRef,
      kernelVersion: base.kernelVersion,
      kernel: base.kernel,
      rootfsBytes: r.rootfsBytes,
      packages: r.packages,
      createdAt: new Date().toISOString(),
    };
    this.deps.store.upsertImage(record);
    return record;
  }

  /** Returns the image, building it first when it is missing (used by vm create). */
  async ensure(name: string, opts: BuildOptions = {}): Promise<ImageRecord> {
    validateImageName(name);
    if (this.isComplete(name)) return this.show(name);
    const recipe = BUILTIN_RECIPES[name];
    if (!recipe) throw notFoundImage(name);
    return this.locks.run(name, async () => {
      // A peer may have built it while we waited for the lock.
      if (this.isComplete(name)) return this.show(name);
      opts.onProgress?.({ stage: 'image', message: `image ${name} not found; building it (first use only)` });
      return this.buildLocked(name, { ...opts, recipe });
    });
  }

  /**
   * Pulls an OCI image and makes it an image named `p.name` (default: from
   * the reference). It boots banger's kernel, taken from the default image,
   * which is built first when missing. An image of that name is replaced
   * only with `force`, and only once the new one is complete.
   */
  async pull(p: PullParams, opts: Omit<BuildOptions, 'force' | 'tuned'> = {}): Promise<ImageRecord> {
    const ref = p.archive === undefined ? parseImageRef(p.ref) : undefined;
    const platform = p.platform === undefined ? DEFAULT_PLATFORM : parsePlatform(p.platform);
    const name = p.name ?? (ref ? defaultImageName(ref) : archiveImageName(p.archive!));
    validateImageName(name);
    if (BUILTIN_RECIPES[name]) {
      throw new BangerError('conflict', `${name} is one of banger's built-in images (${DEFAULT_IMAGE}'s kernel boots pulled images)`, 'choose another name with --name', { field: 'name' });
    }
    if (p.kernel !== undefined) {
      checkKernelName(p.kernel, 'kernel');
      const withKernel = this.deps.withKernel;
      if (!withKernel) throw new BangerError('unavailable', 'this daemon has no kernel catalog', undefined, { field: 'kernel' });
      // The kernel is held while the image is made: a `kernel delete` meanwhile is refused.
      return withKernel(p.kernel, opts.signal, (k) => this.counted(() => this.pullLocked(name, p, ref, platform, { catalog: k }, opts)));
    }
    // Before this image's lock: the default image has its own.
    const kernelImage = await this.ensure(DEFAULT_IMAGE, opts);
    return this.counted(() =>
      this.pullLocked(name, p, ref, platform, { dir: imagePaths(this.deps.layout, DEFAULT_IMAGE).dir, kernelVersion: kernelImage.kernelVersion }, opts),
    );
  }

  private async counted<T>(fn: () => Promise<T>): Promise<T> {
    this.activePulls++;
    try {
      return await fn();
    } finally {
      this.activePulls--;
    }
  }

  private async pullLocked(
    name: string,
    p: PullParams,
    ref: ImageRef | undefined,
    platform: Platform,
    kernel: PullOptions['kernel'],
    opts: Omit<BuildOptions, 'force' | 'tuned'>,
  ): Promise<ImageRecord> {
    return this.locks.run(name, async () => {
      if (this.isComplete(name) && !p.force) {
        throw new BangerError('already_exists', `image ${name} already exists`, `use it, delete it first, or replace it with --force`);
      }
      const users = this.deps.store.vmsUsingImage(name);
      if (users.length > 0) {
        throw new BangerError('conflict', `image ${name} is in use by ${users.join(', ')}`, 'delete those VMs before replacing it');
      }
      const paths = imagePaths(this.deps.layout, name);
      const workDir = within(this.deps.layout.buildDir, `${name}-${randomBytes(4).toString('hex')}`);
      const started = Date.now();
      const pulled = await this.deps.pullImage(
        { runner: this.deps.runner, log: (m) => this.deps.log.info({ image: name }, m) },
        {
          name,
          from: ref ? { ref, insecure: p.insecure === true } : { archive: p.archive! },
          platform,
          outDir: paths.dir,
          workDir,
          blobsDir: this.deps.layout.blobsDir,
          kernel,
          installer: this.installer,
          signal: opts.signal,
          onProgress: opts.onProgress,
        },
      );
      const record: ImageRecord = {
        name,
        source: describeSource(pulled.sourceKind, pulled.sourceRef),
        sourceKind: pulled.sourceKind,
        sourceRef: pulled.sourceRef,
        kernelVersion: pulled.kernelVersion,
        kernel: 'catalog' in kernel ? kernel.catalog.name : null,
        rootfsBytes: pulled.rootfsBytes,
        packages: pulled.packages,
        createdAt: new Date().toISOString(),
      };
      this.deps.store.upsertImage(record);
      this.deps.log.info({ image: name, ref: ref ? formatImageRef(ref) : p.archive, ms: Date.now() - started, downloaded: pulled.stats.downloaded }, ref ? 'image pulled' : 'image imported');
      return record;
    });
  }

  /**
   * Drops the cached OCI blobs no pulled image names (`image prune`). The
   * images themselves never need their blobs (each is a complete ext4); the
   * cache only makes a second pull of the same layers free. Refused while a
   * pull runs: its layers are not referenced until it publishes.
   */
  pruneBlobs(): { removed: number; bytes: number; kept: number } {
    if (this.activePulls > 0) {
      throw new BangerError('conflict', `${this.activePulls} image pull(s) running`, 'prune once they have finished');
    }
    const keep = new Set<string>();
    for (const img of this.list()) {
      if (img.sourceKind !== 'oci') continue;
      const m = pulledLayersSchema.safeParse(readJsonFile<unknown>(imagePaths(this.deps.layout, img.name).manifest));
      if (m.success) for (const d of m.data.oci.layers) keep.add(d);
    }
    const r = new BlobStore(this.deps.layout.blobsDir).prune(keep);
    this.deps.log.info({ ...r, kept: keep.size }, 'blob cache pruned');
    return { ...r, kept: keep.size };
  }

  /**
   * Makes image `name` with `make` (vm commit, image import): under the
   * image's lock, refused when it exists (unless `force`) or a VM uses it;
   * `make` publishes the directory atomically into `paths.dir` from a work
   * dir under the build dir, and returns the row, which is stored once it has.
   */
  async create(name: string, force: boolean, make: (paths: ImagePaths, workDir: string) => Promise<ImageRecord>): Promise<ImageRecord> {
    validateImageName(name);
    if (BUILTIN_RECIPES[name]) {
      throw new BangerError('conflict', `${name} is the name of a built-in image (banger builds it on first use)`, 'choose another name', { field: 'image' });
    }
    return this.locks.run(name, async () => {
      if (this.isComplete(name) && !force) {
        throw new BangerError('already_exists', `image ${name} already exists`, 'choose another name, delete it first, or replace it with --force');
      }
      const users = this.deps.store.vmsUsingImage(name);
      if (users.length > 0) throw new BangerError('conflict', `image ${name} is in use by ${users.join(', ')}`, 'delete those VMs before replacing it');
      const record = await make(imagePaths(this.deps.layout, name), within(this.deps.layout.buildDir, `${name}-${randomBytes(4).toString('hex')}`));
      this.deps.store.upsertImage(record);
      return record;
    });
  }

  async delete(name: string): Promise<void> {
    validateImageName(name); // before any path is built from it
    await this.locks.run(name, async () => {
      const users = this.deps.store.vmsUsingImage(name);
      if (users.length > 0) {
        throw new BangerError(
          'conflict',
          `image ${name} is used by ${users.length} VM(s): ${users.join(', ')}`,
          'delete those VMs first',
        );
      }
      const p = imagePaths(this.deps.layout, name);
      if (!this.deps.store.hasImageRow(name) && !exists(p.dir)) throw notFoundImage(name);
      this.deps.store.deleteImage(name);
      removeTreeUnder(this.deps.layout.imagesDir, p.dir);
    });
  }

  /** Builds `name` from scratch; the caller holds its lock and has checked no VM uses it. */
  private async buildLocked(name: string, opts: BuildOptions): Promise<ImageRecord> {
    const p = imagePaths(this.deps.layout, name);
    this.deps.store.deleteImage(name);
    removeTreeUnder(this.deps.layout.imagesDir, p.dir);
    const workDir = within(this.deps.layout.buildDir, `${name}-${randomBytes(4).toString('hex')}`);
    const started = Date.now();
    const built = await this.deps.buildImage(
      { runner: this.deps.runner, log: (m) => this.deps.log.info({ image: name }, m) },
      {
        name,
        outDir: p.dir,
        workDir,
        mirror: this.deps.config.mirror,
        recipe: opts.recipe ?? BUILTIN_RECIPES[name] ?? DEFAULT_RECIPE,
        tuned: opts.tuned !== false,
        signal: opts.signal,
        onProgress: (stage, message) => opts.onProgress?.({ stage: `image:${stage}`, message }),
      },
    );
    const ref = built.sourceRef;
    const record: ImageRecord = {
      name,
      source: `${describeSource('debian', ref)}${untunedNote(opts.tuned)}`,
      sourceKind: 'debian',
      sourceRef: ref,
      kernelVersion: built.kernelVersion,
      kernel: null,
      rootfsBytes: built.rootfsBytes,
      packages: built.packages,
      createdAt: new Date().toISOString(),
    };
    this.deps.store.upsertImage(record);
    this.deps.log.info({ image: name, ms: Date.now() - started }, 'image built');
    return record;
  }
}

/** image.json, written by the build (src/images/build.ts); read back only to adopt a copied-in image. */
const manifestSchema = z.object({
  name: imageNameSchema,
  suite: z.string().max(64).optional(),
  mirror: z.string().max(1024).optional(),
  kernelVersion: z.string().min(1).max(256),
  kernel: z.string().regex(KERNEL_NAME_RE).optional(),
  rootfsBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  packages: z.array(z.string().max(256)).max(10_000).optional(),
  builtAt: z.string().max(64).optional(),
  tuned: z.boolean().optional(),
  source: z.object({ kind: z.enum(IMAGE_SOURCE_KINDS), ref: z.string().max(4096) }).optional(),
});

/** The recipe `image build --suite/--minimal/--packages` asks for, checked (a bad suite or package name is a bad_request naming it). */
export function recipeOf(p: { suite?: string; minimal?: boolean; packages?: string[]; from?: string }): DebianRecipe {
  if (p.from !== undefined && (p.suite !== undefined || p.minimal !== undefined)) {
    throw new BangerError('bad_request', '--from builds on an existing image: its suite and packages are the image\'s', 'drop --suite/--minimal, or build from scratch without --from', { field: p.suite !== undefined ? 'suite' : 'minimal' });
  }
  const r = { suite: (p.suite ?? DEFAULT_RECIPE.suite) as Suite, dev: p.minimal !== true, packages: p.packages ?? [] };
  checkRecipe(r);
  return r;
}

/** The default name of an imported image: the archive's file name without its extensions (`app.tar.gz` → `app`). */
export function archiveImageName(path: string): string {
  const base = basename(path).replace(/(\.(tar|tgz|gz|zst|oci|docker))+$/i, '').toLowerCase();
  const problem = imageNameSchema.safeParse(base);
  if (!problem.success) {
    throw new BangerError('bad_request', `no image name can be made from the file name ${quoteInput(basename(path))}`, 'give the image a name with --name', { field: 'name' });
  }
  return base;
}

/** The layers a pulled image's manifest names (source-oci.ts writes them). */
const pulledLayersSchema = z.object({ oci: z.object({ layers: z.array(z.string().regex(/^sha256:[0-9a-f]{64}$/)).max(512) }) });

/** An image's source in words, for image list/show. */
export function describeSource(kind: ImageSourceKind, ref: string): string {
  switch (kind) {
    case 'debian':
      return `mmdebstrap ${ref}`;
    case 'oci':
      return `pulled ${ref}`;
    case 'oci-archive':
      return `imported ${ref}`;
    case 'vm':
      return `committed from ${ref}`;
    case 'image':
      return `built from ${ref}`;
    case 'bundle':
      return `imported bundle ${ref}`;
  }
}

/** What an image's source says when it was built without the boot tuning (`image build --no-tuning`). */
function untunedNote(tuned: boolean | undefined): string {
  return tuned === false ? ', without boot tuning' : '';
}

function notFoundImage(name: string): BangerError {
  return new BangerError(
    'not_found',
    `image ${name} not found`,
    name === DEFAULT_IMAGE ? `build it with \`banger image build\`` : `list images with \`banger image list\`; build the default one with \`banger image build\``,
  );
}
