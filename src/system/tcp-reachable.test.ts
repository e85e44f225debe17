import { describe, it, expect } from 'vitest';
import { createServer } from 'node:net';
import { freeLoopbackPort, waitTcpReachable } from './ports.js';

describe('waitTcpReachable', () => {
  it('true once something listens (also when it starts listening late)', async () => {
    const port = await freeLoopbackPort();
    const server = createServer((c) => c.destroy());
    setTimeout(() => server.listen(port, '127.0.0.1'), 500);
    try {
      const t0 = Date.now();
      expect(await waitTcpReachable('127.0.0.1', port, Date.now() + 5000)).toBe(true);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    } finally {
      server.close();
    }
  });

  it('false at the deadline when nothing listens, and at once when aborted', async () => {
    const port = await freeLoopbackPort();
    const t0 = Date.now();
    expect(await waitTcpReachable('127.0.0.1', port, Date.now() + 700)).toBe(false);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(await waitTcpReachable('127.0.0.1', port, Date.now() + 60_000, AbortSignal.abort())).toBe(false);
  });
});
