/**
 * The kernel catalog end to end (issue 13): a catalog signed with a key of
 * this run, served on loopback, with the default image's own kernel as
 * generic-test; a tampered copy (manifest changed after signing) and one
 * whose kernel bytes are not the listed ones. The daemon reads the catalog
 * URL from config.toml, so the scenario points it there, restarts the
 * daemon, and puts the config back (and restarts it again) at the end.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { makeKeyPair, signBlob } from '../../src/release/sign.js';
import { check, ok, type CliResult } from './harness.js';
import type { Scenario } from './scenarios.js';

const NAME = 'generic-test';

export const kernelScenarios: Scenario[] = [
  {
    name: 'kernel_catalog',
    exclusive: true,
    description: 'kernel pull from a signed catalog: verified and listed; a tampered catalog or kernel is refused with nothing left; delete',
    run: async ({ banger, dirs, log }) => {
      const image = join(dirs.stateDir, 'images', 'bookworm');
      const kernel = readFileSync(join(image, 'vmlinuz'));
      const initrd = readFileSync(join(image, 'initrd.img'));
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      const keys = makeKeyPair();
      const pubFile = join(dirs.root, 'catalog.pub.pem');
      writeFileSync(pubFile, keys.publicKeyPem);
      const entry = (k: Buffer) => ({
        name: NAME,
        version: 'bookworm-cloud',
        arch: 'x86_64',
        files: [
          { role: 'kernel', url: `${NAME}/vmlinuz`, sha256: sha(k), size: k.length },
          { role: 'initrd', url: `${NAME}/initrd.img`, sha256: sha(initrd), size: initrd.length },
        ],
      });
      const signed = (k: Buffer) => {
        const bytes = Buffer.from(JSON.stringify({ kernels: [entry(k)] }));
        return { bytes, sig: Buffer.from(signBlob(bytes, keys.privateKeyPem)) };
      };
      const good = signed(kernel);
      const wrongKernel = signed(Buffer.alloc(kernel.length, 1)); // lists bytes the server does not have
      const routes = new Map<string, Buffer>([
        ['/good/catalog.json', good.bytes],
        ['/good/catalog.json.sig', good.sig],
        ['/tampered/catalog.json', Buffer.from(good.bytes.toString().replace('bookworm-cloud', 'bookworm-cl0ud'))],
        ['/tampered/catalog.json.sig', good.sig],
        ['/bad-kernel/catalog.json', wrongKernel.bytes],
        ['/bad-kernel/catalog.json.sig', wrongKernel.sig],
      ]);
      for (const dir of ['good', 'tampered', 'bad-kernel']) {
        routes.set(`/${dir}/${NAME}/vmlinuz`, kernel);
        routes.set(`/${dir}/${NAME}/initrd.img`, initrd);
      }
      const server = createServer((req, res) => {
        const body = routes.get(req.url ?? '');
        if (!body) {
          res.writeHead(404);
          return res.end();
        }
        res.end(body);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const configFile = join(dirs.root, 'config', 'config.toml');
      const original = readFileSync(configFile, 'utf8');
      const useCatalog = async (dir: string) => {
        writeFileSync(configFile, `${original}kernel_catalog_url = "${base}/${dir}/catalog.json"\nkernel_catalog_pubkey = "${pubFile}"\n`);
        await ok(banger, ['daemon', 'stop']);
      };
      const kernelsDir = join(dirs.stateDir, 'kernels');
      const nothingLeft = () => check(!existsSync(kernelsDir) || readdirSync(kernelsDir).length === 0, `left in kernels/: ${existsSync(kernelsDir) ? readdirSync(kernelsDir).join(', ') : ''}`);
      const refused = (r: CliResult, says: string, what: string) =>
        check(r.code !== 0 && r.stderr.includes('VERIFICATION FAILED') && r.stderr.includes(says), `${what} → exit ${r.code}: ${r.stderr.trim().slice(0, 300)}`);
      try {
        await useCatalog('tampered');
        refused(await banger(['kernel', 'pull', NAME]), 'the signature does not verify', 'kernel pull from a tampered catalog');
        nothingLeft();
        await useCatalog('bad-kernel');
        refused(await banger(['kernel', 'pull', NAME]), 'does not match the signed manifest', 'kernel pull of a kernel whose bytes are not the listed ones');
        nothingLeft();

        await useCatalog('good');
        const cat = JSON.parse(await ok(banger, ['kernel', 'list', '--catalog', '--json'])) as Array<{ name: string }>;
        check(cat.map((c) => c.name).join() === NAME, `kernel list --catalog --json → ${JSON.stringify(cat)}`);
        const k = JSON.parse(await ok(banger, ['kernel', 'pull', NAME, '--json'])) as { name: string; sha256: { kernel: string } };
        check(k.name === NAME && k.sha256.kernel === sha(kernel), `kernel pull --json → ${JSON.stringify(k)}`);
        check(readFileSync(join(kernelsDir, NAME, 'vmlinuz')).equals(kernel), 'the pulled kernel is not the served one');
        const again = await banger(['kernel', 'pull', NAME]);
        check(again.code !== 0 && again.stderr.includes('is pulled already'), `a second pull → exit ${again.code}: ${again.stderr.trim()}`);
        const listed = JSON.parse(await ok(banger, ['kernel', 'list', '--json'])) as Array<{ name: string }>;
        check(listed.length === 1 && listed[0]!.name === NAME, `kernel list --json → ${JSON.stringify(listed)}`);
        log(`pulled ${NAME}: ${(kernel.length / 1048576).toFixed(1)} MiB kernel, ${(initrd.length / 1048576).toFixed(1)} MiB initrd`);
        await ok(banger, ['kernel', 'delete', NAME]);
        nothingLeft();
      } finally {
        server.close();
        server.closeAllConnections();
        writeFileSync(configFile, original);
        await banger(['daemon', 'stop']);
      }
    },
  },
];
