//! Re-bucketing: re-evaluating existing rows with the active rules, online, and logging only the
//! memberships that change.
//!
//! A pass walks each table in primary-key keyset chunks (the snapshot's machinery) and runs on the
//! stream loop itself, between source transactions, so a chunk's read-diff-write of the edges
//! never interleaves with a streamed change's. A chunk reads the rows as currently committed,
//! which may be ahead of the stream: the stream later applies the older changes it still holds,
//! and then the newer ones, so the edges end at the evaluation of the latest row — never a
//! change lost or applied twice, at worst a membership that moves and moves back in the changelog.
//! Progress is persisted per chunk, so an interrupted pass resumes after restart. A table's end
//! removes the memberships of rows the walk did not read (`pipeline::vanished`): a row the
//! stream inserted after the walk read its key range has edges written after the walk started,
//! and is kept; a row deleted before its range was read loses its edges now, and the stream's
//! later delete finds none (an older update the stream still holds re-adds them, and its delete
//! removes them again: the changelog moves and moves back, the edges converge).
//!
//! The same walk snapshots a table that joins the publication while sluice streams (see
//! `pipeline::join`): it then records its progress as the table's snapshot progress, whose `done`
//! row is the durable mark that the table's existing rows are in.

use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;
use tracing::{debug, info, warn};

use crate::model::Lsn;
use crate::pipeline::PipelineError;
use crate::pipeline::batcher::evaluate_all;
use crate::pipeline::join::open_transactions;
use crate::pipeline::transform::Transform;
use crate::pipeline::vanished::{seen_ids, settle_vanished};
use crate::rules::RulesWorker;
use crate::sink::progress::{TableProgress, Walk};
use crate::sink::{Sink, SinkItem};
use crate::source::catalog::PublishedTable;
use crate::source::snapshot::{SnapshotError, TableReader};

/// A request to re-bucket one table (qualified name) or all published tables.
pub struct RebucketRequest {
    pub table: Option<String>,
    pub reply: Option<oneshot::Sender<RebucketOutcome>>,
}

/// What a pass did, or why it did not run.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RebucketOutcome {
    Done {
        tables: Vec<String>,
        rows: u64,
        changelog_rows: u64,
        seconds: f64,
    },
    Rejected {
        reason: String,
    },
}

#[derive(Clone)]
pub struct RebucketHandle {
    tx: mpsc::Sender<RebucketRequest>,
}

impl RebucketHandle {
    /// Runs a pass and waits for it to finish.
    pub async fn rebucket(&self, table: Option<String>) -> RebucketOutcome {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(RebucketRequest {
                table,
                reply: Some(reply),
            })
            .await
            .is_err()
        {
            return RebucketOutcome::Rejected {
                reason: "the pipeline is shutting down".into(),
            };
        }
        rx.await.unwrap_or(RebucketOutcome::Rejected {
            reason: "the pipeline stopped before the pass finished; it resumes on restart".into(),
        })
    }
}

pub fn channel() -> (RebucketHandle, mpsc::Receiver<RebucketRequest>) {
    let (tx, rx) = mpsc::channel(4);
    (RebucketHandle { tx }, rx)
}

/// A pass in progress: a re-bucketing pass, or the snapshot of tables that joined the
/// publication.
pub struct RebucketJob {
    /// Where progress is recorded: `Walk::Rebucket`, or `Walk::Snapshot` for joined tables.
    walk: Walk,
    tables: Vec<PublishedTable>,
    progress: Vec<TableProgress>,
    index: usize,
    reader: Option<TableReader>,
    rows: u64,
    changelog_rows: u64,
    started: Instant,
    reply: Option<oneshot::Sender<RebucketOutcome>>,
    /// Transactions the walk waits for before its first read (see `pipeline::join`).
    waiting_for: Vec<String>,
}

/// What one step of a pass did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A chunk or a table was finished; more to do.
    More,
    /// Nothing read: the walk waits for transactions to end. Try again a little later.
    Wait,
    /// The pass is complete.
    Done,
    /// A joined table could not be read (not granted, dropped meanwhile): the walk stops, and
    /// [`RebucketJob::unfinished`] says which tables to try again later.
    Unreadable,
}

impl RebucketJob {
    /// Starts a pass of `table` (every published table when `None`), persisting its plan so it
    /// survives a restart. `Ok(Err(reason))` when the request names no published table; the
    /// caller attaches the reply with [`RebucketJob::replying_to`].
    pub async fn start(
        table: Option<String>,
        published: &[PublishedTable],
        sink: &mut Sink,
        at: Lsn,
    ) -> Result<Result<RebucketJob, String>, PipelineError> {
        let tables: Vec<PublishedTable> = published
            .iter()
            .filter(|t| {
                table
                    .as_deref()
                    .is_none_or(|name| t.schema.qualified_name() == name)
            })
            .cloned()
            .collect();
        if tables.is_empty() {
            let reason = format!(
                "table {} is not in the publication; published tables: {}",
                table.unwrap_or_default(),
                published
                    .iter()
                    .map(|t| t.schema.qualified_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(Err(reason));
        }
        sink.clear_progress(Walk::Rebucket).await?;
        let mut progress = Vec::new();
        for t in &tables {
            let p = TableProgress {
                table_name: t.schema.qualified_name(),
                last_key: None,
                rows_done: 0,
                done: false,
                consistent_lsn: at,
                tracks_vanished: true,
            };
            sink.save_progress(Walk::Rebucket, &p).await?;
            progress.push(p);
        }
        sink.commit_without_lsn().await?;
        info!(tables = ?progress.iter().map(|p| &p.table_name).collect::<Vec<_>>(), "re-bucketing started");
        Ok(Ok(RebucketJob::new(Walk::Rebucket, tables, progress, None)))
    }

    /// The caller to answer when the pass ends.
    pub fn replying_to(mut self, reply: Option<oneshot::Sender<RebucketOutcome>>) -> Self {
        self.reply = reply;
        self
    }

    /// Which walk this is.
    pub fn walk(&self) -> Walk {
        self.walk
    }

    /// Rows the pass has read so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The caller waiting for the pass, taken (to answer a failure).
    pub fn take_reply(&mut self) -> Option<oneshot::Sender<RebucketOutcome>> {
        self.reply.take()
    }

    /// Resumes a pass that a restart interrupted, if any.
    pub async fn resume(
        published: &[PublishedTable],
        sink: &Sink,
    ) -> Result<Option<RebucketJob>, PipelineError> {
        let progress: Vec<TableProgress> = sink
            .progress(Walk::Rebucket)
            .await?
            .into_iter()
            .filter(|p| !p.done)
            .collect();
        if progress.is_empty() {
            return Ok(None);
        }
        let tables: Vec<PublishedTable> = progress
            .iter()
            .filter_map(|p| {
                published
                    .iter()
                    .find(|t| t.schema.qualified_name() == p.table_name)
                    .cloned()
            })
            .collect();
        info!(
            tables = tables.len(),
            "resuming an interrupted re-bucketing pass"
        );
        let progress = progress
            .into_iter()
            .filter(|p| {
                tables
                    .iter()
                    .any(|t| t.schema.qualified_name() == p.table_name)
            })
            .collect();
        Ok(Some(RebucketJob::new(
            Walk::Rebucket,
            tables,
            progress,
            None,
        )))
    }

    /// Snapshots tables that joined the publication, each from its persisted snapshot progress
    /// (a walk a restart interrupted) or from its start. Their progress rows are written first, so
    /// a restart finds the walk even before its first chunk.
    pub async fn join(
        source: &Client,
        tables: Vec<PublishedTable>,
        sink: &mut Sink,
        at: Lsn,
    ) -> Result<RebucketJob, PipelineError> {
        let stored = sink.progress(Walk::Snapshot).await?;
        let mut progress = Vec::with_capacity(tables.len());
        let mut saved = false;
        for t in &tables {
            let name = t.schema.qualified_name();
            let p = match stored.iter().find(|p| p.table_name == name) {
                Some(p) => p.clone(),
                None => {
                    let p = TableProgress {
                        table_name: name,
                        last_key: None,
                        rows_done: 0,
                        done: false,
                        consistent_lsn: at,
                        tracks_vanished: true,
                    };
                    sink.clear_seen(Walk::Snapshot, &p.table_name).await?;
                    sink.save_progress(Walk::Snapshot, &p).await?;
                    saved = true;
                    p
                }
            };
            progress.push(p);
        }
        if saved {
            sink.commit_without_lsn().await?;
        }
        info!(tables = ?progress.iter().map(|p| &p.table_name).collect::<Vec<_>>(), "snapshotting tables that joined the publication, while streaming");
        let mut job = RebucketJob::new(Walk::Snapshot, tables, progress, None);
        job.waiting_for = open_transactions(source).await?;
        Ok(job)
    }

    fn new(
        walk: Walk,
        tables: Vec<PublishedTable>,
        progress: Vec<TableProgress>,
        reply: Option<oneshot::Sender<RebucketOutcome>>,
    ) -> Self {
        RebucketJob {
            walk,
            tables,
            progress,
            index: 0,
            reader: None,
            rows: 0,
            changelog_rows: 0,
            started: Instant::now(),
            reply,
            waiting_for: Vec::new(),
        }
    }

    /// Processes one chunk. The sink must have no open transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn step(
        &mut self,
        source: &Client,
        sink: &mut Sink,
        rules: &mut RulesWorker,
        t: &Transform<'_>,
        chunk_rows: usize,
        rules_batch: usize,
        at: Lsn,
    ) -> Result<Step, PipelineError> {
        if !self.waiting_for.is_empty() {
            let open = open_transactions(source).await?;
            self.waiting_for.retain(|x| open.contains(x));
            if !self.waiting_for.is_empty() {
                debug!(transactions = ?self.waiting_for, "the walk of joined tables waits for transactions open when they joined");
                return Ok(Step::Wait);
            }
        }
        let Some(table) = self.tables.get(self.index) else {
            return self.finish(sink).await;
        };
        let progress = &mut self.progress[self.index];
        let reader = self.reader.get_or_insert_with(|| {
            TableReader::new(table.clone(), progress.last_key.clone(), chunk_rows, at)
        });
        let read = match reader.next_chunk(source).await {
            Err(SnapshotError::Read { table, source })
                if self.walk == Walk::Snapshot && !crate::sink::session_ended(&source) =>
            {
                warn!(%table, error = %source, "cannot read a table that joined the publication (is SELECT granted? was it dropped?); trying again at the next look at the publication");
                return Ok(Step::Unreadable);
            }
            read => read?,
        };
        match read {
            None => {
                if progress.tracks_vanished {
                    let stats =
                        settle_vanished(sink, self.walk, &progress.table_name, &t.relations)
                            .await?;
                    crate::pipeline::metrics::count_changelog_rows(stats.changelog_rows);
                    self.changelog_rows += stats.changelog_rows;
                }
                progress.done = true;
                sink.save_progress(self.walk, progress).await?;
                sink.commit_without_lsn().await?;
                match self.walk {
                    Walk::Rebucket => {
                        info!(table = %progress.table_name, rows = progress.rows_done, "re-bucketing of table complete")
                    }
                    Walk::Snapshot => {
                        info!(table = %progress.table_name, rows = progress.rows_done, "table that joined the publication is snapshotted: its existing rows are in")
                    }
                }
                self.index += 1;
                self.reader = None;
                Ok(Step::More)
            }
            Some(chunk) => {
                let n = chunk.changes.len();
                let mut out = evaluate_all(chunk.changes, rules, t, rules_batch).await?;
                for item in &mut out {
                    if let SinkItem::Record(r) = item {
                        r.membership_only = true;
                    }
                }
                sink.set_relations(std::sync::Arc::clone(&t.relations));
                let stats = sink.write(&out, true).await?;
                if progress.tracks_vanished {
                    sink.record_seen(self.walk, &progress.table_name, &seen_ids(&out))
                        .await?;
                }
                progress.rows_done += n as i64;
                progress.last_key = Some(chunk.last_key);
                sink.save_progress(self.walk, progress).await?;
                sink.commit_without_lsn().await?;
                self.rows += n as u64;
                crate::pipeline::metrics::count_changelog_rows(stats.changelog_rows);
                self.changelog_rows += stats.changelog_rows;
                Ok(Step::More)
            }
        }
    }

    /// The tables this walk has not finished, from the one in progress on.
    pub fn unfinished(&self) -> Vec<PublishedTable> {
        self.tables.get(self.index..).unwrap_or_default().to_vec()
    }

    async fn finish(&mut self, sink: &mut Sink) -> Result<Step, PipelineError> {
        if self.walk == Walk::Snapshot {
            // The done rows stay: they are the record that these tables are snapshotted.
            return Ok(Step::Done);
        }
        sink.clear_progress(Walk::Rebucket).await?;
        let seconds = self.started.elapsed().as_secs_f64();
        info!(
            rows = self.rows,
            changelog_rows = self.changelog_rows,
            seconds,
            "re-bucketing complete"
        );
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(RebucketOutcome::Done {
                tables: self.progress.iter().map(|p| p.table_name.clone()).collect(),
                rows: self.rows,
                changelog_rows: self.changelog_rows,
                seconds,
            });
        }
        Ok(Step::Done)
    }
}
