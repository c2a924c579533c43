//! The text form of a primary key, as stored in `record_id`.
//!
//! A single-column key is the value's text form, as `id::text` gives for the common key types
//! (integers, text, uuid, numeric), which is what synchro's server joins on. A composite key is
//! a JSON array of the columns' text forms in key order, e.g. `["org-1","42"]`. The two cannot be
//! confused for a given table, because a table's key arity is fixed.

use crate::model::Value;

/// Text form of one key value; `None` for NULL or an unchanged TOAST value, which a key cannot
/// legitimately be.
pub fn value_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null | Value::Unchanged => return None,
        Value::Bool(b) => (if *b { "true" } else { "false" }).to_owned(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bytes(b) => format!("\\x{}", hex::encode(b)),
        Value::Text(s)
        | Value::Numeric(s)
        | Value::Json(s)
        | Value::Date(s)
        | Value::Time(s)
        | Value::Timestamp(s)
        | Value::Timestamptz(s) => s.clone(),
    })
}

/// `record_id` for the key values, in key order. `None` if any key value is missing.
pub fn encode<'a>(key_values: impl IntoIterator<Item = &'a Value>) -> Option<String> {
    let parts: Option<Vec<String>> = key_values.into_iter().map(value_text).collect();
    let mut parts = parts?;
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => serde_json::to_string(&parts).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_keys_use_their_text_form() {
        assert_eq!(encode([&Value::Int(42)]).as_deref(), Some("42"));
        assert_eq!(encode([&Value::Text("u1".into())]).as_deref(), Some("u1"));
        assert_eq!(encode([&Value::Null]), None);
        assert_eq!(encode([&Value::Unchanged]), None);
    }

    #[test]
    fn composite_keys_are_json_arrays_and_unambiguous() {
        let a = encode([&Value::Text("a,b".into()), &Value::Int(1)]).unwrap();
        let b = encode([&Value::Text("a".into()), &Value::Text("b,1".into())]).unwrap();
        assert_eq!(a, r#"["a,b","1"]"#);
        assert_eq!(b, r#"["a","b,1"]"#);
        assert_ne!(a, b);
    }
}
