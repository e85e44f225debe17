/**
 * The root helper's closed set of operations: the only things the daemon
 * can ask root for. Params are zod-checked (unknown fields refused), then
 * each handler validates names and addresses against the helper's OWN
 * config (its bridge, its subnet, its owner uid), never the caller's, and
 * refuses with a coded error before running any command.
 */
import { z } from 'zod';
import { BangerError } from '../errors/errors.js';
import { checkGuestIp, checkTapName, gatewayOf } from '../model/net.js';
import type { HandlersFor } from '../rpc/server.js';
import type { HostNet } from './host-net.js';
import type { Resolver } from './resolver.js';

export const HELPER_PROTOCOL = 1;

export interface HelperInfo {
  protocol: number;
  version: string;
  bridge: string;
  subnet: string;
  gateway: string;
  ownerUid: number;
}

export interface HelperState {
  bridgeUp: boolean;
  taps: string[];
  natIps: string[];
}

const empty = z.object({}).strict();

export const helperOps = {
  'helper.hello': { params: z.object({ protocol: z.number().int(), client: z.string() }).strict(), result: {} as HelperInfo },
  'bridge.ensure': { params: empty, result: {} as { bridge: string; gateway: string; created: boolean } },
  'bridge.remove': { params: empty, result: {} as { removed: boolean } },
  'tap.create': { params: z.object({ tap: z.string() }).strict(), result: {} as { tap: string; created: boolean } },
  'tap.remove': { params: z.object({ tap: z.string() }).strict(), result: {} as { removed: boolean } },
  'nat.add': { params: z.object({ guestIp: z.string() }).strict(), result: {} as { added: number } },
  'nat.remove': { params: z.object({ guestIp: z.string() }).strict(), result: {} as { removed: number } },
  'resolver.route': { params: z.object({ port: z.number().int().min(1).max(65535) }).strict(), result: {} as { routed: boolean; detail: string } },
  'resolver.unroute': { params: empty, result: {} as { unrouted: boolean; detail: string } },
  'state': { params: empty, result: {} as HelperState },
} as const;

export type HelperOps = typeof helperOps;

export function helperHandlers(net: HostNet, resolver: Resolver, version: string): HandlersFor<HelperOps> {
  const { bridge, subnet, ownerUid } = net.cfg;
  const tap = (name: string) => checkTapName(bridge, name);
  const guest = (ip: string) => checkGuestIp(subnet, ip);
  return {
    'helper.hello': async () => ({ protocol: HELPER_PROTOCOL, version, bridge, subnet: subnet.cidr, gateway: gatewayOf(subnet), ownerUid }),
    'bridge.ensure': async () => ({ bridge, gateway: gatewayOf(subnet), created: await net.ensureBridge() }),
    'bridge.remove': async () => ({ removed: await net.removeBridge() }),
    'tap.create': async (p) => ({ tap: tap(p.tap), created: await net.createTap(tap(p.tap)) }),
    'tap.remove': async (p) => ({ removed: await net.removeTap(tap(p.tap)) }),
    'nat.add': async (p) => ({ added: await net.addNat(guest(p.guestIp)) }),
    'nat.remove': async (p) => ({ removed: await net.removeNat(guest(p.guestIp)) }),
    'resolver.route': async (p) => {
      if (!(await net.linkExists(bridge))) throw new BangerError('not_found', `bridge ${bridge} does not exist`, 'bridge.ensure first');
      await net.redirectDns(p.port);
      return resolver.route(bridge, gatewayOf(subnet), p.port);
    },
    'resolver.unroute': async () => resolver.unroute(bridge),
    'state': async () => ({ bridgeUp: await net.linkExists(bridge), taps: await net.taps(), natIps: await net.natIps() }),
  };
}
