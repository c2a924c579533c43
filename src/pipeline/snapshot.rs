//! Driving the initial snapshot through the rules into the sink, chunk by chunk, resumably.
//!
//! Each chunk's edges, changelog rows and progress commit in one sink transaction, so an
//! interrupted snapshot resumes after its last persisted chunk. A resumed snapshot cannot use the
//! exported snapshot any more (it died with the connection that created the slot), so it reads
//! the remaining rows as they are now; rows changed in between are also replayed by the stream
//! from the slot's consistent point. The edges still converge on the current rows (the edge diff
//! turns a repeated insert into an update), at the cost of extra changelog entries for those rows.

use std::time::Instant;

use tokio::sync::watch;
use tokio_postgres::Client;
use tracing::info;

use crate::model::Lsn;
use crate::pipeline::PipelineError;
use crate::pipeline::batcher::evaluate_all;
use crate::pipeline::config::SnapshotSection;
use crate::pipeline::progress::{RowEstimate, SnapshotProgressView};
use crate::pipeline::transform::Transform;
use crate::pipeline::vanished::{seen_ids, settle_vanished};
use crate::rules::RulesWorker;
use crate::sink::Sink;
use crate::sink::progress::{TableProgress, Walk};
use crate::source::catalog::PublishedTable;
use crate::source::snapshot::{self, TableReader};

/// How the snapshot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Snapshot {
    /// Every table is in; the stream starts at the consistent point.
    Complete { rows: u64 },
    /// Shutdown was requested: stopped after a persisted chunk, to resume at the next start.
    Interrupted,
}

/// A chunk's last key, its row count and its evaluated sink items.
async fn evaluated(
    chunk: snapshot::SnapshotChunk,
    rules: &mut RulesWorker,
    t: &Transform<'_>,
    rules_batch: usize,
) -> Result<(Vec<String>, usize, Vec<crate::sink::SinkItem>), PipelineError> {
    let n = chunk.changes.len();
    let out = evaluate_all(chunk.changes, rules, t, rules_batch).await?;
    Ok((chunk.last_key, n, out))
}

/// Reads every published table not yet done, and persists it.
#[allow(clippy::too_many_arguments)]
pub async fn run_snapshot(
    source: &Client,
    exported: Option<&str>,
    consistent_lsn: Lsn,
    tables: &[PublishedTable],
    sink: &mut Sink,
    rules: &mut RulesWorker,
    t: &Transform<'_>,
    settings: &SnapshotSection,
    rules_batch: usize,
    shutdown: &watch::Receiver<bool>,
) -> Result<Snapshot, PipelineError> {
    let (chunk_rows, emit_changelog) = (settings.chunk_rows, settings.changelog);
    let progress = sink.snapshot_progress().await?;
    let mut estimates = Vec::with_capacity(tables.len());
    for table in tables {
        // Statistics only (-1 for a table never analysed): the view corrects them as rows arrive.
        let estimate = match source
            .query_one(
                "SELECT reltuples::int8 FROM pg_class WHERE oid = $1",
                &[&table.schema.oid],
            )
            .await
        {
            Ok(row) => row.get::<_, i64>(0),
            Err(_) => 0,
        };
        estimates.push((table.schema.qualified_name(), estimate));
    }
    let mut view = SnapshotProgressView::new(RowEstimate::new(estimates));
    // A first start (the slot was just created, so its exported snapshot exists) into an empty
    // sidecar loads first and indexes afterwards (see sink::deferred_indexes).
    let deferred = exported.is_some() && sink.defer_secondary_indexes().await?;
    snapshot::begin(source, exported).await?;
    sink.set_relations(std::sync::Arc::clone(&t.relations));
    // Parents before the children that inherit from them, so that a child's first write already
    // sees its parent's memberships (any order converges; this one cascades least).
    let mut ordered: Vec<&PublishedTable> = tables.iter().collect();
    ordered.sort_by_key(|table| t.relations.rank(&table.schema.qualified_name()));
    let mut total = 0u64;
    for table in ordered {
        if *shutdown.borrow() {
            info!(
                "shutdown requested: the snapshot stops between tables and resumes at the next start"
            );
            return Ok(Snapshot::Interrupted);
        }
        let name = table.schema.qualified_name();
        let previous = progress.iter().find(|p| p.table_name == name);
        if previous.is_some_and(|p| p.done) {
            view.table_done(&name);
            continue;
        }
        let mut rows_done = previous.map_or(0, |p| p.rows_done);
        let after = previous.and_then(|p| p.last_key.clone());
        if after.is_some() {
            info!(table = %name, rows_done, "resuming the snapshot after its last persisted chunk");
        }
        // A table with no stored edges at all, read from its start, cannot meet a stored edge:
        // its chunks skip the edge read (one index probe per row otherwise).
        let fresh = after.is_none() && sink.has_no_edges(&name).await?;
        // A re-snapshot (stored edges, e.g. after a lost slot) records what it reads, so that
        // its end removes the memberships of rows that no longer exist (`pipeline::vanished`).
        let tracks_vanished =
            !fresh && (after.is_none() || previous.is_some_and(|p| p.tracks_vanished));
        if tracks_vanished && after.is_none() {
            sink.clear_seen(Walk::Snapshot, &name).await?;
            sink.save_snapshot_progress(&TableProgress {
                table_name: name.clone(),
                last_key: None,
                rows_done: 0,
                done: false,
                consistent_lsn,
                tracks_vanished,
            })
            .await?;
            sink.commit_without_lsn().await?;
        }
        let mut reader = TableReader::new(table.clone(), after, chunk_rows, consistent_lsn);
        view.table_started(&name);
        let mut last_key = None;
        let started = Instant::now();
        let mut next = match reader.next_chunk(source).await? {
            Some(chunk) => Some(evaluated(chunk, rules, t, rules_batch).await?),
            None => None,
        };
        while let Some((chunk_key, n, mut out)) = next.take() {
            rows_done += n as i64;
            if !fresh {
                // Rows already stored get an entry only where something differs, as in a
                // rebucket: a changed checksum or a changed membership.
                for item in &mut out {
                    if let crate::sink::SinkItem::Record(r) = item {
                        r.membership_only = true;
                    }
                }
            }
            let progress = TableProgress {
                table_name: name.clone(),
                last_key: Some(chunk_key.clone()),
                rows_done,
                done: false,
                consistent_lsn,
                tracks_vanished,
            };
            // The sink writes this chunk while the next one is read and evaluated.
            let write = async {
                let stats = if fresh {
                    sink.write_new_records(&out, emit_changelog).await?
                } else {
                    sink.write(&out, emit_changelog).await?
                };
                if tracks_vanished {
                    sink.record_seen(Walk::Snapshot, &name, &seen_ids(&out))
                        .await?;
                }
                sink.save_snapshot_progress(&progress).await?;
                sink.commit_without_lsn().await?;
                Ok::<_, PipelineError>(stats.changelog_rows)
            };
            let read = async {
                match reader.next_chunk(source).await? {
                    Some(chunk) => {
                        Ok::<_, PipelineError>(Some(evaluated(chunk, rules, t, rules_batch).await?))
                    }
                    None => Ok(None),
                }
            };
            let (written, read) = tokio::join!(write, read);
            crate::pipeline::metrics::count_changelog_rows(written?);
            next = read?;
            metrics::counter!(crate::pipeline::metrics::SNAPSHOT_ROWS).increment(n as u64);
            view.rows(n as u64);
            total += n as u64;
            last_key = Some(chunk_key);
            if *shutdown.borrow() {
                // The chunk just written is persisted with its progress: the next start resumes
                // after it. The chunk read ahead is dropped and read again then.
                info!(table = %name, rows_done, "shutdown requested: the snapshot stops after its last persisted chunk and resumes from there at the next start");
                return Ok(Snapshot::Interrupted);
            }
        }
        if tracks_vanished {
            let stats = settle_vanished(sink, Walk::Snapshot, &name, &t.relations).await?;
            crate::pipeline::metrics::count_changelog_rows(stats.changelog_rows);
        }
        sink.save_snapshot_progress(&TableProgress {
            table_name: name.clone(),
            last_key: last_key.or_else(|| previous.and_then(|p| p.last_key.clone())),
            rows_done,
            done: true,
            consistent_lsn,
            tracks_vanished,
        })
        .await?;
        sink.commit_without_lsn().await?;
        view.table_done(&name);
        info!(table = %name, rows = rows_done, seconds = started.elapsed().as_secs_f64(), "snapshot of table complete");
    }
    snapshot::end(source).await?;
    if deferred {
        // Before the stored position: a stored position means the sidecar is complete.
        sink.build_deferred_indexes().await?;
    }
    // The consistent point becomes the stored position: the stream starts there.
    sink.commit(consistent_lsn).await?;
    view.finish(total);
    Ok(Snapshot::Complete { rows: total })
}
