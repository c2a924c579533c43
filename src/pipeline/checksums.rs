//! synchro's record checksum on every edge sluice writes, from the row a client will receive.
//!
//! After the rules ran and before the sink writes, the records that keep a row in some bucket
//! get the checksum of that row's current `row_to_json` (see [`crate::sink::checksum`]), read
//! in bulk: one query per table per batch. Snapshot, stream and rebucket all pass through here,
//! so they write the same checksum for the same row.
//!
//! The current row rather than the change's values: that is what a client hydrates and hashes,
//! unchanged TOAST values and columns the publication does not stream included. A later change
//! of the same row recomputes it, so once the stream is caught up every edge holds the
//! checksum of the row as it is. A row gone by the time it is read (deleted later in the
//! stream) keeps a NULL checksum until its delete removes the edge.
//!
//! The read waits until the batch's source transactions are visible (see
//! [`RowJson::wait_visible`]): read any earlier, an inserted row is missing and an updated one
//! still the previous version.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::model::{Operation, TableSchema};
use crate::pipeline::PipelineError;
use crate::sink::SinkItem;
use crate::sink::checksum::record_checksum;
use crate::source::row_json::RowJson;

pub const CHECKSUM_READ_FAILURES: &str = "sluice_checksum_read_failures_total";

/// How long a read waits for its transactions to become visible. Only a misconfiguration makes
/// it run out: sluice as a synchronous standby (transactions become visible only once sluice
/// has confirmed them, after the read).
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// The tables the changes of a batch belong to, by their schema as of each change.
#[derive(Default)]
pub struct BatchTables(Vec<Arc<TableSchema>>);

impl BatchTables {
    pub fn note(&mut self, table: &Arc<TableSchema>) {
        if !self.0.iter().rev().any(|t| Arc::ptr_eq(t, table)) {
            self.0.push(Arc::clone(table));
        }
    }

    /// The newest schema noted for a qualified table name.
    fn get(&self, qualified: &str) -> Option<&TableSchema> {
        self.0
            .iter()
            .rev()
            .find(|t| t.qualified_name() == qualified)
            .map(|t| t.as_ref())
    }
}

/// Sets the checksum of every record in `items` that keeps its row in a bucket, once the source
/// transactions `xids` (those the items come from; none for a snapshot or a rebucket, which read
/// committed rows) are visible.
///
/// A table whose rows cannot be read (dropped or renamed since, permissions) leaves its
/// records without a checksum and says so; only a lost connection fails the batch.
pub async fn fill(
    items: &mut [SinkItem],
    tables: &BatchTables,
    rows: &RowJson,
    xids: &[u32],
) -> Result<(), PipelineError> {
    let mut by_table: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let SinkItem::Record(r) = item else { continue };
        // A related row kept with no buckets of its own may still inherit some: its checksum is
        // stored with its state, for the edges a cascade gives it later.
        let kept_related = r.related.as_ref().is_some_and(|related| related.kept);
        if r.op == Operation::Delete || (r.buckets.is_empty() && !kept_related) {
            continue;
        }
        match by_table.iter_mut().find(|(t, _)| *t == r.table_name) {
            Some((_, indexes)) => indexes.push(i),
            None => by_table.push((r.table_name.clone(), vec![i])),
        }
    }
    if let Some((first, _)) = by_table.first() {
        match rows.wait_visible(xids, VISIBILITY_WAIT).await {
            Ok(true) => {}
            Ok(false) => warn!(
                transactions = xids.len(),
                "the source transactions are still not visible after {VISIBILITY_WAIT:?}; the checksums of their rows may be the previous versions' (is sluice's application_name in synchronous_standby_names?)"
            ),
            Err(e) if e.as_db_error().is_some() => warn!(error = %e,
                "cannot check that the source transactions are visible; the checksums of their rows may be the previous versions'"),
            Err(source) => {
                return Err(PipelineError::RowRead {
                    table: first.clone(),
                    source,
                });
            }
        }
    }
    for (table_name, indexes) in by_table {
        let Some(schema) = tables.get(&table_name) else {
            continue;
        };
        let key_columns: Vec<&str> = schema
            .key_indexes()
            .map(|i| schema.columns[i].name.as_str())
            .collect();
        // One pass: the records whose key parses, and their keys' texts.
        let (positions, owned): (Vec<usize>, Vec<Vec<String>>) = indexes
            .iter()
            .filter_map(|&i| match &items[i] {
                SinkItem::Record(r) => Some((i, key_texts(&r.record_id, key_columns.len())?)),
                _ => None,
            })
            .unzip();
        let keys: Vec<Vec<&str>> = owned
            .iter()
            .map(|key| key.iter().map(String::as_str).collect())
            .collect();
        let jsons = match rows.fetch(schema, &key_columns, &keys).await {
            Ok(jsons) => jsons,
            Err(e) if e.as_db_error().is_some() => {
                metrics::counter!(CHECKSUM_READ_FAILURES, "table" => table_name.clone())
                    .increment(1);
                warn!(table = %table_name, error = %e, rows = keys.len(),
                    "cannot read the current rows for synchro's checksum; their edges keep no checksum until the row changes again (clients rebuild those buckets)");
                continue;
            }
            Err(source) => {
                return Err(PipelineError::RowRead {
                    table: table_name,
                    source,
                });
            }
        };
        for (&i, json) in positions.iter().zip(jsons) {
            if let SinkItem::Record(r) = &mut items[i] {
                r.checksum = json.as_deref().map(record_checksum);
            }
        }
    }
    Ok(())
}

/// The key columns' text forms from a record id: the id itself for a one-column key, the JSON
/// array's elements for a composite key (see [`crate::sink::record_id`]).
fn key_texts(record_id: &str, columns: usize) -> Option<Vec<String>> {
    match columns {
        0 => None,
        1 => Some(vec![record_id.to_owned()]),
        n => serde_json::from_str::<Vec<String>>(record_id)
            .ok()
            .filter(|parts| parts.len() == n),
    }
}
