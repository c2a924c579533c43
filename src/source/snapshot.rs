//! The initial snapshot: every published row, read in primary-key keyset chunks inside one
//! `REPEATABLE READ` transaction that imports the slot's exported snapshot.
//!
//! It reads what the publication publishes, no more: the rows its row filter passes, and the
//! columns the stream carries (see [`PublishedTable`]).
//!
//! Importing the exported snapshot is what makes the hand-off gapless: the snapshot shows exactly
//! the transactions committed before the slot's consistent point, and the stream starts at that
//! point, so every change is seen once, either here or in the stream.

use std::sync::Arc;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::model::{Change, Lsn, Operation, Value};
use crate::source::catalog::{PublishedTable, quote_ident, quote_literal};
use crate::source::values::{CANONICAL_SETTINGS, decode_text};

/// A snapshot failure, naming the table.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "cannot import the exported snapshot {name:?} (it is only valid while the replication connection that created the slot stays idle): {source}"
    )]
    Import {
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("reading snapshot rows of {table}: {source}")]
    Read {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "snapshot of {table}: key column {column} is NULL in a row; primary key columns cannot be NULL"
    )]
    NullKey { table: String, column: String },
}

/// One keyset chunk of rows, as inserts.
#[derive(Debug)]
pub struct SnapshotChunk {
    pub changes: Vec<Change>,
    /// The key of the chunk's last row, in key order, as text: where the next chunk starts, and
    /// what is persisted so an interrupted snapshot resumes after it.
    pub last_key: Vec<String>,
}

/// Pins the settings that values' text forms depend on ([`CANONICAL_SETTINGS`]) in the session of
/// `client`, so that the snapshot reads every value as the stream does, whatever the database's
/// or role's defaults (`ALTER DATABASE ... SET datestyle = 'SQL, DMY'`).
pub async fn pin_settings(client: &Client) -> Result<(), SnapshotError> {
    let sql: String = CANONICAL_SETTINGS
        .iter()
        .map(|(name, value)| format!("SET {name} = {};", quote_literal(value)))
        .collect();
    client
        .batch_execute(&sql)
        .await
        .map_err(|source| SnapshotError::Read {
            table: "(session settings)".to_owned(),
            source,
        })
}

/// Opens the snapshot transaction on `client`. With `exported`, the transaction sees exactly the
/// slot's consistent point; without (resuming an interrupted snapshot, whose exported snapshot is
/// gone), it sees the database as it is now.
pub async fn begin(client: &Client, exported: Option<&str>) -> Result<(), SnapshotError> {
    let mut sql = String::from("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;");
    if let Some(name) = exported {
        sql.push_str(&format!(
            " SET TRANSACTION SNAPSHOT {};",
            quote_literal(name)
        ));
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(|source| SnapshotError::Import {
            name: exported.unwrap_or("(fresh)").to_owned(),
            source,
        })
}

/// Ends the snapshot transaction.
pub async fn end(client: &Client) -> Result<(), SnapshotError> {
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|source| SnapshotError::Read {
            table: "(commit)".to_owned(),
            source,
        })
}

/// Reads one table chunk by chunk.
pub struct TableReader {
    table: PublishedTable,
    last_key: Option<Vec<String>>,
    chunk_rows: usize,
    lsn: Lsn,
    select_list: String,
    order_by: String,
    key_tuple: String,
}

impl TableReader {
    /// `after` resumes after a persisted key; `lsn` is stamped on every change (the consistent
    /// point).
    pub fn new(
        table: PublishedTable,
        after: Option<Vec<String>>,
        chunk_rows: usize,
        lsn: Lsn,
    ) -> Self {
        let cols = &table.schema.columns;
        // Values in their types' output forms, as the stream sends them (a simple query returns
        // text): not `::text`, which differs for some types (char(n) drops its padding, inet
        // shows a /32, bool spells true).
        let select_list = cols
            .iter()
            .map(|c| format!("t.{}", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let keys: Vec<String> = table
            .schema
            .primary_key
            .iter()
            .map(|&i| format!("t.{}", quote_ident(&cols[i].name)))
            .collect();
        TableReader {
            order_by: keys.join(", "),
            key_tuple: format!("({})", keys.join(", ")),
            select_list,
            table,
            last_key: after,
            chunk_rows,
            lsn,
        }
    }

    /// The next chunk, or `None` when the table is done.
    pub async fn next_chunk(
        &mut self,
        client: &Client,
    ) -> Result<Option<SnapshotChunk>, SnapshotError> {
        let mut sql = format!(
            "SELECT {} FROM {} AS t",
            self.select_list,
            self.table.sql_name()
        );
        let mut conditions = Vec::with_capacity(2);
        // The publication's row filter: a row it does not publish is never synced, and the
        // stream (which applies the filter) would never send its delete.
        if let Some(filter) = &self.table.row_filter {
            conditions.push(format!("({filter})"));
        }
        if let Some(last) = &self.last_key {
            conditions.push(format!(
                "{} > {}",
                self.key_tuple,
                self.table.key_literal(last)
            ));
        }
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {}",
            self.order_by, self.chunk_rows
        ));
        let qualified = self.table.schema.qualified_name();
        let messages = client
            .simple_query(&sql)
            .await
            .map_err(|source| SnapshotError::Read {
                table: qualified.clone(),
                source,
            })?;
        let shape = &self.table.schema;
        let mut changes = Vec::with_capacity(self.chunk_rows.min(messages.len()));
        let mut last_key = None;
        for message in &messages {
            let SimpleQueryMessage::Row(row) = message else {
                continue;
            };
            let mut values = Vec::with_capacity(shape.columns.len());
            for (i, column) in shape.columns.iter().enumerate() {
                values.push(match row.get(i) {
                    None => Value::Null,
                    Some(text) => decode_text(column.type_oid, text),
                });
            }
            let mut key = Vec::with_capacity(shape.primary_key.len());
            for &i in &shape.primary_key {
                match row.get(i) {
                    Some(text) => key.push(text.to_owned()),
                    None => {
                        return Err(SnapshotError::NullKey {
                            table: qualified,
                            column: shape.columns[i].name.clone(),
                        });
                    }
                }
            }
            last_key = Some(key);
            changes.push(Change {
                table: Arc::clone(shape),
                op: Operation::Insert,
                new: Some(values),
                old: None,
                lsn: self.lsn,
            });
        }
        match last_key {
            None => Ok(None),
            Some(key) => {
                self.last_key = Some(key.clone());
                Ok(Some(SnapshotChunk {
                    changes,
                    last_key: key,
                }))
            }
        }
    }
}
