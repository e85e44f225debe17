/**
 * The zod schemas of names and ids, for RPC params (src/rpc/methods.ts),
 * results (src/rpc/results.ts) and store rows (src/store/store.ts). Apart
 * from src/model/names.ts so that what only validates a name (src/paths) does
 * not load zod: every CLI command loads paths, and zod costs ~20 ms to load.
 */
import { z } from 'zod';
import { vmIdProblem, vmNameProblem } from './names.js';

/** A zod string checked by `problem`; the issue message is `<what>: <problem>` (never the whole input). */
function grammar(what: string, problem: (s: string) => string | undefined) {
  return z.string().superRefine((s, ctx) => {
    const p = problem(s);
    if (p !== undefined) ctx.addIssue({ code: 'custom', message: `invalid ${what}: ${p}` });
  });
}

/** The schemas: RPC params (src/rpc/methods.ts), store rows (src/store/store.ts), files on disk. */
export const vmNameSchema = grammar('VM name', vmNameProblem);
export const imageNameSchema = grammar('image name', vmNameProblem);
export const vmIdSchema = grammar('VM id', vmIdProblem);
