//! Lowering a batch of `model::Change`s into the WIT `evaluate` arguments
//! without copying strings: these types borrow from the changes and are
//! copied straight into guest memory by wasmtime. (The `bindgen!` types own
//! their strings, which would cost an allocation per text value.)

use std::sync::Arc;

use wasmtime::component::{ComponentType, Lower};

use crate::model::{Change, Operation, TableSchema, Value, type_name};

#[derive(ComponentType, Lower)]
#[component(variant)]
pub(crate) enum WireValue<'a> {
    #[component(name = "null")]
    Null,
    #[component(name = "unchanged")]
    Unchanged,
    #[component(name = "bool")]
    Bool(bool),
    #[component(name = "int")]
    Int(i64),
    #[component(name = "float")]
    Float(f64),
    #[component(name = "text")]
    Text(&'a str),
    #[component(name = "numeric")]
    Numeric(&'a str),
    #[component(name = "bytes")]
    Bytes(&'a [u8]),
    #[component(name = "json")]
    Json(&'a str),
    #[component(name = "date")]
    Date(&'a str),
    #[component(name = "time")]
    Time(&'a str),
    #[component(name = "timestamp")]
    Timestamp(&'a str),
    #[component(name = "timestamptz")]
    Timestamptz(&'a str),
}

impl<'a> From<&'a Value> for WireValue<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => WireValue::Null,
            Value::Unchanged => WireValue::Unchanged,
            Value::Bool(b) => WireValue::Bool(*b),
            Value::Int(i) => WireValue::Int(*i),
            Value::Float(f) => WireValue::Float(*f),
            Value::Text(s) => WireValue::Text(s),
            Value::Numeric(s) => WireValue::Numeric(s),
            Value::Bytes(b) => WireValue::Bytes(b),
            Value::Json(s) => WireValue::Json(s),
            Value::Date(s) => WireValue::Date(s),
            Value::Time(s) => WireValue::Time(s),
            Value::Timestamp(s) => WireValue::Timestamp(s),
            Value::Timestamptz(s) => WireValue::Timestamptz(s),
        }
    }
}

#[derive(ComponentType, Lower, Clone, Copy)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum WireOperation {
    #[component(name = "insert")]
    Insert,
    #[component(name = "update")]
    Update,
    #[component(name = "delete")]
    Delete,
}

impl From<Operation> for WireOperation {
    fn from(op: Operation) -> Self {
        match op {
            Operation::Insert => WireOperation::Insert,
            Operation::Update => WireOperation::Update,
            Operation::Delete => WireOperation::Delete,
        }
    }
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct WireColumn<'a> {
    name: &'a str,
    #[component(name = "type-name")]
    type_name: &'static str,
    key: bool,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct WireTable<'a> {
    name: &'a str,
    columns: &'a [WireColumn<'a>],
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct WireChange<'a> {
    table: u32,
    op: WireOperation,
    new: Option<&'a [WireValue<'a>]>,
    old: Option<&'a [WireValue<'a>]>,
    lsn: u64,
}

/// The parameter types of `evaluate`, as lowered by the host.
pub(crate) type EvaluateParams<'a> = (&'a [WireTable<'a>], &'a [WireChange<'a>]);

/// The distinct tables of a batch, in first-seen order. Tables are told
/// apart by `Arc` identity: the source replaces a schema's `Arc` when the
/// table changes shape, so two changes with the same `Arc` share a shape.
pub(crate) struct BatchTables<'a> {
    schemas: Vec<&'a Arc<TableSchema>>,
    names: Vec<String>,
    columns: Vec<Vec<WireColumn<'a>>>,
    /// Table index of each change, parallel to the batch.
    index_of_change: Vec<u32>,
}

impl<'a> BatchTables<'a> {
    pub(crate) fn new(changes: &'a [Change]) -> Self {
        let mut tables = BatchTables {
            schemas: Vec::new(),
            names: Vec::new(),
            columns: Vec::new(),
            index_of_change: Vec::with_capacity(changes.len()),
        };
        let mut last: Option<(&Arc<TableSchema>, u32)> = None;
        for change in changes {
            let index = match last {
                Some((schema, index)) if Arc::ptr_eq(schema, &change.table) => index,
                _ => tables.index_of(&change.table),
            };
            last = Some((&change.table, index));
            tables.index_of_change.push(index);
        }
        tables
    }

    fn index_of(&mut self, schema: &'a Arc<TableSchema>) -> u32 {
        if let Some(found) = self.schemas.iter().position(|s| Arc::ptr_eq(s, schema)) {
            return found as u32;
        }
        self.schemas.push(schema);
        self.names.push(schema.qualified_name());
        self.columns.push(
            schema
                .columns
                .iter()
                .map(|c| WireColumn {
                    name: &c.name,
                    type_name: type_name(c.type_oid),
                    key: c.key,
                })
                .collect(),
        );
        (self.schemas.len() - 1) as u32
    }

    pub(crate) fn wire_tables(&self) -> Vec<WireTable<'_>> {
        self.names
            .iter()
            .zip(&self.columns)
            .map(|(name, columns)| WireTable { name, columns })
            .collect()
    }
}

/// Every value of a batch in one flat buffer, so a batch costs a handful of
/// allocations however many rows it has.
pub(crate) fn wire_values(changes: &[Change]) -> Vec<WireValue<'_>> {
    let total = changes
        .iter()
        .map(|c| c.new.as_ref().map_or(0, Vec::len) + c.old.as_ref().map_or(0, Vec::len))
        .sum();
    let mut values = Vec::with_capacity(total);
    for change in changes {
        for row in [&change.new, &change.old].into_iter().flatten() {
            values.extend(row.iter().map(WireValue::from));
        }
    }
    values
}

/// The `change` records of a batch, borrowing rows from `values` (built by
/// [`wire_values`] over the same changes).
pub(crate) fn wire_changes<'v>(
    changes: &[Change],
    tables: &BatchTables<'_>,
    values: &'v [WireValue<'v>],
) -> Vec<WireChange<'v>> {
    let mut offset = 0;
    let mut take = |row: &Option<Vec<Value>>| {
        row.as_ref().map(|row| {
            let slice = &values[offset..offset + row.len()];
            offset += row.len();
            slice
        })
    };
    changes
        .iter()
        .zip(&tables.index_of_change)
        .map(|(change, &table)| {
            let new = take(&change.new);
            let old = take(&change.old);
            WireChange {
                table,
                op: change.op.into(),
                new,
                old,
                lsn: change.lsn.0,
            }
        })
        .collect()
}
