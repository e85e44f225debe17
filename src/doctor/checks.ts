/**
 * `banger doctor`: PASS/WARN/FAIL lines about the host. Things created on
 * first use (state dir, database, image, daemon) are never a FAIL on a fresh
 * install. Runs in the CLI process: it never starts the daemon.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Layout } from '../paths/paths.js';
import type { Runner } from '../system/runner.js';
import { loadConfig, type Config } from '../config/config.js';
import { connectHelper } from '../helper/client.js';
import type { HelperInfo } from '../helper/ops.js';
import { manualResolverHint } from '../helper/resolver.js';
import { imagePaths } from '../paths/paths.js';
import { exists } from '../system/fs.js';
import { resolveAccel } from '../vmm/accel.js';
import type { HostTool, VmmDriver } from '../vmm/driver.js';
import { builtinDrivers } from '../vmm/drivers.js';
import { silentLogger } from '../log/log.js';
import { messageOf } from '../errors/errors.js';

export interface Check {
  name: string;
  status: 'pass' | 'warn' | 'fail';
  detail: string;
}

/** What banger needs besides its VMM's own tools (the driver lists those: `hostTools`). */
const TOOLS: HostTool[] = [
  { name: 'mkfs.ext4', argv: ['mkfs.ext4', '-V'], pkg: 'e2fsprogs', why: 'makes images and config disks' },
  { name: 'mmdebstrap', argv: ['mmdebstrap', '--version'], pkg: 'mmdebstrap', why: 'builds the default image' },
  { name: 'ssh', argv: ['ssh', '-V'], pkg: 'openssh-client', why: "interactive `vm ssh`; ssh-keygen makes banger's key" },
  { name: 'git', argv: ['git', '--version'], pkg: 'git', why: 'workspaces: lists, snapshots and packs the repo you send' },
  { name: 'tar', argv: ['tar', '--version'], pkg: 'tar', why: 'workspaces: archives the files you send' },
];

export async function runChecks(
  deps: { runner: Runner; layout: Layout },
  opts: { daemon: () => Promise<string | undefined>; defaultImage: string },
): Promise<Check[]> {
  const { runner, layout } = deps;
  const checks: Check[] = [];
  let accel: 'auto' | 'kvm' | 'tcg' = 'auto';
  let config: Config | undefined;
  let configCheck: Check;
  try {
    config = loadConfig(layout.configFile);
    accel = config.accel;
    configCheck = { name: 'config', status: 'pass', detail: exists(layout.configFile) ? layout.configFile : 'defaults (no config.toml)' };
  } catch (e) {
    configCheck = { name: 'config', status: 'fail', detail: messageOf(e) };
  }
  // The configured VMM's driver names its own tools and probes the accelerator.
  const vmm = config?.vmm ?? 'qemu';
  const driver = builtinDrivers({ runner, log: silentLogger() })(vmm);

  for (const t of [...(driver?.hostTools ?? []), ...TOOLS]) {
    try {
      const r = await runner.run(t.argv, { allowFailure: true, timeoutMs: 10_000 });
      const first = (r.stdout || r.stderr).split('\n').find((l) => l.trim().length > 0) ?? '';
      checks.push({ name: t.name, status: 'pass', detail: first.trim().slice(0, 80) });
    } catch {
      checks.push({ name: t.name, status: 'fail', detail: `not found (${t.why}); install the ${t.pkg} package or run scripts/setup.sh` });
    }
  }

  checks.push(configCheck);
  if (driver) checks.push(await kvmCheck(driver, layout, accel, opts.defaultImage));
  else checks.push({ name: 'vmm', status: 'fail', detail: `vmm = "${vmm}" in config.toml: only the qemu driver is available in this version; set vmm = "qemu" (or remove the key)` });
  checks.push(writableCheck('state dir', layout.stateDir));
  checks.push(writableCheck('runtime dir', layout.runtimeDir));
  if (config) checks.push(...(await networkChecks(config)));

  try {
    const d = await opts.daemon();
    checks.push(d ? { name: 'daemon', status: 'pass', detail: d } : { name: 'daemon', status: 'pass', detail: 'not running; started on first use' });
  } catch (e) {
    checks.push({ name: 'daemon', status: 'fail', detail: messageOf(e) });
  }
  return checks;
}

async function kvmCheck(driver: VmmDriver, layout: Layout, requested: 'auto' | 'kvm' | 'tcg', image: string): Promise<Check> {
  if (requested === 'tcg') return { name: 'accelerator', status: 'pass', detail: 'TCG (accel = "tcg" in config)' };
  if (!exists('/dev/kvm')) {
    return { name: 'accelerator', status: requested === 'kvm' ? 'fail' : 'warn', detail: 'no /dev/kvm: TCG fallback in effect (VMs run much slower)' };
  }
  const kernel = imagePaths(layout, image).kernel;
  if (!exists(kernel)) {
    return {
      name: 'accelerator',
      status: 'warn',
      detail: `/dev/kvm present; not probed yet (the probe boots the ${image} image's kernel, built on first use)`,
    };
  }
  const probe = await driver.probeAccel(kernel);
  try {
    const choice = resolveAccel(requested, probe);
    return choice.accel === 'kvm'
      ? { name: 'accelerator', status: 'pass', detail: `KVM works (probe booted a kernel in ${probe.ms} ms)` }
      : { name: 'accelerator', status: 'warn', detail: `KVM unusable (${probe.reason}): TCG fallback in effect (VMs run much slower)` };
  } catch (e) {
    return { name: 'accelerator', status: 'fail', detail: messageOf(e) };
  }
}

/** Which network mode new VMs get and why; on a bridge, how `.vm` names resolve. */
export async function networkChecks(config: Config, connect = connectHelper): Promise<Check[]> {
  if (config.network === 'user') return [{ name: 'network', status: 'pass', detail: 'user (network = "user" in config): rootless, SSH on a loopback port' }];
  let info: HelperInfo;
  try {
    const c = await connect(config.helperSocket);
    info = c.hello;
    c.close();
  } catch (e) {
    const install = 'install the root helper with `sudo banger system install` (or run `sudo banger-helper --owner-uid $(id -u)`)';
    return config.network === 'bridge'
      ? [{ name: 'network', status: 'fail', detail: `network = "bridge" but no root helper answers on ${config.helperSocket} (${messageOf(e)}); ${install}` }]
      : [{ name: 'network', status: 'pass', detail: `user: no root helper on ${config.helperSocket}, so VMs use rootless user networking; for bridge networking, ${install}` }];
  }
  const gateway = info.gateway;
  const checks: Check[] = [
    { name: 'network', status: 'pass', detail: `bridge: the root helper answers on ${config.helperSocket} (bridge ${info.bridge}, subnet ${info.subnet}, uid ${info.ownerUid})` },
  ];
  checks.push(
    exists('/run/systemd/resolve')
      ? { name: 'vm dns', status: 'pass', detail: `systemd-resolved: the helper routes *.vm to ${gateway}:${config.dnsPort}` }
      : { name: 'vm dns', status: 'warn', detail: manualResolverHint(gateway, config.dnsPort) },
  );
  return checks;
}

function writableCheck(name: string, dir: string): Check {
  let d = dir;
  while (!exists(d) && dirname(d) !== d) d = dirname(d);
  try {
    if (!statSync(d).isDirectory()) return { name, status: 'fail', detail: `${d} is not a directory` };
    accessSync(d, constants.W_OK);
    return { name, status: 'pass', detail: d === dir ? `${dir} (writable)` : `${dir} (created on first use)` };
  } catch {
    return { name, status: 'fail', detail: `${d} is not writable; set BANGER_${name.split(' ')[0]!.toUpperCase()}_DIR to a writable place` };
  }
}
