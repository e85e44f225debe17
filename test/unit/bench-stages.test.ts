/** The warm bench's stage split (test/bench/stages.ts): parsed from progress lines, never timed here. */
import { describe, it, expect } from 'vitest';
import { alternatePairs, cleanLine, deleteStartFromLog, LineStamper, median, meminfoCacheMib, parseFreeUsedMib, smapsSplit, stageBreakdown, type TimedLine } from '../bench/stages.js';

const lines = (xs: Array<[number, string]>): TimedLine[] => xs.map(([at, text]) => ({ at, text }));

const WARM = lines([
  [40, '• creating VM quiet-otter'],
  [41, '• image bookworm'],
  [60, '• root overlay (4.0 GiB, from snapshot qemu-tcg-2c-1024m) and work disk (8.0 GiB)'],
  [100, '• starting QEMU from snapshot qemu-tcg-2c-1024m'],
  [900, '• QEMU running (pid 4242, TCG, resumed from the snapshot)'],
  [901, '• making the clone a VM of its own (clock, machine-id, RNG, MAC, host key, hostname, work disk)'],
  [1500, '• waiting for the guest agent and SSH'],
  [1510, '• guest agent answered'],
  [1800, '• SSH answered'],
  [1805, '• quiet-otter ready in 1.8 s'],
]);

const COLD = lines([
  [40, '• creating VM calm-heron'],
  [41, '• image bookworm'],
  [60, '• root overlay (4.0 GiB) and work disk (8.0 GiB)'],
  [100, '• starting QEMU'],
  [300, '• QEMU running (pid 4243, TCG)'],
  [301, '• waiting for the guest agent and SSH'],
  [9000, '• SSH answered'],
  [9100, '• guest agent answered'],
  [9110, '• calm-heron ready in 9.1 s'],
]);

describe('stageBreakdown', () => {
  it('a warm clone: setup, restore, identity, agent+SSH, exec, delete add up to the total', () => {
    const b = stageBreakdown({ lines: WARM, exitAt: 2600, deleteAt: 2100 });
    expect(b.warm).toBe(true);
    expect(b.snapshot).toBe('qemu-tcg-2c-1024m');
    expect(b.ms).toEqual({ setup: 100, restore: 800, identity: 600, 'agent+SSH': 305, exec: 295, delete: 500 });
    expect(Object.values(b.ms).reduce((x, y) => x + y, 0)).toBe(2600);
    expect(b.missing).toEqual({});
    expect(b.agentAnsweredMs).toBe(10);
    expect(b.sshAnsweredMs).toBe(300);
  });

  it('a cold boot has no identity stage; agent+SSH starts at "QEMU running" (answers in either order)', () => {
    const b = stageBreakdown({ lines: COLD, exitAt: 10000, deleteAt: 9500 });
    expect(b.warm).toBe(false);
    expect(b.ms).toEqual({ setup: 100, restore: 200, 'agent+SSH': 8810, exec: 390, delete: 500 });
    expect(b.missing).toEqual({});
    expect(b.sshAnsweredMs).toBe(8700);
    expect(b.agentAnsweredMs).toBe(8800);
  });

  it('the identity step ends at "guest agent answered" when no step line follows it', () => {
    const noWait = WARM.filter((l) => !l.text.includes('waiting for'));
    const b = stageBreakdown({ lines: noWait, exitAt: 2600, deleteAt: 2100 });
    expect(b.ms.identity).toBe(610);
    expect(b.ms['agent+SSH']).toBe(295);
  });

  it('a missing line is named for its stage, and the stages after it that need it', () => {
    const b = stageBreakdown({ lines: WARM.filter((l) => !l.text.includes('running (pid')), exitAt: 2600, deleteAt: 2100 });
    expect(b.ms.setup).toBe(100);
    expect(b.ms.restore).toBeUndefined();
    expect(b.missing.restore).toMatch(/running/);
    expect(b.missing.identity).toMatch(/running/);
    expect(b.ms.exec).toBe(295);
  });

  it('no "starting" line: warm unknown, setup and restore missing', () => {
    const b = stageBreakdown({ lines: WARM.filter((l) => !l.text.startsWith('• starting')), exitAt: 2600 });
    expect(b.warm).toBeUndefined();
    expect(Object.keys(b.missing)).toEqual(expect.arrayContaining(['setup', 'restore']));
  });

  it('without the delete time, exec and delete are reported together', () => {
    const b = stageBreakdown({ lines: WARM, exitAt: 2600 });
    expect(b.ms.exec).toBeUndefined();
    expect(b.missing.exec).toMatch(/daemon log/);
    expect(b.execAndDeleteMs).toBe(795);
  });

  it('a delete time outside the sample (another run\'s) is not used', () => {
    expect(stageBreakdown({ lines: WARM, exitAt: 2600, deleteAt: 50 }).execAndDeleteMs).toBe(795);
    expect(stageBreakdown({ lines: WARM, exitAt: 2600, deleteAt: 9999 }).execAndDeleteMs).toBe(795);
  });
});

describe('LineStamper / cleanLine', () => {
  it('stamps a line with the arrival of its newline, across chunks, and drops colour codes', () => {
    let now = 0;
    const st = new LineStamper(() => now);
    now = 5;
    st.push('• start');
    now = 9;
    st.push('ing QEMU\n\x1b[2m• QEMU running (pid 1, TCG)\x1b[22m\r\n• tail');
    now = 12;
    st.end();
    expect(st.lines).toEqual([
      { at: 9, text: 'starting QEMU' },
      { at: 9, text: 'QEMU running (pid 1, TCG)' },
      { at: 12, text: 'tail' },
    ]);
    expect(cleanLine('  • SSH answered  ')).toBe('SSH answered');
  });
});

describe('deleteStartFromLog', () => {
  const log = [
    '{"level":30,"time":1000,"method":"vm.delete","ms":50,"msg":"request ok"}',
    'not json vm.delete',
    '{"level":30,"time":5000,"method":"vm.create","ms":4000,"msg":"request ok"}',
    '{"level":30,"time":7000,"method":"vm.delete","ms":400,"msg":"request ok"}',
    '{"level":40,"time":7100,"method":"vm.delete","ms":5,"msg":"request failed"}',
    '',
  ].join('\n');

  it('the last vm.delete that ended since the sample began: its start (time - ms)', () => {
    expect(deleteStartFromLog(log, 2000)).toBe(7095);
    expect(deleteStartFromLog(log.split('\n').slice(0, 4).join('\n'), 2000)).toBe(6600);
  });

  it('none since then, or no log: undefined', () => {
    expect(deleteStartFromLog(log, 8000)).toBeUndefined();
    expect(deleteStartFromLog('', 0)).toBeUndefined();
  });
});

describe('parseFreeUsedMib / median', () => {
  it('the used column of Mem:', () => {
    const free = '               total        used        free      shared  buff/cache   available\nMem:             975         123         600           0         251         852\nSwap:              0           0           0\n';
    expect(parseFreeUsedMib(free)).toBe(123);
    expect(parseFreeUsedMib('garbage')).toBeUndefined();
  });

  it('median of odd and even counts', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });
});

describe('smapsSplit and meminfoCacheMib (the memory bench\'s breakdown)', () => {
  const map = (sizeKb: number, rssKb: number) => `7f0000000000-7f0000001000 rw-p 00000000 00:00 0\nSize:           ${sizeKb} kB\nKernelPageSize:        4 kB\nRss:            ${rssKb} kB\nPss:            ${rssKb} kB\n`;
  it('puts the one mapping as large as the guest RAM apart from the rest', () => {
    const text = map(2048, 1024) + map(1048576 + 2048, 180_000) + map(65536, 40_000) + map(1048576 + 2048, 5);
    expect(smapsSplit(text, 1024 * 2 ** 20)).toEqual({ ramKb: 180_000, otherKb: 1024 + 40_000 + 5 });
  });
  it('has no split when no mapping is as large as the guest RAM', () => {
    expect(smapsSplit(map(2048, 1024), 1024 * 2 ** 20)).toBeUndefined();
    expect(smapsSplit('', 1)).toBeUndefined();
  });
  it('reads Buffers + Cached in MiB', () => {
    expect(meminfoCacheMib('MemTotal:  1000000 kB\nBuffers:    2048 kB\nCached:   100352 kB\nSwapCached: 0 kB\n')).toBe(100);
    expect(meminfoCacheMib('MemTotal: 1 kB\n')).toBeUndefined();
  });
});

describe('alternatePairs', () => {
  it('alternates which side runs first, pairs the samples and logs each pair', async () => {
    const order: string[] = [];
    let n = 0;
    const side = (label: string, ms: number) => ({ label, run: async () => (order.push(label), ms + n++) });
    const lines: string[] = [];
    const r = await alternatePairs(3, side('x', 1000), side('y', 2000), (l) => lines.push(l));
    expect(order).toEqual(['x', 'y', 'y', 'x', 'x', 'y']);
    expect(r.a).toEqual([1000, 1003, 1004]);
    expect(r.b).toEqual([2001, 2002, 2005]);
    expect(r.ratios).toEqual([1000 / 2001, 1003 / 2002, 1004 / 2005]);
    expect(lines[1]).toBe('  pair 2: x 1.00 s  y 2.00 s  x/y 0.50');
  });
});
