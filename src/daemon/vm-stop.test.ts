/** A guest that cannot be reached must not make a stop outlast its window (the real QEMU driver, a sleep standing in for QEMU). */
import { describe, it, expect } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { createRunner } from '../system/runner.js';
import { isSameProcess, killProcess, readStartTime } from '../system/proc.js';
import { silentLogger } from '../log/log.js';
import { gracefulStop } from './vm-stop.js';
import { QemuDriver } from '../vmm/qemu/driver.js';

const driver = new QemuDriver({ runner: createRunner(), log: silentLogger() });

async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('gracefulStop', () => {
  it('with no agent, no SSH and no QMP it still ends within the window plus the kill steps', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stop-'));
    const pid = createRunner().spawnDetached(['sleep', '60']);
    const start = readStartTime(pid)!;
    try {
      const t0 = Date.now();
      const report = await gracefulStop(
        silentLogger(),
        'unreachable',
        { driver, handle: { pid, pidStartTime: start, qmpSocket: join(dir, 'qmp.sock'), qgaSocket: join(dir, 'qga.sock') } },
        { host: '127.0.0.1', port: await closedPort(), user: 'root', privateKeyPath: join(dir, 'none'), knownHostsPath: join(dir, 'kh'), hostKeyAlias: 'unreachable.vm' },
        3000,
      );
      const ms = Date.now() - t0;
      expect(report.asked).toBe('none');
      expect(report.synced).toBe(false);
      expect(report.ended).toBe('SIGTERM');
      expect(ms).toBeLessThan(3000 + 3000 + 1000);
      expect(isSameProcess(pid, start)).toBe(false);
    } finally {
      killProcess(pid, start, 'SIGKILL');
    }
  });

  it('a process that is already gone is reported as such, at once', async () => {
    const report = await gracefulStop(
      silentLogger(),
      'gone',
      { driver, handle: { pid: 999999, pidStartTime: '1', qmpSocket: '/nonexistent', qgaSocket: '/nonexistent' } },
      { host: '127.0.0.1', port: 1, user: 'root', privateKeyPath: '/none', knownHostsPath: '/none', hostKeyAlias: 'gone.vm' },
      3000,
    );
    expect(report.ended).toBe('already gone');
  });
});
