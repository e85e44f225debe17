/**
 * The RPC method table: the single source of truth for the daemon's
 * dispatch and the CLI's client. Each method has a zod schema for its params
 * (validated at the daemon's boundary) and a phantom result type.
 */
import { z } from 'zod';
import type { ImageRecord, SshTarget, VmView } from '../model/types.js';
import { VM_NAME_RULE, vmNameProblem } from '../model/names.js';
import { MAX_VCPU, MIN_MEMORY_MIB } from '../config/config.js';

/** Bump when a method's params or result change shape. */
export const PROTOCOL_VERSION = 1;

const vmName = z.string().refine((s) => vmNameProblem(s) === undefined, { message: VM_NAME_RULE });
const imageName = z.string().refine((s) => vmNameProblem(s) === undefined, {
  message: 'an image name must be a DNS label (a-z, 0-9, "-")',
});

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
  ssh: VmSshTarget;
  bootMs: number;
}

export interface DoctorCheck {
  name: string;
  status: 'pass' | 'warn' | 'fail';
  detail: string;
}

export const methods = {
  'rpc.hello': {
    params: z.object({ protocol: z.number().int(), client: z.string() }).strict(),
    result: {} as { protocol: number; version: string; pid: number },
  },
  'daemon.status': { params: z.object({}).strict(), result: {} as DaemonStatus },
  'daemon.stop': { params: z.object({}).strict(), result: {} as { stopping: true } },
  'vm.create': {
    params: z
      .object({
        name: vmName.optional(),
        image: imageName.optional(),
        vcpu: z.number().int().min(1).max(MAX_VCPU).optional(),
        memoryMib: z.number().int().min(MIN_MEMORY_MIB).max(1024 * 1024).optional(),
        /** Delete the VM when this connection closes (vm run --rm). */
        ephemeral: z.boolean().optional(),
      })
      .strict(),
    result: {} as VmCreateResult,
  },
  'vm.list': { params: z.object({}).strict(), result: {} as VmView[] },
  'vm.show': { params: z.object({ name: z.string().min(1) }).strict(), result: {} as VmView },
  'vm.delete': {
    params: z.object({ name: z.string().min(1), force: z.boolean().optional() }).strict(),
    result: {} as { deleted: string },
  },
  'vm.ssh_target': { params: z.object({ name: z.string().min(1) }).strict(), result: {} as VmSshTarget },
  'image.build': {
    params: z.object({ name: imageName.optional(), force: z.boolean().optional() }).strict(),
    result: {} as ImageRecord,
  },
  'image.list': { params: z.object({}).strict(), result: {} as ImageRecord[] },
  'image.show': { params: z.object({ name: z.string().min(1) }).strict(), result: {} as ImageRecord },
  'image.delete': { params: z.object({ name: z.string().min(1) }).strict(), result: {} as { deleted: string } },
} as const;

export type Methods = typeof methods;
export type MethodName = keyof Methods;
export type ParamsOf<M extends MethodName> = z.input<Methods[M]['params']>;
export type ValidParamsOf<M extends MethodName> = z.output<Methods[M]['params']>;
export type ResultOf<M extends MethodName> = Methods[M]['result'];

export function isMethodName(m: string): m is MethodName {
  return Object.prototype.hasOwnProperty.call(methods, m);
}
