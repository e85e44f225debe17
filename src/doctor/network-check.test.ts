import { describe, it, expect } from 'vitest';
import { DEFAULT_CONFIG } from '../config/config.js';
import { networkChecks } from './checks.js';
import type { HelperClient } from '../helper/client.js';

const info = { protocol: 1, version: 't', bridge: 'bgr0', subnet: '10.213.0.0/24', gateway: '10.213.0.1', ownerUid: 1000 };
const answering = async () => ({ hello: info, close: () => undefined }) as unknown as HelperClient;
const silent = async (): Promise<HelperClient> => {
  throw new Error('connect ENOENT /run/banger/helper.sock');
};

describe('doctor: network mode and why', () => {
  it('user when configured so', async () => {
    const [c] = await networkChecks({ ...DEFAULT_CONFIG, network: 'user' }, silent);
    expect(c).toMatchObject({ status: 'pass', detail: expect.stringMatching(/^user \(network = "user" in config\)/) });
  });
  it('auto without a helper: user, and how to get bridge networking', async () => {
    const [c] = await networkChecks({ ...DEFAULT_CONFIG, network: 'auto' }, silent);
    expect(c!.status).toBe('pass');
    expect(c!.detail).toMatch(/^user: no root helper on \/run\/banger\/helper\.sock/);
    expect(c!.detail).toMatch(/sudo banger system install/);
  });
  it('bridge required without a helper: fail', async () => {
    const [c] = await networkChecks({ ...DEFAULT_CONFIG, network: 'bridge' }, silent);
    expect(c!.status).toBe('fail');
  });
  it('with a helper: bridge, its subnet, and how .vm resolves', async () => {
    const checks = await networkChecks({ ...DEFAULT_CONFIG, network: 'auto' }, answering);
    expect(checks[0]!.detail).toMatch(/^bridge: the root helper answers .*\(bridge bgr0, subnet 10\.213\.0\.0\/24/);
    expect(checks[1]!.name).toBe('vm dns');
    expect(checks[1]!.detail).toMatch(/10\.213\.0\.1/);
  });
});
