/**
 * Warm-clone snapshots: for each image and machine shape (VMM, accelerator,
 * vCPUs, memory) a saved state of a booted, ready guest and the root disk it
 * was saved with, in `images/<image>/snapshots/<key>/` (removed with the
 * image). A snapshot is made from a template VM of its own (never a user's
 * VM): booted cold in a `.build-<id>` directory beside the snapshots, with
 * a NIC but no network backend, prepared (TEMPLATE_PREP_SCRIPT), saved by
 * its driver, and renamed to its key once snapshot.json is written: a
 * snapshot is either whole or absent.
 *
 * A snapshot is current when its image (created at, rootfs size), the VMM's
 * version and banger's clone contract (src/guest/clone-identity.ts) are the
 * ones it was made with; anything else is stale and is made again on
 * demand. Clones open the files at selection and copy the root disk through
 * a hash, so a snapshot replaced meanwhile never mixes with the old one.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, existsSync, fstatSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { z } from 'zod';
import { BangerError, messageOf } from '../errors/errors.js';
import type { Logger } from '../log/log.js';
import type { ImageRecord, ProgressEvent, SnapshotInfo, VmRecord } from '../model/types.js';

export type { SnapshotInfo };
import { MIN_DISK_BYTES } from '../model/limits.js';
import {
  imagePaths,
  SNAPSHOT_BUILD_RE,
  SNAPSHOT_KEY_RE,
  snapshotPaths,
  snapshotsDir,
  templateSocketsDir,
  type Layout,
  type SnapshotPaths,
} from '../paths/paths.js';
import type { Runner } from '../system/runner.js';
import { ensureDir, writeFileAtomic } from '../system/fs.js';
import { SnapshotUnusable, type SavedState, type VmFiles, type VmmDriver, type VmmHandle } from '../vmm/driver.js';
import { CLONE_CONTRACT, TEMPLATE_PREP_SCRIPT } from '../guest/clone-identity.js';
import { writeConfigDisk } from '../guest/config-disk.js';
import { ensureKeypair } from '../guest/keys.js';
import { createWorkDisk } from '../guest/work-disk.js';
import type { GuestOps } from './guest-ops.js';
import { removeTreeUnder } from './safe-remove.js';
import { forceStop } from './vm-stop.js';
import { macFor, USER_NET } from './vm-boot.js';

export const SNAPSHOT_FORMAT = 1;
/** The template's hostname (each clone gets its own). */
export const TEMPLATE_HOSTNAME = 'banger-template';
/** Bound on snapshot.json. */
const MAX_MANIFEST_BYTES = 64 * 1024;
/** Bound on a snapshot's root disk (the template's overlay: a few MiB after a boot). */
const MAX_ROOT_COPY_BYTES = 1024 * 1024 * 1024;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const manifestSchema = z
  .object({
    format: z.literal(SNAPSHOT_FORMAT),
    key: z.string().regex(SNAPSHOT_KEY_RE),
    image: z.object({ name: z.string().max(64), createdAt: z.string().max(64), rootfsBytes: z.number().int().nonnegative() }).strict(),
    vmm: z.string().max(32),
    vmmVersion: z.string().max(64),
    contract: z.string().max(64),
    accel: z.enum(['kvm', 'tcg']),
    /** The template NIC's MAC (in the saved state; a clone in user networking keeps it). */
    mac: z.string().regex(/^52:54:00(:[0-9a-f]{2}){3}$/),
    vcpu: z.number().int().positive().max(1024),
    memoryMib: z.number().int().positive().max(1 << 30),
    /** Virtual size of the template's root disk: clones' root disks are at least this. */
    rootBytes: z.number().int().positive(),
    state: z.object({ bytes: z.number().int().positive(), sha256: sha256Hex }).strict(),
    root: z.object({ bytes: z.number().int().positive().max(MAX_ROOT_COPY_BYTES), sha256: sha256Hex }).strict(),
    createdAt: z.string().max(64),
    buildMs: z.number().int().nonnegative(),
  })
  .strict();
export type SnapshotManifest = z.output<typeof manifestSchema>;

export interface Shape {
  vcpu: number;
  memoryMib: number;
}

/** A snapshot chosen for a clone: its files are held open until `release`. */
export interface CloneSource {
  key: string;
  manifest: SnapshotManifest;
  /** The saved state, as the driver's restore reads it (from the descriptor opened at selection). */
  state: SavedState;
  /** Copies the root disk to `dest`, checking its sha256 (throws on a mismatch). */
  copyRoot(dest: string): void;
  release(): void;
}

export interface SnapshotServiceDeps {
  layout: Layout;
  runner: Runner;
  log: Logger;
  guest: GuestOps;
  /** The image's record (identity for invalidation); throws not_found. */
  image: (name: string) => ImageRecord;
  /** The VM's root disk size for new VMs (templates are made with it). */
  systemOverlayBytes: number;
  bootTimeoutMs: number;
}

export function snapshotKey(vmm: string, accel: 'kvm' | 'tcg', shape: Shape): string {
  return `${vmm}-${accel}-${shape.vcpu}c-${shape.memoryMib}m`;
}

/** Why a build stops when the client that asked for it goes away (abortBuilds gives its own reasons). */
const CLIENT_GONE = 'the client that asked for it went away';

export class SnapshotService {
  /** Builds in flight, by image/key (one per key; `build` joins it). */
  private readonly builds = new Map<string, { promise: Promise<SnapshotInfo>; abort: AbortController; image: string }>();
  /** Background builds that failed in this daemon: not retried automatically. */
  private readonly failed = new Set<string>();
  /** Background builds run one at a time (each is a whole VM boot). */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: SnapshotServiceDeps) {}

  /** The image's snapshots, each checked against what is current for `driver`. */
  async list(imageName: string, driver: VmmDriver): Promise<SnapshotInfo[]> {
    const dir = snapshotsDir(this.deps.layout, imageName);
    if (!existsSync(dir)) return [];
    const image = this.deps.image(imageName);
    const version = await driver.version().catch(() => undefined);
    const out: SnapshotInfo[] = [];
    for (const name of readdirSync(dir).sort()) {
      if (!SNAPSHOT_KEY_RE.test(name)) continue;
      const p = snapshotPaths(this.deps.layout, imageName, name);
      const m = readManifest(p);
      if (!m.ok) {
        out.push({ key: name, vmm: '?', accel: 'tcg', vcpu: 0, memoryMib: 0, bytes: 0, createdAt: '', buildMs: 0, current: false, reason: m.reason });
        continue;
      }
      const reason = staleReason(m.manifest, image, driver.vmm, version);
      out.push({
        key: name,
        vmm: m.manifest.vmm,
        accel: m.manifest.accel,
        vcpu: m.manifest.vcpu,
        memoryMib: m.manifest.memoryMib,
        bytes: m.manifest.state.bytes + m.manifest.root.bytes,
        createdAt: m.manifest.createdAt,
        buildMs: m.manifest.buildMs,
        current: reason === undefined,
        ...(reason !== undefined ? { reason } : {}),
      });
    }
    return out;
  }

  /**
   * The current snapshot for this VM's shape, its files opened; undefined
   * (with the reason, for the log) when there is none or it is stale. A
   * stale or unreadable one is removed here.
   */
  async select(vm: VmRecord, driver: VmmDriver, accel: 'kvm' | 'tcg'): Promise<CloneSource | { reason: string }> {
    if (!driver.capabilities.snapshots) return { reason: `the ${driver.vmm} driver has no snapshots` };
    const key = snapshotKey(driver.vmm, accel, vm);
    const p = snapshotPaths(this.deps.layout, vm.image, key);
    if (!existsSync(p.dir)) return { reason: `no snapshot ${key} of image ${vm.image}` };
    const m = readManifest(p);
    const version = await driver.version().catch(() => undefined);
    // Not knowing the VMM's version now (a failed --version) says nothing about the snapshot: keep it.
    if (version === undefined) return { reason: `the ${driver.vmm} version is unknown; booting cold` };
    const reason = m.ok ? staleReason(m.manifest, this.deps.image(vm.image), driver.vmm, version) : m.reason;
    if (reason !== undefined || !m.ok) {
      this.drop(vm.image, key, reason ?? 'unreadable');
      return { reason: `snapshot ${key} of image ${vm.image} was stale (${reason ?? 'unreadable'})` };
    }
    if (vm.systemOverlayBytes < m.manifest.rootBytes) {
      return { reason: `the VM's root disk is smaller than the snapshot's (${m.manifest.rootBytes} bytes)` };
    }
    let stateFd = -1;
    let rootFd = -1;
    try {
      stateFd = openSync(p.state, constants.O_RDONLY | constants.O_NOFOLLOW);
      rootFd = openSync(p.root, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      if (stateFd >= 0) closeSync(stateFd);
      this.drop(vm.image, key, messageOf(e));
      return { reason: `snapshot ${key} of image ${vm.image} is incomplete (${messageOf(e)})` };
    }
    const manifest = m.manifest;
    let released = false;
    return {
      key,
      manifest,
      state: { file: p.state, fd: stateFd, bytes: manifest.state.bytes, sha256: manifest.state.sha256 },
      copyRoot: (dest: string) => copyVerified(rootFd, dest, manifest.root),
      release: () => {
        if (released) return;
        released = true;
        closeSync(stateFd);
        closeSync(rootFd);
      },
    };
  }

  /** Removes one snapshot (stale, or found unusable by a restore). */
  drop(imageName: string, key: string, why: string): void {
    const p = snapshotPaths(this.deps.layout, imageName, key);
    if (!existsSync(p.dir)) return;
    this.deps.log.warn({ image: imageName, snapshot: key, why }, 'removing snapshot');
    removeTreeUnder(this.deps.layout.imagesDir, p.dir);
  }

  /**
   * Makes (or remakes) the snapshot of this shape now; a build of the same
   * key already under way is joined. `signal` aborts it (the template is
   * stopped and its files removed).
   */
  build(imageName: string, driver: VmmDriver, accel: 'kvm' | 'tcg', shape: Shape, progress: (ev: ProgressEvent) => void, signal?: AbortSignal): Promise<SnapshotInfo> {
    const key = snapshotKey(driver.vmm, accel, shape);
    const id = `${imageName}/${key}`;
    const running = this.builds.get(id);
    if (running) {
      progress({ stage: 'snapshot', message: `a snapshot ${key} of ${imageName} is already being made; waiting for it` });
      return running.promise;
    }
    const abort = new AbortController();
    const onAbort = () => abort.abort(CLIENT_GONE);
    // A signal that fired already sends no 'abort' event.
    if (signal?.aborted) abort.abort(CLIENT_GONE);
    else signal?.addEventListener('abort', onAbort, { once: true });
    const promise = this.buildNow(imageName, driver, accel, shape, key, progress, abort.signal).finally(() => {
      signal?.removeEventListener('abort', onAbort);
      this.builds.delete(id);
    });
    this.builds.set(id, { promise, abort, image: imageName });
    return promise;
  }

  /**
   * After a cold create: make this shape's snapshot in the background (one
   * build at a time; a key whose build failed in this daemon is not retried
   * until `banger image snapshot` asks for it).
   */
  scheduleBuild(imageName: string, driver: VmmDriver, accel: 'kvm' | 'tcg', shape: Shape): void {
    if (!driver.capabilities.snapshots) return;
    const key = snapshotKey(driver.vmm, accel, shape);
    const id = `${imageName}/${key}`;
    if (this.builds.has(id) || this.failed.has(id)) return;
    const log = this.deps.log.child({ image: imageName, snapshot: key });
    const run = async () => {
      if (existsSync(snapshotPaths(this.deps.layout, imageName, key).dir)) return;
      log.info('making a snapshot in the background');
      await this.build(imageName, driver, accel, shape, (ev) => log.debug({ stage: ev.stage }, ev.message));
    };
    this.queue = this.queue.then(run).catch((e: unknown) => {
      this.failed.add(id);
      log.warn({ err: messageOf(e) }, 'background snapshot failed; new VMs of this shape boot cold');
    });
  }

  /** Stops the template builds of `imageName` (all: undefined), saying why in the error each build ends with, and waits for them to end. */
  async abortBuilds(imageName: string | undefined, why: string): Promise<void> {
    const ending = [...this.builds.values()].filter((b) => imageName === undefined || b.image === imageName);
    for (const b of ending) b.abort.abort(why);
    await Promise.allSettled(ending.map((b) => b.promise));
  }

  /** Daemon start: template builds a previous daemon left (its VMM, its files) are removed. */
  reconcile(drivers: VmmDriver[]): void {
    const imagesDir = this.deps.layout.imagesDir;
    if (!existsSync(imagesDir)) return;
    for (const image of readdirSync(imagesDir)) {
      let dir: string;
      try {
        dir = snapshotsDir(this.deps.layout, image);
      } catch {
        continue; // not an image name: not ours to touch
      }
      if (!existsSync(dir)) continue;
      for (const name of readdirSync(dir)) {
        if (!SNAPSHOT_BUILD_RE.test(name)) continue;
        const p = snapshotPaths(this.deps.layout, image, name);
        const files = this.templateFiles(p, name.slice('.build-'.length));
        for (const driver of drivers) {
          const orphan = driver.findOrphan(files);
          if (orphan) {
            this.deps.log.info({ image, build: name }, 'reconcile: stopping an interrupted template');
            driver.signal(orphan, 'SIGKILL');
          }
        }
        this.deps.log.info({ image, build: name }, 'reconcile: removing an interrupted snapshot build');
        removeTreeUnder(imagesDir, p.dir);
        rmSync(files.socketsDir, { recursive: true, force: true });
      }
    }
  }

  private templateFiles(p: SnapshotPaths, buildId: string): VmFiles {
    return {
      dir: p.dir,
      socketsDir: templateSocketsDir(this.deps.layout, buildId),
      overlay: p.root,
      configDisk: `${p.dir}/config.img`,
      workDisk: `${p.dir}/work.ext4`,
      consoleLog: `${p.dir}/console.log`,
    };
  }

  private async buildNow(
    imageName: string,
    driver: VmmDriver,
    accel: 'kvm' | 'tcg',
    shape: Shape,
    key: string,
    progress: (ev: ProgressEvent) => void,
    signal: AbortSignal,
  ): Promise<SnapshotInfo> {
    const { layout, runner, log } = this.deps;
    const started = Date.now();
    const image = this.deps.image(imageName);
    const img = imagePaths(layout, imageName);
    const buildId = randomBytes(6).toString('hex');
    const p = snapshotPaths(layout, imageName, `.build-${buildId}`);
    const files = this.templateFiles(p, buildId);
    const mac = macFor(buildId);
    let handle: VmmHandle | undefined;
    const stopped = () =>
      new BangerError('interrupted', `the snapshot ${key} of ${imageName} was not made: ${typeof signal.reason === 'string' ? signal.reason : CLIENT_GONE}`);
    const checkAbort = () => {
      if (signal.aborted) throw stopped();
    };
    try {
      const version = await driver.version();
      ensureDir(snapshotsDir(layout, imageName));
      ensureDir(p.dir);
      ensureDir(files.socketsDir);
      progress({ stage: 'snapshot', message: `template VM for ${key}: disks` });
      await driver.prepareDisks({ files, baseImage: img.rootfs, rootBytes: this.deps.systemOverlayBytes });
      await createWorkDisk(runner, files.workDisk, MIN_DISK_BYTES);
      const keypair = await ensureKeypair(runner, layout.sshKey);
      await writeConfigDisk(
        runner,
        files.configDisk,
        { hostname: TEMPLATE_HOSTNAME, authorizedKeys: [keypair.publicKey], network: { mac, ...USER_NET } },
        p.dir,
      );
      checkAbort();
      progress({ stage: 'snapshot', message: `template VM for ${key}: booting` });
      handle = await driver.boot({
        name: TEMPLATE_HOSTNAME,
        vcpu: shape.vcpu,
        memoryMib: shape.memoryMib,
        accel,
        kernel: img.kernel,
        initrd: img.initrd,
        files,
        network: { mode: 'none', mac },
      });
      const agentSocket = driver.agentSocket(handle);
      if (agentSocket === undefined) throw new BangerError('unavailable', `the ${driver.vmm} driver has no guest agent channel`);
      await this.deps.guest.waitForAgent(agentSocket, Date.now() + this.deps.bootTimeoutMs, signal);
      progress({ stage: 'snapshot', message: `template VM for ${key}: waiting for the boot to finish` });
      const agent = await this.deps.guest.connectAgent(agentSocket, { deadlineMs: Date.now() + 30_000, signal });
      try {
        const r = await agent.exec('/bin/sh', ['-s'], { input: TEMPLATE_PREP_SCRIPT, timeoutMs: this.deps.bootTimeoutMs });
        if (r.exitCode !== 0) {
          throw new BangerError('operation_failed', `the template VM is not ready to be saved: ${r.stderr.trim().slice(0, 500) || `exit ${String(r.exitCode)}`}`, `see ${files.consoleLog}`);
        }
      } finally {
        agent.close();
      }
      checkAbort();
      progress({ stage: 'snapshot', message: `template VM for ${key}: saving its state` });
      const saved = await driver.saveSnapshot(handle, p.state, 120_000);
      handle = undefined; // saveSnapshot ended the VMM
      for (const f of [files.configDisk, files.workDisk, files.consoleLog]) rmSync(f, { force: true });
      const root = hashFile(p.root, MAX_ROOT_COPY_BYTES);
      const manifest: SnapshotManifest = {
        format: SNAPSHOT_FORMAT,
        key,
        image: { name: imageName, createdAt: image.createdAt, rootfsBytes: image.rootfsBytes },
        vmm: driver.vmm,
        vmmVersion: version,
        contract: CLONE_CONTRACT,
        accel,
        mac,
        vcpu: shape.vcpu,
        memoryMib: shape.memoryMib,
        rootBytes: this.deps.systemOverlayBytes,
        state: { bytes: saved.bytes, sha256: saved.sha256 },
        root,
        createdAt: new Date().toISOString(),
        buildMs: Date.now() - started,
      };
      writeFileAtomic(p.manifest, `${JSON.stringify(manifest, null, 2)}\n`, 0o600);
      checkAbort();
      this.publish(imageName, key, p.dir);
      log.info({ image: imageName, snapshot: key, bytes: saved.bytes, ms: manifest.buildMs }, 'snapshot made');
      return infoOf(manifest);
    } catch (e) {
      const orphan = handle ?? driver.findOrphan(files);
      if (orphan) await forceStop(log, TEMPLATE_HOSTNAME, { driver, handle: orphan }, 'SIGKILL');
      // Stopped from outside: say why, not what the step in progress saw.
      if (signal.aborted) throw stopped();
      throw e;
    } finally {
      if (existsSync(p.dir)) removeTreeUnder(layout.imagesDir, p.dir);
      rmSync(files.socketsDir, { recursive: true, force: true });
    }
  }

  /** Renames the finished build dir to its key (an older snapshot of the key is moved aside, then removed). */
  private publish(imageName: string, key: string, buildDir: string): void {
    const final = snapshotPaths(this.deps.layout, imageName, key);
    let aside: string | undefined;
    if (existsSync(final.dir)) {
      aside = snapshotPaths(this.deps.layout, imageName, `.build-${randomBytes(6).toString('hex')}`).dir;
      renameSync(final.dir, aside);
    }
    renameSync(buildDir, final.dir);
    if (aside) removeTreeUnder(this.deps.layout.imagesDir, aside);
  }
}

function infoOf(m: SnapshotManifest): SnapshotInfo {
  return {
    key: m.key,
    vmm: m.vmm,
    accel: m.accel,
    vcpu: m.vcpu,
    memoryMib: m.memoryMib,
    bytes: m.state.bytes + m.root.bytes,
    createdAt: m.createdAt,
    buildMs: m.buildMs,
    current: true,
  };
}

function readManifest(p: SnapshotPaths): { ok: true; manifest: SnapshotManifest } | { ok: false; reason: string } {
  let text: string;
  try {
    const st = statSync(p.manifest);
    if (st.size > MAX_MANIFEST_BYTES) return { ok: false, reason: 'snapshot.json is too large' };
    text = readFileSync(p.manifest, 'utf8');
  } catch (e) {
    return { ok: false, reason: `no snapshot.json (${(e as NodeJS.ErrnoException).code ?? messageOf(e)})` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'snapshot.json is not JSON' };
  }
  const r = manifestSchema.safeParse(json);
  return r.success ? { ok: true, manifest: r.data } : { ok: false, reason: 'snapshot.json is not a snapshot manifest' };
}

/** Why a snapshot may not be used now; undefined when it is current. */
export function staleReason(m: SnapshotManifest, image: ImageRecord, vmm: string, vmmVersion: string | undefined): string | undefined {
  if (m.image.createdAt !== image.createdAt || m.image.rootfsBytes !== image.rootfsBytes) return `image ${image.name} was rebuilt`;
  if (m.vmm !== vmm) return `made by ${m.vmm}`;
  if (vmmVersion === undefined) return `the ${vmm} version is unknown`;
  if (m.vmmVersion !== vmmVersion) return `made by ${m.vmmVersion}, this is ${vmmVersion}`;
  if (m.contract !== CLONE_CONTRACT) return `made for banger's clone contract ${m.contract}, this is ${CLONE_CONTRACT}`;
  return undefined;
}

/**
 * Reads the open file `fd` from offset 0 (positional reads: its offset is not
 * moved) in 1 MiB chunks, hashing them and handing each to `onChunk`; stops
 * past `maxBytes`. Returns the bytes read and their sha256.
 */
function hashFd(fd: number, maxBytes: number, onChunk?: (chunk: Buffer) => void): { bytes: number; sha256: string } {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(1024 * 1024);
  let bytes = 0;
  for (;;) {
    const n = readSync(fd, buf, 0, buf.length, bytes);
    if (n === 0) break;
    bytes += n;
    if (bytes > maxBytes) break;
    const chunk = buf.subarray(0, n);
    hash.update(chunk);
    onChunk?.(chunk);
  }
  return { bytes, sha256: hash.digest('hex') };
}

function hashFile(path: string, maxBytes: number): { bytes: number; sha256: string } {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const r = hashFd(fd, maxBytes);
    if (r.bytes > maxBytes) throw new BangerError('operation_failed', `${path} is larger than ${maxBytes} bytes`);
    return r;
  } finally {
    closeSync(fd);
  }
}

/** Copies the open file `fd` (from offset 0) to a new file `dest`, refusing it unless size and sha256 match. */
function copyVerified(fd: number, dest: string, want: { bytes: number; sha256: string }): void {
  if (fstatSync(fd).size !== want.bytes) {
    throw new SnapshotUnusable(`the snapshot's root disk has ${fstatSync(fd).size} bytes, not ${want.bytes} (truncated or replaced)`);
  }
  const out = openSync(dest, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  let ok = false;
  try {
    const got = hashFd(fd, want.bytes, (chunk) => {
      let off = 0;
      while (off < chunk.length) off += writeSync(out, chunk, off, chunk.length - off);
    });
    if (got.bytes !== want.bytes || got.sha256 !== want.sha256) {
      throw new SnapshotUnusable("the snapshot's root disk does not match its sha256 (corrupt)");
    }
    ok = true;
  } finally {
    closeSync(out);
    if (!ok) rmSync(dest, { force: true });
  }
}
