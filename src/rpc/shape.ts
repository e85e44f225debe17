/**
 * Shapes: the small schema checker of what a client reads off the wire (RPC
 * results, src/rpc/results.ts, and the message envelope, src/rpc/framing.ts).
 * The daemon's params and everything else use zod; the client side does not,
 * because loading zod and building its schemas was about a third of a simple
 * CLI command's time (issue 12: a command's round trip within 2× `node -e 0`).
 *
 * What zod's defaults are, a shape is too: an object drops keys it does not
 * know (or refuses them, `strict`), a number is finite, an optional key may be
 * missing or undefined. A failed parse reports the first problem with its
 * path (`['vms', 1, 'name']`), the same `{ success, data, error.issues }` as
 * zod's safeParse, so callers and tests read both alike.
 */

export type Path = Array<string | number>;

export interface Issue {
  path: Path;
  message: string;
}

export type Parsed<T> = { success: true; data: T; error?: undefined } | { success: false; data?: undefined; error: { issues: Issue[] } };

/** A failed check, thrown up through the nested shapes; each level adds its key to the front of the path. */
class Mismatch extends Error {
  readonly path: Path = [];
}

function fail(message: string): never {
  throw new Mismatch(message);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

/** Runs `run` for one key or index, putting it on the path of a mismatch below. */
function at<T>(key: string | number, run: () => T): T {
  try {
    return run();
  } catch (e) {
    if (e instanceof Mismatch) e.path.unshift(key);
    throw e;
  }
}

export class Shape<T> {
  /** The type the shape checks (types only: never set). */
  declare readonly _output: T;

  constructor(readonly check: (v: unknown) => T) {}

  safeParse(v: unknown): Parsed<T> {
    try {
      return { success: true, data: this.check(v) };
    } catch (e) {
      if (e instanceof Mismatch) return { success: false, error: { issues: [{ path: e.path, message: e.message }] } };
      throw e;
    }
  }

  parse(v: unknown): T {
    const r = this.safeParse(v);
    if (r.success) return r.data;
    const issue = r.error.issues[0]!;
    throw new Error(`${issue.path.length ? `${issue.path.join('.')}: ` : ''}${issue.message}`);
  }

  nullable(): Shape<T | null> {
    return new Shape((v) => (v === null ? null : this.check(v)));
  }

  /** As an object's key: it may be missing (or undefined). */
  optional(): Optional<T> {
    return new Optional((v) => (v === undefined ? undefined : this.check(v)));
  }

  /** A further check: `problem` returns what is wrong, or undefined. */
  refine(problem: (v: T) => string | undefined): Shape<T> {
    return new Shape((v) => {
      const t = this.check(v);
      const p = problem(t);
      if (p !== undefined) fail(p);
      return t;
    });
  }

  /** The checked value, turned into another. */
  map<U>(fn: (v: T) => U): Shape<U> {
    return new Shape((v) => fn(this.check(v)));
  }
}

/** A shape whose key an object may lack (see Shape.optional). */
export class Optional<T> extends Shape<T | undefined> {
  declare readonly _optional: true;
}

export type Infer<S> = S extends Shape<infer T> ? T : never;

export type ObjectSpec = Record<string, Shape<unknown>>;
type OptionalKeys<S extends ObjectSpec> = { [K in keyof S]: S[K] extends Optional<unknown> ? K : never }[keyof S];
type Flat<T> = { [K in keyof T]: T[K] };
export type ObjectOf<S extends ObjectSpec> = Flat<{ [K in Exclude<keyof S, OptionalKeys<S>>]: Infer<S[K]> } & { [K in OptionalKeys<S>]?: Infer<S[K]> }>;

export function string(o: { min?: number; max?: number; pattern?: RegExp; patternMessage?: string } = {}): Shape<string> {
  return new Shape((v) => {
    if (typeof v !== 'string') fail(`expected a string, got ${typeName(v)}`);
    if (o.min !== undefined && v.length < o.min) fail(o.min === 1 ? 'must not be empty' : `must be at least ${o.min} characters`);
    if (o.max !== undefined && v.length > o.max) fail(`must be at most ${o.max} characters`);
    if (o.pattern && !o.pattern.test(v)) fail(o.patternMessage ?? `must match ${o.pattern}`);
    return v;
  });
}

/** A finite number; `int`: a safe integer. */
export function number(o: { int?: boolean; min?: number; max?: number } = {}): Shape<number> {
  return new Shape((v) => {
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(`expected a finite number, got ${typeof v === 'number' ? String(v) : typeName(v)}`);
    if (o.int && !Number.isSafeInteger(v)) fail('expected a whole number');
    if (o.min !== undefined && v < o.min) fail(`must be at least ${o.min}`);
    if (o.max !== undefined && v > o.max) fail(`must be at most ${o.max}`);
    return v;
  });
}

export function boolean(): Shape<boolean> {
  return new Shape((v) => (typeof v === 'boolean' ? v : fail(`expected a boolean, got ${typeName(v)}`)));
}

export function literal<const L extends string | number | boolean>(value: L): Shape<L> {
  return new Shape((v) => (v === value ? (v as L) : fail(`expected ${JSON.stringify(value)}`)));
}

export function oneOf<const V extends readonly string[]>(values: V): Shape<V[number]> {
  return new Shape((v) => ((values as readonly unknown[]).includes(v) ? (v as V[number]) : fail(`expected one of ${values.join(', ')}`)));
}

/** Anything (JSON already bounded the bytes); the caller checks it. */
export function unknown(): Shape<unknown> {
  return new Shape((v) => v);
}

export function never(message: string): Shape<never> {
  return new Shape(() => fail(message));
}

export function array<S extends Shape<unknown>>(item: S, o: { max: number }): Shape<Array<Infer<S>>> {
  return new Shape((v) => {
    if (!Array.isArray(v)) fail(`expected an array, got ${typeName(v)}`);
    if (v.length > o.max) fail(`must have at most ${o.max} items`);
    return v.map((x, i) => at(i, () => item.check(x) as Infer<S>));
  });
}

export class ObjectShape<S extends ObjectSpec> extends Shape<ObjectOf<S>> {
  constructor(
    readonly spec: S,
    readonly strict: boolean,
  ) {
    super((v) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`expected an object, got ${typeName(v)}`);
      const inObj = v as Record<string, unknown>;
      if (strict) {
        for (const k of Object.keys(inObj)) if (!Object.prototype.hasOwnProperty.call(spec, k)) at(k, () => fail('unexpected key'));
      }
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(spec)) {
        const value = Object.prototype.hasOwnProperty.call(inObj, k) ? inObj[k] : undefined;
        const checked = at(k, () => (value === undefined && !(spec[k] instanceof Optional) ? fail('required') : spec[k]!.check(value)));
        if (checked !== undefined) out[k] = checked;
      }
      return out as ObjectOf<S>;
    });
  }

  /** This object's keys and more (a key in `more` replaces this one's). */
  extend<M extends ObjectSpec>(more: M): ObjectShape<Flat<Omit<S, keyof M> & M>> {
    return new ObjectShape({ ...this.spec, ...more } as Flat<Omit<S, keyof M> & M>, this.strict);
  }
}

/** An object: unknown keys are dropped, or with `strict` refused. */
export function object<S extends ObjectSpec>(spec: S, o: { strict?: boolean } = {}): ObjectShape<S> {
  return new ObjectShape(spec, o.strict ?? false);
}

/** The first shape that matches; when none does, the problem of the last one. */
export function union<S extends Array<Shape<unknown>>>(...shapes: S): Shape<Infer<S[number]>> {
  return new Shape((v) => {
    let last = new Mismatch('no shape to match');
    for (const s of shapes) {
      try {
        return s.check(v) as Infer<S[number]>;
      } catch (e) {
        if (!(e instanceof Mismatch)) throw e;
        last = e;
      }
    }
    throw last;
  });
}
