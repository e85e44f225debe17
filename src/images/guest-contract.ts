/**
 * Does a pulled or imported tree meet the guest contract (docs/ARCHITECTURE.md,
 * "Images")? Reads `/etc/os-release` (or `/usr/lib/os-release`) through the
 * tree's own links (tree.ts), asks distro.ts what is missing and how that
 * family would install it, and refuses a tree that lacks what a guest needs
 * to boot and be reached, naming each missing piece and the packages that
 * bring it. (Installing them at pull time, in a throwaway build VM, is the
 * next step; until then the refusal says what the image must have.)
 */
import { lstatSync } from 'node:fs';
import { BangerError } from '../errors/errors.js';
import { detectFamily, installPlan, missingNeeds, OS_RELEASE_MAX, parseOsRelease, type Family, type GuestNeed, type OsRelease } from './distro.js';
import { readInRoot, resolveInRoot } from './tree.js';

/** Needs a guest cannot boot or be reached without (CA certificates only matter to what runs in it). */
const REQUIRED: readonly GuestNeed[] = ['systemd', 'sshd', 'guest-agent', 'iproute2', 'e2fsprogs', 'util-linux', 'kmod', 'udev', 'dbus'];

/** What the needs are called in messages. */
const NEED_NAMES: Record<GuestNeed, string> = {
  systemd: 'systemd (as /sbin/init)',
  sshd: 'an SSH server (sshd)',
  'guest-agent': 'qemu-guest-agent',
  iproute2: 'iproute2 (ip)',
  e2fsprogs: 'e2fsprogs',
  'util-linux': 'util-linux (mount)',
  kmod: 'kmod (modprobe)',
  udev: 'udev',
  dbus: 'D-Bus',
  'ca-certificates': 'CA certificates',
};

export interface ContractReport {
  osRelease?: OsRelease;
  family?: Family;
  /** Every need the tree lacks (CA certificates included). */
  missing: GuestNeed[];
  /** The needs that stop it from booting as a guest. */
  blocking: GuestNeed[];
}

export function inspectTree(rootDir: string): ContractReport {
  const text = readInRoot(rootDir, 'etc/os-release', OS_RELEASE_MAX) ?? readInRoot(rootDir, 'usr/lib/os-release', OS_RELEASE_MAX);
  const osRelease = text === undefined ? undefined : parseOsRelease(text);
  const family = osRelease ? detectFamily(osRelease) : undefined;
  const missing = missingNeeds((rel) => {
    try {
      lstatSync(resolveInRoot(rootDir, rel));
      return true;
    } catch {
      return false;
    }
  });
  return { osRelease, family, missing, blocking: missing.filter((n) => REQUIRED.includes(n)) };
}

/** What a pulled image needs installed before it can boot as a guest (a build VM runs the plan). */
export interface GuestInstall {
  family: Family;
  argv: string[][];
  env: Record<string, string>;
  packages: string[];
  /** What is missing, in words, for progress. */
  lacks: string;
}

/**
 * The tree as a guest: nothing to do, a package install (when `canInstall`
 * and its distribution has a plan), or a BangerError naming what it lacks.
 */
export function planGuestContract(rootDir: string, what: string, canInstall: boolean): { report: ContractReport; install?: GuestInstall } {
  const report = inspectTree(rootDir);
  if (report.blocking.length === 0) return { report };
  if (canInstall && report.family) {
    // Only what a guest needs: CA certificates are the image's own choice (and
    // update-ca-certificates alone took ~100 s of a ~230 s install under TCG).
    const plan = installPlan(report.family, report.blocking);
    if (plan.ok) {
      return { report, install: { family: plan.family, argv: plan.argv, env: plan.env, packages: plan.packages, lacks: report.blocking.map((n) => NEED_NAMES[n]).join(', ') } };
    }
  }
  return { report: requireGuestContract(rootDir, what, report) };
}

/** The report when the tree can boot as a guest; a BangerError naming what is missing otherwise. */
export function requireGuestContract(rootDir: string, what: string, inspected?: ContractReport): ContractReport {
  const r = inspected ?? inspectTree(rootDir);
  if (r.blocking.length === 0) return r;
  const distro = r.osRelease ? (r.osRelease.prettyName ?? r.osRelease.id) : 'an unknown distribution (no /etc/os-release)';
  const lacks = r.blocking.map((n) => NEED_NAMES[n]).join(', ');
  let hint: string;
  if (!r.family) {
    hint = 'banger knows Debian/Ubuntu, Fedora/RHEL, Arch and openSUSE families; use an image of one of them with those installed';
  } else {
    const plan = installPlan(r.family, r.missing);
    hint = plan.ok
      ? `use an image that has them, e.g. one built FROM it with: ${plan.argv.map((a) => a.join(' ')).join(' && ')}`
      : plan.reason;
  }
  throw new BangerError('operation_failed', `${what} (${distro}) cannot boot as a banger guest: it lacks ${lacks}`, hint);
}

