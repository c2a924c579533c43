//! The end of a table's keyset walk: rows whose memberships are stored but that the walk did not
//! read no longer exist, and leave their buckets as a streamed delete would have made them.
//!
//! Which rows those are is decided in the sink (see [`crate::sink::vanished`]); here they become
//! delete records written through the normal path, so their edges go with a changelog delete
//! each and, for tables in the rules' relations, their related-row state and links go too and
//! the rows that inherited from them are settled.

use tracing::info;

use crate::model::Operation;
use crate::pipeline::PipelineError;
use crate::sink::progress::Walk;
use crate::sink::record::RelatedRow;
use crate::sink::relation_graph::RelationGraph;
use crate::sink::writer::WriteStats;
use crate::sink::{Sink, SinkItem, SinkRecord};

/// Rows settled per sink transaction, bounding memory whatever the number of vanished rows.
const PAGE: i64 = 1000;

/// The record ids a chunk's evaluated items read, for `sluice_walk_seen`: kept, dropped and
/// soft-deleted rows alike, and rows the rules failed on (they exist; their memberships stand).
pub fn seen_ids(items: &[SinkItem]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|item| match item {
            SinkItem::Record(r) => Some(r.record_id.as_str()),
            SinkItem::Failure(f) => f.record_id.as_deref(),
            SinkItem::Truncate { .. } | SinkItem::Relations(_) => None,
        })
        .collect()
}

/// Removes the memberships of `table`'s rows that the walk did not read and that the stream did
/// not write since the walk started, with changelog deletes, committing page by page; then
/// forgets what the walk read. The sink must have no open transaction.
pub async fn settle_vanished(
    sink: &mut Sink,
    walk: Walk,
    table: &str,
    relations: &RelationGraph,
) -> Result<WriteStats, PipelineError> {
    let mut stats = WriteStats::default();
    let mut rows = 0u64;
    let mut after = String::new();
    loop {
        let ids = sink.vanished(walk, table, &after, PAGE).await?;
        let Some(last) = ids.last() else { break };
        after = last.clone();
        rows += ids.len() as u64;
        let items: Vec<SinkItem> = ids
            .into_iter()
            .map(|record_id| SinkItem::Record(gone_row(table, record_id, relations)))
            .collect();
        stats += sink.write(&items, true).await?;
        sink.commit_without_lsn().await?;
    }
    sink.clear_seen(walk, table).await?;
    sink.commit_without_lsn().await?;
    if rows > 0 {
        info!(
            table,
            rows,
            changelog_rows = stats.changelog_rows,
            "removed the memberships of rows that no longer exist"
        );
    }
    Ok(stats)
}

/// A delete for a row that no longer exists: its edges go with a changelog delete each, and for
/// a table in the rules' relations its related-row state and links go and its dependants settle.
pub fn gone_row(table: &str, record_id: String, relations: &RelationGraph) -> SinkRecord {
    SinkRecord {
        table_name: table.to_owned(),
        record_id,
        op: Operation::Delete,
        buckets: Vec::new(),
        checksum: None,
        membership_only: false,
        related: relations.involves(table).then(|| {
            Box::new(RelatedRow {
                kept: false,
                links: Vec::new(),
            })
        }),
    }
}
