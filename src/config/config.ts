/**
 * config.toml: user defaults for new VMs and the host. Every key is
 * validated with an error that names the key (and the line, for TOML syntax
 * errors). Unknown keys are refused so a typo never silently does nothing.
 */
import { readFileSync } from 'node:fs';
import { parse, TomlError } from 'smol-toml';
import { BangerError } from '../errors/errors.js';
import { parseSize } from '../model/sizes.js';
import { ACCELS, NETWORK_MODES, VMMS, type Accel, type NetworkMode, type Vmm } from '../model/types.js';
import { MIN_MEMORY_MIB } from '../model/limits.js';

export interface Config {
  vcpu: number;
  memoryMib: number;
  diskSizeBytes: number;
  systemOverlayBytes: number;
  vmm: Vmm;
  accel: Accel;
  /** auto: bridge when the root helper answers, else user. */
  network: NetworkMode | 'auto';
  /** The root helper's socket (bridge networking). */
  helperSocket: string;
  /** UDP port of the daemon's `.vm` DNS server on the bridge address. */
  dnsPort: number;
  /** Debian mirror used to build the default image. */
  mirror: string;
  /** The whole of a graceful `vm stop`, in seconds, before QEMU is killed. */
  stopTimeoutSeconds: number;
  /**
   * New VMs start as clones of a snapshot of their image and shape when one
   * is current, and a cold create makes that snapshot in the background.
   */
  warmClones: boolean;
  /** Where `banger update` reads releases: a release directory's manifest.json (src/release). Empty: none configured. */
  updateUrl: string;
  /** Where `banger kernel` reads the signed kernel catalog (a catalog.json URL). Empty: none configured. */
  kernelCatalogUrl: string;
  /** A PEM public key the kernel catalog is checked with instead of banger's own (tests, private catalogs). */
  kernelCatalogPubkey: string;
}

export const DEFAULT_CONFIG: Config = {
  vcpu: 2,
  memoryMib: 1024,
  diskSizeBytes: 8 * 1024 ** 3,
  systemOverlayBytes: 4 * 1024 ** 3,
  vmm: 'qemu',
  accel: 'auto',
  network: 'auto',
  helperSocket: '/run/banger/helper.sock',
  dnsPort: 10053,
  mirror: 'http://deb.debian.org/debian',
  stopTimeoutSeconds: 30,
  warmClones: true,
  updateUrl: '',
  kernelCatalogUrl: '',
  kernelCatalogPubkey: '',
};

const KEYS = ['vcpu', 'memory_mib', 'disk_size', 'system_overlay_size', 'vmm', 'accel', 'network', 'helper_socket', 'dns_port', 'mirror', 'stop_timeout', 'warm_clones', 'update_url', 'kernel_catalog_url', 'kernel_catalog_pubkey'] as const;

export { MIN_MEMORY_MIB };
export const MAX_VCPU = 64;

function configError(file: string, message: string, hint?: string): BangerError {
  return new BangerError(
    'bad_request',
    `${file}: ${message}`,
    hint ?? `fix ${file} (keys: ${KEYS.join(', ')}) or remove it to use the defaults`,
  );
}

export function parseConfig(text: string, file = 'config.toml'): Config {
  let raw: Record<string, unknown>;
  try {
    raw = parse(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      throw configError(file, `line ${e.line}, column ${e.column}: ${e.message.split('\n')[0]}`);
    }
    throw configError(file, String(e));
  }
  const cfg: Config = { ...DEFAULT_CONFIG };
  for (const [key, value] of Object.entries(raw)) {
    switch (key) {
      case 'vcpu':
        cfg.vcpu = intIn(file, key, value, 1, MAX_VCPU);
        break;
      case 'memory_mib':
        cfg.memoryMib = intIn(file, key, value, MIN_MEMORY_MIB, 1024 * 1024);
        break;
      case 'disk_size':
        cfg.diskSizeBytes = size(file, key, value);
        break;
      case 'system_overlay_size':
        cfg.systemOverlayBytes = size(file, key, value);
        break;
      case 'vmm':
        cfg.vmm = oneOf(file, key, value, VMMS);
        break;
      case 'accel':
        cfg.accel = oneOf(file, key, value, ACCELS);
        break;
      case 'network':
        cfg.network = oneOf(file, key, value, [...NETWORK_MODES, 'auto'] as const);
        break;
      case 'helper_socket':
        if (typeof value !== 'string' || !value.startsWith('/')) throw configError(file, `helper_socket must be an absolute path, got ${JSON.stringify(value)}`);
        cfg.helperSocket = value;
        break;
      case 'dns_port':
        cfg.dnsPort = intIn(file, key, value, 1024, 65535);
        break;
      case 'mirror':
        if (typeof value !== 'string' || !/^https?:\/\/\S+$/.test(value)) {
          throw configError(file, `mirror must be an http(s) URL, got ${JSON.stringify(value)}`);
        }
        cfg.mirror = value;
        break;
      case 'stop_timeout':
        cfg.stopTimeoutSeconds = intIn(file, key, value, 5, 600);
        break;
      case 'warm_clones':
        if (typeof value !== 'boolean') throw configError(file, `warm_clones must be true or false, got ${JSON.stringify(value)}`);
        cfg.warmClones = value;
        break;
      case 'update_url':
        if (typeof value !== 'string' || !/^https?:\/\/\S+$/.test(value) || value.length > 2048) {
          throw configError(file, `update_url must be an http(s) URL of a release manifest, got ${JSON.stringify(value).slice(0, 100)}`);
        }
        cfg.updateUrl = value;
        break;
      case 'kernel_catalog_url':
        if (typeof value !== 'string' || !/^https?:\/\/\S+$/.test(value) || value.length > 2048) {
          throw configError(file, `kernel_catalog_url must be an http(s) URL of a catalog.json, got ${JSON.stringify(value).slice(0, 100)}`);
        }
        cfg.kernelCatalogUrl = value;
        break;
      case 'kernel_catalog_pubkey':
        if (typeof value !== 'string' || !value.startsWith('/') || value.length > 4096) throw configError(file, `kernel_catalog_pubkey must be an absolute path to a PEM public key, got ${JSON.stringify(value).slice(0, 100)}`);
        cfg.kernelCatalogPubkey = value;
        break;
      default:
        throw configError(file, `unknown key ${JSON.stringify(key)}`);
    }
  }
  return cfg;
}

/** config.toml, then BANGER_HELPER_SOCKET (tests and hand-run helpers) over helper_socket. */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let cfg: Config;
  try {
    cfg = parseConfig(readFileSync(path, 'utf8'), path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      if (e instanceof BangerError) throw e;
      throw configError(path, `cannot read: ${(e as Error).message}`);
    }
    cfg = { ...DEFAULT_CONFIG };
  }
  if (env.BANGER_HELPER_SOCKET) cfg.helperSocket = env.BANGER_HELPER_SOCKET;
  return cfg;
}

function intIn(file: string, key: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw configError(file, `${key} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function size(file: string, key: string, v: unknown): number {
  if (typeof v !== 'string' && typeof v !== 'number') {
    throw configError(file, `${key} must be a size like "8G", got ${JSON.stringify(v)}`);
  }
  try {
    return parseSize(String(v), key);
  } catch (e) {
    throw configError(file, (e as Error).message);
  }
}

function oneOf<T extends string>(file: string, key: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw configError(file, `${key} must be one of ${allowed.map((a) => `"${a}"`).join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}
