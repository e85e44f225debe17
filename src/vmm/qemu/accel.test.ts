import { describe, it, expect, afterAll } from 'vitest';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { onPath } from '../../system/which.js';
import { createRunner, type Runner, type RunOptions, type RunResult } from '../../system/runner.js';
import { BangerError } from '../../errors/errors.js';
import {
  KVM_PROBE_NAME_PREFIX,
  kvmProbeArgv,
  parseTscKhz,
  probeKvm,
  resolveAccel,
  type KvmProbeResult,
} from './accel.js';

const dir = mkdtempSync(join(tmpdir(), 'banger-accel-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A stand-in for /dev/kvm and a kernel, so the fake-runner tests get past the file checks anywhere. */
const fakeDevice = join(dir, 'kvm');
const fakeKernel = join(dir, 'vmlinuz');
writeFileSync(fakeDevice, '');
writeFileSync(fakeKernel, 'not really a kernel');

type Script = (argv: string[], opts: RunOptions) => Promise<RunResult>;

function fakeRunner(script: Script): Runner & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    calls,
    run(argv, opts = {}) {
      calls.push(argv);
      return script(argv, opts);
    },
    spawnDetached() {
      throw new Error('unused');
    },
    runInteractive() {
      throw new Error('unused');
    },
  };
}

function result(argv: string[], over: Partial<RunResult>): RunResult {
  return { argv, code: null, signal: null, stdout: '', stderr: '', timedOut: false, durationMs: 0, ...over };
}

/** Behaves like the real runner's kill paths: resolves on abort (SIGKILL) or at timeoutMs (timedOut). */
function untilKilled(argv: string[], opts: RunOptions, stdout: string): Promise<RunResult> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(result(argv, { signal: 'SIGKILL', timedOut: true, stdout })), opts.timeoutMs ?? 1e9);
    opts.signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve(result(argv, { signal: 'SIGKILL', stdout }));
    });
  });
}

describe('resolveAccel', () => {
  const ok: KvmProbeResult = { usable: true, reason: 'booted', ms: 120 };
  const bad: KvmProbeResult = { usable: false, reason: 'a probe kernel under KVM printed nothing within 4000 ms', ms: 4000 };

  it('tcg is always tcg, without a warning', () => {
    expect(resolveAccel('tcg', ok)).toEqual({ accel: 'tcg' });
    expect(resolveAccel('tcg', bad)).toEqual({ accel: 'tcg' });
    expect(resolveAccel('tcg', undefined)).toEqual({ accel: 'tcg' });
  });

  it('auto picks kvm only when the probe proved it', () => {
    expect(resolveAccel('auto', ok)).toEqual({ accel: 'kvm' });
    const fallback = resolveAccel('auto', bad);
    expect(fallback.accel).toBe('tcg');
    expect(fallback.warning).toBe(
      'KVM is not usable here (a probe kernel under KVM printed nothing within 4000 ms); using TCG software emulation — VMs will be much slower',
    );
    expect(fallback.warning).not.toContain('\n');
    expect(resolveAccel('auto', null).accel).toBe('tcg');
  });

  it('kvm requested but unusable is a coded error with a hint', () => {
    expect(resolveAccel('kvm', ok)).toEqual({ accel: 'kvm' });
    let err: unknown;
    try {
      resolveAccel('kvm', bad);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BangerError);
    expect((err as BangerError).code).toBe('unavailable');
    expect((err as BangerError).message).toContain(bad.reason);
    expect((err as BangerError).hint).toMatch(/auto/);
  });
});

describe('probeKvm (fake runner)', () => {
  it('is unusable without booting anything when the device is missing', async () => {
    const runner = fakeRunner(() => Promise.reject(new Error('must not run')));
    const r = await probeKvm({ runner }, { kernel: fakeKernel, kvmDevice: join(dir, 'no-such-kvm') });
    expect(r.usable).toBe(false);
    expect(r.reason).toMatch(/does not exist/);
    expect(runner.calls).toHaveLength(0);
  });

  it('is unusable without booting anything when the kernel is missing', async () => {
    const runner = fakeRunner(() => Promise.reject(new Error('must not run')));
    const r = await probeKvm({ runner }, { kernel: join(dir, 'nope'), kvmDevice: fakeDevice });
    expect(r.usable).toBe(false);
    expect(r.reason).toMatch(/not readable/);
    expect(runner.calls).toHaveLength(0);
  });

  it('usable as soon as "Linux version" appears, and kills the probe right away', async () => {
    const runner = fakeRunner((argv, opts) => {
      const p = untilKilled(argv, opts, '');
      setTimeout(() => opts.onStdout?.(Buffer.from('Probing EDD... ok\r\n[    0.000000] Linux ver')), 5);
      setTimeout(() => opts.onStdout?.(Buffer.from('sion 6.1.0-56-cloud-amd64 (debian-kernel@...)\r\n')), 10);
      return p;
    });
    const t0 = Date.now();
    const r = await probeKvm({ runner }, { kernel: fakeKernel, kvmDevice: fakeDevice, timeoutMs: 4000 });
    expect(r.usable).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1000);
    const argv = runner.calls[0]!;
    expect(argv).toEqual(expect.arrayContaining(['-accel', 'kvm', '-cpu', 'host', '-serial', 'stdio', '-kernel', fakeKernel]));
    expect(argv[argv.indexOf('-M') + 1]).toMatch(/^microvm,/);
    expect(argv[argv.indexOf('-append') + 1]).toContain('earlyprintk=ttyS0');
  });

  it('a hang is bounded: unusable, reason names where it stalled', async () => {
    const doubled = 'PPrroobbiinngg  EEDDDD  ((eedddd==ooffff  ttoo  ddiissaabbllee))......  ookk\r\n';
    const runner = fakeRunner((argv, opts) => {
      setTimeout(() => opts.onStdout?.(Buffer.from(doubled)), 5);
      return untilKilled(argv, opts, doubled);
    });
    const r = await probeKvm({ runner }, { kernel: fakeKernel, kvmDevice: fakeDevice, timeoutMs: 300 });
    expect(r.usable).toBe(false);
    expect(r.reason).toBe('a probe kernel under KVM stalled after "Probing EDD (edd=off to disable)... ok" within 300 ms (the guest hangs in KVM)');
    expect(r.ms).toBeGreaterThanOrEqual(290);
    expect(r.ms).toBeLessThan(2000);
  });

  it('QEMU failing early is unusable, with its error in one line', async () => {
    const runner = fakeRunner((argv) =>
      Promise.resolve(
        result(argv, {
          signal: 'SIGABRT',
          stderr:
            'qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: Assertion failed.\n',
        }),
      ),
    );
    const r = await probeKvm({ runner }, { kernel: fakeKernel, kvmDevice: fakeDevice });
    expect(r).toMatchObject({ usable: false });
    expect(r.reason).toBe('QEMU aborted under KVM before the kernel started: error: failed to set MSR 0x10a to 0x69');
  });

  it('a missing QEMU binary is unusable, not an exception', async () => {
    const runner = fakeRunner(() => Promise.reject(new BangerError('operation_failed', 'cannot run qemu-system-x86_64: spawn ENOENT')));
    const r = await probeKvm({ runner }, { kernel: fakeKernel, kvmDevice: fakeDevice });
    expect(r.usable).toBe(false);
    expect(r.reason).toContain('ENOENT');
  });

  it('every probe carries a unique -name', () => {
    const a = kvmProbeArgv('/k', 'host');
    const b = kvmProbeArgv('/k', 'host');
    const name = (argv: string[]) => argv[argv.indexOf('-name') + 1]!;
    expect(name(a)).toMatch(new RegExp(`^${KVM_PROBE_NAME_PREFIX}[0-9a-f]{8}$`));
    expect(name(a)).not.toBe(name(b));
  });
});

describe('parseTscKhz', () => {
  const cpu = (model: string, mhz: string, flags: string) =>
    `processor\t: 0\nmodel name\t: ${model}\ncpu MHz\t\t: ${mhz}\nflags\t\t: fpu ${flags} msr\n\nprocessor\t: 1\ncpu MHz\t\t: 999.000\n`;

  it('prefers the Intel brand frequency, then cpu MHz, and needs constant_tsc', () => {
    expect(parseTscKhz(cpu('Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz', '1200.000', 'tsc constant_tsc'))).toBe(2_400_000);
    expect(parseTscKhz(cpu('AMD EPYC 7B13', '2445.406', 'tsc constant_tsc nonstop_tsc'))).toBe(2_445_406);
    expect(parseTscKhz(cpu('AMD EPYC 7B13', '2445.406', 'tsc'))).toBeUndefined();
    expect(parseTscKhz('')).toBeUndefined();
  });
});

// ---- the real probe -----------------------------------------------------


/** A bootable kernel: $BANGER_TEST_KERNEL, the dev host's Debian cloud kernel, or the host's own. */
function findKernel(): string | undefined {
  const candidates = [
    process.env.BANGER_TEST_KERNEL,
    '/tmp/k/x/boot/vmlinuz-6.1.0-56-cloud-amd64',
    `/boot/vmlinuz-${release()}`,
    '/boot/vmlinuz',
  ];
  for (const c of candidates) {
    if (!c) continue;
    try {
      accessSync(c, constants.R_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

/** Pids of live processes whose command line contains `marker`. */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(marker)) found.push(Number(entry));
    } catch {
      // gone
    }
  }
  return found;
}

/** Runs the real runner but remembers each probe's unique -name. */
function recordingRunner(): Runner & { names: string[] } {
  const real = createRunner();
  const names: string[] = [];
  return {
    names,
    run(argv, opts) {
      const i = argv.indexOf('-name');
      if (i >= 0) names.push(argv[i + 1]!);
      return real.run(argv, opts);
    },
    spawnDetached: (a, o) => real.spawnDetached(a, o),
    runInteractive: (a, o) => real.runInteractive(a, o),
  };
}

describe('probeKvm (real QEMU)', () => {
  const kernel = findKernel();
  const skipReason = !onPath('qemu-system-x86_64')
    ? 'qemu-system-x86_64 is not installed'
    : !kernel
      ? 'no bootable kernel found (set BANGER_TEST_KERNEL to a bzImage)'
      : undefined;
  // BANGER_TEST_KVM=broken|works pins the expected verdict on a host whose KVM is known.
  const expected = process.env.BANGER_TEST_KVM;

  for (const cpu of [undefined, 'kvm64']) {
    it(`is bounded and leaves no QEMU behind (cpu ${cpu ?? 'default'})`, async (ctx) => {
      if (skipReason) {
        console.warn(`skipping the real KVM probe: ${skipReason}`);
        ctx.skip(skipReason);
      }
      const runner = recordingRunner();
      const timeoutMs = 3000;
      const t0 = Date.now();
      const r = await probeKvm({ runner }, { kernel: kernel!, timeoutMs, ...(cpu ? { cpu } : {}) });
      const wall = Date.now() - t0;
      console.info(`KVM probe (cpu ${cpu ?? 'default'}): ${JSON.stringify(r)} wall=${wall}ms`);
      expect(wall).toBeLessThan(timeoutMs + 2000);
      expect(r.ms).toBeLessThanOrEqual(wall);
      expect(r.reason.length).toBeGreaterThan(0);
      expect(r.reason).not.toContain('\n');
      if (expected === 'broken') expect(r.usable).toBe(false);
      if (expected === 'works') expect(r.usable).toBe(true);
      for (const name of runner.names) expect(processesWith(name)).toEqual([]);
    });
  }
});
