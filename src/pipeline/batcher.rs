//! Turning a stream of changes into sink transactions: rules in batches, bulk writes, and the
//! confirmed LSN only after commit.
//!
//! Whole source transactions are grouped until a row, byte or time limit is reached. A source
//! transaction larger than the limits is written in chunks inside one sink transaction, so memory
//! stays bounded for any transaction size; the sink transaction commits only at a source commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{Change, Lsn, TableSchema, Value};
use crate::pipeline::PipelineError;
use crate::pipeline::checksums::{self, BatchTables};
use crate::pipeline::committer::{Committer, Job, Persisted};
use crate::pipeline::config::Config;
use crate::pipeline::metrics;
use crate::pipeline::transform::Transform;
use crate::rules::RulesWorker;
use crate::sink::SinkItem;

/// A change or truncate waiting for the rules and the sink, in stream order.
#[derive(Debug)]
pub enum Pending {
    Change(Change),
    Truncate(Vec<Arc<TableSchema>>),
    /// Renamed tables (their memberships move) and relations seen for the first time.
    Relations(crate::model::RelationNames),
}

/// Pending work and the limits that decide when it is written.
pub struct Batcher {
    items: Vec<Pending>,
    rows: usize,
    bytes: usize,
    /// Index in `items` where the open (not yet committed) source transaction starts.
    tx_start: usize,
    in_tx: bool,
    /// True once part of the open source transaction went into the sink transaction: from then
    /// on the sink transaction can only commit at that source transaction's commit.
    open_tx_written: bool,
    /// End LSN and commit time of the last complete source transaction in the batch.
    last_commit: Option<(Lsn, i64)>,
    first_commit_at: Option<Instant>,
    max_rows: usize,
    max_bytes: usize,
    max_delay: Duration,
    rules_batch: usize,
    /// Changes evaluated and how many of them the rules failed on, since last taken.
    evaluated: u64,
    errored: u64,
    /// Source transaction ids of the pending items: the complete transactions, then the open
    /// one (only committed transactions are streamed, so it is committed too). Their rows are
    /// read for checksums once they are visible.
    xids: Vec<u32>,
    open_xid: Option<u32>,
    /// Complete source transactions already evaluated (rules and checksums) while the committer
    /// was writing the previous job: the committer's next job, so that evaluating a batch
    /// overlaps writing the one before instead of following it.
    prepared: Option<Prepared>,
}

/// Evaluated sink items of complete source transactions, with the last one's commit.
struct Prepared {
    items: Vec<SinkItem>,
    rows: usize,
    bytes: usize,
    lsn: Lsn,
    commit_time_us: i64,
}

impl Prepared {
    /// Appends later transactions.
    fn extend(&mut self, later: Prepared) {
        self.items.extend(later.items);
        self.rows += later.rows;
        self.bytes += later.bytes;
        self.lsn = later.lsn;
        self.commit_time_us = later.commit_time_us;
    }
}

impl Batcher {
    pub fn new(config: &Config) -> Self {
        Batcher {
            items: Vec::new(),
            rows: 0,
            bytes: 0,
            tx_start: 0,
            in_tx: false,
            open_tx_written: false,
            last_commit: None,
            first_commit_at: None,
            max_rows: config.batch.max_rows,
            max_bytes: config.batch.max_bytes,
            max_delay: config.max_delay(),
            rules_batch: config.rules.batch_size,
            evaluated: 0,
            errored: 0,
            xids: Vec::new(),
            open_xid: None,
            prepared: None,
        }
    }

    /// Nothing received is waiting to be persisted.
    pub fn is_idle(&self) -> bool {
        self.items.is_empty()
            && !self.in_tx
            && self.last_commit.is_none()
            && !self.open_tx_written
            && self.prepared.is_none()
    }

    /// Something can be handed to the committer now: prepared or complete transactions.
    pub fn has_complete(&self) -> bool {
        self.prepared.is_some() || self.can_commit_now()
    }

    /// Between Begin and Commit of a source transaction.
    pub fn in_tx(&self) -> bool {
        self.in_tx
    }

    /// (evaluated, errored) since the last call.
    pub fn take_outcome_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.evaluated),
            std::mem::take(&mut self.errored),
        )
    }

    pub fn begin_tx(&mut self, xid: u32) {
        self.open_xid = Some(xid);
        self.in_tx = true;
        self.tx_start = self.items.len();
        self.open_tx_written = false;
    }

    pub fn push(&mut self, item: Pending) {
        if let Pending::Change(c) = &item {
            self.rows += 1;
            self.bytes += approx_size(c);
        }
        self.items.push(item);
    }

    /// The open source transaction has grown past the limits: write what is pending into the sink
    /// transaction now, without committing.
    pub fn over_limits(&self) -> bool {
        let (rows, bytes) = self.prepared.as_ref().map_or((0, 0), |p| (p.rows, p.bytes));
        self.rows + rows >= self.max_rows || self.bytes + bytes >= self.max_bytes
    }

    /// Ends the open source transaction. Returns false, and schedules no sink commit, when it
    /// brought nothing to write: PostgreSQL 14 sends every transaction of the database, even
    /// one that changed nothing published, and a FOR ALL TABLES publication sends the sidecar's
    /// own. Storing such a transaction's LSN would be a sink commit, which would come back the
    /// same way, forever.
    pub fn commit_tx(&mut self, end_lsn: Lsn, commit_time_us: i64) -> bool {
        let open_xid = self.open_xid.take();
        let empty = self.items.len() == self.tx_start && !self.open_tx_written;
        self.in_tx = false;
        self.open_tx_written = false;
        self.tx_start = self.items.len();
        if empty {
            return false;
        }
        self.xids.extend(open_xid);
        self.last_commit = Some((end_lsn, commit_time_us));
        self.first_commit_at.get_or_insert_with(Instant::now);
        true
    }

    /// When a commit should happen because of the time limit.
    pub fn deadline(&self) -> Option<Instant> {
        self.first_commit_at.map(|t| t + self.max_delay)
    }

    /// The time limit can be honoured now: there are committed transactions and no part of the
    /// open one is in the sink transaction yet.
    pub fn can_commit_now(&self) -> bool {
        self.last_commit.is_some() && !self.open_tx_written
    }

    /// Evaluates the pending items and hands them to the committer for the open sink
    /// transaction (mid source transaction), without committing.
    pub async fn write_chunk(
        &mut self,
        committer: &mut Committer,
        rules: &mut RulesWorker,
        t: &Transform<'_>,
        server_end: Lsn,
    ) -> Result<(), PipelineError> {
        // The prepared transactions precede the open one: they commit first.
        self.submit_prepared(committer, t, server_end).await?;
        let items = std::mem::take(&mut self.items);
        self.rows = 0;
        self.bytes = 0;
        self.tx_start = 0;
        if self.in_tx {
            self.open_tx_written = true;
        }
        let mut xids = std::mem::take(&mut self.xids);
        xids.extend(self.open_xid);
        let items = self.evaluate(items, &xids, rules, t).await?;
        committer
            .submit(Job {
                items,
                commit: None,
                server_end,
                relations: std::sync::Arc::clone(&t.relations),
            })
            .await?;
        Ok(())
    }

    /// Evaluates every complete source transaction and hands them to the committer, to be
    /// written and committed with the last one's end LSN; the open one (if any, and not yet
    /// written) stays pending. Returns false when there was nothing to commit.
    ///
    /// The commit itself happens in the background: the LSN is confirmed by the committer once
    /// it is durable.
    pub async fn commit(
        &mut self,
        committer: &mut Committer,
        rules: &mut RulesWorker,
        t: &Transform<'_>,
        server_end: Lsn,
    ) -> Result<bool, PipelineError> {
        if let Some(complete) = self.evaluate_complete(rules, t).await? {
            self.add_prepared(complete);
        }
        self.submit_prepared(committer, t, server_end).await
    }

    /// While the committer writes, evaluates the complete source transactions received so far
    /// into its next job, up to the batch limits (beyond them the stream waits for the
    /// committer, as before). Only once a rules batch of changes is waiting: small transactions
    /// are still evaluated together, with one rules call and one checksum read for many.
    pub async fn prepare(
        &mut self,
        rules: &mut RulesWorker,
        t: &Transform<'_>,
    ) -> Result<(), PipelineError> {
        let full = self
            .prepared
            .as_ref()
            .is_some_and(|p| p.rows >= self.max_rows || p.bytes >= self.max_bytes);
        if full || self.rows < self.rules_batch {
            return Ok(());
        }
        if let Some(complete) = self.evaluate_complete(rules, t).await? {
            self.add_prepared(complete);
        }
        Ok(())
    }

    /// Appends evaluated transactions to the prepared job, after those already in it.
    fn add_prepared(&mut self, later: Prepared) {
        match &mut self.prepared {
            Some(p) => p.extend(later),
            None => self.prepared = Some(later),
        }
    }

    /// Hands the prepared transactions to the committer, to be written and committed with the
    /// last one's end LSN. False when there were none.
    async fn submit_prepared(
        &mut self,
        committer: &mut Committer,
        t: &Transform<'_>,
        server_end: Lsn,
    ) -> Result<bool, PipelineError> {
        let Some(prepared) = self.prepared.take() else {
            return Ok(false);
        };
        committer
            .submit(Job {
                items: prepared.items,
                commit: Some(Persisted {
                    lsn: prepared.lsn,
                    commit_time_us: prepared.commit_time_us,
                }),
                server_end,
                relations: std::sync::Arc::clone(&t.relations),
            })
            .await?;
        Ok(true)
    }

    /// Takes every complete source transaction out of the pending items and evaluates it; the
    /// open one (if any, and not yet written) stays pending.
    async fn evaluate_complete(
        &mut self,
        rules: &mut RulesWorker,
        t: &Transform<'_>,
    ) -> Result<Option<Prepared>, PipelineError> {
        let Some((lsn, commit_time_us)) = self.last_commit else {
            return Ok(None);
        };
        debug_assert!(!self.open_tx_written);
        let rest = self.items.split_off(self.tx_start);
        let items = std::mem::replace(&mut self.items, rest);
        let (rows, bytes) = (self.rows, self.bytes);
        self.rows = self
            .items
            .iter()
            .filter(|i| matches!(i, Pending::Change(_)))
            .count();
        self.bytes = self
            .items
            .iter()
            .map(|i| {
                if let Pending::Change(c) = i {
                    approx_size(c)
                } else {
                    0
                }
            })
            .sum();
        self.tx_start = 0;
        let xids = std::mem::take(&mut self.xids);
        let items = self.evaluate(items, &xids, rules, t).await?;
        self.last_commit = None;
        self.first_commit_at = None;
        Ok(Some(Prepared {
            items,
            rows: rows - self.rows,
            bytes: bytes - self.bytes,
            lsn,
            commit_time_us,
        }))
    }

    /// Runs the rules over `items` in calls of the rules batch size. Each call runs on the
    /// rules worker's thread, so the reader and the committer, which share this one, go on
    /// meanwhile.
    async fn evaluate(
        &mut self,
        items: Vec<Pending>,
        xids: &[u32],
        rules: &mut RulesWorker,
        t: &Transform<'_>,
    ) -> Result<Vec<SinkItem>, PipelineError> {
        let mut out = Vec::with_capacity(items.len());
        let mut run: Vec<Change> = Vec::new();
        let mut errored = 0;
        let mut noted = BatchTables::default();
        for item in items {
            match item {
                Pending::Change(c) => {
                    run.push(c);
                    if run.len() >= self.rules_batch {
                        self.evaluated += run.len() as u64;
                        errored += evaluate_into(&mut run, rules, t, &mut out, &mut noted).await?;
                    }
                }
                Pending::Relations(names) => {
                    self.evaluated += run.len() as u64;
                    errored += evaluate_into(&mut run, rules, t, &mut out, &mut noted).await?;
                    out.push(SinkItem::Relations(names));
                }
                Pending::Truncate(tables) => {
                    self.evaluated += run.len() as u64;
                    errored += evaluate_into(&mut run, rules, t, &mut out, &mut noted).await?;
                    out.extend(tables.iter().map(|s| SinkItem::Truncate {
                        table_name: s.qualified_name(),
                    }));
                }
            }
        }
        self.evaluated += run.len() as u64;
        errored += evaluate_into(&mut run, rules, t, &mut out, &mut noted).await?;
        self.errored += errored;
        if let Some(rows) = t.rows {
            checksums::fill(&mut out, &noted, rows, xids).await?;
        }
        Ok(out)
    }
}

/// Runs the rules over `run` (then empties it) and appends the sink items. Returns how many
/// changes the rules failed on.
pub async fn evaluate_into(
    run: &mut Vec<Change>,
    rules: &mut RulesWorker,
    t: &Transform<'_>,
    out: &mut Vec<SinkItem>,
    tables: &mut BatchTables,
) -> Result<u64, PipelineError> {
    if run.is_empty() {
        return Ok(0);
    }
    for change in run.iter() {
        tables.note(&change.table);
    }
    let started = Instant::now();
    let (changes, outcomes) = rules.evaluate(std::mem::take(run)).await?;
    metrics::record_chunk(&changes, &outcomes, started.elapsed());
    let errored = outcomes
        .iter()
        .filter(|o| matches!(o, crate::model::Outcome::Error(_)))
        .count() as u64;
    for (change, outcome) in changes.iter().zip(outcomes) {
        t.apply(change, outcome, out)?;
    }
    // Keep the allocation for the next run.
    *run = changes;
    run.clear();
    Ok(errored)
}

/// Runs the rules over a whole chunk of changes (snapshot, re-bucketing) in calls of
/// `rules_batch`, returning the sink items.
pub async fn evaluate_all(
    changes: Vec<Change>,
    rules: &mut RulesWorker,
    t: &Transform<'_>,
    rules_batch: usize,
) -> Result<Vec<SinkItem>, PipelineError> {
    let mut out = Vec::with_capacity(changes.len());
    let mut tables = BatchTables::default();
    let mut changes = changes.into_iter().peekable();
    while changes.peek().is_some() {
        let mut run: Vec<_> = changes.by_ref().take(rules_batch).collect();
        evaluate_into(&mut run, rules, t, &mut out, &mut tables).await?;
    }
    if let Some(rows) = t.rows {
        checksums::fill(&mut out, &tables, rows, &[]).await?;
    }
    Ok(out)
}

/// Rough in-memory size of a change, for the byte limit.
fn approx_size(c: &Change) -> usize {
    fn row(r: &Option<Vec<Value>>) -> usize {
        r.as_ref().map_or(0, |r| {
            r.iter()
                .map(|v| {
                    32 + match v {
                        Value::Text(s)
                        | Value::Numeric(s)
                        | Value::Json(s)
                        | Value::Date(s)
                        | Value::Time(s)
                        | Value::Timestamp(s)
                        | Value::Timestamptz(s) => s.len(),
                        Value::Bytes(b) => b.len(),
                        _ => 0,
                    }
                })
                .sum()
        })
    }
    64 + row(&c.new) + row(&c.old)
}
