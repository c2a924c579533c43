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
//! A value of another kind is written as an object with a `$kind` key:
//! `{"$kind":"numeric","value":"1.50"}`; kinds `numeric`, `date`, `time`,
//! `timestamp`, `timestamptz` and `text` take text, `bytes` takes hex text
//! (`"\\x0aff"` as PostgreSQL prints it, or `"0aff"`), `json` takes any JSON
//! (so a JSON object that itself has a `$kind` key is written
//! `{"$kind":"json","value":{...}}`), and `unchanged` (a TOASTed column
//! PostgreSQL did not send) takes no value: `{"$kind":"unchanged"}`.
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
        let values = |row: &Map<String, Json>| -> Result<Vec<Value>, LineError> {
            schema
                .columns
                .iter()
                .map(|c| {
                    row.get(&c.name).map_or(Ok(Value::Null), |json| {
                        json_value(json)
                            .map_err(|reason| fail(format!("column {:?}: {reason}", c.name)))
                    })
                })
                .collect()
        };
        Ok(Change {
            new: new.map(values).transpose()?,
            old: old.map(values).transpose()?,
            table: schema,
            op,
            lsn,
        })
    }
}

fn json_value(json: &Json) -> Result<Value, String> {
    Ok(match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            // u64 beyond i64 and true floats.
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Object(object) if object.contains_key(KIND) => kinded_value(object)?,
        Json::Array(_) | Json::Object(_) => Value::Json(json.to_string()),
    })
}

/// The key that marks an object as a value of a stated kind rather than JSON.
const KIND: &str = "$kind";

const KINDS: &str = "numeric, bytes, date, time, timestamp, timestamptz, text, json, unchanged";

/// A `{"$kind": ..., "value": ...}` object as the value it states.
fn kinded_value(object: &Map<String, Json>) -> Result<Value, String> {
    if let Some(extra) = object
        .keys()
        .find(|k| !matches!(k.as_str(), KIND | "value"))
    {
        return Err(format!(
            "unknown key {extra:?} in a {KIND} object; it takes only {KIND} and value"
        ));
    }
    let kind = object.get(KIND).and_then(Json::as_str).unwrap_or_default();
    let value = object.get("value");
    let text = || match value {
        Some(Json::String(text)) => Ok(text.clone()),
        _ => Err(format!(
            "a {kind:?} value must be a string, as {{\"{KIND}\":\"{kind}\",\"value\":\"...\"}}"
        )),
    };
    Ok(match kind {
        "unchanged" if value.is_none() => Value::Unchanged,
        "unchanged" => return Err("an \"unchanged\" value takes no \"value\"".into()),
        "numeric" => Value::Numeric(numeric(text()?)?),
        "bytes" => Value::Bytes(hex_bytes(&text()?)?),
        "date" => Value::Date(text()?),
        "time" => Value::Time(text()?),
        "timestamp" => Value::Timestamp(text()?),
        "timestamptz" => Value::Timestamptz(text()?),
        "text" => Value::Text(text()?),
        "json" => Value::Json(
            value
                .ok_or_else(|| "a \"json\" value needs a \"value\"".to_owned())?
                .to_string(),
        ),
        other => return Err(format!("unknown {KIND} {other:?}; expected one of {KINDS}")),
    })
}

/// `text` if it reads as a PostgreSQL numeric: digits with an optional sign, point and
/// exponent, or NaN / Infinity.
fn numeric(text: String) -> Result<String, String> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(&text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (unsigned, None),
    };
    let digits = mantissa.replacen('.', "", 1);
    let ok = matches!(unsigned, "NaN" | "Infinity")
        || (!digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && exponent.is_none_or(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())));
    if ok {
        Ok(text)
    } else {
        Err(format!("{text:?} is not a numeric such as \"1.50\""))
    }
}

/// Hex text, with or without PostgreSQL's `\x` prefix, as bytes.
fn hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    let digits = text.strip_prefix("\\x").unwrap_or(text);
    hex::decode(digits).map_err(|e| format!("{text:?} is not hex bytes such as \"\\\\x0aff\": {e}"))
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

    #[test]
    fn every_value_kind_can_be_stated() {
        let mut reader = ChangeReader::new();
        let change = reader
            .parse(
                1,
                r#"{"table":"t","op":"update","new":{
                    "a":{"$kind":"unchanged"},
                    "b":{"$kind":"numeric","value":"-1.50e+3"},
                    "c":{"$kind":"bytes","value":"\\x0aff"},
                    "d":{"$kind":"bytes","value":"0AFF"},
                    "e":{"$kind":"date","value":"2024-02-29"},
                    "f":{"$kind":"time","value":"12:34:56.789"},
                    "g":{"$kind":"timestamp","value":"2024-02-29T12:34:56"},
                    "h":{"$kind":"timestamptz","value":"2024-02-29T12:34:56+00:00"},
                    "i":{"$kind":"text","value":"1.50"},
                    "j":{"$kind":"json","value":{"$kind":"numeric"}},
                    "k":{"$kind":"numeric","value":"NaN"}}}"#,
            )
            .unwrap();
        assert_eq!(
            change.new.unwrap(),
            vec![
                Value::Unchanged,
                Value::Numeric("-1.50e+3".into()),
                Value::Bytes(vec![0x0a, 0xff]),
                Value::Bytes(vec![0x0a, 0xff]),
                Value::Date("2024-02-29".into()),
                Value::Time("12:34:56.789".into()),
                Value::Timestamp("2024-02-29T12:34:56".into()),
                Value::Timestamptz("2024-02-29T12:34:56+00:00".into()),
                Value::Text("1.50".into()),
                Value::Json(r#"{"$kind":"numeric"}"#.into()),
                Value::Numeric("NaN".into()),
            ]
        );
    }

    #[test]
    fn malformed_kinds_name_the_column() {
        let mut reader = ChangeReader::new();
        let mut err = |value: &str| {
            reader_err(
                &mut reader,
                &format!(r#"{{"table":"t","op":"insert","new":{{"x":{value}}}}}"#),
            )
        };
        assert_eq!(
            err(r#"{"$kind":"numeric","value":"1,5"}"#),
            r#"line 7: column "x": "1,5" is not a numeric such as "1.50""#
        );
        assert_eq!(
            err(r#"{"$kind":"numeric","value":1.5}"#),
            r#"line 7: column "x": a "numeric" value must be a string, as {"$kind":"numeric","value":"..."}"#
        );
        assert_eq!(
            err(r#"{"$kind":"bytes","value":"\\xzz"}"#),
            r#"line 7: column "x": "\\xzz" is not hex bytes such as "\\x0aff": Invalid character 'z' at position 0"#
        );
        assert_eq!(
            err(r#"{"$kind":"unchanged","value":1}"#),
            r#"line 7: column "x": an "unchanged" value takes no "value""#
        );
        assert_eq!(
            err(r#"{"$kind":"money","value":"1"}"#),
            r#"line 7: column "x": unknown $kind "money"; expected one of numeric, bytes, date, time, timestamp, timestamptz, text, json, unchanged"#
        );
        assert_eq!(
            err(r#"{"$kind":"date","value":"2024-01-01","tz":"x"}"#),
            r#"line 7: column "x": unknown key "tz" in a $kind object; it takes only $kind and value"#
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
