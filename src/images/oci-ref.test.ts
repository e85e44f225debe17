import { describe, it, expect } from 'vitest';
import { BangerError } from '../errors/errors.js';
import { DOCKER_HUB, defaultImageName, formatImageRef, isLoopbackRegistry, parseImageRef } from './oci-ref.js';

const D = `sha256:${'ab'.repeat(32)}`;

describe('parseImageRef', () => {
  it.each([
    ['debian:bookworm', { registry: DOCKER_HUB, repository: 'library/debian', tag: 'bookworm' }],
    ['debian', { registry: DOCKER_HUB, repository: 'library/debian', tag: 'latest' }],
    ['docker.io/library/debian:bookworm', { registry: DOCKER_HUB, repository: 'library/debian', tag: 'bookworm' }],
    ['index.docker.io/library/debian', { registry: DOCKER_HUB, repository: 'library/debian', tag: 'latest' }],
    ['someone/tool:1.2.3', { registry: DOCKER_HUB, repository: 'someone/tool', tag: '1.2.3' }],
    ['ghcr.io/owner/name:v1', { registry: 'ghcr.io', repository: 'owner/name', tag: 'v1' }],
    ['localhost:5000/x/y', { registry: 'localhost:5000', repository: 'x/y', tag: 'latest' }],
    ['localhost/x', { registry: 'localhost', repository: 'x', tag: 'latest' }],
    ['127.0.0.1:5000/debian:Bookworm_1', { registry: '127.0.0.1:5000', repository: 'debian', tag: 'Bookworm_1' }],
    ['[::1]:5000/a', { registry: '[::1]:5000', repository: 'a', tag: 'latest' }],
    [`debian@${D}`, { registry: DOCKER_HUB, repository: 'library/debian', digest: D }],
    [`debian:12@${D}`, { registry: DOCKER_HUB, repository: 'library/debian', tag: '12', digest: D }],
    ['a.b/c__d/e-f.g', { registry: 'a.b', repository: 'c__d/e-f.g', tag: 'latest' }],
  ])('%s', (ref, want) => {
    expect(parseImageRef(ref)).toEqual(want);
  });

  it.each([
    ['', /empty/],
    ['Debian:bookworm', /component "Debian"/],
    ['debian:', /tag ""/],
    ['debian:-x', /tag "-x"/],
    [`debian:${'t'.repeat(129)}`, /tag/],
    ['debian@sha256:abc', /digest/],
    [`debian@md5:${'a'.repeat(32)}`, /digest/],
    ['debian bookworm', /whitespace/],
    ['debian\n', /control/],
    ['a//b', /component ""/],
    ['/debian', /component ""/],
    ['ghcr.io/', /component ""/],
    ['../../etc:x', /registry host/],
    ['foo/..', /component/],
    ['host:99999/x', /port 99999/],
    ['bad_host.io/x', /registry host/],
    [`${'a'.repeat(256)}:1`, /name is 256/],
    ['x'.repeat(600), /600 characters/],
    [':tag', /no repository/],
  ])('refuses %j', (ref, why) => {
    let err: unknown;
    try {
      parseImageRef(ref);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BangerError);
    expect((err as BangerError).code).toBe('bad_request');
    expect((err as BangerError).message).toMatch(why);
    expect((err as BangerError).hint).toMatch(/debian:bookworm/);
  });

  it('round-trips through formatImageRef', () => {
    for (const ref of ['docker.io/library/debian:bookworm', `ghcr.io/o/n@${D}`, 'localhost:5000/x:1']) {
      expect(formatImageRef(parseImageRef(ref))).toBe(ref);
    }
    expect(formatImageRef(parseImageRef('debian'))).toBe('docker.io/library/debian:latest');
  });
});

describe('isLoopbackRegistry', () => {
  it('is true for localhost, 127.0.0.0/8 and ::1 (with or without a port), false otherwise', () => {
    for (const r of ['localhost', 'localhost:5000', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000']) expect(isLoopbackRegistry(r)).toBe(true);
    for (const r of [DOCKER_HUB, 'ghcr.io', '10.0.0.1:5000', 'localhost.example.com', '127.0.0.1.nip.io', '[::2]:5000']) expect(isLoopbackRegistry(r)).toBe(false);
  });
});

describe('defaultImageName', () => {
  it.each([
    ['debian:bookworm', 'debian-bookworm'],
    ['debian', 'debian'],
    ['docker.io/library/ubuntu:24.04', 'ubuntu-24-04'],
    ['ghcr.io/o/my_tool:V1.2', 'my-tool-v1-2'],
    [`alpine@${D}`, `alpine-${'ab'.repeat(6)}`],
    [`alpine:3.20@${D}`, 'alpine-3-20'],
  ])('%s → %s', (ref, name) => {
    expect(defaultImageName(parseImageRef(ref))).toBe(name);
  });

  it('is cut to 63 characters, never ending in "-", and always a valid image name', () => {
    const n = defaultImageName(parseImageRef(`a/${'b'.repeat(60)}:x-${'y'.repeat(10)}`));
    expect(n.length).toBeLessThanOrEqual(63);
    expect(n).toMatch(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/);
  });

  it('asks for a name (field name) when nothing valid is left', () => {
    let err: unknown;
    try {
      defaultImageName({ registry: DOCKER_HUB, repository: 'library/__', tag: '_' });
    } catch (e) {
      err = e;
    }
    expect((err as BangerError).message).toMatch(/no image name can be made from docker.io\/library\/__:_/);
    expect((err as BangerError).hint).toBe('give the image a name of your own');
    expect((err as BangerError).field).toBe('name');
  });
});
