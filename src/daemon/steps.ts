/**
 * VM start as a list of steps with rollback: a failed (or aborted) step
 * rolls back every step before it, in reverse order. Each step reports
 * progress. Rollback errors are logged, never thrown over the original error.
 */
import { BangerError } from '../errors/errors.js';

export interface Step {
  name: string;
  /** Shown to the user when the step starts. */
  message: string;
  run: () => Promise<void>;
  rollback?: () => Promise<void>;
}

export interface StepHooks {
  onStart?: (step: Step) => void;
  onRollbackError?: (step: Step, err: unknown) => void;
  signal?: AbortSignal;
}

export async function runSteps(steps: Step[], hooks: StepHooks = {}): Promise<void> {
  const done: Step[] = [];
  try {
    for (const step of steps) {
      if (hooks.signal?.aborted) {
        throw new BangerError('interrupted', `interrupted before ${step.name}`, 'the client went away; nothing was left behind');
      }
      hooks.onStart?.(step);
      done.push(step);
      await step.run();
    }
  } catch (err) {
    for (const step of done.reverse()) {
      if (!step.rollback) continue;
      try {
        await step.rollback();
      } catch (rbErr) {
        hooks.onRollbackError?.(step, rbErr);
      }
    }
    throw err;
  }
}
