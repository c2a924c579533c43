//! Decoding of `pgoutput` messages (logical replication protocol versions 1 and 2).
//!
//! [`decode`] borrows from the input and never panics: every read is bounds-checked and
//! malformed input becomes a [`DecodeError`] naming the message and the offset.

use crate::model::{Lsn, ReplicaIdentity};

/// One decoded pgoutput message. Strings and tuple values borrow from the input buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum PgOutputMessage<'a> {
    Begin {
        final_lsn: Lsn,
        /// Microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL epoch).
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    Origin {
        commit_lsn: Lsn,
        name: &'a str,
    },
    Relation(RelationBody<'a>),
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: &'a str,
        name: &'a str,
    },
    Insert {
        xid: Option<u32>,
        relation: u32,
        new: TupleData<'a>,
    },
    Update {
        xid: Option<u32>,
        relation: u32,
        old: Option<OldTuple<'a>>,
        new: TupleData<'a>,
    },
    Delete {
        xid: Option<u32>,
        relation: u32,
        old: OldTuple<'a>,
    },
    Truncate {
        xid: Option<u32>,
        cascade: bool,
        restart_identity: bool,
        relations: Vec<u32>,
    },
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: Lsn,
        prefix: &'a str,
        content: &'a [u8],
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

/// A Relation message: a table's shape as of this point in the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct RelationBody<'a> {
    pub xid: Option<u32>,
    pub oid: u32,
    pub namespace: &'a str,
    pub name: &'a str,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn<'a>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RelationColumn<'a> {
    pub key: bool,
    pub name: &'a str,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// The old row of an update or delete.
#[derive(Clone, Debug, PartialEq)]
pub enum OldTuple<'a> {
    /// `K`: only the replica-identity key columns are non-null.
    Key(TupleData<'a>),
    /// `O`: the full old row (REPLICA IDENTITY FULL).
    Full(TupleData<'a>),
}

impl<'a> OldTuple<'a> {
    pub fn data(&self) -> &TupleData<'a> {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct TupleData<'a> {
    pub columns: Vec<TupleValue<'a>>,
}

/// One column of a tuple. `Unchanged` (a TOASTed value that was not sent) is never `Null`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TupleValue<'a> {
    Null,
    Unchanged,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

/// A message that is not valid pgoutput.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message type {0:?}")]
    UnknownType(char),
    #[error("pgoutput {message} message truncated at byte {offset}: needed {needed} more bytes")]
    Truncated {
        message: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("pgoutput {message} message has invalid {what} at byte {offset}")]
    Invalid {
        message: &'static str,
        what: &'static str,
        offset: usize,
    },
    #[error("pgoutput {message} message has {extra} unexpected trailing bytes")]
    Trailing { message: &'static str, extra: usize },
}

/// Decodes a message outside a streamed transaction.
pub fn decode(buf: &[u8]) -> Result<PgOutputMessage<'_>, DecodeError> {
    decode_with(buf, false)
}

/// Decodes a message; `in_stream` is true between Stream Start and Stream Stop, where data
/// messages carry the streamed transaction's xid first (protocol 2).
pub fn decode_with(buf: &[u8], in_stream: bool) -> Result<PgOutputMessage<'_>, DecodeError> {
    let (&tag, _) = buf.split_first().ok_or(DecodeError::Empty)?;
    let message = message_name(tag).ok_or(DecodeError::UnknownType(char::from(tag)))?;
    let mut r = Reader {
        buf,
        pos: 1,
        message,
    };
    let stream_xid = |r: &mut Reader<'_>| -> Result<Option<u32>, DecodeError> {
        if in_stream {
            r.u32().map(Some)
        } else {
            Ok(None)
        }
    };
    let msg = match tag {
        b'B' => PgOutputMessage::Begin {
            final_lsn: r.lsn()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => PgOutputMessage::Commit {
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_time: r.i64()?,
        },
        b'O' => PgOutputMessage::Origin {
            commit_lsn: r.lsn()?,
            name: r.cstr()?,
        },
        b'R' => {
            let xid = stream_xid(&mut r)?;
            let oid = r.u32()?;
            let namespace = r.cstr()?;
            let name = r.cstr()?;
            let ri_at = r.pos;
            let replica_identity = match r.u8()? {
                b'd' => ReplicaIdentity::Default,
                b'n' => ReplicaIdentity::Nothing,
                b'f' => ReplicaIdentity::Full,
                b'i' => ReplicaIdentity::Index,
                _ => return Err(r.invalid("replica identity", ri_at)),
            };
            let n = r.count()?;
            let mut columns = Vec::with_capacity(n.min(r.remaining() / 10));
            for _ in 0..n {
                columns.push(RelationColumn {
                    key: r.u8()? & 1 == 1,
                    name: r.cstr()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            PgOutputMessage::Relation(RelationBody {
                xid,
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => PgOutputMessage::Type {
            xid: stream_xid(&mut r)?,
            oid: r.u32()?,
            namespace: r.cstr()?,
            name: r.cstr()?,
        },
        b'I' => {
            let xid = stream_xid(&mut r)?;
            let relation = r.u32()?;
            r.expect(b'N', "tuple marker (expected N)")?;
            PgOutputMessage::Insert {
                xid,
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let xid = stream_xid(&mut r)?;
            let relation = r.u32()?;
            let at = r.pos;
            let old = match r.u8()? {
                b'K' => Some(OldTuple::Key(r.tuple()?)),
                b'O' => Some(OldTuple::Full(r.tuple()?)),
                b'N' => None,
                _ => return Err(r.invalid("tuple marker (expected K, O or N)", at)),
            };
            if old.is_some() {
                r.expect(b'N', "tuple marker (expected N)")?;
            }
            PgOutputMessage::Update {
                xid,
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let xid = stream_xid(&mut r)?;
            let relation = r.u32()?;
            let at = r.pos;
            let old = match r.u8()? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                _ => return Err(r.invalid("tuple marker (expected K or O)", at)),
            };
            PgOutputMessage::Delete { xid, relation, old }
        }
        b'T' => {
            let xid = stream_xid(&mut r)?;
            let n_at = r.pos;
            let n = r.u32()? as usize;
            if n > r.remaining() / 4 {
                return Err(r.invalid("relation count", n_at));
            }
            let options = r.u8()?;
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            PgOutputMessage::Truncate {
                xid,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                relations,
            }
        }
        b'M' => {
            let xid = stream_xid(&mut r)?;
            let transactional = r.u8()? & 1 == 1;
            let lsn = r.lsn()?;
            let prefix = r.cstr()?;
            let len = r.u32()? as usize;
            PgOutputMessage::Message {
                xid,
                transactional,
                lsn,
                prefix,
                content: r.bytes(len)?,
            }
        }
        b'S' => PgOutputMessage::StreamStart {
            xid: r.u32()?,
            first_segment: r.u8()? == 1,
        },
        b'E' => PgOutputMessage::StreamStop,
        b'c' => PgOutputMessage::StreamCommit {
            xid: r.u32()?,
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_time: r.i64()?,
        },
        b'A' => {
            let msg = PgOutputMessage::StreamAbort {
                xid: r.u32()?,
                subxid: r.u32()?,
            };
            // Protocol 4 appends the abort LSN and time for parallel apply; not needed here.
            r.pos = r.buf.len();
            msg
        }
        _ => return Err(DecodeError::UnknownType(char::from(tag))),
    };
    if r.pos != buf.len() {
        return Err(DecodeError::Trailing {
            message,
            extra: buf.len() - r.pos,
        });
    }
    Ok(msg)
}

fn message_name(tag: u8) -> Option<&'static str> {
    Some(match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        b'S' => "Stream Start",
        b'E' => "Stream Stop",
        b'c' => "Stream Commit",
        b'A' => "Stream Abort",
        _ => return None,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                message: self.message,
                offset: self.pos,
                needed: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        Ok(Lsn(u64::from_be_bytes(self.array()?)))
    }

    fn invalid(&self, what: &'static str, offset: usize) -> DecodeError {
        DecodeError::Invalid {
            message: self.message,
            what,
            offset,
        }
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), DecodeError> {
        let at = self.pos;
        if self.u8()? != byte {
            return Err(self.invalid(what, at));
        }
        Ok(())
    }

    /// A column count: an int16 that must not be negative.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        usize::try_from(self.i16()?).map_err(|_| self.invalid("column count", at))
    }

    fn cstr(&mut self) -> Result<&'a str, DecodeError> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated {
                message: self.message,
                offset: self.buf.len(),
                needed: 1,
            })?;
        let s = std::str::from_utf8(&rest[..nul])
            .map_err(|_| self.invalid("UTF-8 string", self.pos))?;
        self.pos += nul + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<TupleData<'a>, DecodeError> {
        let n = self.count()?;
        // Each column takes at least one byte: never pre-allocate beyond what the input holds.
        let mut columns = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            let at = self.pos;
            columns.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                b't' => {
                    let len = self.u32()? as usize;
                    TupleValue::Text(self.bytes(len)?)
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    TupleValue::Binary(self.bytes(len)?)
                }
                _ => return Err(self.invalid("tuple column kind (expected n, u, t or b)", at)),
            });
        }
        Ok(TupleData { columns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple_bytes(out: &mut Vec<u8>) {
        out.extend_from_slice(&3i16.to_be_bytes());
        out.push(b'n');
        out.push(b'u');
        out.push(b't');
        out.extend_from_slice(&2u32.to_be_bytes());
        out.extend_from_slice(b"42");
    }

    #[test]
    fn update_with_key_tuple() {
        let mut m = vec![b'U'];
        m.extend_from_slice(&16384u32.to_be_bytes());
        m.push(b'K');
        tuple_bytes(&mut m);
        m.push(b'N');
        tuple_bytes(&mut m);
        let expected_tuple = TupleData {
            columns: vec![
                TupleValue::Null,
                TupleValue::Unchanged,
                TupleValue::Text(b"42"),
            ],
        };
        assert_eq!(
            decode(&m).unwrap(),
            PgOutputMessage::Update {
                xid: None,
                relation: 16384,
                old: Some(OldTuple::Key(expected_tuple.clone())),
                new: expected_tuple,
            }
        );
        // Every strict prefix is an error, never a panic.
        for i in 0..m.len() {
            assert!(decode(&m[..i]).is_err(), "prefix {i}");
        }
        assert_eq!(
            decode(&m[..m.len() - 1]).unwrap_err().to_string(),
            "pgoutput Update message truncated at byte 27: needed 1 more bytes"
        );
    }

    #[test]
    fn streamed_insert_carries_xid() {
        let mut m = vec![b'I'];
        m.extend_from_slice(&77u32.to_be_bytes());
        m.extend_from_slice(&5u32.to_be_bytes());
        m.push(b'N');
        m.extend_from_slice(&0i16.to_be_bytes());
        assert_eq!(
            decode_with(&m, true).unwrap(),
            PgOutputMessage::Insert {
                xid: Some(77),
                relation: 5,
                new: TupleData::default()
            }
        );
        assert!(decode(&m).is_err());
    }

    #[test]
    fn unknown_and_hostile_lengths() {
        assert_eq!(decode(b"").unwrap_err(), DecodeError::Empty);
        assert_eq!(decode(b"Z").unwrap_err(), DecodeError::UnknownType('Z'));
        // A truncate claiming 4 billion relations must not allocate for them.
        let mut m = vec![b'T'];
        m.extend_from_slice(&u32::MAX.to_be_bytes());
        m.push(0);
        assert_eq!(
            decode(&m).unwrap_err(),
            DecodeError::Invalid {
                message: "Truncate",
                what: "relation count",
                offset: 1
            }
        );
    }
}
