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

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

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
    let canonical = go_round_trip(row_json);
    let bytes = canonical.as_deref().unwrap_or(row_json).as_bytes();
    crc32fast::hash(bytes) as i32
}

/// `row_json` as Go's `json.Marshal` writes what `json.Unmarshal` into a `map[string]any` made
/// of it; `None` where Go's decode fails (not an object, invalid JSON, a number out of
/// `float64`'s range).
fn go_round_trip(row_json: &str) -> Option<String> {
    // Go decodes into a map: anything but an object fails.
    let Ok(Node::Object(entries)) = serde_json::from_str::<Node<'_>>(row_json) else {
        return None;
    };
    let mut out = String::with_capacity(row_json.len() + 16);
    write_object(&mut out, entries);
    Some(out)
}

/// A JSON value as Go's decode sees it, borrowing the input's strings where they have no
/// escapes (every row's checksum passes through here: a `serde_json::Value` would allocate
/// each key and string).
enum Node<'a> {
    Null,
    Bool(bool),
    /// Every number is a `float64` to Go.
    Number(f64),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    /// In input order, duplicates included: [`write_object`] sorts and keeps the last.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

fn write_value(out: &mut String, value: Node<'_>) {
    match value {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        Node::Number(f) => write_float(out, f),
        Node::String(s) => write_string(out, &s),
        Node::Array(items) => {
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Node::Object(entries) => write_object(out, entries),
    }
}

/// Keys sorted by their bytes; of a duplicated key, the last value (a Go map keeps the last
/// assignment).
fn write_object(out: &mut String, mut entries: Vec<(Cow<'_, str>, Node<'_>)>) {
    // Reversed, a stable sort puts the last of equal keys first, which dedup keeps.
    entries.reverse();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    entries.dedup_by(|later, kept| later.0 == kept.0);
    out.push('{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, &key);
        out.push(':');
        write_value(out, item);
    }
    out.push('}');
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n as f64))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(n as f64))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Node<'de>, E> {
        // serde_json refuses out-of-range numbers itself; a non-finite one fails as in Go.
        if n.is_finite() {
            Ok(Node::Number(n))
        } else {
            Err(E::custom("number out of float64's range"))
        }
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((Key(key), value)) = map.next_entry::<Key<'de>, Node<'de>>()? {
            entries.push((key, value));
        }
        Ok(Node::Object(entries))
    }
}

/// An object key, borrowed where it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(s)))
    }
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
        go_round_trip(text).unwrap()
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
    fn a_duplicate_key_keeps_its_last_value_at_every_depth() {
        assert_eq!(canonical(r#"{"a":1,"b":0,"a":2}"#), r#"{"a":2,"b":0}"#);
        assert_eq!(
            canonical(r#"{"j":{"b":1,"a":2,"b":3},"i":[{"x":1,"x":null}]}"#),
            r#"{"i":[{"x":null}],"j":{"a":2,"b":3}}"#
        );
    }

    #[test]
    fn escaped_keys_and_strings_are_decoded_first() {
        assert_eq!(
            canonical(r#"{"a\"b":"x\u0041\u00e9","\u0061":true}"#),
            "{\"a\":true,\"a\\\"b\":\"xAé\"}"
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
