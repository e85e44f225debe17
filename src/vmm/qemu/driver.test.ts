import { describe, it, expect } from 'vitest';
import { BangerError } from '../../errors/errors.js';
import { silentLogger } from '../../log/log.js';
import { resolveLayout, vmPaths } from '../../paths/paths.js';
import { createRunner } from '../../system/runner.js';
import { QemuDriver, parseQemuImgInfo, qemuPaths } from './driver.js';

const driver = new QemuDriver({ runner: createRunner(), log: silentLogger() });
const layout = resolveLayout({ BANGER_STATE_DIR: '/s', BANGER_CACHE_DIR: '/c', BANGER_RUNTIME_DIR: '/r', BANGER_CONFIG_DIR: '/cfg' });

describe('QemuDriver', () => {
  it("names QEMU's files where src/paths (and every running VM's QEMU) has them", () => {
    const p = vmPaths(layout, 'abcdefabcdef');
    expect(qemuPaths(p)).toMatchObject({ pidFile: p.pidFile, qmpSocket: p.qmpSocket, qgaSocket: p.qgaSocket, overlay: p.overlay });
  });

  it('capabilities: user and tap networking, a virtio-serial agent channel, qcow2 overlays, snapshots', () => {
    expect(driver.capabilities).toEqual({ userNetworking: true, tapNetworking: true, agentChannel: 'virtio-serial', qcow2Overlays: true, snapshots: true });
    expect(driver.hostTools.map((t) => t.name)).toEqual(['qemu-system-x86_64', 'qemu-img']);
  });

  it('parseHandle takes its own handle (and the fields older runtime.json files held) and refuses anything else', () => {
    const h = { pid: 1234, pidStartTime: '5678', qmpSocket: '/r/vms/x/qmp.sock', qgaSocket: '/r/vms/x/qga.sock' };
    const parsed = driver.parseHandle(h);
    expect(parsed).toEqual(h);
    expect(driver.agentSocket(parsed!)).toBe(h.qgaSocket);
    expect(driver.hostProcess(parsed!)).toEqual({ pid: 1234, startTime: '5678' });
    for (const bad of [null, 'x', {}, { ...h, pid: 1 }, { ...h, pid: -5 }, { ...h, pidStartTime: 'now' }, { ...h, qgaSocket: '' }, { pid: 1234, pidStartTime: '5678' }]) {
      expect(driver.parseHandle(bad)).toBeUndefined();
    }
  });

  it('a handle it did not make is refused before any pid is signalled', () => {
    expect(() => driver.signal({ fakeId: 1 }, 'SIGKILL')).toThrow(BangerError);
    expect(() => driver.isAlive({ pid: 1, pidStartTime: '1', qmpSocket: '/q', qgaSocket: '/g' })).toThrow(BangerError);
  });

  it('a dead process is not alive and its exit is immediate', async () => {
    const h = driver.parseHandle({ pid: 4_000_000, pidStartTime: '1', qmpSocket: '/q', qgaSocket: '/g' })!;
    expect(driver.isAlive(h)).toBe(false);
    expect(await driver.waitForExit(h, 1000)).toBe(true);
  });

  it('parseQemuImgInfo: actual-size and virtual-size', () => {
    const json = JSON.stringify({ 'virtual-size': 4294967296, filename: 'root.qcow2', format: 'qcow2', 'actual-size': 5185536 });
    expect(parseQemuImgInfo(json)).toEqual({ allocatedBytes: 5185536, virtualBytes: 4294967296 });
    expect(parseQemuImgInfo('{"virtual-size": 10}')).toEqual({ allocatedBytes: 0, virtualBytes: 10 });
    expect(() => parseQemuImgInfo('nope')).toThrow(BangerError);
    expect(() => parseQemuImgInfo('{}')).toThrow(BangerError);
  });
});
