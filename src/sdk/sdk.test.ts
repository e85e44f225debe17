/**
 * The SDK's logic around the daemon, against a fake client: argument
 * checks, the run's clean-up on failure and on abort, and the export's
 * completeness check. (Real VMs: the smoke scenario sdk_examples.)
 */
import { describe, it, expect } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RpcClient } from '../rpc/client.js';
import { BangerError } from '../errors/errors.js';
import { Banger } from './banger.js';
import { checkArgv } from './exec.js';

type Answer = (params: Record<string, unknown>, opts?: { onChunk?: (b: Buffer) => void }) => unknown;

function fake(answers: Record<string, Answer>) {
  const calls: Array<[string, Record<string, unknown>]> = [];
  let closed = 0;
  const client = {
    call: async (method: string, params: Record<string, unknown>, opts?: { onChunk?: (b: Buffer) => void }) => {
      calls.push([method, params]);
      const a = answers[method];
      if (!a) throw new BangerError('unknown_method', `unexpected ${method}`);
      return a(params, opts);
    },
    close: () => void closed++,
  } as unknown as RpcClient;
  return { banger: Banger.withClient(client, { connect: async () => client }), calls, closed: () => closed };
}

const reject = (e: Promise<unknown>) => e.then(() => expect.fail('resolved'), (x: unknown) => x as BangerError);

describe('argument checks (before any call)', () => {
  it('argv must be a non-empty string array without NUL', () => {
    for (const bad of [[], 'ls -l', [1], ['a\0b'], null]) expect(() => checkArgv(bad)).toThrow(BangerError);
    expect(checkArgv(['sh', '-c', 'echo "$1"', '--', "it's"])).toEqual(['sh', '-c', 'echo "$1"', '--', "it's"]);
  });

  it('a bad VM name is bad_request with a hint, and nothing is asked of the daemon', async () => {
    const f = fake({});
    expect(() => f.banger.vm('Bad_Name')).toThrow(expect.objectContaining({ code: 'bad_request' }));
    const e = await reject(f.banger.createVm({ name: 'Bad_Name' }));
    expect(e.code).toBe('bad_request');
    expect(e.hint).toBeTruthy();
    const r = await reject(f.banger.run({ name: 'x'.repeat(80), cmd: ['true'] }));
    expect(r.code).toBe('bad_request');
    expect(f.calls).toEqual([]);
  });

  it('run refuses a missing repo before any VM exists', async () => {
    const f = fake({});
    const e = await reject(f.banger.run({ cmd: ['true'], repo: '/nonexistent/repo' }));
    expect(e).toMatchObject({ code: 'bad_request', field: 'repo' });
    expect(f.calls).toEqual([]);
  });
});

describe('run cleans up', () => {
  it('an already-aborted signal: interrupted, nothing created', async () => {
    const f = fake({});
    const e = await reject(f.banger.run({ cmd: ['true'], signal: AbortSignal.abort() }));
    expect(e.code).toBe('interrupted');
    expect(f.calls).toEqual([]);
  });

  it('a failure after the create deletes the VM (ephemeral), then rethrows', async () => {
    const f = fake({
      'vm.create': (p) => ({ vm: { name: p.name }, ssh: null, bootMs: 1, clonedFrom: null }),
      'vm.delete': (p) => ({ deleted: p.name }),
    });
    const e = await reject(f.banger.run({ name: 'box', cmd: ['true'] }));
    expect(e.code).toBe('internal'); // no SSH target: the fake's fault
    expect(f.calls.map((c) => c[0])).toEqual(['vm.create', 'vm.delete']);
    expect(f.calls[0]![1]).toMatchObject({ name: 'box', ephemeral: true });
    expect(f.calls[1]![1]).toEqual({ name: 'box', force: true });
    expect(f.closed()).toBe(1); // the run's own connection
  });

  it('keep: the VM is not ephemeral and not deleted', async () => {
    const f = fake({ 'vm.create': (p) => ({ vm: { name: p.name }, ssh: null, bootMs: 1, clonedFrom: null }) });
    const r = await f.banger.run({ name: 'box', cmd: [], keep: true, session: async () => 7 });
    expect(r).toMatchObject({ exitCode: 7, name: 'box', kept: true });
    expect(f.calls.map((c) => c[0])).toEqual(['vm.create']);
    expect(f.calls[0]![1]).toMatchObject({ ephemeral: false });
  });

  it('an abort before the run is connected: no VM is created', async () => {
    const ac = new AbortController();
    const calls: string[] = [];
    let closed = false;
    const conn = {
      call: async (method: string) => {
        calls.push(method);
        if (closed) throw new BangerError('unavailable', 'connection closed');
        if (method === 'vm.list') return [];
        throw new BangerError('not_found', 'no VM');
      },
      close: () => void (closed = true),
    } as unknown as RpcClient;
    const banger = Banger.withClient(conn, {
      connect: async () => {
        ac.abort(); // aborted while the run's connection was being made
        return conn;
      },
    });
    const e = await reject(banger.run({ name: 'box', cmd: ['true'], signal: ac.signal }));
    expect(e.code).toBe('interrupted');
    expect(calls.filter((m) => m === 'vm.create')).toEqual(['vm.create']); // refused: its connection was closed first
    expect(closed).toBe(true);
  });

  it('an abort during the create: interrupted, the VM deleted and waited for', async () => {
    const ac = new AbortController();
    let listed = 0;
    const f = fake({
      'vm.create': () => {
        ac.abort();
        throw new BangerError('unavailable', 'connection closed');
      },
      'vm.delete': () => {
        throw new BangerError('not_found', 'no VM box');
      },
      'vm.list': () => (listed++ === 0 ? [{ name: 'box' }] : []),
    });
    const e = await reject(f.banger.run({ name: 'box', cmd: ['true'], signal: ac.signal }));
    expect(e.code).toBe('interrupted');
    expect(e.message).toMatch(/deleted/);
    expect(f.calls.map((c) => c[0])).toEqual(['vm.create', 'vm.delete', 'vm.list', 'vm.list']);
  });
});

describe('workspace export', () => {
  it('returns the streamed patch; refuses one that arrived incomplete', async () => {
    const ok = fake({ 'vm.workspace.export': (_p, o) => (o!.onChunk!(Buffer.from('diff\n')), { bytes: 5, baseCommit: null }) });
    expect(await ok.banger.vm('box').exportWorkspace()).toBe('diff\n');
    const short = fake({ 'vm.workspace.export': (_p, o) => (o!.onChunk!(Buffer.from('dif')), { bytes: 5, baseCommit: null }) });
    expect((await reject(short.banger.vm('box').exportWorkspace())).code).toBe('operation_failed');
  });

  it('to a file: written only when complete, no temp file left either way', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sdk-export-'));
    try {
      const ok = fake({ 'vm.workspace.export': (_p, o) => (o!.onChunk!(Buffer.from('diff\n')), { bytes: 5, baseCommit: 'abc' }) });
      expect(await ok.banger.vm('box').exportWorkspaceTo(join(dir, 'p.patch'))).toEqual({ path: join(dir, 'p.patch'), bytes: 5, baseCommit: 'abc' });
      expect(readFileSync(join(dir, 'p.patch'), 'utf8')).toBe('diff\n');
      const short = fake({ 'vm.workspace.export': (_p, o) => (o!.onChunk!(Buffer.from('d')), { bytes: 5, baseCommit: null }) });
      await reject(short.banger.vm('box').exportWorkspaceTo(join(dir, 'q.patch')));
      expect(readdirSync(dir)).toEqual(['p.patch']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
