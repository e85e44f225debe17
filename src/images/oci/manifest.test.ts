import { describe, it, expect } from 'vitest';
import { BangerError } from '../../errors/errors.js';
import {
  MEDIA,
  checkConfig,
  checkManifest,
  layerCompression,
  parseImageConfig,
  parseManifest,
  parsePlatform,
  selectPlatform,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
} from './manifest.js';

const D = (c: string) => `sha256:${c.repeat(64)}`;
const W = 'reg.example/app:1';

function err(f: () => unknown): BangerError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BangerError);
    return e as BangerError;
  }
  throw new Error('did not throw');
}

const manifest = (over: Partial<ImageManifest> = {}) => ({
  schemaVersion: 2 as const,
  mediaType: MEDIA.ociManifest,
  config: { mediaType: MEDIA.ociConfig, digest: D('c'), size: 100 },
  layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: D('1'), size: 10 }],
  ...over,
});
const buf = (o: unknown) => Buffer.from(JSON.stringify(o));

describe('parseManifest', () => {
  it('reads an OCI manifest by its own mediaType', () => {
    const p = parseManifest(buf(manifest()), 'text/plain', W);
    expect(p.kind).toBe('manifest');
    expect(p.mediaType).toBe(MEDIA.ociManifest);
  });

  it('uses the Content-Type when the body has no mediaType, and the shape when neither says', () => {
    const { mediaType: _m, ...bare } = manifest();
    expect(parseManifest(buf(bare), `${MEDIA.dockerManifest}; charset=utf-8`, W).mediaType).toBe(MEDIA.dockerManifest);
    expect(parseManifest(buf(bare), undefined, W).kind).toBe('manifest');
    expect(parseManifest(buf({ schemaVersion: 2, manifests: [] }), undefined, W).kind).toBe('index');
  });

  it('refuses schema 1 with a message that says so', () => {
    const e = err(() => parseManifest(buf({ schemaVersion: 1, name: 'x', fsLayers: [] }), 'application/vnd.docker.distribution.manifest.v1+prettyjws', W));
    expect(e.message).toMatch(/schema 1/);
    expect(e.hint).toMatch(/schema 2/);
  });

  it.each([
    ['a digest that is not sha256', manifest({ layers: [{ mediaType: 'x', digest: 'sha512:' + 'a'.repeat(128), size: 1 }] })],
    ['a digest that is a path', manifest({ layers: [{ mediaType: 'x', digest: 'sha256:../../../etc/passwd', size: 1 }] })],
    ['a size over 16 GiB', manifest({ layers: [{ mediaType: 'x', digest: D('1'), size: 17 * 1024 ** 3 }] })],
    ['a negative size', manifest({ layers: [{ mediaType: 'x', digest: D('1'), size: -1 }] })],
    ['no layers', manifest({ layers: [] })],
  ])('refuses %s', (_what, doc) => {
    const e = err(() => parseManifest(buf(doc), undefined, W));
    expect(e.code).toBe('operation_failed');
    expect(e.message).toMatch(/reg\.example\/app:1: the manifest .* is not valid/);
  });

  it('refuses what is not JSON or not a manifest', () => {
    expect(err(() => parseManifest(Buffer.from('<html>'), 'text/html', W)).message).toMatch(/not JSON/);
    expect(err(() => parseManifest(buf({ hello: 1 }), 'application/vnd.example+json', W)).message).toMatch(/not an image manifest/);
    expect(err(() => parseManifest(Buffer.alloc(5 * 1024 * 1024, 32), undefined, W)).message).toMatch(/max 4194304/);
  });
});

describe('selectPlatform', () => {
  const entry = (arch: string, variant?: string, extra: Partial<Descriptor> = {}): Descriptor => ({
    mediaType: MEDIA.ociManifest,
    digest: D(arch === 'amd64' ? 'a' : arch === 'arm64' ? (variant === 'v8' ? 'b' : 'd') : 'e'),
    size: 500,
    platform: { os: 'linux', architecture: arch, ...(variant ? { variant } : {}) },
    ...extra,
  });
  const index: ImageIndex = {
    schemaVersion: 2,
    manifests: [
      entry('amd64', undefined, { annotations: { 'vnd.docker.reference.type': 'attestation-manifest' }, digest: D('f') }),
      entry('arm64', 'v8'),
      entry('amd64'),
      entry('arm64', 'v9'),
    ],
  };

  it('picks linux/amd64, skipping attestation entries', () => {
    expect(selectPlatform(index, { os: 'linux', architecture: 'amd64' }, W).digest).toBe(D('a'));
  });

  it('matches a variant when one is asked for, else takes the first', () => {
    expect(selectPlatform(index, { os: 'linux', architecture: 'arm64', variant: 'v9' }, W).platform?.variant).toBe('v9');
    expect(selectPlatform(index, { os: 'linux', architecture: 'arm64' }, W).platform?.variant).toBe('v8');
  });

  it('names the platforms there are when none matches', () => {
    const e = err(() => selectPlatform(index, { os: 'linux', architecture: 's390x' }, W));
    expect(e.code).toBe('not_found');
    expect(e.message).toContain('has no image for linux/s390x');
    expect(e.message).toContain('"linux/arm64/v8", "linux/amd64", "linux/arm64/v9"');
  });
});

describe('layers and config', () => {
  it('knows the compression of each accepted layer type', () => {
    const l = (mediaType: string) => layerCompression({ mediaType, digest: D('1'), size: 1 }, W);
    expect(l('application/vnd.oci.image.layer.v1.tar')).toBe('none');
    expect(l('application/vnd.oci.image.layer.v1.tar+zstd')).toBe('zstd');
    expect(l('application/vnd.docker.image.rootfs.diff.tar.gzip')).toBe('gzip');
  });

  it('refuses foreign, non-distributable and unknown layers', () => {
    const l = (mediaType: string, urls?: string[]) => err(() => layerCompression({ mediaType, digest: D('1'), size: 1, ...(urls ? { urls } : {}) }, W));
    expect(l('application/vnd.docker.image.rootfs.foreign.diff.tar.gzip').message).toMatch(/foreign/);
    expect(l('application/vnd.oci.image.layer.nondistributable.v1.tar+gzip').message).toMatch(/foreign/);
    expect(l('application/vnd.oci.image.layer.v1.tar', ['https://example.com/l']).message).toMatch(/foreign/);
    expect(l('application/vnd.cncf.helm.chart.content.v1.tar+gzip').message).toMatch(/cannot apply/);
  });

  it('refuses an artifact that is not a container image', () => {
    const m = manifest({ config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: D('c'), size: 1 } });
    expect(err(() => checkManifest(m, W)).message).toMatch(/not a container image/);
  });

  const config = {
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: [D('1'), D('2')] },
    config: { Env: ['PATH=/bin'], Cmd: null, WorkingDir: '/', User: 'root' },
    history: [{ created_by: 'x' }],
  };

  it('parses a config (null Cmd, extra fields) and checks platform and layer count', () => {
    const c = parseImageConfig(buf(config), W);
    expect(c.config?.Env).toEqual(['PATH=/bin']);
    expect(() => checkConfig(c, { os: 'linux', architecture: 'amd64' }, 2, W)).not.toThrow();
    expect(err(() => checkConfig(c, { os: 'linux', architecture: 'arm64' }, 2, W)).message).toMatch(/image for "linux\/amd64", not linux\/arm64/);
    expect(err(() => checkConfig(c, { os: 'linux', architecture: 'amd64' }, 3, W)).message).toMatch(/2 diff_ids for 3 layers/);
  });

  it('refuses a config without rootfs.diff_ids', () => {
    expect(err(() => parseImageConfig(buf({ architecture: 'amd64', os: 'linux' }), W)).message).toMatch(/image config .* not valid: "rootfs"/);
  });
});

describe('parsePlatform', () => {
  it('reads os/arch[/variant] and refuses anything else', () => {
    expect(parsePlatform('linux/arm64/v8')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(parsePlatform('linux/amd64')).toEqual({ os: 'linux', architecture: 'amd64' });
    for (const bad of ['linux', 'linux/', 'a/b/c/d', 'Linux/AMD64', 'linux/amd64 ']) expect(err(() => parsePlatform(bad)).field).toBe('platform');
  });
});
