/** Free loopback TCP ports for QEMU's hostfwd. */
import { connect, createServer } from 'node:net';

export function freeLoopbackPort(exclude: ReadonlySet<number> = new Set()): Promise<number> {
  return new Promise((resolve, reject) => {
    const attempt = (tries: number) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => {
        const addr = srv.address();
        const port = typeof addr === 'object' && addr ? addr.port : 0;
        srv.close(() => {
          if (exclude.has(port) && tries > 0) attempt(tries - 1);
          else resolve(port);
        });
      });
    };
    attempt(20);
  });
}

/**
 * Retries a TCP connect to host:port until one succeeds (true) or the
 * deadline passes or `signal` aborts (false). Each attempt is bounded by
 * 1 s; nothing is sent (the connection is closed once made).
 */
export async function waitTcpReachable(host: string, port: number, deadlineMs: number, signal?: AbortSignal): Promise<boolean> {
  while (Date.now() < deadlineMs && !signal?.aborted) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port, timeout: Math.max(1, Math.min(1000, deadlineMs - Date.now())) });
      const done = (v: boolean) => {
        s.destroy();
        resolve(v);
      };
      s.once('connect', () => done(true));
      s.once('timeout', () => done(false));
      s.once('error', () => done(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}
