import { describe, it, expect } from 'vitest';
import { checkBridgeName, checkGuestIp, checkTapName, gatewayOf, guestIps, intToIp, ipToInt, isTapName, macForIp, parseSubnet, tapName } from './net.js';

describe('bridge network arithmetic', () => {
  it('parses addresses strictly', () => {
    expect(intToIp(ipToInt('10.213.0.17'))).toBe('10.213.0.17');
    for (const bad of ['10.213.0', '256.1.1.1', '01.2.3.4', '1.2.3.4 ', 'a.b.c.d']) expect(() => ipToInt(bad)).toThrow(/not an IPv4/);
  });
  it('parses subnets, refusing host bits and odd prefixes', () => {
    const s = parseSubnet('10.213.0.0/24');
    expect(gatewayOf(s)).toBe('10.213.0.1');
    expect(guestIps(s)).toHaveLength(253);
    expect(guestIps(s)[0]).toBe('10.213.0.2');
    expect(guestIps(s).at(-1)).toBe('10.213.0.254');
    expect(() => parseSubnet('10.213.0.5/24')).toThrow(/did you mean 10\.213\.0\.0\/24/);
    expect(() => parseSubnet('10.0.0.0/8')).toThrow(/between \/16 and \/28/);
  });
  it('guest addresses exclude network, gateway and broadcast, and anything outside', () => {
    const s = parseSubnet('10.213.0.0/24');
    expect(checkGuestIp(s, '10.213.0.9')).toBe('10.213.0.9');
    for (const bad of ['10.213.0.0', '10.213.0.1', '10.213.0.255', '10.213.1.9', '8.8.8.8']) expect(() => checkGuestIp(s, bad)).toThrow(/not a guest address/);
  });
  it('tap and bridge names carry the prefix and fit IFNAMSIZ', () => {
    expect(checkTapName('bgr0', tapName('bgr0', 12))).toBe('bgr0t12');
    for (const bad of ['eth0', 'bgr0t', 'bgr0t01', 'bgr0t12345', 'bgr1t1', 'bgr0t1 ', 'xbgr0t1']) expect(() => checkTapName('bgr0', bad)).toThrow(/not a banger tap name/);
    expect(checkBridgeName('bgr0')).toBe('bgr0');
    for (const bad of ['br0', 'bgr-0', 'bgrverylongname', 'BGR0']) expect(() => checkBridgeName(bad)).toThrow(/not a banger bridge name/);
  });
  it('bridge names and tap names are disjoint by construction (no bridge is another bridge\'s tap)', () => {
    // the issue's case: bgr0t1 as a bridge was tap 1 of bgr0, so bgr0's clean-up deleted it
    for (const bad of ['bgr0t1', 'bgrt', 'bgrt0', 'bgrtest', 'bgr0t']) expect(() => checkBridgeName(bad)).toThrow(/not a banger bridge name/);
    for (const ok of ['bgr', 'bgr0', 'bgr1', 'bgrdev', 'bgrs1a2b', 'bgru00ff', 'bgr1234567']) expect(checkBridgeName(ok)).toBe(ok);
    // every valid bridge of a deterministic sample, against every other: a tap of one is a tap of no other and never a bridge
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
    const names = new Set(['bgr', 'bgr0', 'bgr1', 'bgr01', 'bgr10', 'bgr0t1', 'bgr0t', 'bgrt1']);
    while (names.size < 400) names.add('bgr' + Array.from({ length: rnd(5) }, () => alphabet[rnd(alphabet.length)]).join(''));
    const isBridge = (n: string) => {
      try {
        return checkBridgeName(n) === n;
      } catch {
        return false;
      }
    };
    const bridges = [...names].filter(isBridge);
    expect(bridges.length).toBeGreaterThan(100);
    const wrong: string[] = [];
    for (const b of bridges) {
      for (const i of [0, 1, 12, 9999]) {
        const t = tapName(b, i);
        if (isBridge(t)) wrong.push(`${t} is a bridge name`);
        for (const other of bridges) if (isTapName(other, t) !== (other === b)) wrong.push(`${t} (tap of ${b}) vs ${other}`);
      }
      for (const other of bridges) if (isTapName(other, b)) wrong.push(`bridge ${b} is a tap of ${other}`);
    }
    expect(wrong).toEqual([]);
    expect(() => checkBridgeName(tapName('bgr0', 1))).toThrow(/not a banger bridge name/);
  });
  it('MACs are locally administered and follow the IP', () => {
    expect(macForIp('10.213.0.17')).toBe('52:54:00:d5:00:11');
  });
});
