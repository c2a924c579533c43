// Building changes by hand, to unit-test a rule natively with `node --test` (no Wasm build, no
// database), mirroring the Rust SDK's `testing` module.

import { Change } from './change.js';
import { Value } from './value.js';

/**
 * A table to build test changes for: columns typed `unknown`, the first the key unless
 * `options.key` names the key columns. Values are `Value`s or plain JavaScript values (see
 * `Value.of`).
 */
export class TestTable {
  constructor(name, columns, options = {}) {
    this.table = {
      name,
      columns: columns.map((c, i) => (typeof c === 'string'
        ? { name: c, typeName: 'unknown', key: options.key ? options.key.includes(c) : i === 0 }
        : c)),
    };
  }

  row(values) {
    if (values == null) return undefined;
    if (values.length !== this.table.columns.length) {
      throw new Error(`${this.table.name} has ${this.table.columns.length} columns, got ${values.length} values`);
    }
    return values.map((v) => Value.of(v));
  }

  /** A batch of one change, with full control over both rows and the LSN. */
  change(op, { newRow, oldRow, lsn = 0n } = {}) {
    return new TestBatch([this.table], [{
      table: 0, op, new: this.row(newRow), old: this.row(oldRow), lsn: BigInt(lsn),
    }]);
  }

  /** An insert of `values`. */
  insert(values, lsn = 0n) { return this.change('insert', { newRow: values, lsn }); }

  /** An update to `values`, without an old row. */
  update(values, lsn = 0n) { return this.change('update', { newRow: values, lsn }); }

  /** A delete of `values`. */
  delete(values, lsn = 0n) { return this.change('delete', { oldRow: values, lsn }); }
}

/** Changes in the host's batch shape, for `evaluate` (one) or `evaluateBatch` (all). */
export class TestBatch {
  constructor(tables, changes) {
    this.tables = tables;
    this.changes = changes;
  }

  /** The first change, as a rule sees it. */
  change() {
    return new Change(this.tables[this.changes[0].table], this.changes[0]);
  }

  /** Appends another batch's changes (and tables); returns this, to chain. */
  push(other) {
    const offset = this.tables.length;
    this.tables.push(...other.tables);
    this.changes.push(...other.changes.map((c) => ({ ...c, table: c.table + offset })));
    return this;
  }
}
