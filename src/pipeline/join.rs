//! Tables that join or leave the publication, whether sluice was running or stopped.
//!
//! A table's `done` row in `sluice_snapshot_progress` is the durable record that its existing
//! rows are in. A published table without one joined after the initial snapshot: it is
//! snapshotted while the other tables stream, by the re-bucketing walk (`pipeline::rebucket`)
//! recording its progress as the table's snapshot progress. Per table the states are: no row
//! (joined, waiting), a row not done (walk in progress, resumable after a crash), done (ready).
//!
//! Joins are noticed at session start (published tables minus done tables), at a Relation message
//! for a table sluice does not know, and by a periodic look at `pg_publication_tables` (a joined
//! table that nobody writes to produces no message).
//!
//! The interleaving: changes to a joined table committed after its `ALTER PUBLICATION` come
//! through the stream from the moment it joined; the walk reads the rows as committed when each
//! chunk is read, which includes what was there before the join. Both apply their result between
//! source transactions, on the stream's task, with the edge diff: whichever comes last for a row
//! is its latest committed state (a chunk never reads older than what the stream has delivered,
//! and a change the stream delivers after a chunk is the same or newer than what the chunk read).
//! So each row ends with exactly its current memberships; a row written during the walk may get an
//! extra changelog entry, never a lost or a stale one. Before its first chunk, the walk waits for
//! the transactions that were open in the database when it was planned: one of them could have
//! written to the table before the join (not streamed) and commit after a chunk read the table.
//!
//! A table that leaves stops being streamed; its memberships stay as they were until the
//! operator removes them (`sluice forget-table`, `pipeline::forget`). Its progress row is dropped,
//! so that if it joins again it is snapshotted again.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::pipeline::PipelineError;
use crate::pipeline::refused::RefusedTables;
use crate::sink::Sink;
use crate::sink::progress::Walk;
use crate::sink::schema::SIDECAR_TABLES;
use crate::source::catalog::{self, CatalogError, PublishedTable};

/// Notices tables joining and leaving the publication, and queues the joined ones for a walk.
pub struct JoinWatch {
    publication: String,
    pending: Vec<PublishedTable>,
    /// Joined tables whose walk failed to read them, queued again at the next check.
    retry: Vec<PublishedTable>,
    next_check: Instant,
    interval: Duration,
    /// Qualified names never taken in: the sidecar tables, wherever they are in the source.
    exclude: Vec<String>,
}

impl JoinWatch {
    /// At session start: queues the published tables that were never snapshotted, and forgets the
    /// progress of tables that left the publication while sluice was stopped. The sink must have
    /// no open transaction.
    pub async fn at_start(
        publication: &str,
        tables: &[PublishedTable],
        refused: &[String],
        sink: &mut Sink,
        interval: Duration,
        exclude: Vec<String>,
    ) -> Result<JoinWatch, PipelineError> {
        let progress = sink.progress(Walk::Snapshot).await?;
        let pending: Vec<PublishedTable> = tables
            .iter()
            .filter(|t| {
                let name = t.schema.qualified_name();
                !progress.iter().any(|p| p.done && p.table_name == name)
            })
            .cloned()
            .collect();
        for t in &pending {
            info!(table = %t.schema.qualified_name(), "table is published but not snapshotted (it joined the publication after the initial snapshot, or its walk was interrupted): snapshotting it while streaming");
        }
        let mut watch = JoinWatch {
            publication: publication.to_owned(),
            pending,
            retry: Vec::new(),
            next_check: Instant::now() + interval,
            interval,
            exclude,
        };
        let published: Vec<String> = tables.iter().map(|t| t.schema.qualified_name()).collect();
        let (refused, left): (Vec<String>, Vec<String>) = progress
            .into_iter()
            .map(|p| p.table_name)
            .filter(|name| !published.contains(name))
            .partition(|name| refused.contains(name));
        // A refused table is still published: once fixed it joins, and its walk must read it
        // again (its changes were skipped meanwhile), so its progress goes, without the warning
        // for tables that left.
        for name in &refused {
            sink.forget_progress(name).await?;
        }
        if !refused.is_empty() && left.is_empty() {
            sink.commit_without_lsn().await?;
        }
        watch.forget_left(&left, sink).await?;
        Ok(watch)
    }

    /// True when joined tables wait for their walk.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The joined tables waiting for their walk, which the caller now starts.
    pub fn take_pending(&mut self) -> Vec<PublishedTable> {
        std::mem::take(&mut self.pending)
    }

    /// Queues `tables` again for the next look at the publication (their walk could not read
    /// them); a table that has left by then is dropped from the queue.
    pub fn retry_later(&mut self, tables: Vec<PublishedTable>) {
        self.retry.extend(tables);
    }

    /// When the publication is next looked at.
    pub fn next_check(&self) -> Instant {
        self.next_check
    }

    /// Looks at the publication as soon as the loop allows (a Relation message named a table
    /// that sluice does not know).
    pub fn check_soon(&mut self) {
        self.next_check = Instant::now();
    }

    /// Compares the publication with `tables`: joined tables are added to `tables` and queued,
    /// tables that left are removed. A joined table the stream cannot tie to its primary key is
    /// reported and looked at again at the next check; only a lost connection is an error. The
    /// sink must have no open transaction.
    pub async fn check(
        &mut self,
        source: &Client,
        tables: &mut Vec<PublishedTable>,
        refused: &mut RefusedTables,
        sink: &mut Sink,
    ) -> Result<(), PipelineError> {
        self.next_check = Instant::now() + self.interval;
        let now: Vec<(u32, String)> = catalog::published_oids(source, &self.publication)
            .await?
            .into_iter()
            .filter(|(_, name)| {
                !SIDECAR_TABLES.contains(&name.as_str()) && !self.exclude.contains(name)
            })
            .collect();
        let left: Vec<String> = tables
            .iter()
            .filter(|t| !now.iter().any(|(oid, _)| *oid == t.schema.oid))
            .map(|t| t.schema.qualified_name())
            .collect();
        let retry = std::mem::take(&mut self.retry);
        self.pending.extend(retry);
        let published = |t: &PublishedTable| now.iter().any(|(oid, _)| *oid == t.schema.oid);
        self.pending.retain(published);
        if !left.is_empty() {
            tables.retain(published);
            self.forget_left(&left, sink).await?;
        }
        refused.retain_published(&now.iter().map(|(oid, _)| *oid).collect::<Vec<_>>());
        if now
            .iter()
            .all(|(oid, _)| tables.iter().any(|t| t.schema.oid == *oid))
        {
            return Ok(());
        }
        let exclude: Vec<&str> = SIDECAR_TABLES
            .iter()
            .copied()
            .chain(self.exclude.iter().map(String::as_str))
            .collect();
        let described = match catalog::published_tables_split(source, &self.publication, &exclude)
            .await
        {
            Ok(d) => {
                refused.update(d.refused);
                d.tables
            }
            Err(CatalogError::Sql { what, source }) if crate::sink::session_ended(&source) => {
                return Err(CatalogError::Sql { what, source }.into());
            }
            Err(e) => {
                warn!(error = %e, retry_in_s = self.interval.as_secs(), "a table joined the publication but sluice cannot take it in yet; its rows are not snapshotted until this is fixed");
                return Ok(());
            }
        };
        for t in described {
            if tables.iter().any(|known| known.schema.oid == t.schema.oid) {
                continue;
            }
            info!(table = %t.schema.qualified_name(), "table joined the publication: snapshotting its existing rows while streaming");
            tables.push(t.clone());
            self.pending.push(t);
        }
        Ok(())
    }

    async fn forget_left(&mut self, left: &[String], sink: &mut Sink) -> Result<(), PipelineError> {
        if left.is_empty() {
            return Ok(());
        }
        for name in left {
            warn!(table = %name, "table left the publication: its changes are no longer streamed and its memberships stay as they are; remove them with `sluice forget-table --table {name}`");
            sink.forget_progress(name).await?;
        }
        sink.commit_without_lsn().await?;
        Ok(())
    }
}

/// The transactions open in the source database right now (backend pids with a transaction id,
/// and prepared transactions), which a joined table's walk waits for before its first read.
pub async fn open_transactions(source: &Client) -> Result<Vec<String>, CatalogError> {
    let rows = source
        .query(
            "SELECT 'pid ' || pid || ' xid ' || backend_xid FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
             UNION ALL \
             SELECT 'prepared ' || gid || ' xid ' || transaction FROM pg_prepared_xacts \
             WHERE database = current_database()",
            &[],
        )
        .await
        .map_err(|source| CatalogError::Sql {
            what: "listing the open transactions",
            source,
        })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
