import { describe, it, expect } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CONFIG, loadConfig, parseConfig } from './config.js';

describe('config.toml', () => {
  it('uses defaults when the file is missing', () => {
    expect(loadConfig(join(mkdtempSync(join(tmpdir(), 'cfg-')), 'none.toml'))).toEqual(DEFAULT_CONFIG);
  });

  it('parses every key', () => {
    const c = parseConfig(
      'vcpu = 1\nmemory_mib = 512\ndisk_size = "2G"\nsystem_overlay_size = "3G"\nvmm = "qemu"\naccel = "tcg"\nnetwork = "user"\nhelper_socket = "/run/h.sock"\ndns_port = 5300\nmirror = "http://example/debian"\nstop_timeout = 20\nwarm_clones = false\nupdate_url = "https://releases.example/banger/manifest.json"\nkernel_catalog_url = "https://k.example/catalog.json"\nkernel_catalog_pubkey = "/etc/banger/catalog.pub.pem"\n',
    );
    expect(c).toEqual({
      vcpu: 1,
      memoryMib: 512,
      diskSizeBytes: 2 * 1024 ** 3,
      systemOverlayBytes: 3 * 1024 ** 3,
      vmm: 'qemu',
      accel: 'tcg',
      network: 'user',
      helperSocket: '/run/h.sock',
      dnsPort: 5300,
      mirror: 'http://example/debian',
      stopTimeoutSeconds: 20,
      warmClones: false,
      updateUrl: 'https://releases.example/banger/manifest.json',
      kernelCatalogUrl: 'https://k.example/catalog.json',
      kernelCatalogPubkey: '/etc/banger/catalog.pub.pem',
    });
  });

  it.each([
    ['vcpu = 0', /vcpu must be a whole number from 1/],
    ['update_url = "ftp://x/m.json"', /update_url must be an http\(s\) URL/],
    ['update_url = 3', /update_url must be an http\(s\) URL/],
    ['vcpu = "2"', /vcpu must be a whole number/],
    ['memory_mib = 1', /memory_mib must be a whole number from 256/],
    ['disk_size = "lots"', /disk_size: "lots" is not a size/],
    ['system_overlay_size = true', /system_overlay_size must be a size/],
    ['vmm = "docker"', /vmm must be one of "qemu", "firecracker"/],
    ['accel = "hvf"', /accel must be one of "auto", "kvm", "tcg"/],
    ['network = "wifi"', /network must be one of "user", "bridge", "auto"/],
    ['helper_socket = "rel/h.sock"', /helper_socket must be an absolute path/],
    ['dns_port = 53', /dns_port must be a whole number from 1024/],
    ['cpus = 2', /unknown key "cpus"/],
    ['mirror = "ftp://x"', /mirror must be an http\(s\) URL/],
    ['stop_timeout = 1', /stop_timeout must be a whole number from 5 to 600/],
    ['warm_clones = "yes"', /warm_clones must be true or false/],
  ])('%s → error naming the key', (text, re) => {
    expect(() => parseConfig(text, '/x/config.toml')).toThrow(re);
    expect(() => parseConfig(text, '/x/config.toml')).toThrow(/\/x\/config\.toml/);
  });

  it('reports TOML syntax errors with line and column', () => {
    expect(() => parseConfig('vcpu = 2\nmemory_mib = = 3\n')).toThrow(/line 2, column \d+/);
  });

  it('reads a real file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    writeFileSync(join(dir, 'config.toml'), 'vcpu = 1\n');
    expect(loadConfig(join(dir, 'config.toml')).vcpu).toBe(1);
  });
});
