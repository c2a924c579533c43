//! pgoutput messages to [`SourceEvent`]s: the relation cache and typed rows.

use std::borrow::Cow;
use std::sync::Arc;

use crate::model::{Change, Column, Lsn, Operation, TableSchema, Value};

use super::error::SourceError;
use super::pgoutput::{self, OldTuple, PgOutputMessage, TupleData, TupleValue};
use super::values::{decode_text, presented_type};

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// What the source hands to the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceEvent {
    /// `commit_time_us` is microseconds since the Unix epoch.
    Begin {
        final_lsn: Lsn,
        commit_time_us: i64,
        xid: u32,
    },
    /// Values typed by OID; `Change.lsn` is the enclosing Begin's `final_lsn`.
    Change(Change),
    Truncate {
        tables: Vec<Arc<TableSchema>>,
        cascade: bool,
        restart_identity: bool,
        lsn: Lsn,
    },
    /// `end_lsn` is what the sink persists and later confirms.
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time_us: i64,
    },
    /// A `pg_logical_emit_message` record.
    Message {
        transactional: bool,
        prefix: String,
        content: Vec<u8>,
        lsn: Lsn,
    },
    /// Sent after the relation cache is updated, so a schema change is visible downstream. The
    /// shape's `identity` comes from the message; its `primary_key` is empty, because pgoutput
    /// does not say it: whoever holds a catalog connection fills it in
    /// ([`crate::source::KeyedRelations`]).
    Relation(Arc<TableSchema>),
    /// The server's WAL end while idle: everything before it has been sent.
    Keepalive { wal_end: Lsn },
}

/// Turns pgoutput messages into events, keeping the relation cache (by OID) between messages.
#[derive(Default)]
pub struct EventDecoder {
    relations: rustc_hash::FxHashMap<u32, Arc<TableSchema>>,
    /// What each non-built-in type a Type message described is presented as (see
    /// [`presented_type`]): pgoutput sends one before the Relation message that uses it.
    types: rustc_hash::FxHashMap<u32, u32>,
    /// `final_lsn` of the open transaction.
    xact_lsn: Lsn,
    in_stream: bool,
}

impl EventDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached shape of a relation.
    pub fn relation(&self, oid: u32) -> Option<&Arc<TableSchema>> {
        self.relations.get(&oid)
    }

    /// Decodes the pgoutput message carried by one XLogData at `wal_start`. `None` for messages
    /// that carry nothing for the pipeline (Origin, Type, stream boundaries).
    pub fn decode(
        &mut self,
        wal_start: Lsn,
        data: &[u8],
    ) -> Result<Option<SourceEvent>, SourceError> {
        let msg =
            pgoutput::decode_with(data, self.in_stream).map_err(|source| SourceError::Decode {
                lsn: wal_start,
                source,
            })?;
        let lsn = self.xact_lsn;
        Ok(Some(match msg {
            PgOutputMessage::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                self.xact_lsn = final_lsn;
                SourceEvent::Begin {
                    final_lsn,
                    commit_time_us: commit_time.saturating_add(PG_EPOCH_OFFSET_US),
                    xid,
                }
            }
            PgOutputMessage::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => SourceEvent::Commit {
                commit_lsn,
                end_lsn,
                commit_time_us: commit_time.saturating_add(PG_EPOCH_OFFSET_US),
            },
            PgOutputMessage::Relation(r) => {
                // The flags mark the replica identity's columns (every column under FULL), not
                // the primary key: the key is left for the catalog to say.
                let schema = Arc::new(TableSchema {
                    oid: r.oid,
                    schema: r.namespace.to_owned(),
                    name: r.name.to_owned(),
                    replica_identity: r.replica_identity,
                    columns: r
                        .columns
                        .iter()
                        .map(|c| Column {
                            name: c.name.to_owned(),
                            type_oid: self.types.get(&c.type_oid).copied().unwrap_or(c.type_oid),
                            type_modifier: c.type_modifier,
                            key: false,
                        })
                        .collect(),
                    primary_key: Vec::new(),
                    identity: r
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.key)
                        .map(|(i, _)| i)
                        .collect(),
                });
                self.relations.insert(r.oid, schema.clone());
                SourceEvent::Relation(schema)
            }
            PgOutputMessage::Insert { relation, new, .. } => {
                let table = self.table(relation, wal_start)?;
                SourceEvent::Change(Change {
                    new: Some(row(&table, &new, "insert", wal_start)?),
                    old: None,
                    op: Operation::Insert,
                    table,
                    lsn,
                })
            }
            PgOutputMessage::Update {
                relation, old, new, ..
            } => {
                let table = self.table(relation, wal_start)?;
                let old = match &old {
                    Some(o) => Some(row(&table, old_data(o), "update (old row)", wal_start)?),
                    None => None,
                };
                let mut new = row(&table, &new, "update", wal_start)?;
                if let Some(old) = &old {
                    fill_unchanged(&mut new, old);
                }
                SourceEvent::Change(Change {
                    new: Some(new),
                    old,
                    op: Operation::Update,
                    table,
                    lsn,
                })
            }
            PgOutputMessage::Delete { relation, old, .. } => {
                let table = self.table(relation, wal_start)?;
                SourceEvent::Change(Change {
                    old: Some(row(&table, old_data(&old), "delete", wal_start)?),
                    new: None,
                    op: Operation::Delete,
                    table,
                    lsn,
                })
            }
            PgOutputMessage::Truncate {
                cascade,
                restart_identity,
                relations,
                ..
            } => SourceEvent::Truncate {
                tables: relations
                    .iter()
                    .map(|oid| self.table(*oid, wal_start))
                    .collect::<Result<_, _>>()?,
                cascade,
                restart_identity,
                lsn,
            },
            PgOutputMessage::Message {
                transactional,
                lsn,
                prefix,
                content,
                ..
            } => SourceEvent::Message {
                transactional,
                prefix: prefix.to_owned(),
                content: content.to_vec(),
                lsn,
            },
            PgOutputMessage::StreamStart { .. } => {
                self.in_stream = true;
                return Ok(None);
            }
            PgOutputMessage::StreamStop => {
                self.in_stream = false;
                return Ok(None);
            }
            // A domain's Type message carries its base type's name: the Relation messages that
            // follow present its columns as that type. pgoutput writes `pg_catalog` as an empty
            // namespace.
            PgOutputMessage::Type {
                oid,
                namespace,
                name,
                ..
            } => {
                let namespace = if namespace.is_empty() {
                    "pg_catalog"
                } else {
                    namespace
                };
                self.types.insert(oid, presented_type(oid, namespace, name));
                return Ok(None);
            }
            // Streaming of in-progress transactions is never requested (proto_version 1), so
            // these only parse; Origin carries nothing the pipeline uses.
            PgOutputMessage::StreamCommit { .. }
            | PgOutputMessage::StreamAbort { .. }
            | PgOutputMessage::Origin { .. } => return Ok(None),
        }))
    }

    fn table(&self, oid: u32, lsn: Lsn) -> Result<Arc<TableSchema>, SourceError> {
        self.relations
            .get(&oid)
            .cloned()
            .ok_or(SourceError::UnknownRelation { oid, lsn })
    }
}

/// Replaces the new row's unchanged TOAST values with the old row's values, where the old tuple
/// carries them: every column under REPLICA IDENTITY FULL, the key columns when the key holds an
/// out-of-line value. An unchanged value is by definition the old one, so the rules (and the
/// checksum) see the real row. The old tuple's NULLs are not values here: a key-only old tuple
/// sends NULL for every column it leaves out, and an unchanged TOAST value is never NULL.
fn fill_unchanged(new: &mut [Value], old: &[Value]) {
    for (value, before) in new.iter_mut().zip(old) {
        if matches!(value, Value::Unchanged) && !matches!(before, Value::Null | Value::Unchanged) {
            *value = before.clone();
        }
    }
}

fn old_data<'a, 'b>(o: &'b OldTuple<'a>) -> &'b TupleData<'a> {
    o.data()
}

fn row(
    table: &TableSchema,
    tuple: &TupleData<'_>,
    what: &'static str,
    lsn: Lsn,
) -> Result<Vec<Value>, SourceError> {
    if tuple.columns.len() != table.columns.len() {
        return Err(SourceError::ColumnCount {
            what,
            table: table.qualified_name(),
            lsn,
            got: tuple.columns.len(),
            expected: table.columns.len(),
        });
    }
    Ok(tuple
        .columns
        .iter()
        .zip(&table.columns)
        .map(|(v, c)| match v {
            TupleValue::Null => Value::Null,
            TupleValue::Unchanged => Value::Unchanged,
            TupleValue::Text(b) => {
                let text = match std::str::from_utf8(b) {
                    Ok(s) => Cow::Borrowed(s),
                    Err(_) => String::from_utf8_lossy(b),
                };
                decode_text(c.type_oid, &text)
            }
            TupleValue::Binary(b) => Value::Bytes(b.to_vec()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_values_are_filled_from_the_old_row_where_it_has_them() {
        let t = |s: &str| Value::Text(s.into());
        // Under FULL the old row has every value; a key-only old row has NULL elsewhere, and an
        // unchanged TOAST value is never NULL, so a NULL is never copied.
        let mut new = vec![t("1"), Value::Unchanged, Value::Unchanged, t("new")];
        let old = vec![t("1"), t("big"), Value::Null, t("old")];
        fill_unchanged(&mut new, &old);
        assert_eq!(new, vec![t("1"), t("big"), Value::Unchanged, t("new")]);
    }
}
