//! The `sluice eval` line formats: a change as a JSON object in, an outcome
//! as a JSON object out (DESIGN.md, "CLI contract").
//!
//! In: `{"table":"public.items","op":"insert","new":{"id":1,"user_id":"u1"},"old":null}`.
//! `table` is `schema.name` or `name` (schema `public`); `op` is insert,
//! update or delete; `new`/`old` are objects or null/absent (insert and
//! update need `new`, delete needs `old`); an optional `lsn` is `"X/Y"`
//! text or an integer. JSON null, booleans, integers, floats and strings
//! become Null, Bool, Int, Float and Text; objects and arrays become Json.
//!
//! Columns are the keys of `new` followed by keys only `old` has; a column
//! missing from one row reads as Null there. A column named `id` is the
//! key. Lines with the same table and columns share one `Arc<TableSchema>`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::model::{Change, Column, Lsn, Operation, Outcome, ReplicaIdentity, TableSchema, Value};

/// Why a JSON line is not a change.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

/// Turns JSON lines into changes, reusing one schema per table shape.
#[derive(Default)]
pub struct ChangeReader {
    schemas: HashMap<(String, String, Vec<String>), Arc<TableSchema>>,
}

impl ChangeReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses line number `line` (1-based, for messages).
    pub fn parse(&mut self, line: usize, text: &str) -> Result<Change, LineError> {
        let fail = |reason: String| LineError { line, reason };
        let object: Map<String, Json> =
            serde_json::from_str(text).map_err(|e| fail(format!("not a JSON object: {e}")))?;
        for key in object.keys() {
            if !matches!(key.as_str(), "table" | "op" | "new" | "old" | "lsn") {
                return Err(fail(format!(
                    "unknown field {key:?}; expected table, op, new, old, lsn"
                )));
            }
        }
        let table = match object.get("table") {
            Some(Json::String(t)) if !t.is_empty() => t.as_str(),
            _ => {
                return Err(fail(
                    r#""table" must be a non-empty string such as "public.items""#.into(),
                ));
            }
        };
        let op = match object.get("op").and_then(Json::as_str) {
            Some("insert") => Operation::Insert,
            Some("update") => Operation::Update,
            Some("delete") => Operation::Delete,
            _ => {
                return Err(fail(
                    r#""op" must be "insert", "update" or "delete""#.into(),
                ));
            }
        };
        let row = |name: &str| match object.get(name) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Object(row)) => Ok(Some(row)),
            Some(_) => Err(fail(format!("{name:?} must be an object or null"))),
        };
        let (new, old) = (row("new")?, row("old")?);
        match op {
            Operation::Insert | Operation::Update if new.is_none() => {
                return Err(fail(format!(r#"an {} needs a "new" object"#, op.as_str())));
            }
            Operation::Delete if old.is_none() => {
                return Err(fail(
                    r#"a delete needs an "old" object (at least the key)"#.into(),
                ));
            }
            _ => {}
        }
        let lsn = match object.get("lsn") {
            None | Some(Json::Null) => Lsn::ZERO,
            Some(Json::Number(n)) => Lsn(n.as_u64().ok_or_else(|| {
                fail("\"lsn\" must be a non-negative integer or \"X/Y\" text".into())
            })?),
            Some(Json::String(s)) => s.parse().map_err(|e| fail(format!("{e}")))?,
            Some(_) => {
                return Err(fail(
                    "\"lsn\" must be a non-negative integer or \"X/Y\" text".into(),
                ));
            }
        };

        let mut names: Vec<String> = new.map(|r| r.keys().cloned().collect()).unwrap_or_default();
        if let Some(old) = old {
            for key in old.keys() {
                if !names.contains(key) {
                    names.push(key.clone());
                }
            }
        }
        let (schema_name, table_name) = match table.split_once('.') {
            Some((schema, name)) => (schema, name),
            None => ("public", table),
        };
        let key = (schema_name.to_owned(), table_name.to_owned(), names);
        let schema = match self.schemas.get(&key) {
            Some(schema) => Arc::clone(schema),
            None => {
                let schema = Arc::new(TableSchema {
                    oid: 0,
                    schema: key.0.clone(),
                    name: key.1.clone(),
                    replica_identity: ReplicaIdentity::Default,
                    columns: key
                        .2
                        .iter()
                        .map(|name| Column {
                            name: name.clone(),
                            type_oid: 0,
                            type_modifier: -1,
                            key: name == "id",
                        })
                        .collect(),
                    primary_key: key.2.iter().position(|n| n == "id").into_iter().collect(),
                    identity: key.2.iter().position(|n| n == "id").into_iter().collect(),
                });
                self.schemas.insert(key, Arc::clone(&schema));
                schema
            }
        };
        let values = |row: &Map<String, Json>| -> Vec<Value> {
            schema
                .columns
                .iter()
                .map(|c| row.get(&c.name).map_or(Value::Null, json_value))
                .collect()
        };
        Ok(Change {
            new: new.map(values),
            old: old.map(values),
            table: schema,
            op,
            lsn,
        })
    }
}

fn json_value(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            // u64 beyond i64 and true floats.
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(_) | Json::Object(_) => Value::Json(json.to_string()),
    }
}

#[derive(Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
enum OutcomeLine<'a> {
    Keep { buckets: &'a [String] },
    Drop,
    Error { message: &'a str },
}

/// Writes `outcome` as one JSON line (with the newline).
pub fn write_outcome(out: &mut impl std::io::Write, outcome: &Outcome) -> std::io::Result<()> {
    let line = match outcome {
        Outcome::Keep(buckets) => OutcomeLine::Keep { buckets },
        Outcome::Drop => OutcomeLine::Drop,
        Outcome::Error(message) => OutcomeLine::Error { message },
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_line() {
        let mut reader = ChangeReader::new();
        let change = reader
            .parse(1, r#"{"table":"public.items","op":"insert","new":{"id":1,"user_id":"u1","tags":["a"],"score":1.5,"done":false,"note":null},"old":null}"#)
            .unwrap();
        assert_eq!(change.table.schema, "public");
        assert_eq!(change.table.name, "items");
        let names: Vec<&str> = change
            .table
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["done", "id", "note", "score", "tags", "user_id"]);
        assert_eq!(
            change.new.unwrap(),
            vec![
                Value::Bool(false),
                Value::Int(1),
                Value::Null,
                Value::Float(1.5),
                Value::Json(r#"["a"]"#.into()),
                Value::Text("u1".into()),
            ]
        );
        assert_eq!(change.old, None);
        assert_eq!(change.op, Operation::Insert);
    }

    #[test]
    fn same_shape_shares_one_schema() {
        let mut reader = ChangeReader::new();
        let a = reader
            .parse(1, r#"{"table":"items","op":"insert","new":{"id":1}}"#)
            .unwrap();
        let b = reader
            .parse(
                2,
                r#"{"table":"public.items","op":"delete","old":{"id":2}}"#,
            )
            .unwrap();
        let c = reader
            .parse(
                3,
                r#"{"table":"billing.items","op":"insert","new":{"id":1}}"#,
            )
            .unwrap();
        assert!(Arc::ptr_eq(&a.table, &b.table));
        assert!(!Arc::ptr_eq(&a.table, &c.table));
        assert_eq!(c.table.qualified_name(), "billing.items");
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let mut reader = ChangeReader::new();
        let mut err = |text: &str| reader_err(&mut reader, text);
        assert_eq!(
            err("nope"),
            "line 7: not a JSON object: expected ident at line 1 column 2"
        );
        assert_eq!(
            err(r#"{"table":"items","op":"upsert","new":{}}"#),
            r#"line 7: "op" must be "insert", "update" or "delete""#
        );
        assert_eq!(
            err(r#"{"table":"items","op":"insert"}"#),
            r#"line 7: an insert needs a "new" object"#
        );
        assert_eq!(
            err(r#"{"op":"insert","new":{}}"#),
            r#"line 7: "table" must be a non-empty string such as "public.items""#
        );
        assert_eq!(
            err(r#"{"table":"t","op":"delete","old":{},"extra":1}"#),
            r#"line 7: unknown field "extra"; expected table, op, new, old, lsn"#
        );
    }

    fn reader_err(reader: &mut ChangeReader, text: &str) -> String {
        reader.parse(7, text).unwrap_err().to_string()
    }

    #[test]
    fn outcome_lines_match_the_contract() {
        let mut out = Vec::new();
        write_outcome(&mut out, &Outcome::Keep(vec!["user:u1".into()])).unwrap();
        write_outcome(&mut out, &Outcome::Drop).unwrap();
        write_outcome(&mut out, &Outcome::Error("bad \"x\"".into())).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"outcome\":\"keep\",\"buckets\":[\"user:u1\"]}\n{\"outcome\":\"drop\"}\n{\"outcome\":\"error\",\"message\":\"bad \\\"x\\\"\"}\n"
        );
    }
}
