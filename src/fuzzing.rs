//! The bodies of the fuzz targets, shared by `tests/fuzz/fuzz_targets/*.rs` (libFuzzer, nightly)
//! and `tests/faults/corpus.rs` (replays the committed corpora on stable, in `.ci/run`), so that
//! both exercise exactly the same code. Each function must return normally for every input: a
//! panic is a bug in the code under test.
//!
//! Not part of sluice's API.

use std::io::BufRead;

use crate::model::Lsn;
use crate::rules::jsonl::ChangeReader;
use crate::source::EventDecoder;
use crate::source::pgoutput;
use crate::source::values::decode_text;

/// Separates the pgoutput messages of one `decode` input. Four bytes that valid messages of the
/// seed corpus do not contain (a lone 0xFF would split the -1 type modifiers of Relation
/// messages); pass it to libFuzzer as a dictionary entry (`tests/fuzz/decode.dict`).
pub const DECODE_SEPARATOR: &[u8] = b"\xfe\xfdMS";

/// The `decode` target: `data` is a stream of pgoutput messages joined by
/// [`DECODE_SEPARATOR`]. Each one goes through the message decoder (outside and inside a
/// streamed transaction) and through one [`EventDecoder`] across the whole stream, so that
/// Relation messages fill the relation cache that later Insert/Update/Delete messages are typed
/// with.
pub fn decode(data: &[u8]) {
    let mut events = EventDecoder::new();
    for (i, message) in split(data, DECODE_SEPARATOR).enumerate() {
        let _ = pgoutput::decode(message);
        let _ = pgoutput::decode_with(message, true);
        let _ = events.decode(Lsn(i as u64), message);
    }
}

fn split<'a>(data: &'a [u8], separator: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current
            .windows(separator.len())
            .position(|window| window == separator)
        {
            Some(at) => {
                rest = Some(&current[at + separator.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Type OIDs the `values` target picks from with a selector below 2^31: every type the decoder
/// has a special case for, then a few arrays (which go through the array parser).
pub const VALUE_OIDS: [u32; 24] = [
    16, 17, 18, 19, 20, 21, 23, 25, 114, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1266, 1700,
    2950, 3802, 1007, 1009, 1231,
];

/// The `values` target: the first four bytes (big-endian) choose the type OID, the rest is the
/// value's text form. A selector with the top bit clear indexes [`VALUE_OIDS`]; with it set, its
/// low 31 bits are the OID itself, so unknown and array OIDs are reached too.
pub fn values(data: &[u8]) {
    let Some((oid, text)) = value_input(data) else {
        return;
    };
    let _ = decode_text(oid, text);
}

/// Splits a `values` input into its type OID and text, or `None` if it is too short or not UTF-8.
pub fn value_input(data: &[u8]) -> Option<(u32, &str)> {
    let (selector, rest) = data.split_first_chunk::<4>()?;
    let raw = u32::from_be_bytes(*selector);
    let oid = if raw & 0x8000_0000 == 0 {
        VALUE_OIDS[raw as usize % VALUE_OIDS.len()]
    } else {
        raw & 0x7fff_ffff
    };
    Some((oid, std::str::from_utf8(rest).ok()?))
}

/// The `jsonl` target: `data` is a `sluice eval` input file, read line by line the way `eval`
/// reads it (blank lines skipped, a line that is not UTF-8 ends the input) through one
/// [`ChangeReader`], so its schema cache sees several shapes of one table.
pub fn jsonl(data: &[u8]) {
    let mut reader = ChangeReader::new();
    for (index, line) in data.lines().enumerate() {
        let Ok(line) = line else {
            return;
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = reader.parse(index + 1, &line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_on_the_separator() {
        let parts: Vec<&[u8]> = split(b"a\xfe\xfdMSbc\xfe\xfdMS", DECODE_SEPARATOR).collect();
        assert_eq!(parts, [&b"a"[..], b"bc", b""]);
        let parts: Vec<&[u8]> = split(b"", DECODE_SEPARATOR).collect();
        assert_eq!(parts, [&b""[..]]);
    }

    #[test]
    fn value_selector() {
        assert_eq!(value_input(b"\0\0\0\x0aNaN"), Some((701, "NaN")));
        assert_eq!(value_input(b"\x80\0\x01\x00x"), Some((256, "x")));
        assert_eq!(value_input(b"\0\0\0"), None);
        assert_eq!(value_input(b"\0\0\0\0\xff"), None);
    }
}
