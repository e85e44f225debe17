/**
 * Zod schemas of the RPC results (src/rpc/methods.ts): the client checks
 * every result with them (src/rpc/client.ts), so a peer that answers with
 * the wrong shape gives a coded error, never a crash or an unchecked cast.
 *
 * Each schema is tied to the TypeScript interface it checks by `schemaOf<T>()`:
 * it compiles only when the schema's output type and T are the same type (the
 * same keys, optional where T's are, the same field types), and it returns the
 * schema typed as exactly T, so `ResultOf<M>` is still the interface. An
 * interface and its schema cannot drift apart.
 *
 * Objects strip keys they do not know (zod's default): a newer daemon that
 * adds a field does not break an older client. Everything is bounded:
 * strings, array lengths, and numbers are finite (whole where they count).
 * The bounds are loose enough for anything the daemon produces (see how
 * src/daemon builds each result); names use the one grammar of
 * src/model/names.ts, which the store already checks every row against.
 */
import { z } from 'zod';
import { IMAGE_SOURCE_KINDS, NETWORK_MODES, VMMS, VM_STATES, WORKSPACE_MODES } from '../model/types.js';
import type { ImageRecord, ImageView, SnapshotInfo, VmRecord, VmRuntime, VmView, WorkspaceRecord } from '../model/types.js';
import { imageNameSchema, vmIdSchema, vmNameSchema } from '../model/name-schemas.js';
import { MAX_RESPONSE_BYTES } from './framing.js';
import type {
  DaemonStatus,
  NetworkShow,
  StopReport,
  VmCreateResult,
  VmLogsResult,
  VmPort,
  VmSshTarget,
  VmStats,
  WorkspaceExportResult,
  WorkspacePrepareResult,
  WorkspaceStatus,
} from './methods.js';

/** True when A and B are the same type (not merely assignable: optional keys count). */
export type Equals<A, B> = (<G>() => G extends A ? 1 : 2) extends <G>() => G extends B ? 1 : 2 ? true : false;

/** What a schema that does not match its interface is told (the compile error shows both types). */
interface SchemaDiffersFromInterface<Out, T> {
  'the schema output is not the interface': { schema: Out; interface: T };
}

/**
 * `schemaOf<T>()(schema)`: `schema` typed as `z.ZodType<T>`, accepted only
 * when its output type is exactly T (a compile error otherwise).
 */
export function schemaOf<T>() {
  return <S extends z.ZodType>(schema: S & (Equals<z.output<S>, T> extends true ? unknown : SchemaDiffersFromInterface<z.output<S>, T>)): z.ZodType<T> =>
    schema as unknown as z.ZodType<T>;
}

/**
 * A schema built on first use: a CLI run checks one or two methods' results,
 * and building all of them at import cost ~20 ms of every command's start.
 */
export function once<T>(make: () => T): () => T {
  let made: { v: T } | undefined;
  return () => (made ??= { v: make() }).v;
}

// ---- building blocks ------------------------------------------------------

/** Most items any list result carries. */
export const MAX_ITEMS = 100_000;
/** Free text: messages, reasons, details. */
export const MAX_TEXT = 64 * 1024;
/** A host or guest path (PATH_MAX). */
export const MAX_PATH = 4096;

const text = (max = MAX_TEXT) => z.string().max(max);
const list = <S extends z.ZodType>(item: S) => z.array(item).max(MAX_ITEMS);
const path = z.string().min(1).max(MAX_PATH);
/** A whole number (a safe integer: zod's int). */
const int = z.number().int();
/** A whole number ≥ 0: counts, sizes, offsets. */
const count = int.min(0);
/** Elapsed milliseconds or seconds: whole, but a clock step may make them negative, so no lower bound. */
const duration = int;
const port = int.min(0).max(65535);
/** An ISO timestamp (empty for a snapshot whose manifest is unreadable). */
const timestamp = text(64);
const gitId = z.string().regex(/^[0-9a-f]{40}([0-9a-f]{24})?$/, 'not a git object id');
/** A network name or address (an interface, an IP, a CIDR, host:port). */
const netText = text(256);

// ---- model types (src/model/types.ts) ------------------------------------

const vmRecordObject = once(() =>
  z.object({
    id: vmIdSchema,
    name: vmNameSchema,
    image: imageNameSchema,
    vcpu: count,
    memoryMib: count,
    systemOverlayBytes: count,
    diskBytes: count,
    vmm: z.enum(VMMS),
    network: z.enum(NETWORK_MODES),
    state: z.enum(VM_STATES),
    ephemeral: z.boolean(),
    nat: z.boolean(),
    ip: netText.nullable(),
    lastError: text().nullable(),
    createdAt: timestamp,
    updatedAt: timestamp,
  }),
);
export const vmRecordSchema = once(() => schemaOf<VmRecord>()(vmRecordObject()));

export const vmRuntimeSchema = once(() =>
  schemaOf<VmRuntime>()(
    z.object({
      vmm: z.enum(VMMS),
      pid: count,
      accel: z.enum(['kvm', 'tcg']),
      sshHost: netText,
      sshPort: port,
      startedAt: timestamp,
    }),
  ),
);

export const workspaceRecordSchema = once(() =>
  schemaOf<WorkspaceRecord>()(
    z.object({
      hostPath: path,
      guestPath: path,
      includeUntracked: z.boolean(),
      tree: gitId,
      commit: gitId,
      head: gitId.nullable(),
      branch: text(1024).nullable(),
      files: count,
      bytes: count,
      mode: z.enum(WORKSPACE_MODES),
      preparedAt: timestamp,
    }),
  ),
);

export const vmViewSchema = once(() =>
  schemaOf<VmView>()(
    vmRecordObject().extend({
      runtime: vmRuntimeSchema().nullable(),
      workspace: workspaceRecordSchema().nullable(),
    }),
  ),
);

const imageRecordObject = once(() =>
  z.object({
    name: imageNameSchema,
    source: text(MAX_PATH),
    sourceKind: z.enum(IMAGE_SOURCE_KINDS),
    sourceRef: text(MAX_PATH),
    kernelVersion: text(256),
    rootfsBytes: count,
    packages: list(text(1024)),
    createdAt: timestamp,
  }),
);
export const imageRecordSchema = once(() => schemaOf<ImageRecord>()(imageRecordObject()));

export const snapshotInfoSchema = once(() =>
  schemaOf<SnapshotInfo>()(
    z.object({
      key: text(256),
      vmm: text(64),
      accel: z.enum(['kvm', 'tcg']),
      // 0 for a snapshot whose manifest is unreadable (src/daemon/snapshot-service.ts list)
      vcpu: count,
      memoryMib: count,
      bytes: count,
      createdAt: timestamp,
      buildMs: duration,
      current: z.boolean(),
      reason: text().optional(),
    }),
  ),
);

export const imageViewSchema = once(() => schemaOf<ImageView>()(imageRecordObject().extend({ snapshots: list(snapshotInfoSchema()) })));

// ---- method results (src/rpc/methods.ts) ------------------------------------

export const helloResultSchema = once(() =>
  schemaOf<{ protocol: number; version: string; pid: number }>()(
    z.object({ protocol: int, version: text(256), pid: count }),
  ),
);

export const daemonStatusSchema = once(() =>
  schemaOf<DaemonStatus>()(
    z.object({
      pid: count,
      version: text(256),
      protocol: int,
      socket: path,
      stateDir: path,
      logFile: path,
      uptimeSeconds: duration,
      vms: count,
    }),
  ),
);

export const stoppingSchema = once(() => schemaOf<{ stopping: true }>()(z.object({ stopping: z.literal(true) })));

export const vmSshTargetSchema = once(() =>
  schemaOf<VmSshTarget>()(
    z.object({
      name: vmNameSchema,
      host: netText,
      port,
      user: text(256),
      privateKeyPath: path,
      knownHostsPath: path,
      hostKeyAlias: text(256),
    }),
  ),
);

export const vmCreateResultSchema = once(() =>
  schemaOf<VmCreateResult>()(
    z.object({
      vm: vmViewSchema(),
      ssh: vmSshTargetSchema().nullable(),
      bootMs: duration,
      clonedFrom: text(256).nullable().optional(),
    }),
  ),
);

export const stopReportSchema = once(() =>
  schemaOf<StopReport>()(
    z.object({
      asked: z.enum(['agent', 'ssh', 'qmp', 'none']),
      synced: z.boolean(),
      ended: z.enum(['exited', 'SIGTERM', 'SIGKILL', 'already gone']),
      ms: duration,
    }),
  ),
);

export const vmStopResultSchema = once(() => schemaOf<{ vm: VmView; report: StopReport }>()(z.object({ vm: vmViewSchema(), report: stopReportSchema() })));

export const vmPruneResultSchema = once(() =>
  schemaOf<{ removed: string[]; skipped: string[]; candidates: string[] }>()(
    z.object({ removed: list(vmNameSchema), skipped: list(vmNameSchema), candidates: list(vmNameSchema) }),
  ),
);

export const vmListSchema = once(() => schemaOf<VmView[]>()(list(vmViewSchema())));

export const deletedSchema = once(() => schemaOf<{ deleted: string }>()(z.object({ deleted: vmNameSchema })));

export const vmLogsResultSchema = once(() =>
  schemaOf<VmLogsResult>()(
    // data: a console chunk (the daemon sends at most 1 MiB; the line bound is the real limit)
    z.object({ data: text(MAX_RESPONSE_BYTES), offset: count, size: count }),
  ),
);

export const vmStatsSchema = once(() =>
  schemaOf<VmStats>()(
    z.object({
      name: vmNameSchema,
      cpuPercent: z.number().min(0),
      vcpu: count,
      memory: z.object({ totalBytes: count, availableBytes: count, usedBytes: count }),
      hostRssBytes: count,
      filesystems: list(z.object({ mount: path, sizeBytes: count, usedBytes: count })),
      disks: list(z.object({ name: text(256), path, allocatedBytes: count, virtualBytes: count })),
    }),
  ),
);

export const vmPortSchema = once(() =>
  schemaOf<VmPort>()(
    z.object({
      proto: z.enum(['tcp', 'udp']),
      address: netText,
      port,
      process: text().nullable(),
      hostEndpoint: netText.nullable(),
    }),
  ),
);

export const vmPortsSchema = once(() => schemaOf<VmPort[]>()(list(vmPortSchema())));

export const workspacePrepareResultSchema = once(() =>
  schemaOf<WorkspacePrepareResult>()(
    z.object({
      name: vmNameSchema,
      workspace: workspaceRecordSchema(),
      sentBytes: count,
      sentFiles: count,
      skipped: list(path),
      ms: duration,
    }),
  ),
);

export const workspaceExportResultSchema = once(() => schemaOf<WorkspaceExportResult>()(z.object({ bytes: count, baseCommit: text(256).nullable() })));

export const workspaceStatusSchema = once(() =>
  schemaOf<WorkspaceStatus>()(
    z.object({ workspace: workspaceRecordSchema().nullable(), changed: z.boolean().nullable(), reason: text().nullable() }),
  ),
);

export const networkShowSchema = once(() =>
  schemaOf<NetworkShow>()(
    z.object({
      mode: z.enum(NETWORK_MODES),
      why: text(),
      bridge: netText.nullable(),
      subnet: netText.nullable(),
      gateway: netText.nullable(),
      dns: netText.nullable(),
      resolver: text().nullable(),
      helperSocket: path,
    }),
  ),
);

export const imagePruneResultSchema = once(() => schemaOf<{ removed: number; bytes: number; kept: number }>()(z.object({ removed: count, bytes: count, kept: count })));

export const imageListSchema = once(() => schemaOf<ImageRecord[]>()(list(imageRecordSchema())));

export const imageDeletedSchema = once(() => schemaOf<{ deleted: string }>()(z.object({ deleted: imageNameSchema })));

// ---- a malformed result as a coded error ---------------------------------------

/** `field.path: what is wrong` of a failed parse's first issue, bounded (the peer's text is never echoed whole). */
export function firstIssue(error: z.ZodError): { path: string; problem: string } {
  const issue = error.issues[0];
  const path = issue?.path.length ? issue.path.map(String).join('.').slice(0, 128) : '';
  const problem = (issue?.message ?? 'invalid').slice(0, 300);
  return { path, problem };
}
