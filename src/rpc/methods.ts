/**
 * The RPC method table: the single source of truth for the daemon's
 * dispatch and the CLI's client. Each method has a zod schema for its params
 * (validated at the daemon's boundary) and a shape for its result (validated
 * by the client, src/rpc/client.ts; the shapes are in results.ts, each tied
 * to the interface it checks). The client imports only results.ts: this
 * module loads zod.
 */
import { z } from 'zod';
import { KILL_SIGNALS, NETWORK_MODES, WORKSPACE_MODES, type SshTarget, type VmView, type WorkspaceRecord } from '../model/types.js';
import { imageNameSchema, vmNameSchema } from '../model/name-schemas.js';
import { MAX_DISK_BYTES, MAX_MEMORY_MIB, MAX_VCPU } from '../model/limits.js';
import { formatSize } from '../model/sizes.js';
import { KERNEL_NAME_RE } from '../model/kernel-name.js';
import { daemonResults, once } from './results.js';
import type { Infer, Shape } from './shape.js';
import { PROTOCOL_VERSION } from './framing.js';

export { PROTOCOL_VERSION };

export { KILL_SIGNALS };

/** How a graceful stop went (see src/daemon/vm-stop.ts). */
export interface StopReport {
  asked: 'agent' | 'ssh' | 'qmp' | 'none';
  synced: boolean;
  ended: 'exited' | 'SIGTERM' | 'SIGKILL' | 'already gone';
  ms: number;
}

/** `banger network show`: the mode new VMs get and, on a bridge, where things are. */
export interface NetworkShow {
  mode: 'user' | 'bridge';
  why: string;
  bridge: string | null;
  subnet: string | null;
  gateway: string | null;
  /** The `.vm` DNS server, ip:port. */
  dns: string | null;
  /** How `.vm` is routed on the host (or what to configure). */
  resolver: string | null;
  helperSocket: string;
}

/**
 * Every param is bounded, so no message can echo a huge input. Names use the
 * one grammar of src/model/names.ts (the store checks rows with it too).
 */
const vmName = vmNameSchema;
const imageName = imageNameSchema;
/** Resources: whole numbers in a range any host could honour; the daemon checks them against this host. */
const vcpu = z.number().int('must be a whole number').min(1, 'must be at least 1').max(MAX_VCPU, `must be at most ${MAX_VCPU}`);
const memoryMib = z.number().int('must be a whole number of MiB').min(1, 'must be at least 1 MiB').max(MAX_MEMORY_MIB, 'must be at most 1 PiB');
const diskBytes = z.number().int('must be a whole number of bytes').min(1, 'must be at least 1 byte').max(MAX_DISK_BYTES, `must be at most ${formatSize(MAX_DISK_BYTES)}`);
/** A host path (PATH_MAX). */
const hostPath = z.string().min(1).max(4096);
/** A catalog kernel's name (src/images/kernels.ts). */
const kernelName = z.string().max(64).regex(KERNEL_NAME_RE, 'must be lowercase letters, digits, dots and dashes (e.g. generic-6.12)');

export interface DaemonStatus {
  pid: number;
  version: string;
  protocol: number;
  socket: string;
  stateDir: string;
  logFile: string;
  uptimeSeconds: number;
  vms: number;
}

/** A VM's SSH target, named. */
export interface VmSshTarget extends SshTarget {
  name: string;
}

export interface VmCreateResult {
  vm: VmView;
  /** null for `vm create --no-start`. */
  ssh: VmSshTarget | null;
  bootMs: number;
  /** The snapshot a create restored (a warm clone); null: a cold boot (or no boot). */
  clonedFrom?: string | null;
}

export interface DoctorCheck {
  name: string;
  status: 'pass' | 'warn' | 'fail';
  detail: string;
}

export interface VmLogsResult {
  /** Console bytes from `offset` (UTF-8, may be cut mid-line). */
  data: string;
  /** Pass back as `offset` to continue (vm logs -f). */
  offset: number;
  /** File size now (the log restarts from 0 when the VM boots again). */
  size: number;
}

export interface VmStats {
  name: string;
  /** QEMU's CPU use over a short sample, percent of one host CPU. */
  cpuPercent: number;
  vcpu: number;
  memory: { totalBytes: number; availableBytes: number; usedBytes: number };
  /** The VMM process's resident memory on the host (VmRSS of /proc/PID/status), bytes: what the VM costs the host. */
  hostRssBytes: number;
  /** Guest filesystems (/, /root): size and use as the guest sees them. */
  filesystems: Array<{ mount: string; sizeBytes: number; usedBytes: number }>;
  /** Host disk files: allocated bytes on the host vs virtual size. */
  disks: Array<{ name: string; path: string; allocatedBytes: number; virtualBytes: number }>;
}

export interface VmPort {
  proto: 'tcp' | 'udp';
  /** Guest address the socket is bound to (0.0.0.0, ::, 127.0.0.1 …). */
  address: string;
  port: number;
  process: string | null;
  /** Where a user on the host can reach it, or null when it is not forwarded. */
  hostEndpoint: string | null;
}

export interface WorkspacePrepareResult {
  name: string;
  workspace: WorkspaceRecord;
  /** Bytes that went over the wire (git objects + archive). */
  sentBytes: number;
  /** Files in the archive (delta mode: only those that differed in the guest). */
  sentFiles: number;
  skipped: string[];
  ms: number;
}

export interface WorkspaceExportResult {
  /** The patch itself arrives as streamed chunks before this result (CallOptions.onChunk). */
  bytes: number;
  baseCommit: string | null;
}

/** `image export`: where the bundle went and what it is. */
export interface ImageExportResult {
  name: string;
  path: string;
  /** The bundle's digest: sha256 of its manifest, which pins every file. */
  digest: string;
  bytes: number;
  signed: boolean;
}

/** A kernel pulled from the catalog (`banger kernel list/show/pull`). */
export interface KernelInfo {
  name: string;
  version: string;
  arch: string;
  sha256: { kernel: string; initrd: string; modules?: string };
  /** The catalog it came from. */
  source: string;
  pulledAt: string;
  dir: string;
  /** What boots it: "image X", "VM Y" (it cannot be deleted while anything does). */
  usedBy: string[];
}

/** A kernel the catalog offers (`banger kernel list --catalog`). */
export interface CatalogKernel {
  name: string;
  version: string;
  arch: 'x86_64';
  description?: string;
  files: Array<{ role: 'kernel' | 'initrd' | 'modules'; url: string; sha256: string; size: number }>;
}

export interface WorkspaceStatus {
  workspace: WorkspaceRecord | null;
  /** Whether the host repo differs from what was prepared (null: cannot tell, see reason). */
  changed: boolean | null;
  reason: string | null;
}

export const methods = withResults(daemonResults, {
  'rpc.hello': () => z.object({ protocol: z.number().int(), client: z.string().max(256) }).strict(),
  'daemon.status': () => z.object({}).strict(),
  'daemon.stop': () => z.object({}).strict(),
  'vm.create': () =>
    z
      .object({
        name: vmName.optional(),
        image: imageName.optional(),
        // Ranges are checked by the daemon against the host; errors carry the field, the CLI names the flag.
        vcpu: vcpu.optional(),
        memoryMib: memoryMib.optional(),
        /** Work disk size in bytes (mounted at /root), at most MAX_DISK_BYTES. */
        diskBytes: diskBytes.optional(),
        /** Delete the VM when this connection closes (vm run --rm). */
        ephemeral: z.boolean().optional(),
        /** false: make the disks, do not boot (vm create --no-start). */
        start: z.boolean().optional(),
        /** Let the guest reach the network (otherwise: no route off the host). */
        nat: z.boolean().optional(),
        /** user (rootless) or bridge (root helper); default: config `network`. */
        network: z.enum(NETWORK_MODES).optional(),
        /** Boot cold even when a snapshot of this shape exists (vm create/run --cold). */
        cold: z.boolean().optional(),
        /** Boot this catalog kernel instead of the image's (pulled when missing). */
        kernel: kernelName.optional(),
      })
      .strict(),
  'vm.start': () => z.object({ name: vmName }).strict(),
  'vm.stop': () => z.object({ name: vmName }).strict(),
  'vm.restart': () => z.object({ name: vmName }).strict(),
  'vm.kill': () => z.object({ name: vmName, signal: z.enum(KILL_SIGNALS).optional() }).strict(),
  'vm.prune': () => z.object({ names: z.array(vmName).max(10_000).optional(), dryRun: z.boolean().optional() }).strict(),
  'vm.set': () =>
    z
      .object({
        name: vmName,
        vcpu: vcpu.optional(),
        memoryMib: memoryMib.optional(),
        diskBytes: diskBytes.optional(),
      })
      .strict(),
  'vm.list': () => z.object({}).strict(),
  'vm.show': () => z.object({ name: vmName }).strict(),
  /** force: delete a running VM too (stopping it without ceremony). */
  'vm.delete': () => z.object({ name: vmName, force: z.boolean().optional() }).strict(),
  'vm.logs': () => z.object({ name: vmName, offset: z.number().int().min(0).optional() }).strict(),
  'vm.stats': () => z.object({ name: vmName }).strict(),
  'vm.ports': () => z.object({ name: vmName }).strict(),
  'vm.workspace.prepare': () =>
    z
      .object({
        name: vmName,
        /** Absolute: the CLI resolves it against its own working directory. */
        path: hostPath.refine((s) => s.startsWith('/'), { message: 'must be an absolute path' }),
        includeUntracked: z.boolean().optional(),
        mode: z.enum(WORKSPACE_MODES).optional(),
      })
      .strict(),
  'vm.workspace.export': () => z.object({ name: vmName, baseCommit: z.string().min(1).max(256).optional() }).strict(),
  'vm.workspace.status': () => z.object({ name: vmName }).strict(),
  'vm.ssh_target': () => z.object({ name: vmName }).strict(),
  'network.show': () => z.object({}).strict(),
  'image.build': () =>
    z
      .object({
        name: imageName.optional(),
        force: z.boolean().optional(),
        tuned: z.boolean().optional(),
        /** Debian suite (bookworm, trixie); checked again by the build. */
        suite: z.string().min(1).max(32).optional(),
        /** Leave out the development packages (compilers, make, python3, curl). */
        minimal: z.boolean().optional(),
        /** More Debian packages. */
        packages: z.array(z.string().min(1).max(100)).max(200).optional(),
        /** Start from this image (Debian family) instead of mmdebstrap: its packages plus `packages`. */
        from: imageName.optional(),
      })
      .strict(),
  /** Pulls an OCI image from a registry and makes it a banger image (src/images/pull.ts). */
  'image.pull': () =>
    z
      .object({
        ref: z.string().min(1).max(512),
        name: imageName.optional(),
        platform: z.string().regex(/^[a-z0-9]{1,32}\/[a-z0-9_]{1,32}(\/[a-z0-9]{1,16})?$/, 'must look like linux/amd64 or linux/arm64/v8').optional(),
        insecure: z.boolean().optional(),
        force: z.boolean().optional(),
        /** The image boots this catalog kernel (pulled when missing) instead of banger's. */
        kernel: kernelName.optional(),
        /** A bundle URL's signature is checked with this PEM public key (absolute path) instead of banger's. */
        pubkey: hostPath.refine((s) => s.startsWith('/'), { message: 'must be an absolute path' }).optional(),
      })
      .strict(),
  /** Imports an OCI image layout or a docker save archive (a directory or a tar) through the same pipeline as a pull. */
  'image.import': () =>
    z
      .object({
        path: z.string().min(2).max(4096).startsWith('/', 'must be an absolute path'),
        name: imageName.optional(),
        platform: z.string().regex(/^[a-z0-9]{1,32}\/[a-z0-9_]{1,32}(\/[a-z0-9]{1,16})?$/, 'must look like linux/amd64 or linux/arm64/v8').optional(),
        force: z.boolean().optional(),
        /** The image boots this catalog kernel (pulled when missing) instead of banger's. */
        kernel: kernelName.optional(),
        /** An image bundle's signature is checked with this PEM public key instead of banger's. */
        pubkey: hostPath.refine((s) => s.startsWith('/'), { message: 'must be an absolute path' }).optional(),
      })
      .strict(),
  /** Writes an image as a bundle (src/images/bundle.ts) to `path` (absolute, must not exist), signed with the PEM private key at `sign`. */
  'image.export': () =>
    z
      .object({
        name: imageName,
        path: hostPath.refine((s) => s.startsWith('/'), { message: 'must be an absolute path' }),
        sign: hostPath.refine((s) => s.startsWith('/'), { message: 'must be an absolute path' }).optional(),
      })
      .strict(),
  'kernel.list': () => z.object({}).strict(),
  'kernel.catalog': () => z.object({}).strict(),
  'kernel.show': () => z.object({ name: kernelName }).strict(),
  'kernel.pull': () => z.object({ name: kernelName, force: z.boolean().optional() }).strict(),
  'kernel.delete': () => z.object({ name: kernelName }).strict(),
  /** Drops cached OCI blobs no pulled image names. */
  'image.prune': () => z.object({}).strict(),
  'image.list': () => z.object({}).strict(),
  /** A stopped VM's root disk becomes an image (its work disk excluded). */
  'vm.commit': () => z.object({ name: vmName, image: imageName, force: z.boolean().optional() }).strict(),
  'image.show': () => z.object({ name: imageName }).strict(),
  /** Makes (or remakes) the warm-clone snapshot of an image for a machine shape (default: config's). */
  'image.snapshot': () => z.object({ name: imageName, vcpu: vcpu.optional(), memoryMib: memoryMib.optional() }).strict(),
  'image.delete': () => z.object({ name: imageName }).strict(),
});

export type Methods = typeof methods;

/**
 * The table: each method's params schema (from `params`) and result shape
 * (src/rpc/results.ts's daemonResults), built on first use (a getter per
 * method): a CLI command touches one or two methods, and building every
 * schema at import cost every command's start. `params` must name exactly
 * the methods daemonResults does (a compile error otherwise).
 */
function withResults<R extends Record<string, () => Shape<unknown>>, P extends { [K in keyof R]: () => z.ZodType }>(
  results: R,
  params: P & Record<Exclude<keyof P, keyof R>, never>,
): { readonly [K in keyof R]: { params: ReturnType<P[K]>; result: ReturnType<R[K]> } } {
  const table = {} as { [K in keyof R]: { params: ReturnType<P[K]>; result: ReturnType<R[K]> } };
  for (const key of Object.keys(results) as Array<keyof R>) {
    Object.defineProperty(table, key, { enumerable: true, get: once(() => ({ params: (params as P)[key](), result: results[key]!() })) });
  }
  return table;
}
export type MethodName = keyof Methods;
export type ParamsOf<M extends MethodName> = z.input<Methods[M]['params']>;
export type ValidParamsOf<M extends MethodName> = z.output<Methods[M]['params']>;
/** What a method returns: its result schema's output, i.e. the interface the schema is tied to (results.ts). */
export type ResultOf<M extends MethodName> = Infer<Methods[M]['result']>;

export function isMethodName(m: string): m is MethodName {
  return Object.prototype.hasOwnProperty.call(methods, m);
}
