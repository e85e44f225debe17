/**
 * The RPC method table: the single source of truth for the daemon's
 * dispatch and the CLI's client. Each method has a zod schema for its params
 * (validated at the daemon's boundary) and one for its result (validated by
 * the client, src/rpc/client.ts; the schemas are in results.ts, each tied to
 * the interface it checks).
 */
import { z } from 'zod';
import { NETWORK_MODES, WORKSPACE_MODES, type SshTarget, type VmView, type WorkspaceRecord } from '../model/types.js';
import { imageNameSchema, vmNameSchema } from '../model/name-schemas.js';
import { MAX_DISK_BYTES, MAX_MEMORY_MIB, MAX_VCPU } from '../model/limits.js';
import { formatSize } from '../model/sizes.js';
import {
  daemonStatusSchema,
  deletedSchema,
  helloResultSchema,
  imageDeletedSchema,
  imageListSchema,
  imagePruneResultSchema,
  imageRecordSchema,
  imageViewSchema,
  networkShowSchema,
  snapshotInfoSchema,
  stoppingSchema,
  vmCreateResultSchema,
  vmListSchema,
  vmLogsResultSchema,
  vmPortsSchema,
  vmPruneResultSchema,
  vmSshTargetSchema,
  vmStatsSchema,
  vmStopResultSchema,
  vmViewSchema,
  workspaceExportResultSchema,
  workspacePrepareResultSchema,
  workspaceStatusSchema,
  once,
} from './results.js';

/** Signals `vm kill --signal` accepts (QEMU ends on each of them). */
export const KILL_SIGNALS = ['KILL', 'TERM', 'INT', 'HUP', 'QUIT'] as const;

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

/** Bump when a method's params or result change shape. */
export const PROTOCOL_VERSION = 7;

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

export interface WorkspaceStatus {
  workspace: WorkspaceRecord | null;
  /** Whether the host repo differs from what was prepared (null: cannot tell, see reason). */
  changed: boolean | null;
  reason: string | null;
}

export const methods = lazyTable({
  'rpc.hello': () => ({
    params: z.object({ protocol: z.number().int(), client: z.string().max(256) }).strict(),
    result: helloResultSchema(),
  }),
  'daemon.status': () => ({ params: z.object({}).strict(), result: daemonStatusSchema() }),
  'daemon.stop': () => ({ params: z.object({}).strict(), result: stoppingSchema() }),
  'vm.create': () => ({
    params: z
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
      })
      .strict(),
    result: vmCreateResultSchema(),
  }),
  'vm.start': () => ({ params: z.object({ name: vmName }).strict(), result: vmCreateResultSchema() }),
  'vm.stop': () => ({ params: z.object({ name: vmName }).strict(), result: vmStopResultSchema() }),
  'vm.restart': () => ({ params: z.object({ name: vmName }).strict(), result: vmCreateResultSchema() }),
  'vm.kill': () => ({
    params: z.object({ name: vmName, signal: z.enum(KILL_SIGNALS).optional() }).strict(),
    result: vmViewSchema(),
  }),
  'vm.prune': () => ({
    params: z.object({ names: z.array(vmName).max(10_000).optional(), dryRun: z.boolean().optional() }).strict(),
    result: vmPruneResultSchema(),
  }),
  'vm.set': () => ({
    params: z
      .object({
        name: vmName,
        vcpu: vcpu.optional(),
        memoryMib: memoryMib.optional(),
        diskBytes: diskBytes.optional(),
      })
      .strict(),
    result: vmViewSchema(),
  }),
  'vm.list': () => ({ params: z.object({}).strict(), result: vmListSchema() }),
  'vm.show': () => ({ params: z.object({ name: vmName }).strict(), result: vmViewSchema() }),
  'vm.delete': () => ({
    /** force: delete a running VM too (stopping it without ceremony). */
    params: z.object({ name: vmName, force: z.boolean().optional() }).strict(),
    result: deletedSchema(),
  }),
  'vm.logs': () => ({
    params: z.object({ name: vmName, offset: z.number().int().min(0).optional() }).strict(),
    result: vmLogsResultSchema(),
  }),
  'vm.stats': () => ({ params: z.object({ name: vmName }).strict(), result: vmStatsSchema() }),
  'vm.ports': () => ({ params: z.object({ name: vmName }).strict(), result: vmPortsSchema() }),
  'vm.workspace.prepare': () => ({
    params: z
      .object({
        name: vmName,
        /** Absolute: the CLI resolves it against its own working directory. */
        path: hostPath.refine((s) => s.startsWith('/'), { message: 'must be an absolute path' }),
        includeUntracked: z.boolean().optional(),
        mode: z.enum(WORKSPACE_MODES).optional(),
      })
      .strict(),
    result: workspacePrepareResultSchema(),
  }),
  'vm.workspace.export': () => ({
    params: z.object({ name: vmName, baseCommit: z.string().min(1).max(256).optional() }).strict(),
    result: workspaceExportResultSchema(),
  }),
  'vm.workspace.status': () => ({ params: z.object({ name: vmName }).strict(), result: workspaceStatusSchema() }),
  'vm.ssh_target': () => ({ params: z.object({ name: vmName }).strict(), result: vmSshTargetSchema() }),
  'network.show': () => ({ params: z.object({}).strict(), result: networkShowSchema() }),
  'image.build': () => ({
    params: z
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
    result: imageRecordSchema(),
  }),
  /** Pulls an OCI image from a registry and makes it a banger image (src/images/pull.ts). */
  'image.pull': () => ({
    params: z
      .object({
        ref: z.string().min(1).max(512),
        name: imageName.optional(),
        platform: z.string().regex(/^[a-z0-9]{1,32}\/[a-z0-9_]{1,32}(\/[a-z0-9]{1,16})?$/, 'must look like linux/amd64 or linux/arm64/v8').optional(),
        insecure: z.boolean().optional(),
        force: z.boolean().optional(),
      })
      .strict(),
    result: imageRecordSchema(),
  }),
  /** Imports an OCI image layout or a docker save archive (a directory or a tar) through the same pipeline as a pull. */
  'image.import': () => ({
    params: z
      .object({
        path: z.string().min(2).max(4096).startsWith('/', 'must be an absolute path'),
        name: imageName.optional(),
        platform: z.string().regex(/^[a-z0-9]{1,32}\/[a-z0-9_]{1,32}(\/[a-z0-9]{1,16})?$/, 'must look like linux/amd64 or linux/arm64/v8').optional(),
        force: z.boolean().optional(),
      })
      .strict(),
    result: imageRecordSchema(),
  }),
  /** Drops cached OCI blobs no pulled image names. */
  'image.prune': () => ({ params: z.object({}).strict(), result: imagePruneResultSchema() }),
  'image.list': () => ({ params: z.object({}).strict(), result: imageListSchema() }),
  /** A stopped VM's root disk becomes an image (its work disk excluded). */
  'vm.commit': () => ({ params: z.object({ name: vmName, image: imageName, force: z.boolean().optional() }).strict(), result: imageRecordSchema() }),
  'image.show': () => ({ params: z.object({ name: imageName }).strict(), result: imageViewSchema() }),
  /** Makes (or remakes) the warm-clone snapshot of an image for a machine shape (default: config's). */
  'image.snapshot': () => ({
    params: z.object({ name: imageName, vcpu: vcpu.optional(), memoryMib: memoryMib.optional() }).strict(),
    result: snapshotInfoSchema(),
  }),
  'image.delete': () => ({ params: z.object({ name: imageName }).strict(), result: imageDeletedSchema() }),
});

export type Methods = typeof methods;

/**
 * The table with each method's schemas built on first use (a getter per
 * method): a CLI command touches one or two methods, and building every
 * params and result schema at import cost every command's start.
 */
function lazyTable<T extends Record<string, () => { params: z.ZodType; result: z.ZodType }>>(defs: T): { readonly [K in keyof T]: ReturnType<T[K]> } {
  const table = {} as { [K in keyof T]: ReturnType<T[K]> };
  for (const key of Object.keys(defs) as Array<keyof T>) {
    Object.defineProperty(table, key, { enumerable: true, get: once(defs[key]!) });
  }
  return table;
}
export type MethodName = keyof Methods;
export type ParamsOf<M extends MethodName> = z.input<Methods[M]['params']>;
export type ValidParamsOf<M extends MethodName> = z.output<Methods[M]['params']>;
/** What a method returns: its result schema's output, i.e. the interface the schema is tied to (results.ts). */
export type ResultOf<M extends MethodName> = z.output<Methods[M]['result']>;

export function isMethodName(m: string): m is MethodName {
  return Object.prototype.hasOwnProperty.call(methods, m);
}
