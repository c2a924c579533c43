//! synchro's record checksum, which clients compare with the XOR of `sync_bucket_edges.checksum`
//! over a bucket and rebuild the bucket when the two differ.
//!
//! The definition is synchro's (`ComputeRecordChecksum` in trainstar/synchro at 9c1dafd, which
//! its Swift and Kotlin clients mirror): take the row's JSON as PostgreSQL's `row_to_json`
//! gives it, decode it with Go's `encoding/json` into a `map[string]any`, encode that again with
//! `encoding/json`, and take the CRC-32 (IEEE) of the result. If the decode or the encode
//! fails, the CRC-32 of the original text. The column is `INTEGER`, so the 32 bits are stored
//! read as a signed integer.
//!
//! What Go's round trip does, and this module reproduces:
//! - object keys come out sorted by their bytes; a duplicate key keeps its last value;
//! - every number passes through `float64` (integers beyond 2^53 and long numerics lose digits)
//!   and is printed as Go prints a `float64`: the shortest digits that round-trip, in plain
//!   form, or in exponent form (`1e+21`, `1e-7`) below 1e-6 and from 1e21 on;
//! - a number beyond `float64`'s range fails the decode, so the checksum is the raw text's;
//! - strings escape `"`, `\`, control characters (`\n`, `\r`, `\t`, `\b`, `\f`, else
//!   `\u00xx`), the HTML characters `<`, `>`, `&` (`\u003c`, `\u003e`, `\u0026`) and U+2028 and
//!   U+2029; everything else is written as UTF-8;
//! - no whitespace anywhere.
//!
//! `tests/run/checksum.rs` checks this against Go itself (`tests/oracles/synchro-checksum`).

use std::fmt::Write as _;

use serde_json::Value as Json;

/// synchro's checksum of a row, from the row's `row_to_json` text.
///
/// ```
/// use sluice::sink::checksum::record_checksum;
///
/// // synchro's own example: CRC-32 of {"id":"u1","name":"Ann"}.
/// assert_eq!(record_checksum(r#"{"id":"u1","name":"Ann"}"#), 227963769);
/// // Keys are sorted and numbers go through float64, so column order and digits beyond
/// // float64's precision do not change it.
/// assert_eq!(
///     record_checksum(r#"{"name":"Ann","id":"u1"}"#),
///     record_checksum(r#"{"id":"u1","name":"Ann"}"#)
/// );
/// assert_eq!(
///     record_checksum(r#"{"n":9007199254740993}"#),
///     record_checksum(r#"{"n":9007199254740992}"#)
/// );
/// ```
pub fn record_checksum(row_json: &str) -> i32 {
    let canonical = match serde_json::from_str::<Json>(row_json) {
        // Go decodes into a map: anything but an object fails.
        Ok(value @ Json::Object(_)) => go_encode(&value),
        _ => None,
    };
    let bytes = canonical.as_deref().unwrap_or(row_json).as_bytes();
    crc32fast::hash(bytes) as i32
}

/// `value` as Go's `json.Marshal` writes what `json.Unmarshal` made of it; `None` where Go's
/// decode would have failed (a number out of `float64`'s range).
fn go_encode(value: &Json) -> Option<String> {
    let mut out = String::new();
    write_value(&mut out, value)?;
    Some(out)
}

fn write_value(out: &mut String, value: &Json) -> Option<()> {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => write_float(out, n.as_f64().filter(|f| f.is_finite())?),
        Json::String(s) => write_string(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Json::Object(map) => {
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item)?;
            }
            out.push('}');
        }
    }
    Some(())
}

/// A `float64` as Go's encoder prints it (`strconv.AppendFloat` with the shortest digits, 'f'
/// or 'e' by magnitude, then a two-digit negative exponent shortened: `1e-07` → `1e-7`).
fn write_float(out: &mut String, f: f64) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let sci = format!("{f:e}");
        let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exponent.unsigned_abs());
        // Go shortens a two-digit negative exponent with a leading zero.
        if exponent < 0 && exponent > -10 {
            let len = out.len();
            out.remove(len - 2);
        }
    } else {
        let _ = write!(out, "{f}");
    }
}

/// A string as Go's encoder writes it with HTML escaping on (the default of `json.Marshal`).
fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{0}'..='\u{1f}' => {
                let b = c as u32;
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize & 0xf] as char);
                out.push(HEX[b as usize & 0xf] as char);
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        go_encode(&serde_json::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn synchros_own_example() {
        assert_eq!(record_checksum(r#"{"id":"u1","name":"Ann"}"#), 227963769);
    }

    #[test]
    fn keys_sort_and_whitespace_goes() {
        assert_eq!(
            canonical(r#"{"b": [1, {"z": null, "a": true}], "a": "x"}"#),
            r#"{"a":"x","b":[1,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn numbers_print_as_go_float64() {
        let cases = [
            ("0", "0"),
            ("-0", "-0"),
            ("42", "42"),
            ("1.50", "1.5"),
            ("9007199254740993", "9007199254740992"),
            ("123456789012345678901234567890", "1.2345678901234568e+29"),
            ("1e20", "100000000000000000000"),
            ("1e21", "1e+21"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1e-7"),
            ("1.5e-10", "1.5e-10"),
            ("-2.5e300", "-2.5e+300"),
            ("0.1", "0.1"),
        ];
        for (input, go) in cases {
            assert_eq!(
                canonical(&format!(r#"{{"n":{input}}}"#)),
                format!(r#"{{"n":{go}}}"#)
            );
        }
    }

    #[test]
    fn strings_escape_as_go_does() {
        assert_eq!(
            canonical(
                r#"{"s":"<a href=\"x\">&amp;</a>\n\t\r\b\f\u0001\u001f\u007f é \u2028\u2029 \\"}"#
            ),
            "{\"s\":\"\\u003ca href=\\\"x\\\"\\u003e\\u0026amp;\\u003c/a\\u003e\\n\\t\\r\\b\\f\\u0001\\u001f\u{7f} é \\u2028\\u2029 \\\\\"}"
        );
    }

    #[test]
    fn numbers_beyond_float64_fall_back_to_the_raw_text() {
        let raw = r#"{"n":1e400}"#;
        assert_eq!(record_checksum(raw), crc32fast::hash(raw.as_bytes()) as i32);
        assert_eq!(
            record_checksum("not json"),
            crc32fast::hash(b"not json") as i32
        );
    }
}
