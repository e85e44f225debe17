/**
 * banger update [--check] [--to VERSION] [--dry-run]: a newer signed release
 * of the root-owned install (src/release/update.ts).
 */
import { Command, Option } from '@commander-js/extra-typings';
import { existsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { BangerError } from '../../errors/errors.js';
import { installedUnits, lookupUser, systemdInUse, systemStatus } from '../../install/install.js';
import { activateStaged, DEFAULT_PREFIX, installedPackage, installLayout, PREFIX_ENV, pruneVersions, rollBackTo } from '../../install/package.js';
import { compareVersions, httpUrl } from '../../release/manifest.js';
import { restartInstalled, type RestartPlan } from '../../release/restart.js';
import { checkStagedMigrations, lockUpdates, pickInstallArtifact, readRelease, stageRelease, UPDATE_LOCK } from '../../release/update.js';
import { publicKeyFrom } from '../../release/verify.js';
import { VERSION } from '../../version.js';
import { printJson, type CliContext } from '../context.js';

function readPubkey(file: string | undefined) {
  return publicKeyFrom(file === undefined ? undefined : { path: file, what: `--pubkey-file ${file}`, hint: 'pass a PEM public key' });
}

/**
 * The environment the daemon's user runs banger with, as well as root can
 * tell: PATH, their login runtime dir when there is one, and BANGER_* dirs
 * passed down (tests point them at their own state). Not root's XDG dirs.
 */
function userEnv(uid: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', NO_COLOR: '1' };
  if (existsSync(`/run/user/${uid}`)) env.XDG_RUNTIME_DIR = `/run/user/${uid}`;
  for (const [k, v] of Object.entries(process.env)) if (/^BANGER_/.test(k)) env[k] = v;
  return env;
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
      const unlock = lockUpdates(layout);
      try {
        process.stderr.write(`• downloading ${artifact.name}\n`);
        const staged = await stageRelease(layout, release, artifact, ctx.runner);
        let migrations: string;
        try {
          migrations = await checkStagedMigrations(staged, node, { name: userName, home: user.home }, ctx.runner);
        } catch (e) {
          staged.remove();
          throw e;
        }
        if (opts.dryRun) {
          staged.remove();
          if (opts.json) return printJson({ current, staged: version, artifact: artifact.name, sha256: artifact.sha256, migrations, updated: false });
          process.stdout.write(`banger ${version} downloaded, verified (signature, sha256) and staged; its bangerd reads your state (${migrations}); --dry-run: nothing changed\n`);
          return;
        }
        const { previous } = activateStaged(layout, staged.dir, version);
        const plan: RestartPlan = {
          layout,
          node,
          user: { name: userName, home: user.home, env: userEnv(user.uid) },
          systemd: systemdInUse().inUse && installedUnits(userName).length > 0,
          runner: ctx.runner,
        };
        process.stderr.write(`• installed ${version} beside ${previous}; restarting ${plan.systemd ? 'the helper and the daemon' : 'the daemon'} (VMs keep running)\n`);
        try {
          await restartInstalled(plan, previous, version);
        } catch (e) {
          // Back to the previous version, running again; the failed one goes.
          process.stderr.write(`• ${version} did not come up: rolling back to ${previous}\n`);
          rollBackTo(layout, previous);
          try {
            await restartInstalled(plan, version, previous);
          } catch (e2) {
            throw new BangerError('operation_failed', `updating to ${version} failed (${(e as Error).message}), and after rolling back to ${previous} the daemon did not come back either: ${(e2 as Error).message}`, '`banger daemon status` and its log say more; VMs were not stopped');
          }
          pruneVersions(layout, [previous, UPDATE_LOCK]);
          throw new BangerError('operation_failed', `updating to ${version} failed: ${(e as Error).message}; rolled back to ${previous}, which runs again`, 'VMs were not stopped; the release may be broken: report it');
        }
        const pruned = pruneVersions(layout, [version, previous, UPDATE_LOCK]);
        if (opts.json) return printJson({ current: version, previous, updated: true, pruned });
        process.stdout.write(`banger ${version} installed and running (kept ${previous} for a rollback); VMs kept running\n`);
      } finally {
        unlock();
      }
    });
}
