/**
 * `--json` on the commands that change state: one JSON document on stdout,
 * of the shape the SDK method returns (the CLI prints what the SDK gave it).
 */
import { describe, it, expect, vi, afterEach } from 'vitest';
import { Command } from '@commander-js/extra-typings';
import type { RpcClient } from '../../rpc/client.js';
import type { VmCreateResult } from '../../rpc/methods.js';
import type { ImageRecord, VmView } from '../../model/types.js';
import type { CliContext } from '../context.js';
import { Banger } from '../../sdk/banger.js';
import { vmCommand } from './vm.js';
import { imageCommand } from './image.js';

afterEach(() => vi.restoreAllMocks());

const view = (name: string, state: VmView['state'] = 'running'): VmView => ({
  id: '0123456789abcdef',
  name,
  image: 'bookworm',
  kernel: null,
  vcpu: 2,
  memoryMib: 1024,
  systemOverlayBytes: 4 << 30,
  diskBytes: 8 << 30,
  vmm: 'qemu',
  network: 'user',
  state,
  ephemeral: false,
  nat: false,
  ip: null,
  lastError: null,
  createdAt: '2026-11-30T00:00:00.000Z',
  updatedAt: '2026-11-30T00:00:00.000Z',
  runtime: null,
  workspace: null,
});

const started = (name: string): VmCreateResult => ({
  vm: view(name),
  ssh: { name, host: '127.0.0.1', port: 2222, user: 'root', privateKeyPath: '/k', knownHostsPath: '/kh', hostKeyAlias: `${name}.vm` },
  bootMs: 2500,
  clonedFrom: 'qemu-tcg-2c-1024m',
});

const image: ImageRecord = {
  name: 'bookworm',
  source: 'mmdebstrap bookworm',
  sourceKind: 'debian',
  sourceRef: 'bookworm',
  kernelVersion: '6.1.0',
  kernel: null,
  rootfsBytes: 1 << 30,
  packages: [],
  createdAt: '2026-11-30T00:00:00.000Z',
};

/** Runs `banger <args>` against a daemon that answers with `answers[method]`; returns stdout and the calls. */
async function cli(args: string[], answers: Record<string, (params: Record<string, unknown>) => unknown>) {
  const calls: string[] = [];
  const client = {
    call: async (method: string, params: Record<string, unknown>) => {
      calls.push(method);
      const a = answers[method];
      if (!a) throw new Error(`unexpected call ${method}`);
      return a(params);
    },
    close: () => undefined,
  } as unknown as RpcClient;
  const ctx = { banger: async () => Banger.withClient(client), progress: () => undefined } as unknown as CliContext;
  let out = '';
  vi.spyOn(process.stdout, 'write').mockImplementation(((chunk: string) => ((out += chunk), true)) as typeof process.stdout.write);
  vi.spyOn(process.stderr, 'write').mockImplementation((() => true) as typeof process.stderr.write);
  const program = new Command('banger').enablePositionalOptions().exitOverride();
  program.addCommand(vmCommand(ctx));
  program.addCommand(imageCommand(ctx));
  await program.parseAsync(args, { from: 'user' });
  return { json: JSON.parse(out) as unknown, calls };
}

describe('--json prints one document shaped like the SDK result', () => {
  it('vm create: the VM', async () => {
    const r = await cli(['vm', 'create', '--name', 'box', '--json'], { 'vm.create': () => started('box') });
    expect(r.json).toEqual(view('box'));
  });

  it('vm start / restart: {vm, ssh, bootMs, clonedFrom} (Vm.start())', async () => {
    for (const cmd of ['start', 'restart']) {
      const r = await cli(['vm', cmd, 'box', '--json'], { [`vm.${cmd}`]: () => started('box') });
      expect(r.json).toEqual(started('box'));
    }
  });

  it('vm stop: [{vm, report}] for each name, in order', async () => {
    const report = { asked: 'agent', synced: true, ended: 'exited', ms: 900 };
    const r = await cli(['vm', 'stop', 'a', 'b', '--json'], { 'vm.stop': (p) => ({ vm: view(p.name as string, 'stopped'), report }) });
    expect(r.json).toEqual([
      { vm: view('a', 'stopped'), report },
      { vm: view('b', 'stopped'), report },
    ]);
  });

  it('vm kill: the VM', async () => {
    const r = await cli(['vm', 'kill', 'box', '--json'], { 'vm.kill': () => view('box', 'stopped') });
    expect(r.json).toEqual(view('box', 'stopped'));
  });

  it('vm delete: [{deleted}] for each name', async () => {
    const r = await cli(['vm', 'delete', '-f', 'a', 'b', '--json'], { 'vm.delete': (p) => ({ deleted: p.name }) });
    expect(r.json).toEqual([{ deleted: 'a' }, { deleted: 'b' }]);
  });

  it('vm prune -f: {removed, skipped, candidates}; without -f it refuses before any call', async () => {
    const r = await cli(['vm', 'prune', '-f', '--json'], {
      'vm.prune': (p) => (p.dryRun ? { removed: [], skipped: [], candidates: ['a'] } : { removed: ['a'], skipped: [], candidates: ['a'] }),
    });
    expect(r.json).toEqual({ removed: ['a'], skipped: [], candidates: ['a'] });
    await expect(cli(['vm', 'prune', '--json'], {})).rejects.toMatchObject({ code: 'bad_request' });
  });

  it('vm workspace export: {bytes, baseCommit, patch}', async () => {
    const patch = 'diff --git a/f b/f\n';
    const client = {
      call: async (_m: string, _p: unknown, o: { onChunk: (b: Buffer) => void }) => {
        o.onChunk(Buffer.from(patch));
        return { bytes: patch.length, baseCommit: null };
      },
      close: () => undefined,
    } as unknown as RpcClient;
    const ctx = { banger: async () => Banger.withClient(client), progress: () => undefined } as unknown as CliContext;
    let out = '';
    vi.spyOn(process.stdout, 'write').mockImplementation(((chunk: string) => ((out += chunk), true)) as typeof process.stdout.write);
    const program = new Command('banger').enablePositionalOptions().exitOverride();
    program.addCommand(vmCommand(ctx));
    await program.parseAsync(['vm', 'workspace', 'export', 'box', '--json'], { from: 'user' });
    expect(JSON.parse(out)).toEqual({ bytes: patch.length, baseCommit: null, patch });
  });

  it('image delete: {deleted}; image build: the image record', async () => {
    expect((await cli(['image', 'delete', 'old', '--json'], { 'image.delete': () => ({ deleted: 'old' }) })).json).toEqual({ deleted: 'old' });
    expect((await cli(['image', 'build', 'bookworm', '--json'], { 'image.build': () => image })).json).toEqual(image);
  });

  it('vm run --json without a command is refused before the daemon is asked', async () => {
    await expect(cli(['vm', 'run', '--json', '-d'], {})).rejects.toMatchObject({ code: 'bad_request' });
  });
});
