import { describe, it, expect } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readRuntime, writeRuntime, type RuntimeRecord } from './runtime-file.js';

const dir = mkdtempSync(join(tmpdir(), 'rtfile-'));
const file = (name: string, body: unknown) => {
  const p = join(dir, name);
  writeFileSync(p, typeof body === 'string' ? body : JSON.stringify(body));
  return p;
};

describe('runtime.json', () => {
  it("round-trips the daemon's part and the driver's part (opaque here)", () => {
    const rt: RuntimeRecord = { vmm: 'qemu', accel: 'kvm', sshHost: '10.0.0.2', sshPort: 22, startedAt: 'now', driver: { anything: [1, 2], the: 'driver wants' } };
    const p = join(dir, 'new.json');
    writeRuntime(p, rt);
    expect(readRuntime(p)).toEqual(rt);
  });

  it('reads the shape written before the driver split: every non-daemon field becomes the QEMU driver part', () => {
    const old = { pid: 4242, pidStartTime: '99', accel: 'tcg', sshHost: '127.0.0.1', sshPort: 40001, qmpSocket: '/r/q.sock', qgaSocket: '/r/g.sock', startedAt: 't' };
    expect(readRuntime(file('old.json', old))).toEqual({
      vmm: 'qemu',
      accel: 'tcg',
      sshHost: '127.0.0.1',
      sshPort: 40001,
      startedAt: 't',
      driver: { pid: 4242, pidStartTime: '99', qmpSocket: '/r/q.sock', qgaSocket: '/r/g.sock' },
    });
  });

  it('anything else reads as no runtime', () => {
    const good = { vmm: 'qemu', accel: 'tcg', sshHost: 'h', sshPort: 1, startedAt: 't', driver: {} };
    for (const [name, body] of [
      ['missing', undefined],
      ['null', 'null'],
      ['text', 'not json'],
      ['array', [1]],
      ['vmm', { ...good, vmm: 'xen' }],
      ['driver-string', { ...good, driver: 'x' }],
      ['driver-null', { ...good, driver: null }],
      ['port', { ...good, sshPort: 0 }],
      ['accel', { ...good, accel: 'hvf' }],
      ['old-no-accel', { pid: 2, pidStartTime: '1', sshHost: 'h', sshPort: 1, startedAt: 't' }],
    ] as const) {
      const p = body === undefined ? join(dir, 'nope.json') : file(`${name}.json`, body);
      expect(readRuntime(p), name).toBeUndefined();
    }
  });
});
