//! The text form of a primary key, as stored in `record_id`.
//!
//! A single-column key is the value's canonical text: what `key::text` gives in a session with
//! `DateStyle = 'ISO, MDY'`, `IntervalStyle = postgres`, `TimeZone = UTC`,
//! `extra_float_digits = 1` and `bytea_output = hex` (`source::values::CANONICAL_SETTINGS`, which
//! the stream and the snapshot both run under). Sync servers look rows up by it; synchro
//! hydrates with `"id"::text`. A composite key is a JSON array of the columns' canonical texts in
//! key order, e.g. `["org-1","42"]`. The two cannot be confused for a given table, because a
//! table's key arity is fixed.
//!
//! Values arrive in their types' output forms under those settings and are typed by
//! `source::values::decode_text`; [`value_text`] undoes that typing, one conversion per key type.
//! For most types `::text` is the output form. The exceptions are the point of this module:
//! `char(n)` drops its trailing spaces, `inet` always shows its prefix length, `bool` is spelled
//! `true`/`false`; and the typed forms differ from the output form for floats (shortest digits of
//! the column's own precision), bytea, timestamp and timestamptz (`2024-01-02 03:04:05.678+00`).

use serde_json::value::RawValue;

use crate::model::Value;
use crate::source::values::{INET, array_element, oid};

/// Canonical text of one key value of type `type_oid`; `None` for NULL or an unchanged TOAST
/// value, which a key cannot legitimately be.
pub fn value_text(value: &Value, type_oid: u32) -> Option<String> {
    Some(match value {
        Value::Null | Value::Unchanged => return None,
        Value::Bool(b) => (if *b { "true" } else { "false" }).to_owned(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if type_oid == oid::FLOAT4 => float4_text(*f as f32),
        Value::Float(f) => float8_text(*f),
        Value::Bytes(b) => format!("\\x{}", hex::encode(b)),
        Value::Text(s) => match type_oid {
            oid::BPCHAR => s.trim_end_matches(' ').to_owned(),
            INET if !s.contains('/') => {
                let bits = if s.contains(':') { 128 } else { 32 };
                format!("{s}/{bits}")
            }
            _ => s.clone(),
        },
        // Normalised by the decoder to `YYYY-MM-DDTHH:MM:SS[.f]`; infinities and BC dates are
        // kept as PostgreSQL wrote them.
        Value::Timestamp(s) => match s.split_once('T') {
            Some((date, time)) => format!("{date} {time}"),
            None => s.clone(),
        },
        // Normalised to UTC with a `Z`; text the decoder could not parse is kept as written.
        Value::Timestamptz(s) => match (s.split_once('T'), s.strip_suffix('Z')) {
            (Some(_), Some(utc)) => format!("{}+00", utc.replacen('T', " ", 1)),
            _ => s.clone(),
        },
        // An array's `::text` is its output form, which the decoder turned into JSON.
        Value::Json(s) => match array_element(type_oid) {
            Some(elem) => array_text(elem, s)?,
            None => s.clone(),
        },
        Value::Numeric(s) | Value::Date(s) | Value::Time(s) => s.clone(),
    })
}

/// The output form of an array (`{1,NULL,"a b"}`, `{{1,2},{3,4}}`) from the JSON the decoder made
/// of it (`source::values`), element by element as `array_out` writes it: each element in its
/// type's output form (`t`/`f`, `ab  ` for `char(4)`, `10.0.0.1` without its /32), quoted where
/// `array_out` quotes. `None` for JSON the decoder cannot have made. The decoder drops a bounds
/// prefix (`[0:1]=`), so an array key with a lower bound other than 1 gets an id without it.
fn array_text(elem: u32, json: &str) -> Option<String> {
    let mut out = String::with_capacity(json.len());
    let raw: &RawValue = serde_json::from_str(json).ok()?;
    array_body(elem, raw, &mut out)?;
    Some(out)
}

fn array_body(elem: u32, raw: &RawValue, out: &mut String) -> Option<()> {
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let text = item.get();
        // A JSON array is a nested dimension, except as the value of a json[] element.
        if text.starts_with('[') && !matches!(elem, oid::JSON | oid::JSONB) {
            array_body(elem, item, out)?;
            continue;
        }
        let element = match text {
            "null" => {
                out.push_str("NULL");
                continue;
            }
            "true" => "t".to_owned(),
            "false" => "f".to_owned(),
            _ if text.starts_with('"') && !matches!(elem, oid::JSON | oid::JSONB) => {
                let s: String = serde_json::from_str(text).ok()?;
                match elem {
                    oid::TIMESTAMP | oid::TIMESTAMPTZ => {
                        let value = if elem == oid::TIMESTAMP {
                            Value::Timestamp(s)
                        } else {
                            Value::Timestamptz(s)
                        };
                        value_text(&value, elem)?
                    }
                    _ => s,
                }
            }
            _ => text.to_owned(),
        };
        quote_element(&element, out);
    }
    out.push('}');
    Some(())
}

/// `array_out`'s quoting: an element is quoted when it is empty, reads `NULL`, or holds a brace,
/// a quote, a backslash, the delimiter or white space; inside quotes, `"` and `\` are escaped.
fn quote_element(element: &str, out: &mut String) {
    let needs_quotes = element.is_empty()
        || element.eq_ignore_ascii_case("NULL")
        || element.bytes().any(|b| {
            matches!(
                b,
                b'{' | b'}' | b',' | b'"' | b'\\' | b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c
            )
        });
    if !needs_quotes {
        out.push_str(element);
        return;
    }
    out.push('"');
    for c in element.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// `float8::text` as PostgreSQL (12+, `extra_float_digits` > 0) prints it: `NaN`, `Infinity`,
/// `-Infinity`, and the shortest exact digits, in exponent form (`1e+300`, `1.5e-05`) below 1e-4
/// and from 1e15 on. Rust's own forms (`inf`, `NaN`, a 300-digit integer) would not join with
/// the server's key text.
fn float8_text(f: f64) -> String {
    shortest(f, f.to_string(), format!("{f:e}"), 15)
}

/// `float4::text`: the shortest digits that identify the `real` (not the `double` it was read
/// into), in exponent form below 1e-4 and from 1e6 on.
fn float4_text(f: f32) -> String {
    shortest(f64::from(f), f.to_string(), format!("{f:e}"), 6)
}

/// PostgreSQL's layout of shortest digits: `fixed` (Rust's plain form) where the decimal
/// exponent is in `-4..fixed_below`, otherwise `sci` (Rust's `{:e}` form) with a signed exponent
/// of at least two digits.
fn shortest(f: f64, fixed: String, sci: String, fixed_below: i32) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return (if f > 0.0 { "Infinity" } else { "-Infinity" }).to_owned();
    }
    if f == 0.0 {
        return (if f.is_sign_negative() { "-0" } else { "0" }).to_owned();
    }
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..fixed_below).contains(&exp) {
        fixed
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

/// `record_id` for the key values with their type OIDs, in key order. `None` if any key value
/// is missing.
pub fn encode<'a>(key_values: impl IntoIterator<Item = (&'a Value, u32)>) -> Option<String> {
    let parts: Option<Vec<String>> = key_values
        .into_iter()
        .map(|(value, type_oid)| value_text(value, type_oid))
        .collect();
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

    fn one(value: Value, type_oid: u32) -> Option<String> {
        encode([(&value, type_oid)])
    }

    #[test]
    fn single_keys_use_their_text_form() {
        assert_eq!(one(Value::Int(42), oid::INT8).as_deref(), Some("42"));
        assert_eq!(
            one(Value::Text("u1".into()), oid::TEXT).as_deref(),
            Some("u1")
        );
        assert_eq!(one(Value::Null, oid::INT4), None);
        assert_eq!(one(Value::Unchanged, oid::TEXT), None);
    }

    #[test]
    fn the_types_whose_text_cast_differs_from_their_output() {
        let cases = [
            (Value::Text("ab    ".into()), oid::BPCHAR, "ab"),
            (Value::Text(" a  ".into()), oid::BPCHAR, " a"),
            (Value::Text("ab  ".into()), oid::VARCHAR, "ab  "),
            (Value::Text("10.0.0.1".into()), INET, "10.0.0.1/32"),
            (Value::Text("10.0.0.0/8".into()), INET, "10.0.0.0/8"),
            (Value::Text("::1".into()), INET, "::1/128"),
            (Value::Bool(true), oid::BOOL, "true"),
            (Value::Bytes(vec![0, 255]), oid::BYTEA, "\\x00ff"),
            (
                Value::Timestamp("2024-01-02T03:04:05.678".into()),
                oid::TIMESTAMP,
                "2024-01-02 03:04:05.678",
            ),
            (
                Value::Timestamptz("2024-01-02T03:04:05.678Z".into()),
                oid::TIMESTAMPTZ,
                "2024-01-02 03:04:05.678+00",
            ),
            (
                Value::Timestamptz("infinity".into()),
                oid::TIMESTAMPTZ,
                "infinity",
            ),
            (
                Value::Timestamp("0044-03-15 12:00:00 BC".into()),
                oid::TIMESTAMP,
                "0044-03-15 12:00:00 BC",
            ),
        ];
        for (value, type_oid, text) in cases {
            assert_eq!(
                one(value.clone(), type_oid).as_deref(),
                Some(text),
                "{value:?}"
            );
        }
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
            assert_eq!(
                one(Value::Float(f), oid::FLOAT8).as_deref(),
                Some(text),
                "{f:?}"
            );
        }
        // A real is read into a double: its key is the real's own shortest digits.
        let cases = [
            ("1.1", "1.1"),
            ("0.1", "0.1"),
            ("123456", "123456"),
            ("1234567", "1.234567e+06"),
            ("3.4028235e+38", "3.4028235e+38"),
            ("1e-05", "1e-05"),
            ("0.0001", "0.0001"),
        ];
        for (sent, text) in cases {
            let value = crate::source::values::decode_text(oid::FLOAT4, sent);
            assert_eq!(one(value, oid::FLOAT4).as_deref(), Some(text), "{sent}");
        }
    }

    /// Arrays come back to `array_out`'s form from the decoder's JSON, through the decoder
    /// itself: what PostgreSQL sent is what the record id says.
    #[test]
    fn array_keys_are_their_output_form() {
        let cases = [
            (1007, "{1,2,3}"),
            (1007, "{}"),
            (1007, "{NULL,-1}"),
            (1007, "{{1,2},{3,4}}"),
            (
                1009,
                r#"{a,"b c","q\"t","",NULL,"NULL","null","x\\y","{}"}"#,
            ),
            (1014, r#"{"a  ","bc "}"#),
            (1000, "{t,f,NULL}"),
            (1022, "{0.1,1e-05,NaN,-Infinity}"),
            (1001, r#"{"\\x00ff","\\x"}"#),
            (1115, r#"{"2024-01-02 03:04:05.678",infinity}"#),
            (1185, r#"{"2024-01-02 03:04:05+00"}"#),
            (1231, "{1.50,NaN}"),
            (3807, r#"{"{\"a\": [1, 2]}","\"s\"",NULL}"#),
        ];
        for (type_oid, text) in cases {
            let value = crate::source::values::decode_text(type_oid, text);
            assert!(matches!(value, Value::Json(_)), "{text}: {value:?}");
            assert_eq!(one(value, type_oid).as_deref(), Some(text), "{type_oid}");
        }
    }

    #[test]
    fn composite_keys_are_json_arrays_and_unambiguous() {
        let a = encode([
            (&Value::Text("a,b".into()), oid::TEXT),
            (&Value::Int(1), oid::INT4),
        ])
        .unwrap();
        let b = encode([
            (&Value::Text("a".into()), oid::TEXT),
            (&Value::Text("b,1".into()), oid::TEXT),
        ])
        .unwrap();
        assert_eq!(a, r#"["a,b","1"]"#);
        assert_eq!(b, r#"["a","b,1"]"#);
        assert_ne!(a, b);
    }
}
