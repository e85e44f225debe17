/**
 * Choosing the accelerator from a probe, for any VMM: `auto` trusts KVM only
 * when the driver's probe proved it works (a /dev/kvm that exists can still
 * hang a guest on nested hosts), else TCG with a visible warning.
 */
import { BangerError } from '../errors/errors.js';

/** What a driver's accelerator probe found. */
export interface AccelProbe {
  usable: boolean;
  /** One line: why KVM is (not) usable. */
  reason: string;
  /** How long the probe took (ms). */
  ms: number;
}

export interface AccelChoice {
  accel: 'kvm' | 'tcg';
  /** Set when `auto` fell back to TCG: show it to the user. */
  warning?: string;
}

/**
 * auto: KVM only if the probe proved it works, else TCG with a warning.
 * kvm: KVM, or a coded error when the probe says it does not work.
 * tcg: TCG.
 */
export function resolveAccel(requested: 'auto' | 'kvm' | 'tcg', probe: AccelProbe | null | undefined): AccelChoice {
  if (requested === 'tcg') return { accel: 'tcg' };
  if (probe?.usable) return { accel: 'kvm' };
  const reason = probe ? probe.reason : 'it was not probed';
  if (requested === 'kvm') {
    throw new BangerError(
      'unavailable',
      `accel = "kvm" is configured but KVM is not usable here: ${reason}`,
      'set accel = "auto" (falls back to TCG) or "tcg" in the config file; `banger doctor` runs the KVM probe',
    );
  }
  return { accel: 'tcg', warning: `KVM is not usable here (${reason}); using TCG software emulation — VMs will be much slower` };
}
