// Buckets every row by its owner, as synchro's `UserBucket` does (the Rust `by-owner` example,
// in JavaScript; `sluice eval` gives the same outcomes):
// - a `user_id` that is text or an integer gives `user:<user_id>`;
// - a null or empty `user_id`, or a table without a `user_id` column, gives `global`;
// - a `user_id` PostgreSQL did not send (unchanged TOAST) or of another kind is an error.
//
// Build: sluice-rules-build rule.js -o by_owner.wasm

import { Rule, RuleError, describe, exportRule } from 'sluice-rules';

/** The by-owner rule. No configuration. */
export class ByOwner extends Rule {
  buckets(change) {
    const owner = change.row.get('user_id');
    switch (owner.tag) {
      case 'text':
      case 'numeric':
        return [owner.val === '' ? 'global' : `user:${owner.val}`];
      case 'int':
        return [`user:${owner.val}`];
      case 'null':
        return ['global'];
      case 'unchanged':
        throw new RuleError(`${change.table}: user_id was not sent (unchanged TOAST value); cannot bucket`);
      default:
        throw new RuleError(`${change.table}: user_id must be text or an integer, got ${describe(owner)}`);
    }
  }
}

export const { init, evaluate } = exportRule(ByOwner);
