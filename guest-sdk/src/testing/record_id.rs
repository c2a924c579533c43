//! Record ids as sluice stores them, for the reference model.

use crate::{Table, Value};

/// The record id sluice stores for a row of `table` (its `record_id` in
/// `sync_changelog` and `sync_bucket_edges`): a one-column key is the value's
/// text (`42`, `u1`, a uuid), a composite key a JSON array of the texts in
/// key order (`["7","u1"]`). `None` when the table has no key column or a key
/// value is NULL or unchanged.
///
/// Texts follow PostgreSQL's `::text` for the usual key types (integers,
/// text, uuid, numeric, dates, `true`/`false`, `\x`-hex bytea, `char(n)`
/// without trailing spaces, timestamps with a space and `+00`). Floats use
/// Rust's shortest form, which matches PostgreSQL's only between 1e-4 and
/// 1e15. Key columns are taken in column order.
///
/// ```
/// use sluice_guest_sdk::testing::{TestTable, record_id};
/// use sluice_guest_sdk::Value;
///
/// let lists = TestTable::new("lists", &["id", "owner_id"]);
/// let row = [Value::Int(7), Value::Text("u1".into())];
/// assert_eq!(record_id(lists.table(), &row).as_deref(), Some("7"));
///
/// let members = TestTable::new("list_members", &["list_id", "user_id"])
///     .with_key(&["list_id", "user_id"]);
/// assert_eq!(record_id(members.table(), &row).as_deref(), Some(r#"["7","u1"]"#));
/// ```
pub fn record_id(table: &Table, row: &[Value]) -> Option<String> {
    let key = table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, column)| column.key)
        .map(|(i, column)| Some((row.get(i)?, column.type_name.as_str())));
    encode(key)
}

/// The id of the values with their type names, in key order.
pub(crate) fn encode<'a>(
    parts: impl Iterator<Item = Option<(&'a Value, &'a str)>>,
) -> Option<String> {
    let mut texts = parts
        .map(|part| part.and_then(|(value, type_name)| value_text(value, type_name)))
        .collect::<Option<Vec<String>>>()?;
    match texts.len() {
        0 => None,
        1 => texts.pop(),
        _ => Some(json_array(&texts)),
    }
}

fn value_text(value: &Value, type_name: &str) -> Option<String> {
    Some(match value {
        Value::Null | Value::Unchanged => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_nan() => "NaN".to_string(),
        Value::Float(f) if f.is_infinite() => {
            (if *f > 0.0 { "Infinity" } else { "-Infinity" }).to_string()
        }
        Value::Float(f) => f.to_string(),
        Value::Bytes(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("\\x{hex}")
        }
        Value::Text(s) if type_name == "bpchar" => s.trim_end_matches(' ').to_string(),
        Value::Timestamp(s) => s.replacen('T', " ", 1),
        Value::Timestamptz(s) => match s.strip_suffix('Z') {
            Some(utc) => format!("{}+00", utc.replacen('T', " ", 1)),
            None => s.clone(),
        },
        Value::Text(s) | Value::Numeric(s) | Value::Json(s) | Value::Date(s) | Value::Time(s) => {
            s.clone()
        }
    })
}

/// `["a","b"]`, escaped as serde_json escapes strings (the host's encoder).
fn json_array(texts: &[String]) -> String {
    let mut out = String::from("[");
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_follow_postgres() {
        let one = |value: Value, type_name: &str| encode([Some((&value, type_name))].into_iter());
        assert_eq!(one(Value::Bool(true), "bool").as_deref(), Some("true"));
        assert_eq!(
            one(Value::Text("ab  ".into()), "bpchar").as_deref(),
            Some("ab")
        );
        assert_eq!(
            one(Value::Text("ab  ".into()), "text").as_deref(),
            Some("ab  ")
        );
        assert_eq!(
            one(Value::Bytes(vec![1, 171]), "bytea").as_deref(),
            Some("\\x01ab")
        );
        assert_eq!(
            one(
                Value::Timestamptz("2024-01-02T03:04:05.5Z".into()),
                "timestamptz"
            )
            .as_deref(),
            Some("2024-01-02 03:04:05.5+00")
        );
        assert_eq!(one(Value::Null, "int8"), None);
        assert_eq!(one(Value::Unchanged, "text"), None);
        assert_eq!(encode(std::iter::empty()), None);
    }

    #[test]
    fn composite_ids_are_escaped_json() {
        let a = Value::Text("say \"hi\"\n\u{1}".into());
        let b = Value::Int(-3);
        assert_eq!(
            encode([Some((&a, "text")), Some((&b, "int4"))].into_iter()).as_deref(),
            Some(r#"["say \"hi\"\n\u0001","-3"]"#)
        );
    }
}
