/**
 * The smoke run's root helper: a real banger-helper (root) with a bridge
 * and subnet of this run's own, so parallel runs and the host's networks
 * are never touched. Scenarios opt into it with `--network bridge`; the
 * run's config keeps `network = "user"` for the others.
 */
import { spawn, type ChildProcess, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot, sleep, type RunDirs } from './harness.js';
import { connectHelper } from '../../src/helper/client.js';

export interface SmokeBridge {
  bridge: string;
  subnet: string;
  gateway: string;
  socket: string;
  dnsPort: number;
  pid: number;
}

let helper: ChildProcess | undefined;
let current: SmokeBridge | undefined;

/** Why bridge scenarios cannot run here, or null. */
export function bridgeUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'bridge scenarios need root (the helper makes a bridge, taps and iptables rules)';
  for (const tool of ['ip', 'iptables']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed`;
    }
  }
  return null;
}

/** Starts the helper for this run (once) and points the run's banger at it. */
export async function startBridge(
  dirs: RunDirs,
  opts: { ownerUid?: number; name?: string; socket?: string; thirdOctet?: number; dnsPort?: number } = {},
): Promise<SmokeBridge & { child: ChildProcess }> {
  const tag = (process.pid % 0xffff).toString(16).padStart(4, '0');
  const third = opts.thirdOctet ?? 100 + (process.pid % 100);
  const b: SmokeBridge = {
    bridge: opts.name ?? `bgrs${tag}`,
    subnet: `10.213.${third}.0/24`,
    gateway: `10.213.${third}.1`,
    socket: opts.socket ?? join(dirs.runtimeDir, 'helper.sock'),
    dnsPort: opts.dnsPort ?? 20000 + (process.pid % 20000),
    pid: 0,
  };
  const child = spawn(
    process.execPath,
    [join(repoRoot, 'bin', 'banger-helper.js'), '--owner-uid', String(opts.ownerUid ?? process.getuid?.() ?? 0), '--socket', b.socket, '--subnet', b.subnet, '--bridge', b.bridge, '--log', join(dirs.root, `${b.bridge}-helper.log`)],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  for (let i = 0; i < 100 && !existsSync(b.socket); i++) {
    if (child.exitCode !== null) throw new Error(`banger-helper exited: ${err}`);
    await sleep(100);
  }
  if (!existsSync(b.socket)) throw new Error(`banger-helper did not create ${b.socket}: ${err}`);
  b.pid = child.pid ?? 0;
  if (!opts.socket) {
    helper = child;
    current = b;
    dirs.env.BANGER_HELPER_SOCKET = b.socket;
  }
  return { ...b, child };
}

export function runBridge(): SmokeBridge | undefined {
  return current;
}

/** Links and rules this run's bridge still has (the leak census). */
export function bridgeLeaks(b: SmokeBridge): string[] {
  const leaks: string[] = [];
  const links = execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
  const taps = [...links.matchAll(new RegExp(`^\\d+: (${b.bridge}t\\d+)`, 'gm'))].map((m) => m[1]);
  if (taps.length) leaks.push(`taps left: ${taps.join(', ')}`);
  const prefix = b.subnet.split('.').slice(0, 3).join('.') + '.';
  for (const table of ['nat', 'filter']) {
    const rules = execFileSync('iptables', ['-w', '-t', table, '-S'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(`-s ${prefix}`));
    if (rules.length) leaks.push(`${table} rules left: ${rules.join(' | ')}`);
  }
  return leaks;
}

/** Removes the bridge, its taps and chains (the helper's own bridge.remove), then ends the helper. */
export async function stopBridge(b: SmokeBridge | undefined = current, child: ChildProcess | undefined = helper): Promise<void> {
  if (!b) return;
  try {
    const c = await connectHelper(b.socket);
    await c.call('bridge.remove', {});
    c.close();
  } finally {
    child?.kill('SIGTERM');
    if (b === current) current = undefined;
  }
}
