import { describe, it, expect } from 'vitest';
import { checkBridgeName, checkGuestIp, checkTapName, gatewayOf, guestIps, intToIp, ipToInt, macForIp, parseSubnet, tapName } from './net.js';

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
  it('MACs are locally administered and follow the IP', () => {
    expect(macForIp('10.213.0.17')).toBe('52:54:00:d5:00:11');
  });
});
