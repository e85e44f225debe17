/**
 * Choosing the accelerator. A /dev/kvm that exists is not proof that KVM
 * works: on nested hosts a guest can hang forever inside KVM_RUN (it prints
 * "Probing EDD" from real mode and then nothing, at 100% system time). So
 * `auto` trusts KVM only after a bounded probe boot of a real kernel under
 * KVM shows "Linux version" on the serial console; otherwise it falls back
 * to TCG with a visible warning. The probe QEMU is always SIGKILLed, hang
 * or not: nothing here can hang.
 */
import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { messageOf } from '../../errors/errors.js';
import type { Runner } from '../../system/runner.js';
import { MICROVM_MACHINE, QEMU_SYSTEM_X86_64, cpuModel } from './argv.js';
import type { AccelProbe } from '../accel.js';

/** The probe's result (the VMM-neutral shape; resolveAccel picks the accelerator from it). */
export type KvmProbeResult = AccelProbe;
export { resolveAccel, type AccelChoice } from '../accel.js';

export interface KvmProbeOptions {
  /** A bootable x86-64 Linux kernel (bzImage). */
  kernel: string;
  /** How long the kernel gets to print "Linux version" (default 4000 ms). */
  timeoutMs?: number;
  /** Override the -cpu model (default: the one real VMs use under KVM). */
  cpu?: string;
  /** Override the KVM device (tests). */
  kvmDevice?: string;
}

export const KVM_PROBE_TIMEOUT_MS = 4000;
const BOOT_MARKER = 'Linux version';

/** The -name every probe QEMU carries (plus a random suffix), so a leftover would be easy to find. */
export const KVM_PROBE_NAME_PREFIX = 'banger-kvm-probe-';

export async function probeKvm(deps: { runner: Runner }, opts: KvmProbeOptions): Promise<KvmProbeResult> {
  const started = Date.now();
  const elapsed = () => Date.now() - started;
  const device = opts.kvmDevice ?? '/dev/kvm';
  const timeoutMs = opts.timeoutMs ?? KVM_PROBE_TIMEOUT_MS;

  const deviceProblem = kvmDeviceProblem(device);
  if (deviceProblem) return { usable: false, reason: deviceProblem, ms: elapsed() };
  try {
    if (!statSync(opts.kernel).isFile()) throw new Error('not a regular file');
    accessSync(opts.kernel, constants.R_OK);
  } catch (e) {
    return { usable: false, reason: `cannot probe KVM: kernel ${opts.kernel} is not readable (${messageOf(e)})`, ms: elapsed() };
  }

  const argv = kvmProbeArgv(opts.kernel, opts.cpu ?? cpuModel('kvm'));
  const ac = new AbortController();
  let out = '';
  let bootedAt: number | undefined;
  const onStdout = (chunk: Buffer) => {
    if (bootedAt !== undefined) return;
    out = (out + chunk.toString('latin1')).slice(-65536);
    if (out.includes(BOOT_MARKER)) {
      bootedAt = elapsed();
      ac.abort(); // SIGKILL: we have our answer
    }
  };

  let result;
  try {
    result = await deps.runner.run(argv, { timeoutMs, allowFailure: true, signal: ac.signal, onStdout });
  } catch (e) {
    return { usable: false, reason: oneLine(`cannot run the KVM probe: ${messageOf(e)}`), ms: elapsed() };
  }
  if (bootedAt !== undefined || result.stdout.includes(BOOT_MARKER)) {
    const ms = bootedAt ?? elapsed();
    return { usable: true, reason: `a probe kernel booted under KVM in ${ms} ms`, ms };
  }
  const ms = elapsed();
  const lastOutput = lastLine(out || result.stdout);
  if (result.timedOut) {
    const where = lastOutput ? `stalled after ${JSON.stringify(lastOutput)}` : 'printed nothing';
    return {
      usable: false,
      reason: `a probe kernel under KVM ${where} within ${timeoutMs} ms (the guest hangs in KVM)`,
      ms,
    };
  }
  const how =
    result.signal === 'SIGABRT' ? 'aborted' : result.signal ? `was killed by ${result.signal}` : `exited with code ${result.code}`;
  const err = firstErrorLine(result.stderr);
  return {
    usable: false,
    reason: oneLine(`QEMU ${how} under KVM before the kernel started${err ? `: ${err}` : ''}`),
    ms,
  };
}

/** The probe's QEMU command line: the real VMs' machine and CPU, serial on stdout, no disks. */
export function kvmProbeArgv(kernel: string, cpu: string): string[] {
  return [
    QEMU_SYSTEM_X86_64,
    '-name', `${KVM_PROBE_NAME_PREFIX}${randomBytes(4).toString('hex')}`,
    '-M', MICROVM_MACHINE,
    '-accel', 'kvm',
    '-cpu', cpu,
    '-smp', '1',
    '-m', '256M',
    '-nodefaults',
    '-no-user-config',
    '-display', 'none',
    '-no-reboot',
    '-serial', 'stdio',
    '-kernel', kernel,
    '-append', 'console=ttyS0 earlyprintk=ttyS0 panic=-1 reboot=t',
  ];
}

/** Undefined when the device exists and is read/writable; otherwise why not. */
export function kvmDeviceProblem(device = '/dev/kvm'): string | undefined {
  try {
    statSync(device);
  } catch {
    return `${device} does not exist (no hardware virtualisation, or the kvm module is not loaded)`;
  }
  try {
    accessSync(device, constants.R_OK | constants.W_OK);
  } catch {
    return `${device} is not readable and writable by this user (add the user to the "kvm" group)`;
  }
  return undefined;
}

/**
 * The host's TSC frequency in kHz, best effort, for `tsc_early_khz=` on TCG
 * boots (see kernelCmdline). Under TCG the guest's TSC is the host's TSC.
 */
export function hostTscKhz(cpuinfo?: string): number | undefined {
  let text = cpuinfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return undefined;
    }
  }
  return parseTscKhz(text);
}

/**
 * From /proc/cpuinfo: needs a constant-rate TSC. Intel's brand string
 * ("@ 2.40GHz") is the TSC rate; otherwise "cpu MHz" (exact in a VM, the
 * current clock on bare metal with frequency scaling: approximate).
 */
export function parseTscKhz(cpuinfo: string): number | undefined {
  const first = cpuinfo.split(/\n\s*\n/)[0] ?? '';
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(first)?.[1]?.trim();
  const flags = (field('flags') ?? '').split(/\s+/);
  if (!flags.includes('constant_tsc')) return undefined;
  const brand = /@\s*([\d.]+)\s*GHz/i.exec(field('model name') ?? '');
  const ghz = brand ? Number(brand[1]) : NaN;
  if (Number.isFinite(ghz) && ghz > 0.1 && ghz < 10) return Math.round(ghz * 1_000_000);
  const mhz = Number(field('cpu MHz'));
  if (Number.isFinite(mhz) && mhz > 100 && mhz < 10_000) return Math.round(mhz * 1000);
  return undefined;
}

function lastLine(text: string): string {
  const lines = text
    .replace(/\r/g, '\n')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  let last = lines[lines.length - 1] ?? '';
  // the real-mode setup code's messages can reach the serial port twice, interleaved ("PPrroobbiinngg")
  if (last.length >= 4 && last.length % 2 === 0 && /^(?:(.)\1)+$/.test(last)) last = last.replace(/(.)\1/g, '$1');
  return oneLine(last, 80);
}

function firstErrorLine(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const err = lines.find((l) => /error|fail|cannot|could not/i.test(l)) ?? lines[0] ?? '';
  return err.replace(/^qemu-system-x86_64:\s*/, '');
}

function oneLine(text: string, max = 240): string {
  // printable ASCII only: the probe's serial output may contain control bytes
  const t = text.replace(/[^\x20-\x7e]+/g, ' ').replace(/\s+/g, ' ').trim();
  return t.length > max ? t.slice(0, max - 1) + '…' : t;
}
