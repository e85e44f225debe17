/**
 * Read-only views of a VM: its serial console (`vm logs`), resource use
 * (`vm stats`: the guest's view, plus the VMM process's CPU and resident
 * memory on the host) and listening sockets (`vm ports`).
 *
 * The console log is a host file and readable whether or not the VM runs.
 * Stats and ports need the running guest: they ask qemu-guest-agent to run a
 * fixed command (no user input ever reaches it) and parse its output with the
 * pure functions exported below. Every agent round trip is bounded, so a hung
 * guest makes the RPC fail with a coded error instead of hanging it.
 */
import { open } from 'node:fs/promises';
import { BangerError, messageOf } from '../errors/errors.js';
import type { VmLogsResult, VmPort, VmStats } from '../rpc/methods.js';
import type { Config } from '../config/config.js';
import type { Logger } from '../log/log.js';
import type { VmView } from '../model/types.js';
import { vmPaths, type Layout } from '../paths/paths.js';
import type { DiskInfo } from '../vmm/driver.js';
import type { Store } from '../store/store.js';
import type { Runner } from '../system/runner.js';
import { readProcStat, readVmRss, USER_HZ } from '../system/proc.js';
import { AgentCommandError, connectAgent, type GuestAgent } from '../guest/agent.js';
import { clip } from '../model/text.js';
import type { VmService } from './vm-service.js';
import type { BootedVmm } from './vm-stop.js';

export interface InspectServiceDeps {
  store: Store;
  runner: Runner;
  layout: Layout;
  config: Config;
  log: Logger;
  vms: VmService;
  /** Bound on the guest-agent part of one request (default AGENT_BUDGET_MS; tests shorten it). */
  agentBudgetMs?: number;
  /** CPU sampling window (default CPU_SAMPLE_MS). */
  cpuSampleMs?: number;
}

/** At most this many console bytes in one `vm.logs` reply. */
export const LOG_CHUNK_BYTES = 1024 * 1024;
/** How long the VMM process's CPU time is sampled for `vm.stats`. */
export const CPU_SAMPLE_MS = 500;
/** The whole guest-agent part of one request (connect + exec) must end within this. */
export const AGENT_BUDGET_MS = 10_000;
/** Of which connecting and syncing the channel may take at most this. */
const AGENT_CONNECT_MS = 4_000;

/**
 * The guest commands, run by qemu-guest-agent (no shell on our side; the
 * agent spawns the program directly). Absolute paths: the agent looks
 * programs up in its own PATH, not in the env we pass.
 */
export const GUEST_ENV = ['PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL=C'];
export const DF_MARKER = '@@banger-df@@';
/** meminfo and df in one exec: `;` so df runs (and its partial output counts) even if cat fails. */
export const STATS_COMMAND = ['/bin/sh', '-c', `cat /proc/meminfo; echo '${DF_MARKER}'; df -B1 -P / /root`] as const;
export const PORTS_COMMAND = ['/bin/ss', '-Htulnp'] as const;

export class InspectService {
  constructor(private readonly deps: InspectServiceDeps) {}

  /**
   * Console bytes from `offset` (at most LOG_CHUNK_BYTES). Works for stopped
   * VMs too: console.log stays until the VM is deleted. An offset past the end
   * means the log was truncated by a new boot: reading restarts at 0.
   */
  async logs(name: string, offset: number): Promise<VmLogsResult> {
    const vm = this.deps.vms.show(name);
    const path = vmPaths(this.deps.layout, vm.id).consoleLog;
    // While QEMU runs it may be halfway through writing a UTF-8 character.
    return readLogChunk(path, offset, { maxBytes: LOG_CHUNK_BYTES, holdPartialChar: vm.runtime !== null });
  }

  async stats(name: string): Promise<VmStats> {
    const { vm, vmm } = requireRunning(this.deps.vms.booted(name));
    // Sample the VMM's CPU before talking to the agent: spawning processes in a
    // TCG guest costs QEMU real CPU and would inflate the figure.
    const [cpuPercent, disks] = await Promise.all([this.sampleCpu(vm, vmm), this.hostDisks(vm, vmm)]);
    // Host RSS before the agent exec too (spawning in the guest touches pages).
    const hostRssBytes = this.hostRss(vm, vmm);
    const out = await this.guestExec(vm, vmm, STATS_COMMAND);
    if (out.exitCode === null) throw this.guestCommandFailed(vm, STATS_COMMAND, out);
    const cut = out.stdout.indexOf(DF_MARKER);
    const meminfo = cut >= 0 ? out.stdout.slice(0, cut) : out.stdout;
    const df = cut >= 0 ? out.stdout.slice(cut + DF_MARKER.length) : '';
    let memory: VmStats['memory'];
    try {
      memory = parseMeminfo(meminfo);
    } catch (e) {
      const err = clip(out.stderr.trim());
      throw new BangerError('operation_failed', `VM ${vm.name}: ${messageOf(e)}${err ? ` (stderr: ${err})` : ''}`);
    }
    // df exits non-zero when one of its paths fails; what it printed still counts.
    const filesystems = parseDf(df).map(({ mount, sizeBytes, usedBytes }) => ({ mount, sizeBytes, usedBytes }));
    return { name: vm.name, cpuPercent, vcpu: vm.vcpu, memory, hostRssBytes, filesystems, disks };
  }

  async ports(name: string): Promise<VmPort[]> {
    const { vm, vmm } = requireRunning(this.deps.vms.booted(name));
    const out = await this.guestExec(vm, vmm, PORTS_COMMAND);
    if (out.exitCode !== 0) throw this.guestCommandFailed(vm, PORTS_COMMAND, out);
    const forwards = portForwards(vm, vm.runtime!);
    return sortPorts(parseSs(out.stdout).map((s) => ({ ...s, hostEndpoint: hostEndpointFor(s, forwards) })));
  }

  // ---- helpers -------------------------------------------------------

  /** The VMM process's CPU use over CPU_SAMPLE_MS, in percent of one host CPU (one decimal). */
  private async sampleCpu(vm: VmView, vmm: BootedVmm): Promise<number> {
    const proc = vmm.driver.hostProcess(vmm.handle);
    const read = () => {
      const st = readProcStat(proc.pid);
      if (!st || st.startTime !== proc.startTime) throw notRunning(vm.name, 'its VMM process is gone');
      return { ticks: st.utime + st.stime, at: process.hrtime.bigint() };
    };
    const a = read();
    await new Promise((r) => setTimeout(r, this.deps.cpuSampleMs ?? CPU_SAMPLE_MS));
    const b = read();
    return cpuPercent(b.ticks - a.ticks, Number(b.at - a.at) / 1e6);
  }

  /** The VMM process's resident memory on the host (VmRSS of /proc/PID/status), bytes. */
  private hostRss(vm: VmView, vmm: BootedVmm): number {
    const proc = vmm.driver.hostProcess(vmm.handle);
    const rss = readVmRss(proc.pid, proc.startTime);
    if (rss === null) throw notRunning(vm.name, 'its VMM process is gone');
    return rss;
  }

  /** The VM's disks as its driver describes them (QEMU: the root overlay per qemu-img, the work disk). */
  private hostDisks(vm: VmView, vmm: BootedVmm): Promise<DiskInfo[]> {
    return vmm.driver.describeDisks(vmPaths(this.deps.layout, vm.id));
  }

  /**
   * Runs one fixed command in the guest. Connect + exec are bounded by
   * AGENT_BUDGET_MS together; the connection is always closed.
   */
  private async guestExec(vm: VmView, vmm: BootedVmm, command: readonly string[]) {
    const [path, ...args] = command as [string, ...string[]];
    // The driver says where its agent channel ends on the host; the agent client is the guest's (src/guest).
    const socket = vmm.driver.capabilities.agentChannel === 'none' ? undefined : vmm.driver.agentSocket(vmm.handle);
    if (socket === undefined) {
      throw new BangerError('unavailable', `VM ${vm.name}: its VMM (${vm.vmm}) has no guest agent channel`, 'this needs the guest agent');
    }
    const budget = this.deps.agentBudgetMs ?? AGENT_BUDGET_MS;
    const deadline = Date.now() + budget;
    let agent: GuestAgent;
    try {
      agent = await connectAgent(socket, {
        deadlineMs: Math.min(deadline, Date.now() + AGENT_CONNECT_MS),
        attemptTimeoutMs: Math.min(3000, budget),
      });
    } catch (e) {
      throw new BangerError('unavailable', `VM ${vm.name}: cannot reach its guest agent (${messageOf(e)})`, agentHint(vm.name), { cause: e });
    }
    try {
      return await agent.exec(path, args, { captureOutput: true, env: GUEST_ENV, timeoutMs: Math.max(500, deadline - Date.now()) });
    } catch (e) {
      if (e instanceof BangerError && e.code === 'timeout') {
        throw new BangerError('timeout', `VM ${vm.name}: ${command.join(' ')} got no answer in time (${e.message})`, agentHint(vm.name), { cause: e });
      }
      if (e instanceof AgentCommandError) {
        // the agent refused the command (e.g. the program is missing)
        throw new BangerError('operation_failed', `VM ${vm.name}: ${e.message}`, `the image may lack ${path}`, { cause: e });
      }
      if (e instanceof BangerError && e.code === 'operation_failed') {
        // a malformed reply from the guest (its message is already clipped)
        throw new BangerError('operation_failed', `VM ${vm.name}: ${e.message}`, agentHint(vm.name), { cause: e });
      }
      throw new BangerError('unavailable', `VM ${vm.name}: the guest agent failed while running ${path} (${messageOf(e)})`, agentHint(vm.name), { cause: e });
    } finally {
      agent.close();
    }
  }

  private guestCommandFailed(vm: VmView, command: readonly string[], out: { exitCode: number | null; signal: number | null; stderr: string }): BangerError {
    const how = out.exitCode === null ? `was killed by signal ${out.signal}` : `exited with code ${out.exitCode}`;
    const err = clip(out.stderr.trim()); // guest text: clipped before it reaches a message (and the log)
    return new BangerError('operation_failed', `VM ${vm.name}: ${command.join(' ')} ${how} in the guest${err ? `: ${err}` : ''}`);
  }
}

function requireRunning(b: { vm: VmView; vmm: BootedVmm | null }): { vm: VmView; vmm: BootedVmm } {
  if (!b.vmm || !b.vm.runtime) throw notRunning(b.vm.name, `state: ${b.vm.state}`);
  return { vm: b.vm, vmm: b.vmm };
}

function notRunning(name: string, why: string): BangerError {
  return new BangerError('not_running', `VM ${name} is not running (${why})`, `start it with \`banger vm start ${name}\``);
}

function agentHint(name: string): string {
  return `the guest agent did not answer: the guest may still be booting, be shutting down or be hung; \`banger vm logs ${name}\` shows its console`;
}

// ---- console log ------------------------------------------------------

export interface ReadLogOptions {
  maxBytes: number;
  /**
   * Hold back an incomplete UTF-8 sequence at the end of the chunk (the
   * writer may be halfway through a character); the returned offset then
   * points at its first byte so the next read returns it whole.
   */
  holdPartialChar: boolean;
}

/** Reads up to maxBytes of `path` from `offset`; an offset past the end restarts at 0. A missing file is empty. */
export async function readLogChunk(path: string, offset: number, opts: ReadLogOptions): Promise<VmLogsResult> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { data: '', offset: 0, size: 0 };
    throw e;
  }
  try {
    const size = (await fh.stat()).size;
    const start = offset > size ? 0 : offset;
    const want = Math.min(size - start, opts.maxBytes);
    const buf = Buffer.alloc(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await fh.read(buf, got, want - got, start + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    let bytes = buf.subarray(0, got);
    // Cut a partial character when the chunk stops before the end (the rest
    // comes in the next reply) or when the writer may still complete it.
    if (start + got < size || opts.holdPartialChar) bytes = bytes.subarray(0, completeUtf8Length(bytes));
    return { data: bytes.toString('utf8'), offset: start + bytes.length, size };
  } finally {
    await fh.close();
  }
}

/**
 * Length of the longest prefix of `buf` that does not end inside a UTF-8
 * multi-byte sequence. Invalid bytes are not "partial": they are kept (and
 * decode to U+FFFD), so a garbage byte can never stall a reader.
 */
export function completeUtf8Length(buf: Uint8Array): number {
  const n = buf.length;
  // a sequence is at most 4 bytes: look at the last 3 for its lead byte
  for (let i = n - 1; i >= Math.max(0, n - 3); i--) {
    const b = buf[i]!;
    if ((b & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const need = b >= 0xf0 && b <= 0xf4 ? 4 : b >= 0xe0 && b < 0xf0 ? 3 : b >= 0xc2 && b < 0xe0 ? 2 : 1;
    return n - i < need ? i : n;
  }
  return n;
}

// ---- stats parsers ------------------------------------------------------

/** Percent of one host CPU from a tick delta (USER_HZ) over wall milliseconds, one decimal. */
export function cpuPercent(deltaTicks: number, elapsedMs: number): number {
  if (elapsedMs <= 0 || deltaTicks <= 0) return 0;
  return Math.round(((deltaTicks / USER_HZ) * 1000 * 100 * 10) / elapsedMs) / 10;
}

/** /proc/meminfo's `Name: N [kB]` lines as a map (values as written: kB for sizes). */
export function meminfoFields(text: string): Map<string, number> {
  const kb = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z0-9_()]+):\s+(\d+)(?:\s+kB)?\s*$/.exec(line.trim());
    if (m) kb.set(m[1]!, Number(m[2]));
  }
  return kb;
}

/**
 * /proc/meminfo → bytes. "used" is what the guest cannot give to new
 * programs: MemTotal - MemAvailable (before Linux 3.14 there is no
 * MemAvailable: MemFree + Buffers + Cached stands in for it).
 */
export function parseMeminfo(text: string): VmStats['memory'] {
  const kb = meminfoFields(text);
  const total = kb.get('MemTotal');
  if (total === undefined) throw new BangerError('operation_failed', '/proc/meminfo in the guest has no MemTotal line');
  const available = kb.get('MemAvailable') ?? (kb.get('MemFree') ?? 0) + (kb.get('Buffers') ?? 0) + (kb.get('Cached') ?? 0);
  const totalBytes = total * 1024;
  const availableBytes = Math.min(available * 1024, totalBytes);
  return { totalBytes, availableBytes, usedBytes: totalBytes - availableBytes };
}

export interface DfEntry {
  filesystem: string;
  mount: string;
  sizeBytes: number;
  usedBytes: number;
  availableBytes: number;
}

/**
 * `df -B1 -P PATH...` → one entry per mount point, in order (df repeats a
 * filesystem when two of its paths are on it, e.g. /root without a work
 * disk: that is one entry for "/"). The header and unparsable lines are skipped.
 */
export function parseDf(text: string): DfEntry[] {
  const out: DfEntry[] = [];
  const seen = new Set<string>();
  for (const line of text.split('\n')) {
    // Filesystem 1-blocks Used Available Capacity Mounted-on; names may contain spaces
    const m = /^(.+?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(?:\d+%|-)\s+(\/.*)$/.exec(line.trim());
    if (!m) continue;
    const mount = m[5]!;
    if (seen.has(mount)) continue;
    seen.add(mount);
    out.push({ filesystem: m[1]!, mount, sizeBytes: Number(m[2]), usedBytes: Number(m[3]), availableBytes: Number(m[4]) });
  }
  return out;
}

// ---- ports --------------------------------------------------------------

export type ListeningSocket = Omit<VmPort, 'hostEndpoint'>;

/**
 * `ss -Htulnp` → listening TCP sockets and bound UDP sockets. With both -t
 * and -u, ss prints a Netid column first:
 *   tcp LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=381,fd=3))
 * Local addresses look like `0.0.0.0:22`, `[::]:22` (IPv6, v6only), `*:22`
 * (IPv6 any, also accepting IPv4), `127.0.0.53%lo:53` (bound to a device),
 * `[fe80::1]%eth0:546`. Brackets are dropped from the address; a `%dev`
 * suffix is kept. `process` is the program name(s) from users:((…)), or null.
 */
export function parseSs(text: string): ListeningSocket[] {
  const out: ListeningSocket[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    const fields = line.split(/\s+/);
    const proto = fields[0];
    if (proto !== 'tcp' && proto !== 'udp') continue; // a header, or another socket kind
    const local = fields[4];
    if (local === undefined) continue;
    const colon = local.lastIndexOf(':');
    const portText = local.slice(colon + 1);
    if (colon <= 0 || !/^\d+$/.test(portText)) continue;
    const port = Number(portText);
    if (port > 65535) continue;
    const address = normaliseAddress(local.slice(0, colon));
    // the process column may contain spaces (program names can): take everything after the peer
    const users = /users:\((.*)\)/.exec(line);
    out.push({ proto, address, port, process: users ? processNames(users[1]!) : null });
  }
  return out;
}

/** `[::1]` → `::1`, `[fe80::1]%eth0` → `fe80::1%eth0`; others unchanged. */
function normaliseAddress(a: string): string {
  const m = /^\[([^\]]*)\](%.*)?$/.exec(a);
  return m ? m[1]! + (m[2] ?? '') : a;
}

/** `("sshd",pid=1,fd=3),("sshd",pid=2,fd=3)` → `sshd`; distinct names joined by commas, in order. */
function processNames(users: string): string | null {
  const names: string[] = [];
  for (const m of users.matchAll(/\("(.*?)",pid=\d+/g)) {
    if (!names.includes(m[1]!)) names.push(m[1]!);
  }
  return names.length > 0 ? names.join(',') : null;
}

/** A host endpoint that reaches a guest port. */
export interface PortForward {
  proto: 'tcp' | 'udp';
  guestPort: number;
  hostAddress: string;
  hostPort: number;
}

/**
 * The forwards a VM has. In this release the network is QEMU user mode with
 * exactly one: host `sshHost:sshPort` → guest TCP 22. Bridge-mode guests are
 * reached on their own address, which this release does not track: none.
 */
export function portForwards(vm: Pick<VmView, 'network'>, rt: { sshHost: string; sshPort: number }): PortForward[] {
  if (vm.network !== 'user') return [];
  return [{ proto: 'tcp', guestPort: 22, hostAddress: rt.sshHost, hostPort: rt.sshPort }];
}

/**
 * Where on the host a guest socket can be reached, or null. QEMU's user-mode
 * forward connects to the guest's IPv4 address on eth0, so the socket must
 * accept IPv4 there: bound to 0.0.0.0 or to `*` (IPv6 any without v6only)
 * and not to the loopback device. `::` as ss prints it (`[::]`) is v6only
 * and never sees the forwarded IPv4 connection; loopback addresses are
 * unreachable from outside the guest.
 */
export function hostEndpointFor(sock: Pick<VmPort, 'proto' | 'address' | 'port'>, forwards: readonly PortForward[]): string | null {
  const f = forwards.find((x) => x.proto === sock.proto && x.guestPort === sock.port);
  if (!f) return null;
  const pct = sock.address.indexOf('%');
  const addr = pct >= 0 ? sock.address.slice(0, pct) : sock.address;
  const dev = pct >= 0 ? sock.address.slice(pct + 1) : '';
  if ((addr !== '0.0.0.0' && addr !== '*') || dev === 'lo') return null;
  return f.hostAddress.includes(':') ? `[${f.hostAddress}]:${f.hostPort}` : `${f.hostAddress}:${f.hostPort}`;
}

/** tcp before udp, then by port, then by address. */
export function sortPorts<T extends Pick<VmPort, 'proto' | 'address' | 'port'>>(ports: T[]): T[] {
  return [...ports].sort((a, b) => (a.proto === b.proto ? a.port - b.port || (a.address < b.address ? -1 : a.address > b.address ? 1 : 0) : a.proto === 'tcp' ? -1 : 1));
}
