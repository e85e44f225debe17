/** Free loopback TCP ports for QEMU's hostfwd. */
import { createServer } from 'node:net';

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
