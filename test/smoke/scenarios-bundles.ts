/**
 * Image bundles end to end (issue 13): the default image exported as a
 * signed bundle, imported back under another name (checked with the
 * matching public key) and booted; the same bundle with one flipped byte in
 * its rootfs, or checked with another key, is refused with nothing
 * published.
 */
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import { makeKeyPair } from '../../src/release/sign.js';
import { check, ok, type CliResult } from './harness.js';
import type { Scenario } from './scenarios.js';

const IMPORTED = 'smoke-bundled';
const REFUSED = 'smoke-bundle-bad';
const PULLED = 'smoke-bundle-url';

function tar(args: string[]): void {
  const r = spawnSync('tar', args, { encoding: 'utf8' });
  check(r.status === 0, `tar ${args.join(' ')} → exit ${r.status}: ${r.stderr}`);
}

const refused = (r: CliResult, says: string, what: string) =>
  check(r.code !== 0 && r.stderr.includes('VERIFICATION FAILED') && r.stderr.includes(says), `${what} → exit ${r.code}: ${r.stderr.trim().slice(0, 400)} (want a verification failure saying ${JSON.stringify(says)})`);

export const bundleScenarios: Scenario[] = [
  {
    name: 'image_bundle_round_trip',
    description: 'image export --sign → image import --pubkey-file → vm run boots it; a flipped rootfs byte or another key is refused with nothing published',
    run: async ({ banger, dirs, log }) => {
      const tmp = mkdtempSync(join(tmpdir(), 'banger-smoke-bundle-'));
      try {
        const keys = makeKeyPair();
        writeFileSync(join(tmp, 'key.pem'), keys.privateKeyPem, { mode: 0o600 });
        writeFileSync(join(tmp, 'pub.pem'), keys.publicKeyPem);
        writeFileSync(join(tmp, 'other.pem'), makeKeyPair().publicKeyPem);
        const bundle = join(tmp, 'bookworm.bundle');

        const exp = JSON.parse(await ok(banger, ['image', 'export', 'bookworm', '-o', bundle, '--sign', join(tmp, 'key.pem'), '--json'])) as { digest: string; bytes: number; signed: boolean };
        check(exp.signed && /^sha256:[0-9a-f]{64}$/.test(exp.digest) && existsSync(bundle), `image export --json → ${JSON.stringify(exp)}`);
        log(`bundle ${exp.digest}: ${(exp.bytes / 1048576).toFixed(0)} MiB`);
        const again = await banger(['image', 'export', 'bookworm', '-o', bundle]);
        check(again.code !== 0 && again.stderr.includes('exists'), `a second export over the file → exit ${again.code}: ${again.stderr.trim()}`);

        // The bundle's own name is banger's built-in image: importing it as is says so, naming --name.
        const clash = await banger(['image', 'import', bundle, '--pubkey-file', join(tmp, 'pub.pem')]);
        check(clash.code !== 0 && clash.stderr.includes('--name: bookworm is the name of a built-in image'), `import under its own name → exit ${clash.code}: ${clash.stderr.trim()}`);
        refused(await banger(['image', 'import', bundle, '--name', REFUSED, '--pubkey-file', join(tmp, 'other.pem')]), 'the signature does not verify', 'import checked with another key');

        // One flipped byte in the rootfs blob, repacked (sparse) with the same signed manifest.
        const x = join(tmp, 'x');
        mkdirSync(x);
        tar(['-xf', bundle, '-C', x]);
        const m = JSON.parse(readFileSync(join(x, 'manifest.json'), 'utf8')) as { files: Array<{ role: string; digest: string }> };
        const rootfs = join(x, 'blobs', 'sha256', m.files.find((f) => f.role === 'rootfs')!.digest.slice(7));
        const fd = openSync(rootfs, 'r+');
        const b = Buffer.alloc(1);
        readSync(fd, b, 0, 1, 1024 + 56); // inside the ext4 superblock
        b[0]! ^= 0x01;
        writeSync(fd, b, 0, 1, 1024 + 56);
        closeSync(fd);
        const bad = join(tmp, 'flipped.bundle');
        tar(['-cf', bad, '--sparse', '-C', x, 'manifest.json', 'manifest.json.sig', 'blobs']);
        rmSync(x, { recursive: true, force: true });
        refused(await banger(['image', 'import', bad, '--name', REFUSED, '--pubkey-file', join(tmp, 'pub.pem')]), "rootfs's sha256 is", 'import of the flipped bundle');
        const images = JSON.parse(await ok(banger, ['image', 'list', '--json'])) as Array<{ name: string }>;
        check(!images.some((i) => i.name === REFUSED), `${REFUSED} was listed after a refused import`);
        check(!existsSync(join(dirs.stateDir, 'images', REFUSED)), `images/${REFUSED} exists after a refused import`);
        const litter = readdirSync(join(dirs.stateDir, 'images')).filter((n) => n.startsWith(`.${REFUSED}`));
        check(litter.length === 0, `left in images/: ${litter.join(', ')}`);

        const imp = JSON.parse(await ok(banger, ['image', 'import', bundle, '--name', IMPORTED, '--pubkey-file', join(tmp, 'pub.pem'), '--json'])) as { name: string; sourceKind: string; sourceRef: string };
        check(imp.name === IMPORTED && imp.sourceKind === 'bundle' && imp.sourceRef === exp.digest, `image import --json → ${JSON.stringify(imp)}`);
        const run = await banger(['vm', 'run', '--rm', '--image', IMPORTED, '--name', 'smoke-bundle-vm', '--', 'sh', '-c', '. /etc/os-release; echo $VERSION_CODENAME']);
        check(run.code === 0 && run.stdout.trim() === 'bookworm', `vm run --image ${IMPORTED} → exit ${run.code}: ${run.stdout.trim()} ${run.stderr.trim().slice(-300)}`);

        // image pull of a bundle URL: the same checks, on the downloaded file.
        const server = createServer((req, res) => {
          const file = req.url === '/bookworm.bundle' ? bundle : req.url === '/flipped.bundle' ? bad : undefined;
          if (!file) {
            res.writeHead(404);
            return res.end();
          }
          res.end(readFileSync(file));
        });
        await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
        const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
        try {
          const pulled = JSON.parse(await ok(banger, ['image', 'pull', `${base}/bookworm.bundle`, '--name', PULLED, '--pubkey-file', join(tmp, 'pub.pem'), '--json'])) as { name: string; sourceRef: string };
          check(pulled.name === PULLED && pulled.sourceRef === exp.digest, `image pull URL --json → ${JSON.stringify(pulled)}`);
          refused(await banger(['image', 'pull', `${base}/flipped.bundle`, '--name', REFUSED, '--pubkey-file', join(tmp, 'pub.pem')]), "rootfs's sha256 is", 'image pull of the flipped bundle');
          const missing = await banger(['image', 'pull', `${base}/nope.bundle`, '--name', REFUSED]);
          check(missing.code !== 0 && missing.stderr.includes('does not exist (404)'), `image pull of a missing URL → exit ${missing.code}: ${missing.stderr.trim()}`);
          check(!existsSync(join(dirs.stateDir, 'images', REFUSED)), `images/${REFUSED} exists after a refused pull`);
        } finally {
          server.close();
          server.closeAllConnections();
        }
      } finally {
        await banger(['image', 'delete', IMPORTED]);
        await banger(['image', 'delete', PULLED]);
        rmSync(tmp, { recursive: true, force: true });
      }
    },
  },
];
