/**
 * The kernel catalog end to end (issue 13): a catalog signed with a key of
 * this run, served on loopback, with the default image's own kernel as
 * generic-test; a tampered copy (manifest changed after signing) and one
 * whose kernel bytes are not the listed ones. The daemon reads the catalog
 * URL from config.toml, so the scenario points it there, restarts the
 * daemon, and puts the config back (and restarts it again) at the end.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { makeKeyPair, signBlob } from '../../src/release/sign.js';
import { check, ok, type CliResult } from './harness.js';
import type { Scenario } from './scenarios.js';
import { fixture } from './scenarios-images.js';
import { dockerSaveArchive } from '../support/oci-layout.js';

const NAME = 'generic-test';

/** A loopback HTTP server of fixed routes (404 for the rest) that counts the requests of each path. */
async function serveRoutes(routes: Map<string, Buffer>): Promise<{ server: Server; base: string; hits: Map<string, number> }> {
  const hits = new Map<string, number>();
  const server = createServer((req, res) => {
    hits.set(req.url ?? '', (hits.get(req.url ?? '') ?? 0) + 1);
    const body = routes.get(req.url ?? '');
    if (!body) {
      res.writeHead(404);
      return res.end();
    }
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, base: `http://127.0.0.1:${(server.address() as { port: number }).port}`, hits };
}

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
      const { server, base } = await serveRoutes(routes);
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
  {
    name: 'kernel_boot',
    exclusive: true,
    description:
      'vm create --kernel: two parallel creates pull the missing kernel once and boot it; image import --kernel boots it with its modules archive; kernel delete is refused while a VM or image uses it',
    run: async ({ banger, dirs, log }) => {
      const NAME = 'smoke-kernel';
      const image = join(dirs.stateDir, 'images', 'bookworm');
      const kver = (JSON.parse(readFileSync(join(image, 'image.json'), 'utf8')) as { kernelVersion: string }).kernelVersion;
      const kernel = readFileSync(join(image, 'vmlinuz'));
      const initrd = readFileSync(join(image, 'initrd.img'));
      // The modules archive: the default image's /lib/modules/KVER (debugfs: no mount), as VERSION/... entries.
      const work = join(dirs.root, 'kernel-boot');
      mkdirSync(work, { recursive: true });
      for (const dir of [`/usr/lib/modules/${kver}`, `/lib/modules/${kver}`]) {
        spawnSync('debugfs', ['-R', `rdump ${dir} ${work}`, join(image, 'rootfs.ext4')], { encoding: 'utf8' });
        if (existsSync(join(work, kver, 'modules.dep'))) break;
      }
      check(existsSync(join(work, kver, 'modules.dep')), `no modules of ${kver} in the default image`);
      const tar = spawnSync('tar', ['-C', work, '-czf', join(work, 'modules.tar.gz'), kver], { encoding: 'utf8' });
      check(tar.status === 0, `tar: ${tar.stderr}`);
      const modules = readFileSync(join(work, 'modules.tar.gz'));
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      const keys = makeKeyPair();
      const pubFile = join(dirs.root, 'kernel-boot.pub.pem');
      writeFileSync(pubFile, keys.publicKeyPem);
      const catalog = Buffer.from(
        JSON.stringify({
          kernels: [
            {
              name: NAME,
              version: kver,
              arch: 'x86_64',
              files: [
                { role: 'kernel', url: 'k/vmlinuz', sha256: sha(kernel), size: kernel.length },
                { role: 'initrd', url: 'k/initrd.img', sha256: sha(initrd), size: initrd.length },
                { role: 'modules', url: 'k/modules.tar.gz', sha256: sha(modules), size: modules.length },
              ],
            },
          ],
        }),
      );
      const routes = new Map<string, Buffer>([
        ['/catalog.json', catalog],
        ['/catalog.json.sig', Buffer.from(signBlob(catalog, keys.privateKeyPem))],
        ['/k/vmlinuz', kernel],
        ['/k/initrd.img', initrd],
        ['/k/modules.tar.gz', modules],
      ]);
      const { server, base, hits } = await serveRoutes(routes);
      const configFile = join(dirs.root, 'config', 'config.toml');
      const original = readFileSync(configFile, 'utf8');
      writeFileSync(configFile, `${original}kernel_catalog_url = "${base}/catalog.json"\nkernel_catalog_pubkey = "${pubFile}"\n`);
      await ok(banger, ['daemon', 'stop']);
      const kernelPath = join(dirs.stateDir, 'kernels', NAME, 'vmlinuz');
      const vms = ['kb-1', 'kb-2'];
      try {
        // Two creates at once that both need the kernel, which is not there: one download.
        const t0 = Date.now();
        const created = await Promise.all(vms.map((n) => banger(['vm', 'create', '--kernel', NAME, '--name', n])));
        created.forEach((r, i) => check(r.code === 0, `vm create --kernel ${vms[i]}: exit ${r.code}: ${r.stderr.slice(-800)}`));
        log(`two parallel creates with --kernel ${NAME}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        check(hits.get('/k/vmlinuz') === 1 && hits.get('/k/modules.tar.gz') === 1, `downloads: ${JSON.stringify([...hits])}`);
        for (const n of vms) {
          const v = JSON.parse(await ok(banger, ['vm', 'show', n, '--json'])) as { kernel: string | null; runtime: { pid: number } | null };
          check(v.kernel === NAME && v.runtime !== null, `vm show ${n}: kernel ${v.kernel}, runtime ${JSON.stringify(v.runtime)}`);
          const argv = readFileSync(`/proc/${v.runtime!.pid}/cmdline`, 'utf8').split('\0');
          check(argv.includes(kernelPath), `${n}'s VMM does not boot ${kernelPath}: ${argv.join(' ').slice(0, 600)}`);
          const uname = (await ok(banger, ['vm', 'exec', n, '--', 'uname', '-r'])).trim();
          check(uname === kver, `${n}: uname -r ${uname}`);
        }
        const shown = JSON.parse(await ok(banger, ['kernel', 'show', NAME, '--json'])) as { usedBy: string[] };
        check(shown.usedBy.slice().sort().join() === 'VM kb-1,VM kb-2', `kernel show --json: usedBy ${JSON.stringify(shown.usedBy)}`);
        const refused = await banger(['kernel', 'delete', NAME]);
        check(refused.code !== 0 && refused.stderr.includes('VM kb-1') && refused.stderr.includes('VM kb-2'), `kernel delete while VMs use it → exit ${refused.code}: ${refused.stderr.trim()}`);
        check(existsSync(kernelPath), 'the refused delete removed the kernel');
        for (const n of vms) await ok(banger, ['vm', 'delete', '-f', n]);

        // An image without a kernel of its own (a docker save of a Debian rootfs) that boots the catalog kernel, its modules added.
        const fx = await fixture(dirs, log);
        const archive = await dockerSaveArchive(join(fx.dir, 'kernel-saved.tar'), { layers: [fx.baseTar], repoTags: ['smoke/kernel:1'] });
        const imported = await banger(['image', 'import', archive.path, '--name', 'smoke-kimg', '--kernel', NAME]);
        check(imported.code === 0, `image import --kernel: exit ${imported.code}: ${imported.stderr.slice(-800)}`);
        check(imported.stderr.includes('its modules added'), `no modules line: ${imported.stderr.slice(-600)}`);
        const img = JSON.parse(await ok(banger, ['image', 'show', 'smoke-kimg', '--json'])) as { kernel: string | null; kernelVersion: string };
        check(img.kernel === NAME && img.kernelVersion === kver, `image show: ${JSON.stringify(img)}`);
        const run = await banger(['vm', 'run', '--rm', '--image', 'smoke-kimg', '--name', 'kb-img', '--', 'sh', '-c', 'uname -r; test -f /lib/modules/$(uname -r)/modules.dep && echo modules-ok']);
        check(run.code === 0 && run.stdout.includes(kver) && run.stdout.includes('modules-ok'), `vm run --image smoke-kimg: exit ${run.code}: ${run.stdout} ${run.stderr.slice(-600)}`);
        const refusedImg = await banger(['kernel', 'delete', NAME]);
        check(refusedImg.code !== 0 && refusedImg.stderr.includes('image smoke-kimg'), `kernel delete while an image uses it → exit ${refusedImg.code}: ${refusedImg.stderr.trim()}`);
        await ok(banger, ['image', 'delete', 'smoke-kimg']);
        await ok(banger, ['kernel', 'delete', NAME]);
        check(!existsSync(join(dirs.stateDir, 'kernels', NAME)), 'kernel delete left its directory');
        check(hits.get('/k/vmlinuz') === 1, `the kernel was downloaded again: ${JSON.stringify([...hits])}`);
      } finally {
        for (const n of [...vms, 'kb-img']) await banger(['vm', 'delete', '-f', n]);
        await banger(['image', 'delete', 'smoke-kimg']);
        await banger(['kernel', 'delete', NAME]);
        server.close();
        server.closeAllConnections();
        writeFileSync(configFile, original);
        await banger(['daemon', 'stop']);
      }
    },
  },
];
