//! Encoding rows for `COPY ... FROM STDIN (FORMAT binary)`.
//!
//! Binary rather than text: the server skips parsing and escaping, and so do we. Every field is
//! a 4-byte length and the value's binary send form (for text, its UTF-8 bytes).

use bytes::{BufMut, Bytes, BytesMut};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// A COPY binary payload under construction.
pub struct CopyBinary {
    buf: BytesMut,
}

impl CopyBinary {
    /// Starts a payload with room for about `rows` rows of `row_bytes` each.
    pub fn with_capacity(rows: usize, row_bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(SIGNATURE.len() + 10 + rows * row_bytes);
        buf.put_slice(SIGNATURE);
        buf.put_u32(0); // flags: no OIDs
        buf.put_u32(0); // header extension length
        CopyBinary { buf }
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.put_i16(fields);
        self
    }

    pub fn text(&mut self, value: &str) -> &mut Self {
        self.buf.put_i32(value.len() as i32);
        self.buf.put_slice(value.as_bytes());
        self
    }

    pub fn int2(&mut self, value: i16) -> &mut Self {
        self.buf.put_i32(2);
        self.buf.put_i16(value);
        self
    }

    pub fn int4_or_null(&mut self, value: Option<i32>) -> &mut Self {
        match value {
            Some(v) => {
                self.buf.put_i32(4);
                self.buf.put_i32(v);
            }
            None => self.buf.put_i32(-1),
        }
        self
    }

    /// The finished payload, with its trailer.
    pub fn finish(mut self) -> Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_binary_copy_format() {
        let mut copy = CopyBinary::with_capacity(1, 16);
        copy.row(3).text("a\tb").int2(2).int4_or_null(None);
        let bytes = copy.finish();
        let mut expected = SIGNATURE.to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 3, b'a', b'\t', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 2]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(&bytes[..], &expected[..]);
    }
}
