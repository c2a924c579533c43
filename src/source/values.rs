//! Text-format column values to typed [`Value`]s, by type OID.
//!
//! pgoutput (protocol 1) sends every value in its type's text output form, as does a SQL query
//! in text mode, so the snapshot reader uses the same function. Both sessions pin the settings
//! that output forms depend on to [`CANONICAL_SETTINGS`], whatever the database's or role's
//! defaults, so a value reads the same from either; the decoder still accepts other time zones
//! and the escape bytea format.
//!
//! Normal forms: timestamps `YYYY-MM-DDTHH:MM:SS[.ffffff]`, timestamptz the same in UTC with a
//! `Z` suffix, `infinity`/`-infinity` unchanged; arrays of built-in types as JSON arrays; numeric
//! as its exact text. Text that does not parse as its type is kept as [`Value::Text`] rather
//! than lost.

use std::fmt::Write as _;

use crate::model::Value;

/// The session settings under which values are rendered, in the replication connection (startup
/// parameters) and the snapshot's SQL session (`SET`): record ids are the key's `::text` under
/// exactly these (see `sink::record_id`).
pub const CANONICAL_SETTINGS: [(&str, &str); 5] = [
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
];

pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Decodes one non-null value in text format.
pub fn decode_text(type_oid: u32, text: &str) -> Value {
    match type_oid {
        oid::BOOL => match text {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => Value::Text(text.to_owned()),
        },
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => match text.parse::<i64>() {
            Ok(n) => Value::Int(n),
            Err(_) => Value::Text(text.to_owned()),
        },
        oid::FLOAT4 | oid::FLOAT8 => match parse_float(text) {
            Some(f) => Value::Float(f),
            None => Value::Text(text.to_owned()),
        },
        oid::NUMERIC => Value::Numeric(text.to_owned()),
        oid::JSON | oid::JSONB => Value::Json(text.to_owned()),
        oid::BYTEA => match decode_bytea(text) {
            Some(b) => Value::Bytes(b),
            None => Value::Text(text.to_owned()),
        },
        oid::DATE => Value::Date(text.to_owned()),
        oid::TIME => Value::Time(text.to_owned()),
        oid::TIMESTAMP => Value::Timestamp(normalize_timestamp(text)),
        oid::TIMESTAMPTZ => Value::Timestamptz(normalize_timestamptz(text)),
        _ => match array_element(type_oid) {
            Some(elem) => match array_to_json(elem, text) {
                Some(json) => Value::Json(json),
                None => Value::Text(text.to_owned()),
            },
            // text, varchar, bpchar, name, uuid, enums, domains, composites and unknown types.
            None => Value::Text(text.to_owned()),
        },
    }
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => text.parse::<f64>().ok().filter(|f| f.is_finite()),
    }
}

/// `\x` hex (bytea_output=hex) or the older escape format.
fn decode_bytea(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("\\x") {
        return hex::decode(hex).ok();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = bytes.get(i + 1..i + 4)?;
            if !oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                return None;
            }
            let v = u32::from(oct[0] - b'0') * 64
                + u32::from(oct[1] - b'0') * 8
                + u32::from(oct[2] - b'0');
            out.push(u8::try_from(v).ok()?);
            i += 4;
        }
    }
    Some(out)
}

fn is_special_time(text: &str) -> bool {
    matches!(text, "infinity" | "-infinity") || text.ends_with(" BC")
}

/// `2024-01-02 03:04:05.5` → `2024-01-02T03:04:05.5`.
fn normalize_timestamp(text: &str) -> String {
    if is_special_time(text) {
        return text.to_owned();
    }
    text.replacen(' ', "T", 1)
}

/// `2024-01-02 03:04:05.5+05:30` → `2024-01-01T21:34:05.5Z`. Text in an unexpected form is
/// returned unchanged rather than guessed at.
fn normalize_timestamptz(text: &str) -> String {
    if is_special_time(text) {
        return text.to_owned();
    }
    parse_timestamptz(text).unwrap_or_else(|| text.to_owned())
}

/// The largest year PostgreSQL's timestamps reach (294276 AD), with a little slack.
const MAX_YEAR: i64 = 300_000;

fn parse_timestamptz(text: &str) -> Option<String> {
    let (date, rest) = text.split_once(' ')?;
    // The zone starts at the last '+' or '-' of the time part.
    let zpos = rest.rfind(['+', '-'])?;
    let (time, zone) = rest.split_at(zpos);
    let sign: i64 = if zone.starts_with('-') { -1 } else { 1 };
    let mut zparts = zone[1..].split(':');
    let zh: i64 = zparts.next()?.parse().ok()?;
    let zm: i64 = zparts.next().map_or(Some(0), |m| m.parse().ok())?;
    let zs: i64 = zparts.next().map_or(Some(0), |s| s.parse().ok())?;
    // Every field is range-checked before any arithmetic: PostgreSQL's offsets stay within
    // ±15:59:59 and its years within 4713 BC..294276 AD, and anything else must fall back to
    // the text, not overflow (found by the `values` fuzz target).
    if !(0..=15).contains(&zh) || !(0..=59).contains(&zm) || !(0..=59).contains(&zs) {
        return None;
    }
    let offset = sign * (zh * 3600 + zm * 60 + zs);

    let mut dparts = date.rsplitn(3, '-');
    let day: i64 = dparts.next()?.parse().ok()?;
    let month: i64 = dparts.next()?.parse().ok()?;
    let year: i64 = dparts.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((a, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (a, Some(f)),
        Some(_) => return None,
        None => (time, None),
    };
    let mut tparts = hms.split(':');
    let h: i64 = tparts.next()?.parse().ok()?;
    let m: i64 = tparts.next()?.parse().ok()?;
    let s: i64 = tparts.next()?.parse().ok()?;
    if tparts.next().is_some()
        || !(1..=MAX_YEAR).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || !(0..=24).contains(&h)
        || !(0..=59).contains(&m)
        || !(0..=60).contains(&s)
    {
        return None;
    }
    let total = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s - offset;
    let days = total.div_euclid(86_400);
    let secs = total.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    if y < 1 {
        return None;
    }
    let mut out = String::with_capacity(32);
    let _ = write!(
        out,
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out.push('Z');
    Some(out)
}

// Howard Hinnant's days-from-civil algorithms (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `inet`, whose `::text` differs from its output form (see `sink::record_id`).
pub const INET: u32 = 869;

/// The built-in types that [`decode_text`] or the record id treat apart from text, by their
/// `pg_catalog` name: what a domain over one of them is presented as. pgoutput describes a domain
/// column by the domain's OID and, in a Type message, its base type's name; the snapshot reads
/// the base type from the catalog. Both map it through [`presented_type`], so a domain over
/// `int4` reads as an integer and a domain over `char(4)` gets `char(4)`'s record id, from the
/// snapshot and the stream alike.
fn builtin_by_name(name: &str) -> Option<u32> {
    Some(match name {
        "bool" => oid::BOOL,
        "bytea" => oid::BYTEA,
        "char" => oid::CHAR,
        "name" => oid::NAME,
        "int8" => oid::INT8,
        "int2" => oid::INT2,
        "int4" => oid::INT4,
        "text" => oid::TEXT,
        "oid" => oid::OID,
        "json" => oid::JSON,
        "float4" => oid::FLOAT4,
        "float8" => oid::FLOAT8,
        "bpchar" => oid::BPCHAR,
        "varchar" => oid::VARCHAR,
        "date" => oid::DATE,
        "time" => oid::TIME,
        "timestamp" => oid::TIMESTAMP,
        "timestamptz" => oid::TIMESTAMPTZ,
        "numeric" => oid::NUMERIC,
        "uuid" => oid::UUID,
        "jsonb" => oid::JSONB,
        "inet" => INET,
        "_bool" => 1000,
        "_bytea" => 1001,
        "_char" => 1002,
        "_name" => 1003,
        "_int2" => 1005,
        "_int4" => 1007,
        "_text" => 1009,
        "_bpchar" => 1014,
        "_varchar" => 1015,
        "_int8" => 1016,
        "_float4" => 1021,
        "_float8" => 1022,
        "_oid" => 1028,
        "_timestamp" => 1115,
        "_date" => 1182,
        "_time" => 1183,
        "_timestamptz" => 1185,
        "_numeric" => 1231,
        "_json" => 199,
        "_uuid" => 2951,
        "_jsonb" => 3807,
        _ => return None,
    })
}

/// The type a column of type `type_oid` is presented as: its base type, when it is a domain
/// whose base type (`base_namespace.base_name`) is one of the built-in types sluice types;
/// otherwise `type_oid` itself (a domain over `money`, an enum or a composite reads as text, as
/// those types themselves do).
pub fn presented_type(type_oid: u32, base_namespace: &str, base_name: &str) -> u32 {
    if base_namespace != "pg_catalog" {
        return type_oid;
    }
    builtin_by_name(base_name).unwrap_or(type_oid)
}

/// Element type of the built-in array types whose elements we know how to render.
pub fn array_element(array_oid: u32) -> Option<u32> {
    Some(match array_oid {
        1000 => oid::BOOL,
        1001 => oid::BYTEA,
        1002 => oid::CHAR,
        1003 => oid::NAME,
        1005 => oid::INT2,
        1007 => oid::INT4,
        1009 => oid::TEXT,
        1014 => oid::BPCHAR,
        1015 => oid::VARCHAR,
        1016 => oid::INT8,
        1021 => oid::FLOAT4,
        1022 => oid::FLOAT8,
        1028 => oid::OID,
        1115 => oid::TIMESTAMP,
        1182 => oid::DATE,
        1183 => oid::TIME,
        1185 => oid::TIMESTAMPTZ,
        1231 => oid::NUMERIC,
        199 => oid::JSON,
        2951 => oid::UUID,
        3807 => oid::JSONB,
        _ => return None,
    })
}

/// Renders a PostgreSQL array literal (`{1,NULL,"a b"}`, nested, with an optional `[1:2]=`
/// bounds prefix) as a JSON array. `None` when the literal is malformed.
fn array_to_json(elem: u32, text: &str) -> Option<String> {
    let body = match text.strip_prefix('[') {
        Some(_) => text.split_once('=')?.1,
        None => text,
    };
    let mut p = ArrayParser {
        s: body.as_bytes(),
        i: 0,
        out: String::with_capacity(text.len() + 8),
        elem,
        // box is the only built-in type with ';' as delimiter and it is not in the table above.
        delim: b',',
        depth: 0,
    };
    p.array()?;
    (p.i == p.s.len()).then_some(p.out)
}

struct ArrayParser<'a> {
    s: &'a [u8],
    i: usize,
    out: String,
    elem: u32,
    delim: u8,
    /// Nesting level of the array being parsed; at most [`MAX_ARRAY_DIMENSIONS`].
    depth: usize,
}

/// PostgreSQL's `MAXDIM`: no array it sends nests deeper. The parser recurses once per level,
/// so deeper text (only hostile input) is kept as text instead of exhausting the stack (found by
/// replaying the `values` fuzz corpus on a 2 MB test thread).
const MAX_ARRAY_DIMENSIONS: usize = 6;

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn array(&mut self) -> Option<()> {
        if self.peek()? != b'{' || self.depth == MAX_ARRAY_DIMENSIONS {
            return None;
        }
        self.depth += 1;
        self.i += 1;
        self.out.push('[');
        if self.peek()? == b'}' {
            self.i += 1;
            self.out.push(']');
            self.depth -= 1;
            return Some(());
        }
        loop {
            match self.peek()? {
                b'{' => self.array()?,
                b'"' => {
                    let v = self.quoted()?;
                    self.element(&v, true);
                }
                _ => {
                    let start = self.i;
                    while let Some(c) = self.peek() {
                        if c == self.delim || c == b'}' {
                            break;
                        }
                        self.i += 1;
                    }
                    let raw = std::str::from_utf8(&self.s[start..self.i]).ok()?.trim();
                    if raw.is_empty() {
                        return None;
                    }
                    let raw = raw.to_owned();
                    self.element(&raw, false);
                }
            }
            match self.peek()? {
                c if c == self.delim => {
                    self.i += 1;
                    self.out.push(',');
                }
                b'}' => {
                    self.i += 1;
                    self.out.push(']');
                    self.depth -= 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn quoted(&mut self) -> Option<String> {
        self.i += 1;
        let mut buf = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    buf.push(self.peek()?);
                    self.i += 1;
                }
                c => buf.push(c),
            }
        }
        String::from_utf8(buf).ok()
    }

    fn element(&mut self, raw: &str, quoted: bool) {
        if !quoted && raw.eq_ignore_ascii_case("NULL") {
            self.out.push_str("null");
            return;
        }
        match decode_text(self.elem, raw) {
            Value::Bool(b) => self.out.push_str(if b { "true" } else { "false" }),
            Value::Int(n) => {
                let _ = write!(self.out, "{n}");
            }
            // Finite numbers keep their exact text; NaN and infinities have no JSON number form.
            Value::Float(f) if f.is_finite() => self.out.push_str(raw),
            Value::Numeric(n)
                if n.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.') =>
            {
                self.out.push_str(&n)
            }
            Value::Json(j) => self.out.push_str(&j),
            Value::Bytes(b) => {
                self.out.push_str("\"\\\\x");
                self.out.push_str(&hex::encode(b));
                self.out.push('"');
            }
            Value::Timestamp(t) | Value::Timestamptz(t) | Value::Date(t) | Value::Time(t) => {
                json_string(&mut self.out, &t)
            }
            _ => json_string(&mut self.out, raw),
        }
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars() {
        assert_eq!(decode_text(16, "t"), Value::Bool(true));
        assert_eq!(decode_text(16, "f"), Value::Bool(false));
        assert_eq!(decode_text(21, "-32768"), Value::Int(-32768));
        assert_eq!(decode_text(20, "9223372036854775807"), Value::Int(i64::MAX));
        assert_eq!(decode_text(701, "1.5"), Value::Float(1.5));
        assert_eq!(
            decode_text(700, "-Infinity"),
            Value::Float(f64::NEG_INFINITY)
        );
        assert!(matches!(decode_text(701, "NaN"), Value::Float(f) if f.is_nan()));
        assert_eq!(decode_text(1700, "NaN"), Value::Numeric("NaN".into()));
        assert_eq!(
            decode_text(1700, "12345678901234567890.000000000001"),
            Value::Numeric("12345678901234567890.000000000001".into())
        );
        assert_eq!(
            decode_text(3802, r#"{"a": 1}"#),
            Value::Json(r#"{"a": 1}"#.into())
        );
        assert_eq!(decode_text(17, "\\x00ff10"), Value::Bytes(vec![0, 255, 16]));
        assert_eq!(
            decode_text(17, "a\\\\b\\001"),
            Value::Bytes(b"a\\b\x01".to_vec())
        );
        assert_eq!(
            decode_text(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
        );
        assert_eq!(decode_text(99999, "happy"), Value::Text("happy".into()));
        assert_eq!(decode_text(23, "x"), Value::Text("x".into()));
    }

    #[test]
    fn times_are_normalised() {
        assert_eq!(
            decode_text(1082, "2024-02-29"),
            Value::Date("2024-02-29".into())
        );
        assert_eq!(
            decode_text(1083, "13:14:15.5"),
            Value::Time("13:14:15.5".into())
        );
        assert_eq!(
            decode_text(1114, "2024-01-02 03:04:05.123456"),
            Value::Timestamp("2024-01-02T03:04:05.123456".into())
        );
        assert_eq!(
            decode_text(1114, "infinity"),
            Value::Timestamp("infinity".into())
        );
        assert_eq!(
            decode_text(1184, "2024-01-02 03:04:05+00"),
            Value::Timestamptz("2024-01-02T03:04:05Z".into())
        );
        assert_eq!(
            decode_text(1184, "2024-03-01 01:04:05.25+05:30"),
            Value::Timestamptz("2024-02-29T19:34:05.25Z".into())
        );
        assert_eq!(
            decode_text(1184, "1999-12-31 20:00:00-08"),
            Value::Timestamptz("2000-01-01T04:00:00Z".into())
        );
        assert_eq!(
            decode_text(1184, "-infinity"),
            Value::Timestamptz("-infinity".into())
        );
    }

    #[test]
    fn out_of_range_timestamptz_fields_stay_text() {
        // Found by the `values` fuzz target: a huge zone offset overflowed i64 (a panic with
        // overflow checks, a garbage timestamp without). Each field out of range keeps the text.
        for text in [
            "2024-01-01 00:00:00+1666666666666666664:59",
            "2024-01-01 00:00:00+16",
            "2024-01-01 00:00:00+05:60",
            "2024-01-01 00:00:00+05:30:60",
            "9223372036854775807-01-01 00:00:00+00",
            "0-01-01 00:00:00+00",
            "2024-01-01 9223372036854775807:00:00+00",
            "2024-01-01 25:00:00+00",
            "2024-01-01 00:60:00+00",
            "2024-01-01 00:00:61+00",
            "2024-01-01 -1:00:00+00",
        ] {
            assert_eq!(decode_text(1184, text), Value::Timestamptz(text.into()));
        }
        assert_eq!(
            decode_text(1184, "294276-12-31 23:59:59+15:59:59"),
            Value::Timestamptz("294276-12-31T08:00:00Z".into())
        );
    }

    /// Every array type the decoder renders, and every base type, is presented as itself when a
    /// domain is over it.
    #[test]
    fn domains_over_typed_builtins_are_presented_as_their_base() {
        let arrays = (0..4000).filter(|&o| array_element(o).is_some());
        let named: Vec<u32> = arrays
            .map(|o| {
                let name = format!("_{}", builtin_name(array_element(o).unwrap()));
                presented_type(90_000, "pg_catalog", &name)
            })
            .collect();
        assert!(
            named.iter().all(|&o| array_element(o).is_some()),
            "{named:?}"
        );
        assert_eq!(presented_type(90_000, "pg_catalog", "bpchar"), oid::BPCHAR);
        assert_eq!(presented_type(90_000, "pg_catalog", "inet"), INET);
        assert_eq!(presented_type(90_000, "pg_catalog", "money"), 90_000);
        assert_eq!(presented_type(90_000, "public", "int4"), 90_000);
    }

    fn builtin_name(type_oid: u32) -> &'static str {
        [
            "bool",
            "bytea",
            "char",
            "name",
            "int8",
            "int2",
            "int4",
            "text",
            "oid",
            "json",
            "float4",
            "float8",
            "bpchar",
            "varchar",
            "date",
            "time",
            "timestamp",
            "timestamptz",
            "numeric",
            "uuid",
            "jsonb",
        ]
        .into_iter()
        .find(|n| builtin_by_name(n) == Some(type_oid))
        .unwrap()
    }

    #[test]
    fn arrays_nest_at_most_six_deep() {
        assert_eq!(
            decode_text(1007, "{{{{{{1}}}}}}"),
            Value::Json("[[[[[[1]]]]]]".into())
        );
        assert_eq!(
            decode_text(1007, "{{{{{{{1}}}}}}}"),
            Value::Text("{{{{{{{1}}}}}}}".into())
        );
        // Deep enough to overflow a test thread's stack before the limit.
        let deep = format!("{}1{}", "{".repeat(100_000), "}".repeat(100_000));
        assert_eq!(decode_text(1007, &deep), Value::Text(deep.clone()));
    }

    #[test]
    fn arrays_become_json() {
        assert_eq!(decode_text(1007, "{}"), Value::Json("[]".into()));
        assert_eq!(
            decode_text(1007, "{1,NULL,-3}"),
            Value::Json("[1,null,-3]".into())
        );
        assert_eq!(
            decode_text(1009, r#"{"a b","NULL",NULL,"q\"uo\\te",plain}"#),
            Value::Json(r#"["a b","NULL",null,"q\"uo\\te","plain"]"#.into())
        );
        assert_eq!(
            decode_text(1000, "{{t,f},{f,t}}"),
            Value::Json("[[true,false],[false,true]]".into())
        );
        assert_eq!(
            decode_text(1022, "{1.5,NaN,Infinity}"),
            Value::Json(r#"[1.5,"NaN","Infinity"]"#.into())
        );
        assert_eq!(
            decode_text(1231, "{1.10,NaN}"),
            Value::Json(r#"[1.10,"NaN"]"#.into())
        );
        assert_eq!(
            decode_text(1007, "[0:1]={7,8}"),
            Value::Json("[7,8]".into())
        );
        assert_eq!(
            decode_text(3807, r#"{"{\"a\": 1}",null}"#),
            Value::Json(r#"[{"a": 1},null]"#.into())
        );
        assert_eq!(decode_text(1007, "{1,2"), Value::Text("{1,2".into()));
    }
}
