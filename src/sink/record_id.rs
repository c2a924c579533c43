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
        Value::Float(f) => float_text(*f),
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

/// `float8::text` as PostgreSQL (12+) prints it: `NaN`, `Infinity`, `-Infinity`, and the shortest
/// exact digits, in exponent form (`1e+300`, `1.5e-05`) below 1e-4 and from 1e15 on. Rust's own
/// forms (`inf`, `NaN`, a 300-digit integer) would not join with the server's key text.
fn float_text(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return (if f > 0.0 { "Infinity" } else { "-Infinity" }).to_owned();
    }
    if f == 0.0 {
        return (if f.is_sign_negative() { "-0" } else { "0" }).to_owned();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..15).contains(&exp) {
        f.to_string()
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
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
    fn float_keys_use_postgres_text_form() {
        let cases = [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (-0.0, "-0"),
            (0.0, "0"),
            (1.5, "1.5"),
            (-0.0001, "-0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456789012345.0, "123456789012345"),
            (1e15, "1e+15"),
            (-2.5e300, "-2.5e+300"),
            (0.1, "0.1"),
        ];
        for (f, text) in cases {
            assert_eq!(encode([&Value::Float(f)]).as_deref(), Some(text), "{f:?}");
        }
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
