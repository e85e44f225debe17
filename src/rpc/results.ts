/**
 * The shapes of the RPC results (src/rpc/methods.ts): the client checks every
 * result with them (src/rpc/client.ts), so a peer that answers with the wrong
 * shape gives a coded error, never a crash or an unchecked cast. They are
 * shapes (src/rpc/shape.ts), not zod schemas: the client never loads zod.
 *
 * Each shape is tied to the TypeScript interface it checks by `schemaOf<T>()`:
 * it compiles only when the shape's output type and T are the same type (the
 * same keys, optional where T's are, the same field types), and it returns the
 * shape typed as exactly T, so `ResultOf<M>` is still the interface. An
 * interface and its shape cannot drift apart.
 *
 * Objects drop keys they do not know: a newer daemon that adds a field does
 * not break an older client. Everything is bounded: strings, array lengths,
 * and numbers are finite (whole where they count). The bounds are loose
 * enough for anything the daemon produces (see how src/daemon builds each
 * result); names use the one grammar of src/model/names.ts, which the store
 * already checks every row against.
 */
import { IMAGE_SOURCE_KINDS, NETWORK_MODES, VMMS, VM_STATES, WORKSPACE_MODES } from '../model/types.js';
import type { ImageRecord, ImageView, SnapshotInfo, VmRecord, VmRuntime, VmView, WorkspaceRecord } from '../model/types.js';
import { vmIdProblem, vmNameProblem } from '../model/names.js';
import { KERNEL_NAME_RE } from '../model/kernel-name.js';
import { MAX_RESPONSE_BYTES } from './framing.js';
import { array, boolean, literal, number, object, oneOf, string, type Infer, type Issue, type Shape } from './shape.js';
import type {
  DaemonStatus,
  NetworkShow,
  StopReport,
  VmCreateResult,
  VmLogsResult,
  VmPort,
  VmSshTarget,
  VmStats,
  CatalogKernel,
  ImageExportResult,
  KernelInfo,
  WorkspaceExportResult,
  WorkspacePrepareResult,
  WorkspaceStatus,
} from './methods.js';

/** True when A and B are the same type (not merely assignable: optional keys count). */
export type Equals<A, B> = (<G>() => G extends A ? 1 : 2) extends <G>() => G extends B ? 1 : 2 ? true : false;

/** What a shape that does not match its interface is told (the compile error shows both types). */
interface SchemaDiffersFromInterface<Out, T> {
  'the schema output is not the interface': { schema: Out; interface: T };
}

/**
 * `schemaOf<T>()(shape)`: `shape` typed as `Shape<T>`, accepted only
 * when its output type is exactly T (a compile error otherwise).
 */
export function schemaOf<T>() {
  return <S extends Shape<unknown>>(shape: S & (Equals<Infer<S>, T> extends true ? unknown : SchemaDiffersFromInterface<Infer<S>, T>)): Shape<T> =>
    shape as unknown as Shape<T>;
}

/**
 * A shape built on first use: a CLI run checks one or two methods' results,
 * and building all of them at import would cost every command's start.
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

const text = (max = MAX_TEXT) => string({ max });
const list = <S extends Shape<unknown>>(item: S) => array(item, { max: MAX_ITEMS });
const path = string({ min: 1, max: MAX_PATH });
/** A whole number (a safe integer). */
const int = number({ int: true });
/** A whole number ≥ 0: counts, sizes, offsets. */
const count = number({ int: true, min: 0 });
/** Elapsed milliseconds or seconds: whole, but a clock step may make them negative, so no lower bound. */
const duration = int;
const port = number({ int: true, min: 0, max: 65535 });
/** An ISO timestamp (empty for a snapshot whose manifest is unreadable). */
const timestamp = text(64);
const gitId = string({ pattern: /^[0-9a-f]{40}([0-9a-f]{24})?$/, patternMessage: 'not a git object id' });
/** A network name or address (an interface, an IP, a CIDR, host:port). */
const netText = text(256);
/** A name checked by the one grammar of src/model/names.ts (the message never echoes the input). */
const grammar = (what: string, problem: (s: string) => string | undefined) =>
  string().refine((s) => {
    const p = problem(s);
    return p === undefined ? undefined : `invalid ${what}: ${p}`;
  });
const vmNameSchema = grammar('VM name', vmNameProblem);
const imageNameSchema = grammar('image name', vmNameProblem);
const vmIdSchema = grammar('VM id', vmIdProblem);

const kernelName = string({ pattern: KERNEL_NAME_RE, patternMessage: 'not a kernel name' });

// ---- model types (src/model/types.ts) ------------------------------------

const vmRecordObject = once(() =>
  object({
    id: vmIdSchema,
    name: vmNameSchema,
    image: imageNameSchema,
    vcpu: count,
    memoryMib: count,
    systemOverlayBytes: count,
    diskBytes: count,
    vmm: oneOf(VMMS),
    network: oneOf(NETWORK_MODES),
    state: oneOf(VM_STATES),
    ephemeral: boolean(),
    nat: boolean(),
    ip: netText.nullable(),
    kernel: kernelName.nullable(),
    lastError: text().nullable(),
    createdAt: timestamp,
    updatedAt: timestamp,
  }),
);
export const vmRecordSchema = once(() => schemaOf<VmRecord>()(vmRecordObject()));

export const vmRuntimeSchema = once(() =>
  schemaOf<VmRuntime>()(
    object({
      vmm: oneOf(VMMS),
      pid: count,
      accel: oneOf(['kvm', 'tcg'] as const),
      sshHost: netText,
      sshPort: port,
      startedAt: timestamp,
    }),
  ),
);

export const workspaceRecordSchema = once(() =>
  schemaOf<WorkspaceRecord>()(
    object({
      hostPath: path,
      guestPath: path,
      includeUntracked: boolean(),
      tree: gitId,
      commit: gitId,
      head: gitId.nullable(),
      branch: text(1024).nullable(),
      files: count,
      bytes: count,
      mode: oneOf(WORKSPACE_MODES),
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
  object({
    name: imageNameSchema,
    source: text(MAX_PATH),
    sourceKind: oneOf(IMAGE_SOURCE_KINDS),
    sourceRef: text(MAX_PATH),
    kernelVersion: text(256),
    kernel: kernelName.nullable(),
    rootfsBytes: count,
    packages: list(text(1024)),
    createdAt: timestamp,
  }),
);
export const imageRecordSchema = once(() => schemaOf<ImageRecord>()(imageRecordObject()));

export const snapshotInfoSchema = once(() =>
  schemaOf<SnapshotInfo>()(
    object({
      key: text(256),
      vmm: text(64),
      accel: oneOf(['kvm', 'tcg'] as const),
      // 0 for a snapshot whose manifest is unreadable (src/daemon/snapshot-service.ts list)
      vcpu: count,
      memoryMib: count,
      bytes: count,
      createdAt: timestamp,
      buildMs: duration,
      current: boolean(),
      reason: text().optional(),
    }),
  ),
);

export const imageViewSchema = once(() => schemaOf<ImageView>()(imageRecordObject().extend({ snapshots: list(snapshotInfoSchema()) })));

// ---- method results (src/rpc/methods.ts) ------------------------------------

export const helloResultSchema = once(() =>
  schemaOf<{ protocol: number; version: string; pid: number }>()(
    object({ protocol: int, version: text(256), pid: count }),
  ),
);

export const daemonStatusSchema = once(() =>
  schemaOf<DaemonStatus>()(
    object({
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

export const stoppingSchema = once(() => schemaOf<{ stopping: true }>()(object({ stopping: literal(true) })));

export const vmSshTargetSchema = once(() =>
  schemaOf<VmSshTarget>()(
    object({
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
    object({
      vm: vmViewSchema(),
      ssh: vmSshTargetSchema().nullable(),
      bootMs: duration,
      clonedFrom: text(256).nullable().optional(),
    }),
  ),
);

export const stopReportSchema = once(() =>
  schemaOf<StopReport>()(
    object({
      asked: oneOf(['agent', 'ssh', 'qmp', 'none'] as const),
      synced: boolean(),
      ended: oneOf(['exited', 'SIGTERM', 'SIGKILL', 'already gone'] as const),
      ms: duration,
    }),
  ),
);

export const vmStopResultSchema = once(() => schemaOf<{ vm: VmView; report: StopReport }>()(object({ vm: vmViewSchema(), report: stopReportSchema() })));

export const vmPruneResultSchema = once(() =>
  schemaOf<{ removed: string[]; skipped: string[]; candidates: string[] }>()(
    object({ removed: list(vmNameSchema), skipped: list(vmNameSchema), candidates: list(vmNameSchema) }),
  ),
);

export const vmListSchema = once(() => schemaOf<VmView[]>()(list(vmViewSchema())));

export const deletedSchema = once(() => schemaOf<{ deleted: string }>()(object({ deleted: vmNameSchema })));

export const vmLogsResultSchema = once(() =>
  schemaOf<VmLogsResult>()(
    // data: a console chunk (the daemon sends at most 1 MiB; the line bound is the real limit)
    object({ data: text(MAX_RESPONSE_BYTES), offset: count, size: count }),
  ),
);

export const vmStatsSchema = once(() =>
  schemaOf<VmStats>()(
    object({
      name: vmNameSchema,
      cpuPercent: number({ min: 0 }),
      vcpu: count,
      memory: object({ totalBytes: count, availableBytes: count, usedBytes: count }),
      hostRssBytes: count,
      filesystems: list(object({ mount: path, sizeBytes: count, usedBytes: count })),
      disks: list(object({ name: text(256), path, allocatedBytes: count, virtualBytes: count })),
    }),
  ),
);

export const vmPortSchema = once(() =>
  schemaOf<VmPort>()(
    object({
      proto: oneOf(['tcp', 'udp'] as const),
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
    object({
      name: vmNameSchema,
      workspace: workspaceRecordSchema(),
      sentBytes: count,
      sentFiles: count,
      skipped: list(path),
      ms: duration,
    }),
  ),
);

export const workspaceExportResultSchema = once(() => schemaOf<WorkspaceExportResult>()(object({ bytes: count, baseCommit: text(256).nullable() })));

export const workspaceStatusSchema = once(() =>
  schemaOf<WorkspaceStatus>()(
    object({ workspace: workspaceRecordSchema().nullable(), changed: boolean().nullable(), reason: text().nullable() }),
  ),
);

export const networkShowSchema = once(() =>
  schemaOf<NetworkShow>()(
    object({
      mode: oneOf(NETWORK_MODES),
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

export const imagePruneResultSchema = once(() => schemaOf<{ removed: number; bytes: number; kept: number }>()(object({ removed: count, bytes: count, kept: count })));

export const imageListSchema = once(() => schemaOf<ImageRecord[]>()(list(imageRecordSchema())));

export const imageExportResultSchema = once(() =>
  schemaOf<ImageExportResult>()(object({ name: imageNameSchema, path, digest: string({ pattern: /^sha256:[0-9a-f]{64}$/ }), bytes: count, signed: boolean() })),
);

const sha256Hex = string({ pattern: /^[0-9a-f]{64}$/, patternMessage: 'not a sha256' });

export const kernelInfoSchema = once(() =>
  schemaOf<KernelInfo>()(
    object({ name: kernelName, version: text(128), arch: text(32), sha256: object({ kernel: sha256Hex, initrd: sha256Hex, modules: sha256Hex.optional() }), source: text(2048), pulledAt: timestamp, dir: path, usedBy: list(text(256)) }),
  ),
);

export const catalogKernelSchema = once(() =>
  schemaOf<CatalogKernel>()(
    object({
      name: kernelName,
      version: text(128),
      arch: oneOf(['x86_64'] as const),
      description: text(1024).optional(),
      files: array(object({ role: oneOf(['kernel', 'initrd', 'modules'] as const), url: text(2048), sha256: sha256Hex, size: count }), { max: 3 }),
    }),
  ),
);

export const imageDeletedSchema = once(() => schemaOf<{ deleted: string }>()(object({ deleted: imageNameSchema })));

// ---- the daemon's methods ---------------------------------------------------

/**
 * Each daemon method's result shape, by method (built on first use). The
 * method table (src/rpc/methods.ts) pairs each with its params schema and
 * must name exactly these methods; the client reads only this table, so it
 * never loads the params' zod.
 */
export const daemonResults = {
  'rpc.hello': helloResultSchema,
  'daemon.status': daemonStatusSchema,
  'daemon.stop': stoppingSchema,
  'vm.create': vmCreateResultSchema,
  'vm.start': vmCreateResultSchema,
  'vm.stop': vmStopResultSchema,
  'vm.restart': vmCreateResultSchema,
  'vm.kill': vmViewSchema,
  'vm.prune': vmPruneResultSchema,
  'vm.set': vmViewSchema,
  'vm.list': vmListSchema,
  'vm.show': vmViewSchema,
  'vm.delete': deletedSchema,
  'vm.logs': vmLogsResultSchema,
  'vm.stats': vmStatsSchema,
  'vm.ports': vmPortsSchema,
  'vm.workspace.prepare': workspacePrepareResultSchema,
  'vm.workspace.export': workspaceExportResultSchema,
  'vm.workspace.status': workspaceStatusSchema,
  'vm.ssh_target': vmSshTargetSchema,
  'network.show': networkShowSchema,
  'image.build': imageRecordSchema,
  'image.pull': imageRecordSchema,
  'image.import': imageRecordSchema,
  'image.prune': imagePruneResultSchema,
  'image.list': imageListSchema,
  'vm.commit': imageRecordSchema,
  'image.show': imageViewSchema,
  'image.snapshot': snapshotInfoSchema,
  'image.delete': imageDeletedSchema,
  'image.export': imageExportResultSchema,
  'kernel.list': once(() => schemaOf<KernelInfo[]>()(list(kernelInfoSchema()))),
  'kernel.catalog': once(() => schemaOf<CatalogKernel[]>()(list(catalogKernelSchema()))),
  'kernel.show': kernelInfoSchema,
  'kernel.pull': kernelInfoSchema,
  'kernel.delete': once(() => schemaOf<{ deleted: string }>()(object({ deleted: kernelName }))),
} as const;

// ---- a malformed result as a coded error ---------------------------------------

/** `field.path: what is wrong` of a failed parse's first issue, bounded (the peer's text is never echoed whole). */
export function firstIssue(error: { issues: Issue[] }): { path: string; problem: string } {
  const issue = error.issues[0];
  const path = issue?.path.length ? issue.path.map(String).join('.').slice(0, 128) : '';
  const problem = (issue?.message ?? 'invalid').slice(0, 300);
  return { path, problem };
}
