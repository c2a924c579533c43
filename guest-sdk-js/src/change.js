// By-name views over the positional rows the host sends.

const NULL_VALUE = Object.freeze({ tag: 'null' });

/** A row, read by column name. */
export class Row {
  constructor(table, values) {
    this.table = table;
    this.values = values;
  }

  /** The value of column `name`; a column the table does not have reads as null. */
  get(name) {
    const i = columnIndex(this.table, name);
    return i === undefined || i >= this.values.length ? NULL_VALUE : this.values[i];
  }

  /** Whether the table has a column `name`. */
  has(name) {
    return columnIndex(this.table, name) !== undefined;
  }
}

const INDEXES = new WeakMap();

function columnIndex(table, name) {
  let index = INDEXES.get(table);
  if (!index) {
    index = new Map(table.columns.map((c, i) => [c.name, i]));
    INDEXES.set(table, index);
  }
  return index.get(name);
}

/** One row change, as a rule sees it. */
export class Change {
  constructor(table, wire) {
    this.tableInfo = table;
    /** The table's name, schema-qualified unless `public`. */
    this.table = table.name;
    /** The table's columns, in order: `{ name, typeName, key }`. */
    this.columns = table.columns;
    /** `'insert'`, `'update'` or `'delete'`. */
    this.op = wire.op;
    /** The row after the change; undefined for deletes. */
    this.new = wire.new == null ? undefined : new Row(table, wire.new);
    /** The row before the change, where PostgreSQL sent one; undefined for inserts. */
    this.old = wire.old == null ? undefined : new Row(table, wire.old);
    /** LSN of the change's commit record, a bigint (0n in `sluice eval`). */
    this.lsn = BigInt(wire.lsn ?? 0);
  }

  /** The new row, or the old row for a delete; all null when neither was sent. */
  get row() {
    return this.new ?? this.old ?? new Row(this.tableInfo, []);
  }
}
