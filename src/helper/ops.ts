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
import { schemaOf } from '../rpc/results.js';
import { array, boolean, number, object, string } from '../rpc/shape.js';
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

/*
 * Result shapes (src/rpc/shape.ts): the daemon's client checks every answer with them
 * (src/rpc/client.ts), each tied to its type by schemaOf (src/rpc/results.ts).
 */
/** An interface name (IFNAMSIZ is 16), an address or a CIDR, loosely bounded. */
const netText = string({ max: 256 });
const count = number({ int: true, min: 0 });
const detail = string({ max: 64 * 1024 });
const flag = boolean();

const helperInfoSchema = schemaOf<HelperInfo>()(
  object({ protocol: number({ int: true }), version: string({ max: 256 }), bridge: netText, subnet: netText, gateway: netText, ownerUid: count }),
);
const bridgeEnsureSchema = schemaOf<{ bridge: string; gateway: string; created: boolean }>()(object({ bridge: netText, gateway: netText, created: flag }));
const removedFlagSchema = schemaOf<{ removed: boolean }>()(object({ removed: flag }));
const tapCreateSchema = schemaOf<{ tap: string; created: boolean }>()(object({ tap: netText, created: flag }));
const natAddSchema = schemaOf<{ added: number }>()(object({ added: count }));
const natRemoveSchema = schemaOf<{ removed: number }>()(object({ removed: count }));
const routeSchema = schemaOf<{ routed: boolean; detail: string }>()(object({ routed: flag, detail }));
const unrouteSchema = schemaOf<{ unrouted: boolean; detail: string }>()(object({ unrouted: flag, detail }));
const helperStateSchema = schemaOf<HelperState>()(object({ bridgeUp: flag, taps: array(netText, { max: 100_000 }), natIps: array(netText, { max: 100_000 }) }));

export const helperOps = {
  'helper.hello': { params: z.object({ protocol: z.number().int(), client: z.string() }).strict(), result: helperInfoSchema },
  'bridge.ensure': { params: empty, result: bridgeEnsureSchema },
  'bridge.remove': { params: empty, result: removedFlagSchema },
  'tap.create': { params: z.object({ tap: z.string() }).strict(), result: tapCreateSchema },
  'tap.remove': { params: z.object({ tap: z.string() }).strict(), result: removedFlagSchema },
  'nat.add': { params: z.object({ guestIp: z.string() }).strict(), result: natAddSchema },
  'nat.remove': { params: z.object({ guestIp: z.string() }).strict(), result: natRemoveSchema },
  'resolver.route': { params: z.object({ port: z.number().int().min(1).max(65535) }).strict(), result: routeSchema },
  'resolver.unroute': { params: empty, result: unrouteSchema },
  'state': { params: empty, result: helperStateSchema },
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
