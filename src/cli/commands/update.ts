/**
 * banger update [--check] [--to VERSION] [--dry-run]: a newer signed release
 * of the root-owned install (src/release/update.ts).
 */
import { Command, Option } from '@commander-js/extra-typings';
import { readFileSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import { BangerError } from '../../errors/errors.js';
import { lookupUser, systemStatus } from '../../install/install.js';
import { DEFAULT_PREFIX, installedPackage, installLayout, PREFIX_ENV } from '../../install/package.js';
import { RELEASE_PUBLIC_KEY } from '../../release/keys.js';
import { compareVersions, httpUrl } from '../../release/manifest.js';
import { checkStagedMigrations, pickInstallArtifact, readRelease, stageRelease } from '../../release/update.js';
import { parsePublicKey } from '../../release/verify.js';
import { VERSION } from '../../version.js';
import { printJson, type CliContext } from '../context.js';

/** A PEM public key is a few hundred bytes. */
const MAX_PUBKEY_BYTES = 16 * 1024;

function readPubkey(file: string | undefined) {
  if (file === undefined) return parsePublicKey(RELEASE_PUBLIC_KEY, 'the embedded release key');
  let text: string;
  try {
    if (statSync(file).size > MAX_PUBKEY_BYTES) throw new BangerError('bad_request', `--pubkey-file ${file} is larger than ${MAX_PUBKEY_BYTES} bytes`, 'pass a PEM public key');
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof BangerError) throw e;
    throw new BangerError('not_found', `--pubkey-file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'pass a PEM public key');
  }
  return parsePublicKey(text, `--pubkey-file ${file}`);
}

export function updateCommand(ctx: CliContext): Command {
  return new Command('update')
    .description('update the root-owned install to a newer signed release (running VMs keep running)')
    .option('--check', 'only say whether a newer release exists (changes nothing, needs no root)')
    .option('--to <version>', 'update to this version (also an older one) instead of the newest')
    .option('--dry-run', 'download, verify and stage the release and check it can use your state, then stop')
    .option('--user <name>', "whose daemon's state the new release must be able to use (default: $SUDO_USER, else you)")
    .option('--prefix <dir>', `the install's prefix (default $${PREFIX_ENV}, else ${DEFAULT_PREFIX})`)
    .option('--json', 'machine-readable output')
    .addOption(new Option('--manifest-url <url>', 'read releases from this manifest instead of config update_url').hideHelp())
    .addOption(new Option('--pubkey-file <pem>', 'verify with this P-256 public key instead of the embedded one').hideHelp())
    .action(async (opts) => {
      // Refused before anything is read: only --check works without root.
      if (!opts.check && process.getuid?.() !== 0) {
        throw new BangerError('bad_request', 'banger update replaces the root-owned install and needs root', 'run `sudo banger update`, or `banger update --check` to only look');
      }
      const key = readPubkey(opts.pubkeyFile);
      const urlText = opts.manifestUrl ?? (await import('../../config/config.js')).loadConfig(ctx.layout.configFile).updateUrl;
      if (!urlText) throw new BangerError('not_found', 'no release source is configured', `set update_url (the URL of a release's manifest.json) in ${ctx.layout.configFile}`);
      const manifestUrl = httpUrl(urlText, opts.manifestUrl ? '--manifest-url' : 'update_url');
      const layout = installLayout(opts.prefix);
      const installed = installedPackage(layout);
      const current = installed?.version ?? VERSION;
      const release = await readRelease(manifestUrl, key, opts.to);
      const version = release.manifest.version;
      const newer = compareVersions(version, current) > 0;

      if (opts.check) {
        if (opts.json) return printJson({ current, latest: version, updateAvailable: newer, installed: installed !== undefined });
        process.stdout.write(newer ? `banger ${version} is available (installed: ${current}): \`sudo banger update\`\n` : `banger ${current} is up to date (newest release: ${version})\n`);
        return;
      }
      if (!installed) throw new BangerError('not_found', `banger is not installed under ${layout.libDir}`, 'an update replaces the root-owned install: `sudo banger system install` first');
      if (opts.to === undefined && !newer) {
        if (opts.json) return printJson({ current, latest: version, updated: false });
        process.stdout.write(`banger ${current} is up to date (newest release: ${version})\n`);
        return;
      }
      if (version === current) throw new BangerError('already_exists', `banger ${version} is what is installed`, 'nothing to do');

      const units = systemStatus(layout).helper;
      const node = units?.node ?? process.execPath;
      const abi = units ? (await ctx.runner.run([node, '-p', 'process.versions.modules'])).stdout.trim() : process.versions.modules;
      const artifact = pickInstallArtifact(release.manifest, abi);
      const userName = opts.user ?? process.env.SUDO_USER ?? userInfo().username;
      const user = await lookupUser(ctx.runner, userName);
      process.stderr.write(`• downloading ${artifact.name}\n`);
      const staged = await stageRelease(layout, release, artifact, ctx.runner);
      try {
        const migrations = await checkStagedMigrations(staged, node, { name: userName, home: user.home }, ctx.runner);
        if (opts.dryRun) {
          if (opts.json) return printJson({ current, staged: version, artifact: artifact.name, sha256: artifact.sha256, migrations, updated: false });
          process.stdout.write(`banger ${version} downloaded, verified (signature, sha256) and staged; its bangerd reads your state (${migrations}); --dry-run: nothing changed\n`);
          return;
        }
        throw new BangerError('operation_failed', `installing ${version} in place (swap, restart, roll back) is not built yet`, 'use --dry-run to check a release, or `sudo banger system install` from a checkout of it');
      } finally {
        staged.remove();
      }
    });
}
