/**
 * Routing `.vm` names to the daemon's DNS server. With systemd-resolved the
 * helper sets it per link (`resolvectl dns BRIDGE IP:PORT`, `resolvectl
 * domain BRIDGE ~vm`), which touches nothing else of the host's resolver and
 * goes away with the bridge. Without resolved it changes nothing and says
 * what to add to the resolver the host does use.
 */
import { existsSync } from 'node:fs';
import type { Runner } from '../system/runner.js';
import { onPath } from '../system/which.js';

export interface Resolver {
  route(bridge: string, ip: string, port: number): Promise<{ routed: boolean; detail: string }>;
  unroute(bridge: string): Promise<{ unrouted: boolean; detail: string }>;
}

/** What to configure by hand when systemd-resolved is not there. */
export function manualResolverHint(ip: string, port: number): string {
  return (
    `systemd-resolved is not running, so .vm is not routed automatically. Route the vm domain to ${ip}:${port}, e.g. ` +
    `dnsmasq: \`server=/vm/${ip}#${port}\`; unbound: \`forward-zone: name: "vm." forward-addr: ${ip}@${port}\`; ` +
    `or query it directly: \`dig @${ip} -p ${port} NAME.vm\``
  );
}

export function systemResolver(runner: Runner, opts: { resolvedDir?: string } = {}): Resolver {
  const active = () => existsSync(opts.resolvedDir ?? '/run/systemd/resolve') && onPath('resolvectl') !== undefined;
  return {
    async route(bridge, ip, port) {
      if (!active()) return { routed: false, detail: manualResolverHint(ip, port) };
      await runner.run(['resolvectl', 'dns', bridge, `${ip}:${port}`], { timeoutMs: 15_000 });
      await runner.run(['resolvectl', 'domain', bridge, '~vm'], { timeoutMs: 15_000 });
      return { routed: true, detail: `systemd-resolved sends *.vm on ${bridge} to ${ip}:${port}` };
    },
    async unroute(bridge) {
      if (!active()) return { unrouted: false, detail: 'systemd-resolved is not running: nothing to undo' };
      await runner.run(['resolvectl', 'revert', bridge], { timeoutMs: 15_000, allowFailure: true });
      return { unrouted: true, detail: `reverted resolved's settings for ${bridge}` };
    },
  };
}
