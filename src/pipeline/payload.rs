//! JSON renderings of changes, for `sync_rule_failures.payload` and for logs.

use serde_json::{Map, Value as Json, json};

use crate::model::{Change, TableSchema, Value};

/// A value as JSON. `unchanged` becomes `{"unchanged": true}` so it is never mistaken for null.
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Unchanged => json!({ "unchanged": true }),
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => json!(i),
        // NaN and the infinities have no JSON number form: PostgreSQL's spelling instead.
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(float_text(*f))),
        Value::Bytes(b) => Json::String(format!("\\x{}", hex::encode(b))),
        Value::Json(text) => {
            serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.clone()))
        }
        Value::Text(s)
        | Value::Numeric(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::Timestamptz(s) => Json::String(s.clone()),
    }
}

fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f > 0.0 {
        "Infinity".to_owned()
    } else {
        "-Infinity".to_owned()
    }
}

/// A row as a JSON object keyed by column name.
pub fn row_json(table: &TableSchema, row: &[Value]) -> Json {
    let mut map = Map::with_capacity(row.len());
    for (column, value) in table.columns.iter().zip(row) {
        map.insert(column.name.clone(), value_json(value));
    }
    Json::Object(map)
}

/// A change in the same shape `sluice eval` reads, plus its LSN: replayable once rules are fixed,
/// and what `sluice tail` prints.
pub fn change_json(change: &Change) -> Json {
    json!({
        "table": change.table.qualified_name(),
        "op": change.op.as_str(),
        "new": change.new.as_ref().map(|r| row_json(&change.table, r)),
        "old": change.old.as_ref().map(|r| row_json(&change.table, r)),
        "lsn": change.lsn.to_string(),
    })
}
