/**
 * banger's SDK: throwaway and long-lived Linux microVMs from code.
 *
 *   import { Banger, BangerError } from 'banger';
 *   const banger = await Banger.connect();
 *   const vm = await banger.createVm({ name: 'box' });
 *   const r = await vm.exec(['sh', '-c', 'echo hi; exit 3']); // { exitCode: 3, stdout: 'hi\n', stderr: '' }
 *
 * docs/SDK.md documents every method and error code.
 */
export { Banger } from './banger.js';
export type { ConnectOptions, CreateVmOptions, ImageBuildOptions, ImagePullOptions, VmSpec } from './banger.js';
export { Vm } from './vm.js';
export type { KillSignal, PrepareOptions, ProgressOption, StartResult, StopResult } from './vm.js';
export type { ExecOptions, ExecResult } from './exec.js';
export type { RunOptions, RunResult } from './run.js';
export type { ExportOptions, ExportToResult } from './workspace.js';
export { BangerError, ERROR_CODES, isBangerError } from '../errors/errors.js';
export type { ErrorCode } from '../errors/errors.js';
export type {
  ImageRecord,
  ImageSourceKind,
  ImageView,
  NetworkMode,
  ProgressEvent,
  SnapshotInfo,
  SshTarget,
  VmState,
  VmView,
  WorkspaceMode,
  WorkspaceRecord,
} from '../model/types.js';
export type {
  DaemonStatus,
  CatalogKernel,
  ImageExportResult,
  KernelInfo,
  NetworkShow,
  StopReport,
  VmCreateResult,
  VmLogsResult,
  VmPort,
  VmSshTarget,
  VmStats,
  WorkspacePrepareResult,
  WorkspaceStatus,
} from '../rpc/methods.js';
export { VERSION } from '../version.js';
