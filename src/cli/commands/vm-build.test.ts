/**
 * `vmCommand(ctx, sub)` builds only the subcommand named (a simple command's
 * start), and everything when the name is an alias, unknown or absent, so
 * help, aliases and suggestions are unchanged.
 */
import { describe, it, expect } from 'vitest';
import type { Command } from '@commander-js/extra-typings';
import type { CliContext } from '../context.js';
import { vmCommand } from './vm.js';

const ctx = { banger: async () => undefined, progress: () => undefined } as unknown as CliContext;
const names = (c: Command<unknown[], Record<string, unknown>>) => c.commands.map((s) => s.name());

describe('vmCommand', () => {
  const all = names(vmCommand(ctx));

  it('without a subcommand builds all of them', () => {
    expect(all).toEqual(expect.arrayContaining(['run', 'list', 'show', 'delete', 'create', 'ssh', 'exec', 'workspace', 'start', 'stop', 'logs', 'ssh-proxy']));
    expect(all.length).toBeGreaterThan(15);
  });

  it('with one, builds only that one, whole (options, arguments)', () => {
    const vm = vmCommand(ctx, 'list');
    expect(names(vm)).toEqual(['list']);
    const list = vm.commands[0]!;
    expect(list.aliases()).toEqual(['ls']);
    expect(list.options.map((o) => o.long)).toEqual(['--json']);
    const run = vmCommand(ctx, 'run').commands[0]!;
    expect(run.options.map((o) => o.long)).toEqual(expect.arrayContaining(['--rm', '--name', '--vcpu', '--memory', '--json']));
  });

  it('a subcommand with its own subcommands comes whole', () => {
    const ws = vmCommand(ctx, 'workspace').commands;
    expect(ws.map((c) => c.name())).toEqual(['workspace']);
    expect(names(ws[0]!)).toEqual(['prepare', 'export', 'show']);
  });

  it('an alias, a typo or a non-subcommand builds everything', () => {
    for (const sub of ['ls', 'rm', 'lst', './repo']) expect(names(vmCommand(ctx, sub))).toEqual(all);
  });

  it('every subcommand built alone is the same as built among all', () => {
    const full = vmCommand(ctx);
    for (const name of all) {
      const alone = vmCommand(ctx, name).commands;
      expect(alone.map((c) => c.name()), name).toEqual([name]);
      const among = full.commands.find((c) => c.name() === name)!;
      expect(alone[0]!.helpInformation(), name).toBe(among.helpInformation());
    }
  });
});
