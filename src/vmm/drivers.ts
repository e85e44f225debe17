/**
 * The drivers this build carries. The one place outside a VMM's own folder
 * that names a VMM's modules: the daemon and doctor get drivers from here.
 */
import type { Logger } from '../log/log.js';
import type { Vmm } from '../model/types.js';
import type { Runner } from '../system/runner.js';
import type { DriverRegistry, VmmDriver } from './driver.js';
import { QemuDriver } from './qemu/driver.js';

export function builtinDrivers(deps: { runner: Runner; log: Logger }): DriverRegistry {
  const qemu = new QemuDriver(deps);
  return (vmm: Vmm): VmmDriver | undefined => (vmm === 'qemu' ? qemu : undefined);
}
