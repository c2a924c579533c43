// Write sluice bucket rules in JavaScript; see index.d.ts for the documented API.
export { KINDS, Value, describe, valueEquals } from './value.js';
export { Change, Row } from './change.js';
export { ClockUnavailable, randomFor } from './determinism.js';
export { ConfigError, parseConfig } from './config.js';
export {
  Outcome, Relation, Rule, RuleError, errorMessage, evaluate, evaluateBatch, exportRule, log,
} from './rule.js';
