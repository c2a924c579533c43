/**
 * Write sluice bucket rules in JavaScript.
 *
 * A rule decides, for every row change sluice reads from PostgreSQL, whether the change is
 * kept and which buckets (`user:42`, `org:7`, `global`) the row belongs to. Extend {@link Rule},
 * export it with {@link exportRule}, and build with `sluice-rules-build rule.js -o rules.wasm`
 * (jco 1.35.0 / ComponentizeJS 0.23.0, `-d stdio random clocks http fetch-event`).
 *
 * @example
 * ```js
 * import { Rule, RuleError, describe, exportRule } from 'sluice-rules';
 *
 * class ByOwner extends Rule {
 *   buckets(change) {
 *     const owner = change.row.get('user_id');
 *     if (owner.tag === 'text' && owner.val) return [`user:${owner.val}`];
 *     if (owner.tag === 'int') return [`user:${owner.val}`];
 *     if (owner.tag === 'null') return ['global'];
 *     throw new RuleError(`user_id must be text or an integer, got ${describe(owner)}`);
 *   }
 * }
 *
 * export const { init, evaluate } = exportRule(ByOwner);
 * ```
 *
 * Determinism: a rule has no clock (`Date.now()`, `new Date()` and `performance.now()` throw
 * {@link ClockUnavailable}, an error outcome for that change), and `Math.random` is seeded from
 * the change's LSN before each change.
 */

/** SQL NULL. */
export interface NullValue { tag: 'null'; val?: undefined }
/** A TOASTed value PostgreSQL did not send; never the same as null. */
export interface UnchangedValue { tag: 'unchanged'; val?: undefined }
/** bool. */
export interface BoolValue { tag: 'bool'; val: boolean }
/** int2, int4, int8 (WIT `s64`): always a bigint. */
export interface IntValue { tag: 'int'; val: bigint }
/** float4, float8, NaN and the infinities included. */
export interface FloatValue { tag: 'float'; val: number }
/** bytea. */
export interface BytesValue { tag: 'bytes'; val: Uint8Array | number[] }
/**
 * The text-carrying kinds: text (also uuid, enums, unknown types), numeric (exact decimal
 * text), json (json, jsonb, arrays, composites as JSON text), date (`YYYY-MM-DD`), time,
 * timestamp (`YYYY-MM-DDTHH:MM:SS[.ffffff]`) and timestamptz (the same in UTC, with `Z`).
 */
export interface TextLikeValue {
  tag: 'text' | 'numeric' | 'json' | 'date' | 'time' | 'timestamp' | 'timestamptz';
  val: string;
}
/** A column value: jco's shape of the WIT `value` variant. */
export type Value =
  | NullValue | UnchangedValue | BoolValue | IntValue | FloatValue | BytesValue | TextLikeValue;

/** Every value kind. */
export const KINDS: readonly Value['tag'][];

/** Value builders; the host sends the same shapes. */
export const Value: {
  null(): NullValue;
  unchanged(): UnchangedValue;
  bool(b: boolean): BoolValue;
  /** @example Value.int(42) // { tag: 'int', val: 42n } */
  int(n: number | bigint): IntValue;
  float(n: number): FloatValue;
  text(s: string): TextLikeValue;
  numeric(s: string): TextLikeValue;
  bytes(b: ArrayLike<number>): BytesValue;
  /** Takes JSON text, or any value to stringify. */
  json(s: unknown): TextLikeValue;
  date(s: string): TextLikeValue;
  time(s: string): TextLikeValue;
  timestamp(s: string): TextLikeValue;
  timestamptz(s: string): TextLikeValue;
  /**
   * The value a JavaScript value stands for: null/undefined → null, boolean → bool, bigint and
   * integral number → int, other number → float, string → text, Uint8Array → bytes, other
   * objects → json. Throws TypeError otherwise.
   */
  of(js: unknown): Value;
};

/** Whether two values have the same kind and payload. */
export function valueEquals(a: Value, b: Value): boolean;

/**
 * The value as the Rust SDK's `{:?}` prints it, so error messages read the same in every
 * language.
 * @example describe(Value.bool(true)) // 'Value::Bool(true)'
 */
export function describe(value: Value): string;

/** One column: WIT `column`. */
export interface Column { name: string; typeName: string; key: boolean }
/** A table of a batch: WIT `table`. */
export interface Table { name: string; columns: Column[] }
/** One change as the host sends it: WIT `change` (rows positional, `lsn` a bigint). */
export interface WireChange {
  table: number;
  op: Operation;
  new?: Value[];
  old?: Value[];
  lsn: bigint;
}
/** WIT `operation`. */
export type Operation = 'insert' | 'update' | 'delete';

/** A row, read by column name. */
export class Row {
  /** The value of column `name`; a column the table does not have reads as null. */
  get(name: string): Value;
  /** Whether the table has a column `name`. */
  has(name: string): boolean;
}

/** One row change, as a rule sees it. */
export class Change {
  constructor(table: Table, wire: WireChange);
  /** The table's name, schema-qualified unless `public` (`items`, `billing.invoices`). */
  readonly table: string;
  /** The table's columns, in order. */
  readonly columns: Column[];
  readonly op: Operation;
  /** The row after the change; undefined for deletes. */
  readonly new: Row | undefined;
  /**
   * The row before the change where PostgreSQL sent one (full under REPLICA IDENTITY FULL,
   * else only key columns set); undefined for inserts.
   */
  readonly old: Row | undefined;
  /** The new row, or the old row for a delete. */
  readonly row: Row;
  /** LSN of the change's commit record (0n in `sluice eval`). */
  readonly lsn: bigint;
}

/** WIT `outcome`. */
export type Outcome =
  | { tag: 'drop'; val?: undefined }
  | { tag: 'keep'; val: string[] }
  | { tag: 'error'; val: string };
/** Outcome builders. */
export const Outcome: {
  keep(...buckets: string[]): Outcome;
  drop(): Outcome;
  error(message: string): Outcome;
};

/** WIT `relation`: a foreign key along which memberships flow. */
export interface Relation { child: string; columns: string[]; parent: string; flow: 'inherit' | 'share' }
/** Relation builders. */
export const Relation: {
  /** Rows of `child` belong to every bucket of their `parent` row. */
  inherit(child: string, columns: string[], parent: string): Relation;
  /** The `parent` row belongs to every own bucket of its `child` rows. */
  share(child: string, columns: string[], parent: string): Relation;
};

/** Thrown for one change's `error(message)` outcome, with exactly `message`. */
export class RuleError extends Error {}
/** Thrown by the clock readers while a rule runs. */
export class ClockUnavailable extends Error {}
/** The configuration is not valid TOML or JSON; message `config (TOML): line N: ...`. */
export class ConfigError extends Error {}

/**
 * A bucket rule: constructed with no arguments, `init(config)`, `relations()`, then per
 * change `filter` and, if kept, `buckets`.
 */
export class Rule {
  /** Reads the configuration text (see {@link parseConfig}); a throw rejects the module. */
  init(config: string): void;
  /** The relations the host applies; none by default. */
  relations(): Relation[];
  /** Whether the change is kept; all by default. */
  filter(change: Change): boolean;
  /** The bucket ids; throw {@link RuleError} for an error outcome. */
  buckets(change: Change): string[];
}

/** The message a thrown value gives: RuleError's own, `Name: message` for other errors. */
export function errorMessage(thrown: unknown): string;
/** One change through a rule as the module does (no clock, seeded Math.random). */
export function evaluate(rule: Rule, change: Change): Outcome;
/** A batch through a rule, one outcome per change. */
export function evaluateBatch(rule: Rule, tables: Table[], changes: WireChange[]): Outcome[];
/**
 * The component's exports: `export const { init, evaluate } = exportRule(MyRule);`.
 * `init` throws the message as a string on failure (ComponentizeJS's `err`).
 */
export function exportRule(rule: new () => Rule): {
  init(config: string): { relations: Relation[] };
  evaluate(tables: Table[], changes: WireChange[]): Outcome[];
};
/** A line to the host's log; natively to stderr. */
export function log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
/**
 * The configuration as an object: `{}` when empty, JSON when it starts with `{`, else TOML
 * (tables, dotted and quoted keys, strings, numbers, booleans, arrays, inline tables).
 * @example parseConfig('[tenant_columns]\nitems = "org_id"') // { tenant_columns: { items: 'org_id' } }
 * @throws ConfigError
 */
export function parseConfig(text: string): Record<string, unknown>;
/** The first `count` numbers Math.random gives during a change with this LSN. */
export function randomFor(lsn: bigint | number, count: number): number[];
