import { describe, it, expect, vi, afterEach } from 'vitest';
import { Command } from '@commander-js/extra-typings';
import type { RpcClient } from '../../rpc/client.js';
import type { VmLogsResult, VmPort, VmStats } from '../../rpc/methods.js';
import type { CliContext } from '../context.js';
import { Banger } from '../../sdk/banger.js';
import { addInspectCommands, renderPorts, renderStats } from './vm-inspect.js';

afterEach(() => vi.restoreAllMocks());

/** A CLI context whose daemon answers vm.logs from a script of replies. */
function ctxWith(handler: (method: string, params: Record<string, unknown>) => unknown): { ctx: CliContext; calls: Array<[string, Record<string, unknown>]> } {
  const calls: Array<[string, Record<string, unknown>]> = [];
  const client = {
    call: async (method: string, params: Record<string, unknown>) => {
      calls.push([method, params]);
      return handler(method, params);
    },
  } as unknown as RpcClient;
  const ctx = { banger: async () => Banger.withClient(client) } as unknown as CliContext;
  return { ctx, calls };
}

function captureStdout(): () => string {
  let out = '';
  vi.spyOn(process.stdout, 'write').mockImplementation(((chunk: string, cb?: (e?: Error) => void) => {
    out += chunk;
    if (typeof cb === 'function') cb();
    return true;
  }) as typeof process.stdout.write);
  return () => out;
}

async function run(ctx: CliContext, args: string[]): Promise<void> {
  const vm = new Command('vm').enablePositionalOptions();
  addInspectCommands(vm, ctx);
  vm.exitOverride();
  await vm.parseAsync(args, { from: 'user' });
}

describe('vm logs', () => {
  it('prints the whole console, chunk by chunk, then stops', async () => {
    const chunks: VmLogsResult[] = [
      { data: 'Linux version', offset: 13, size: 20 },
      { data: ' 6.1\nok\n', offset: 20, size: 20 },
    ];
    const { ctx, calls } = ctxWith(() => chunks.shift());
    const out = captureStdout();
    await run(ctx, ['logs', 'box']);
    expect(out()).toBe('Linux version 6.1\nok\n');
    expect(calls).toEqual([
      ['vm.logs', { name: 'box', offset: 0 }],
      ['vm.logs', { name: 'box', offset: 13 }],
    ]);
  });

  it('stops on an empty reply even if a partial character is held back', async () => {
    const { ctx, calls } = ctxWith(() => ({ data: '', offset: 5, size: 7 }));
    captureStdout();
    await run(ctx, ['logs', 'box']);
    expect(calls).toHaveLength(1);
  });
});

describe('vm stats / ports rendering', () => {
  const stats: VmStats = {
    name: 'box',
    cpuPercent: 12.34,
    vcpu: 2,
    memory: { totalBytes: 1024 ** 3, availableBytes: 768 * 1024 ** 2, usedBytes: 256 * 1024 ** 2 },
    hostRssBytes: 300 * 1024 ** 2,
    filesystems: [{ mount: '/', sizeBytes: 4 * 1024 ** 3, usedBytes: 1024 ** 3 }],
    disks: [{ name: 'root', path: '/s/vms/abc/root.qcow2', allocatedBytes: 5 * 1024 ** 2, virtualBytes: 4 * 1024 ** 3 }],
  };

  it('stats: one row per resource with used, size and percent', () => {
    const lines = renderStats(stats).split('\n');
    expect(lines[0]).toMatch(/^RESOURCE\s+USED\s+SIZE\s+USE\s+WHAT$/);
    expect(lines[1]).toMatch(/^cpu\s+12\.3 %\s+2 vCPUs/);
    expect(lines[2]).toMatch(/^memory\s+256 MiB\s+1\.0 GiB\s+25 %/);
    expect(lines[3]).toMatch(/^host memory\s+300 MiB\s+QEMU process resident memory on the host \(VmRSS\)$/);
    expect(lines[4]).toMatch(/^fs \/\s+1\.0 GiB\s+4\.0 GiB\s+25 %/);
    expect(lines[5]).toMatch(/^disk root\s+5\.0 MiB\s+4\.0 GiB\s+0 %.*root\.qcow2$/);
  });

  it('stats --json prints the daemon result as is', async () => {
    const { ctx } = ctxWith(() => stats);
    const out = captureStdout();
    await run(ctx, ['stats', 'box', '--json']);
    expect(JSON.parse(out())).toEqual(stats);
  });

  it('ports: "-" for no process and for a port that is not forwarded', () => {
    const ports: VmPort[] = [
      { proto: 'tcp', address: '0.0.0.0', port: 22, process: 'sshd', hostEndpoint: '127.0.0.1:42222' },
      { proto: 'udp', address: '127.0.0.53%lo', port: 53, process: null, hostEndpoint: null },
    ];
    const lines = renderPorts(ports).split('\n');
    expect(lines[0]).toMatch(/^PROTO\s+ADDRESS\s+PORT\s+PROCESS\s+HOST ENDPOINT$/);
    expect(lines[1]).toMatch(/^tcp\s+0\.0\.0\.0\s+22\s+sshd\s+127\.0\.0\.1:42222$/);
    expect(lines[2]).toMatch(/^udp\s+127\.0\.0\.53%lo\s+53\s+-\s+-$/);
  });

  it('ports with nothing listening says so', async () => {
    const { ctx } = ctxWith(() => []);
    const out = captureStdout();
    await run(ctx, ['ports', 'box']);
    expect(out()).toBe('nothing is listening in box\n');
  });
});
