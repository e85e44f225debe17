/**
 * OCI image references, as `banger image pull REF` takes them (issue 11):
 * the grammar of the distribution project's reference package, with
 * Docker's defaults — a first component that is not a host (no `.` or `:`,
 * not `localhost`) means Docker Hub, and a one-component Docker Hub name
 * lives under `library/`; no tag and no digest means `latest`.
 *
 * The reference is user input that ends up in URLs and, through the default
 * image name, in paths: it is parsed whole against the grammar (bounded
 * lengths, lowercase repository components, sha256 digests only) and never
 * normalised beyond Docker's defaults.
 */
import { BangerError } from '../errors/errors.js';
import { NAME_MAX, quoteInput, vmNameProblem } from '../model/names.js';

export interface ImageRef {
  /** Registry host[:port] as written (`docker.io` for Docker Hub). */
  registry: string;
  /** Repository path, e.g. `library/debian`. */
  repository: string;
  /** Tag (`latest` when neither a tag nor a digest was given); undefined with a digest alone. */
  tag?: string;
  /** `sha256:<64 hex>` when given. */
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
/** Where Docker Hub's registry API answers. */
export const DOCKER_HUB_API = 'registry-1.docker.io';

/** Longest reference accepted (the name part is at most 255 in the grammar; tag 128; digest 71). */
const MAX_REF = 512;
const MAX_NAME = 255;
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
/** host, host:port, IPv4, [IPv6]:port; DNS labels may hold upper case. */
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

const REF_HINT = 'a reference looks like debian:bookworm, docker.io/library/debian:bookworm, ghcr.io/OWNER/NAME:TAG or NAME@sha256:DIGEST';

function bad(ref: string, why: string): BangerError {
  return new BangerError('bad_request', `invalid image reference ${quoteInput(ref)}: ${why}`, REF_HINT, { field: 'ref' });
}

/** Parses REF (Docker's defaults applied); throws a bad_request BangerError naming what is wrong. */
export function parseImageRef(ref: string): ImageRef {
  if (typeof ref !== 'string' || ref.length === 0) throw bad(String(ref), 'it is empty');
  if (ref.length > MAX_REF) throw bad(ref, `it is ${ref.length} characters long (max ${MAX_REF})`);
  if (/[\s\x00-\x1f\x7f]/.test(ref)) throw bad(ref, 'it contains whitespace or control characters');

  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(ref, 'the digest must be sha256: followed by 64 lowercase hex digits');
  }
  let tag: string | undefined;
  // A tag follows the last ':' after the last '/' (a ':' before it is a port).
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(ref, `tag ${quoteInput(tag)} is not 1-128 of letters, digits, "_", "." and "-" (not starting with "." or "-")`);
  }
  if (rest.length === 0) throw bad(ref, 'it has no repository name');
  if (rest.length > MAX_NAME) throw bad(ref, `its name is ${rest.length} characters long (max ${MAX_NAME})`);

  const parts = rest.split('/');
  let registry = DOCKER_HUB;
  const first = parts[0]!;
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    if (!HOST.test(first)) throw bad(ref, `${quoteInput(first)} is not a registry host[:port]`);
    const port = /:(\d+)$/.exec(first);
    if (port && (Number(port[1]) < 1 || Number(port[1]) > 65535)) throw bad(ref, `port ${port[1]} is out of range`);
    registry = first === 'index.docker.io' ? DOCKER_HUB : first;
    parts.shift();
  }
  for (const c of parts) {
    if (!COMPONENT.test(c)) throw bad(ref, `repository component ${quoteInput(c)} must be lowercase letters and digits, separated by ".", "_", "__" or "-"`);
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  return { registry, repository: parts.join('/'), ...(tag !== undefined || digest === undefined ? { tag: tag ?? 'latest' } : {}), ...(digest ? { digest } : {}) };
}

/** The reference written out in full (`docker.io/library/debian:bookworm`, `…@sha256:…`). */
export function formatImageRef(r: ImageRef): string {
  return `${r.registry}/${r.repository}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** Whether the registry is on a loopback address (plain HTTP allowed without --insecure, as Docker does). */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith('[') ? registry.slice(1, registry.indexOf(']')) : registry.replace(/:\d+$/, '');
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/**
 * The image name a pull gets when none is given: the repository's last
 * component and the tag (`debian:bookworm` → `debian-bookworm`; `latest` is
 * left out), or the digest's first 12 hex digits; "." and "_" become "-".
 * Throws (field `name`) when that is not a valid image name: the user then names it.
 */
export function defaultImageName(r: ImageRef): string {
  const base = r.repository.split('/').pop()!;
  const suffix = r.digest && r.tag === undefined ? r.digest.slice('sha256:'.length, 'sha256:'.length + 12) : r.tag === 'latest' ? '' : (r.tag ?? '');
  const name = `${base}${suffix ? `-${suffix}` : ''}`
    .toLowerCase()
    .replace(/[._]+/g, '-')
    .replace(/-{2,}/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, NAME_MAX)
    .replace(/-+$/, '');
  const problem = vmNameProblem(name);
  if (problem !== undefined) {
    throw new BangerError('bad_request', `no image name can be made from ${formatImageRef(r)} (${quoteInput(name)}: ${problem})`, 'give the image a name of your own', { field: 'name' });
  }
  return name;
}
