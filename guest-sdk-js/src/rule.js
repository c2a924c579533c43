// The class a rule extends, and how a batch is run through it.

import { Change } from './change.js';
import { deterministic } from './determinism.js';

/**
 * Throw it to give one change an `error(message)` outcome with exactly `message`; the host
 * applies its failure policy to that change alone. Any other thrown Error does too, as
 * `"<name>: <message>"`.
 */
export class RuleError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RuleError';
  }
}

/** Relations along which memberships flow (the WIT `relation`); `flow` is 'inherit' or 'share'. */
export const Relation = Object.freeze({
  /** Rows of `child` belong to every bucket of their `parent` row. */
  inherit: (child, columns, parent) => ({ child, columns: [...columns], parent, flow: 'inherit' }),
  /** The `parent` row belongs to every own bucket of its `child` rows. */
  share: (child, columns, parent) => ({ child, columns: [...columns], parent, flow: 'share' }),
});

/** Outcome builders, in jco's shape of the WIT `outcome` variant. */
export const Outcome = Object.freeze({
  keep: (...buckets) => ({ tag: 'keep', val: buckets }),
  drop: () => ({ tag: 'drop' }),
  error: (message) => ({ tag: 'error', val: message }),
});

/**
 * A bucket rule. sluice constructs it with no arguments, calls `init(config)`, asks
 * `relations()`, then for every change calls `filter(change)` and, if kept,
 * `buckets(change)`.
 */
export class Rule {
  /** Reads the configuration text (see parseConfig); throwing rejects this module version. */
  init(config) {} // eslint-disable-line no-unused-vars

  /** The relations the host applies; none by default. */
  relations() {
    return [];
  }

  /** Whether the change is kept; a dropped change belongs to no bucket. Keeps all. */
  filter(change) { // eslint-disable-line no-unused-vars
    return true;
  }

  /** The bucket ids the row belongs to. Throw RuleError for an error outcome. */
  buckets(change) { // eslint-disable-line no-unused-vars
    throw new Error(`${this.constructor.name} must define buckets(change)`);
  }
}

/** The message a thrown value gives: RuleError's own, `Name: message` for other errors. */
export function errorMessage(thrown) {
  if (thrown instanceof RuleError) return thrown.message;
  if (thrown instanceof Error) return `${thrown.name}: ${thrown.message}`;
  return String(thrown);
}

function one(rule, change, reseed) {
  reseed(change.lsn);
  try {
    if (!rule.filter(change)) return { tag: 'drop' };
    const buckets = rule.buckets(change);
    if (!Array.isArray(buckets) || !buckets.every((b) => typeof b === 'string')) {
      return { tag: 'error', val: `buckets must return an array of strings, got ${String(buckets)}` };
    }
    return { tag: 'keep', val: buckets };
  } catch (thrown) {
    return { tag: 'error', val: errorMessage(thrown) };
  }
}

/**
 * Runs one change through a rule as the exported module does: filter, then buckets, with no
 * clock and Math.random seeded from `change.lsn`; a throw is this change's error outcome.
 */
export function evaluate(rule, change) {
  return deterministic((reseed) => one(rule, change, reseed));
}

/**
 * One outcome per change of a batch as the host sends it (`tables`, positional `changes`),
 * which is what the exported `evaluate` does.
 */
export function evaluateBatch(rule, tables, changes) {
  return deterministic((reseed) => changes.map((wire) => {
    const table = tables[wire.table];
    if (!table) {
      return { tag: 'error', val: `change refers to table #${wire.table} but the batch has ${tables.length} tables` };
    }
    return one(rule, new Change(table, wire), reseed);
  }));
}

/**
 * The component's exports for a Rule subclass: `export const { init, evaluate } =
 * exportRule(MyRule);` in the module given to the build. `init` constructs the rule, calls
 * its `init(config)` and returns its relations; a throw there rejects the module version
 * with its message.
 */
export function exportRule(RuleClass) {
  let rule = new RuleClass();
  return {
    init(config) {
      try {
        const fresh = new RuleClass();
        fresh.init(config);
        const relations = fresh.relations().map((r) => ({
          child: r.child, columns: [...r.columns], parent: r.parent, flow: r.flow,
        }));
        rule = fresh;
        return { relations };
      } catch (thrown) {
        // ComponentizeJS turns a thrown string into `err(string)`; a thrown Error would trap.
        throw errorMessage(thrown);
      }
    },
    evaluate(tables, changes) {
      return evaluateBatch(rule, tables, changes);
    },
  };
}

/**
 * Writes a line to the host's log (`level`: 'debug', 'info', 'warn' or 'error'), tagged with
 * the module's version; natively, to stderr. An error line explains a trap that follows it.
 */
export function log(level, message) {
  const host = globalThis.__sluiceHostLog;
  if (host) host(level, String(message));
  else console.error(`[${level}] ${message}`);
}
