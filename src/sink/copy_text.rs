//! Encoding rows for `COPY ... FROM STDIN` in PostgreSQL's text format.

use bytes::{BufMut, BytesMut};

/// Appends one field, escaped for COPY text format.
pub fn put_field(buf: &mut BytesMut, value: &str) {
    for byte in value.bytes() {
        match byte {
            b'\\' => buf.put_slice(b"\\\\"),
            b'\t' => buf.put_slice(b"\\t"),
            b'\n' => buf.put_slice(b"\\n"),
            b'\r' => buf.put_slice(b"\\r"),
            other => buf.put_u8(other),
        }
    }
}

/// Appends one row of fields, tab-separated and newline-terminated.
pub fn put_row<'a>(buf: &mut BytesMut, fields: impl IntoIterator<Item = &'a str>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            buf.put_u8(b'\t');
        }
        put_field(buf, field);
    }
    buf.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_escaped() {
        let mut buf = BytesMut::new();
        put_row(&mut buf, ["a\tb", "c\\d\ne", "3"]);
        assert_eq!(&buf[..], b"a\\tb\tc\\\\d\\ne\t3\n");
    }
}
