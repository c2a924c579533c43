/**
 * Building changes by hand, to unit-test a rule natively with `node --test` (no Wasm, no
 * database), mirroring the Rust SDK's `testing` module.
 *
 * @example
 * ```js
 * import { evaluate, Outcome } from 'sluice-rules';
 * import { TestTable } from 'sluice-rules/testing';
 * const items = new TestTable('items', ['id', 'user_id']);
 * evaluate(new ByOwner(), items.insert([1, 'u1']).change()); // Outcome.keep('user:u1')
 * ```
 */
import type { Change, Column, Operation, Table, Value, WireChange } from './index.js';

/** A plain value for a column: see `Value.of`. */
export type Cell = Value | null | undefined | boolean | number | bigint | string | Uint8Array | object;

/** A table to build changes for: columns typed `unknown`, the first (or `options.key`) the key. */
export class TestTable {
  constructor(name: string, columns: (string | Column)[], options?: { key?: string[] });
  readonly table: Table;
  /** A batch of one change with both rows and the LSN given. */
  change(op: Operation, rows?: { newRow?: Cell[]; oldRow?: Cell[]; lsn?: bigint | number }): TestBatch;
  insert(values: Cell[], lsn?: bigint | number): TestBatch;
  /** An update without an old row. */
  update(values: Cell[], lsn?: bigint | number): TestBatch;
  delete(values: Cell[], lsn?: bigint | number): TestBatch;
}

/** Changes in the host's batch shape. */
export class TestBatch {
  readonly tables: Table[];
  readonly changes: WireChange[];
  /** The first change, as a rule sees it. */
  change(): Change;
  /** Appends another batch's changes; returns this. */
  push(other: TestBatch): this;
}
