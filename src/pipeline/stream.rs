//! One streaming session, in phases: open the connections and check the publication, decide
//! where to start (the slot), run the initial snapshot if it is due, then stream until shutdown
//! or a lost connection.
//!
//! The stream loop ([`Streaming`]) waits for the next thing to do ([`Wake`]) and hands it to one
//! method each: a source event, a rules swap, an admin action (re-bucketing, forgetting a table),
//! a step of the background walk (a re-bucketing pass, or the snapshot of tables that joined the
//! publication: `pipeline::join`), a look at the publication, the batcher's deadline, or the sink
//! finishing a job. Everything runs on this one task, so a walk's chunk or an admin action never
//! interleaves with a streamed change.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ::metrics as metrics_rs;
use tokio::sync::{MutexGuard, mpsc, watch};
use tokio::time::Instant;
use tokio_postgres::Client;
use tracing::{debug, error, info, warn};

use crate::model::{Lsn, TableSchema};
use crate::pipeline::admin_action::{contain, reject};
use crate::pipeline::batcher::{Batcher, Pending};
use crate::pipeline::committer::Committer;
use crate::pipeline::forget::{self, ForgetRequest};
use crate::pipeline::join::JoinWatch;
use crate::pipeline::rebucket::{RebucketJob, RebucketRequest, Step};
use crate::pipeline::refused::RefusedTables;
use crate::pipeline::relations::relation_graph;
use crate::pipeline::reload::{ROLLBACKS, Swap, Trigger};
use crate::pipeline::replay::{ReplayRequest, Replayer};
use crate::pipeline::snapshot::{Snapshot, run_snapshot};
use crate::pipeline::transform::Transform;
use crate::pipeline::{Context, PipelineError, failover, metrics, open_sink, preflight};
use crate::rules::{RulesModule, RulesWorker};
use crate::sink::Sink;
use crate::sink::progress::Walk;
use crate::sink::schema::SIDECAR_TABLES;
use crate::source::catalog::PublishedTable;
use crate::source::row_json::RowJson;
use crate::source::{
    KeyedRelations, ReplicationConnection, ReplicationStream, SnapshotAction, SourceError,
    SourceEvent, StartOptions, lookup_slot,
};

/// How long a walk that waits for open transactions pauses before it looks again.
const WALK_WAIT: Duration = Duration::from_millis(100);

/// Runs one session. `Ok(())` means a clean shutdown.
pub async fn session(ctx: &Context) -> Result<(), PipelineError> {
    let config = &ctx.config;
    let source_sql = ctx.source.connect_sql().await?;
    crate::source::snapshot::pin_settings(&source_sql).await?;
    let publication = preflight(&source_sql, config).await?;
    let mut tables = publication.tables;
    let refused = RefusedTables::at_start(publication.refused);
    metrics::register_all(
        tables
            .iter()
            .map(|t| format!("{}.{}", t.schema.schema, t.schema.name)),
    );
    let mut sink = open_sink(ctx).await?;
    let module = ctx.active.load_full();
    let mut rules = RulesWorker::start(Arc::clone(&module)).await?;
    let soft_delete = |table: &str| config.soft_delete_column_for(table).map(str::to_owned);
    let row_json = RowJson::connect(&ctx.source, &ctx.sink).await?;
    let sidecar = sidecar_in_source(&row_json, &sink, &mut tables).await?;
    let transform = Transform {
        policy: config.failure_policy,
        rules_version: module.version().to_owned(),
        soft_delete: &soft_delete,
        rows: (!crate::pipeline::committer::discarding()).then_some(&row_json),
        relations: relation_graph(&module, &tables)?,
    };
    let names = follow_renames_at_start(&tables, &mut sink).await?;
    let mut repl =
        ReplicationConnection::connect(&ctx.source.for_replication(&ctx.config.slot)).await?;
    // Only the lease holder gets here (open_sink checked the epoch): a walsender still on the
    // slot belongs to a stale leader.
    crate::source::claim_slot(&source_sql, &config.slot).await?;
    let start = decide_start(ctx, &source_sql, &mut sink, &mut repl, &module).await?;
    if let Some((exported, consistent)) = start.snapshot {
        let snapshot = run_snapshot(
            &source_sql,
            exported.as_deref(),
            consistent,
            &tables,
            &mut sink,
            &mut rules,
            &transform,
            &config.snapshot,
            config.rules.batch_size,
            &ctx.shutdown,
        )
        .await?;
        if snapshot == Snapshot::Interrupted {
            return Ok(());
        }
    }
    let (stream, stored) = start_stream(ctx, repl, &sink, &module, start.lsn).await?;
    let parts = Parts {
        source: source_sql,
        tables,
        refused,
        sidecar,
        names,
        sink,
        stream,
        module,
        rules,
        transform,
        stored,
    };
    Streaming::new(ctx, parts).await?.run().await
}

/// Where the stream starts, and the snapshot to run first, if any.
struct Start {
    lsn: Lsn,
    /// (exported snapshot name, consistent point) when the initial snapshot still has to run.
    snapshot: Option<(Option<String>, Lsn)>,
}

/// Decides from the slot and the stored LSN where to start: refuses a slot that cannot be used,
/// creates it on the first start.
async fn decide_start(
    ctx: &Context,
    source: &Client,
    sink: &mut Sink,
    repl: &mut ReplicationConnection,
    module: &RulesModule,
) -> Result<Start, PipelineError> {
    let slot = ctx.config.slot.as_str();
    let stored = sink.stored_lsn().await?;
    let slot_state = lookup_slot(source, slot).await?;
    match (&slot_state, stored) {
        (None, Some(lsn)) => Err(failover::slot_missing(ctx, source, repl, lsn).await),
        (Some(s), _) if s.synced == Some(true) && failover::in_recovery(source).await? => {
            Err(PipelineError::SlotSyncedOnStandby {
                slot: slot.to_owned(),
                server: ctx.source.target(),
            })
        }
        (Some(s), _) if s.wal_status.as_deref() == Some("lost") => {
            Err(PipelineError::SlotInvalidated {
                slot: slot.to_owned(),
            })
        }
        (Some(s), _) if s.plugin.as_deref() != Some("pgoutput") => Err(PipelineError::SlotPlugin {
            slot: slot.to_owned(),
            plugin: s.plugin.clone().unwrap_or_default(),
        }),
        (Some(s), _) if s.database.as_deref() != Some(ctx.source.dbname.as_str()) => {
            Err(PipelineError::SlotOtherDatabase {
                slot: slot.to_owned(),
                database: s.database.clone().unwrap_or_default(),
            })
        }
        (Some(s), _) if s.active => Err(PipelineError::SlotBusy {
            slot: slot.to_owned(),
            pid: s.active_pid.unwrap_or(0),
        }),
        (None, None) => {
            // First start: the slot's exported snapshot and its consistent point make the
            // hand-off from snapshot to stream gapless.
            let created = repl.create_slot(slot, SnapshotAction::Export).await?;
            info!(slot, consistent_point = %created.consistent_point, "created replication slot");
            sink.record_rule_version(
                module.version(),
                created.consistent_point,
                module.label(),
                false,
            )
            .await?;
            Ok(Start {
                lsn: created.consistent_point,
                snapshot: Some((created.snapshot_name, created.consistent_point)),
            })
        }
        (Some(s), None) => {
            // The slot exists but the snapshot never finished: resume it without the exported
            // snapshot (see pipeline::snapshot for what that costs).
            let progress = sink.snapshot_progress().await?;
            let consistent = progress
                .first()
                .map_or(s.confirmed_flush_lsn.unwrap_or_default(), |p| {
                    p.consistent_lsn
                });
            if progress.is_empty() {
                // Nothing was persisted here: a slot made beforehand, or a new sink (another
                // database or sidecar schema) for an existing slot. There is nothing to resume.
                info!(slot, %consistent, "the slot exists but this sink has no snapshot of it yet: copying every published table from the start");
            } else {
                warn!(slot, %consistent, "resuming an interrupted snapshot without its exported snapshot");
            }
            Ok(Start {
                lsn: consistent,
                snapshot: Some((None, consistent)),
            })
        }
        (Some(s), Some(lsn)) => Ok(Start {
            lsn: lsn.max(s.confirmed_flush_lsn.unwrap_or_default()),
            snapshot: None,
        }),
    }
}

/// Starts replication at `start_lsn` and confirms what the sink already stores. Returns the
/// stream and the stored LSN.
async fn start_stream(
    ctx: &Context,
    repl: ReplicationConnection,
    sink: &Sink,
    module: &RulesModule,
    start_lsn: Lsn,
) -> Result<(ReplicationStream, Lsn), PipelineError> {
    let config = &ctx.config;
    let slot = config.slot.as_str();
    let stored = sink.stored_lsn().await?.unwrap_or(start_lsn);
    sink.record_rule_version(module.version(), start_lsn, module.label(), false)
        .await?;
    let stream = repl
        .start_replication(StartOptions {
            start_lsn,
            status_interval: Duration::from_millis(config.status_interval_ms),
            ..StartOptions::new(slot, vec![config.publication.clone()])
        })
        .await?;
    stream.confirm(stored);
    crate::pipeline::lag::probe().watch(stream.positions());
    ctx.health.streaming.store(true, Ordering::Relaxed);
    ctx.health.has_streamed.store(true, Ordering::Relaxed);
    info!(slot, %start_lsn, stored = %stored, "streaming");
    Ok((stream, stored))
}

/// What the phases before the stream loop hand to it.
struct Parts<'a> {
    source: Client,
    tables: Vec<PublishedTable>,
    refused: RefusedTables,
    /// The sidecar tables as (schema, table) in the source, when the sink is the source database.
    sidecar: Vec<(String, String)>,
    /// The name each relation's memberships are stored under (`sluice_relations`).
    names: rustc_hash::FxHashMap<u32, String>,
    sink: Sink,
    stream: ReplicationStream,
    module: Arc<RulesModule>,
    rules: RulesWorker,
    transform: Transform<'a>,
    stored: Lsn,
}

/// What woke the stream loop.
enum Wake {
    Shutdown,
    Swap(Option<Swap>),
    Rebucket(Option<RebucketRequest>),
    Forget(Option<ForgetRequest>),
    Replay(Option<ReplayRequest>),
    /// Time for the next step of the background walk.
    Step,
    /// Time to look at the publication for tables that joined or left.
    CheckPublication,
    /// The sink finished a job.
    SinkDone,
    /// The batcher's delay is up.
    Deadline,
    /// A source event; `None` when the server ended the stream.
    Event(Option<SourceEvent>),
}

/// The stream loop's state.
struct Streaming<'a> {
    ctx: &'a Context,
    source: Client,
    /// The sidecar tables in the source, beyond `public`'s (see [`sidecar_in_source`]).
    sidecar: Vec<(String, String)>,
    /// The published tables as sluice knows them (joined tables are added, left ones removed).
    tables: Vec<PublishedTable>,
    /// Published tables not streamed: their changes cannot be tied to a primary key.
    refused: RefusedTables,
    stream: ReplicationStream,
    module: Arc<RulesModule>,
    rules: RulesWorker,
    transform: Transform<'a>,
    committer: Committer,
    batcher: Batcher,
    /// The stream's shapes with the primary key read from the catalog.
    keyed: KeyedRelations,
    /// The background walk: a re-bucketing pass or the snapshot of joined tables.
    job: Option<RebucketJob>,
    joins: JoinWatch,
    /// The walk shares the loop with the stream: after each chunk it waits as long as the chunk
    /// took, so a busy stream keeps at least half the time.
    next_step: Instant,
    pending_swap: Option<Swap>,
    rollback_watch: Option<RollbackWatch>,
    /// Inside a transaction already persisted (replayed after a restart).
    skipping: bool,
    stored: Lsn,
    server_end: Lsn,
    /// End LSN of the last commit received: a version swapped in now evaluates every
    /// transaction that commits after it.
    last_end: Lsn,
    shutdown: watch::Receiver<bool>,
    swaps: MutexGuard<'a, mpsc::Receiver<Swap>>,
    rebuckets: MutexGuard<'a, mpsc::Receiver<RebucketRequest>>,
    forgets: MutexGuard<'a, mpsc::Receiver<ForgetRequest>>,
    replays: MutexGuard<'a, mpsc::Receiver<ReplayRequest>>,
}

impl<'a> Streaming<'a> {
    async fn new(ctx: &'a Context, parts: Parts<'a>) -> Result<Streaming<'a>, PipelineError> {
        let Parts {
            source,
            tables,
            refused,
            sidecar,
            names,
            mut sink,
            stream,
            module,
            rules,
            transform,
            stored,
        } = parts;
        let job = RebucketJob::resume(&tables, &sink).await?;
        let interval = Duration::from_millis(ctx.config.snapshot.join_check_ms);
        let joins = JoinWatch::at_start(
            &ctx.config.publication,
            &tables,
            &refused.names(),
            &mut sink,
            interval,
            sidecar
                .iter()
                .map(|(schema, name)| crate::model::table_name(schema, name))
                .collect(),
        )
        .await?;
        Ok(Streaming {
            ctx,
            source,
            keyed: KeyedRelations::seeded(&tables, names),
            tables,
            refused,
            sidecar,
            committer: Committer::new(sink, stream.acker()),
            stream,
            module,
            rules,
            transform,
            batcher: Batcher::new(&ctx.config),
            job,
            joins,
            next_step: Instant::now(),
            pending_swap: None,
            rollback_watch: None,
            skipping: false,
            stored,
            server_end: stored,
            last_end: stored,
            shutdown: ctx.shutdown.clone(),
            swaps: ctx.swaps.lock().await,
            rebuckets: ctx.rebuckets.lock().await,
            forgets: ctx.forgets.lock().await,
            replays: ctx.replays.lock().await,
        })
    }

    /// Streams until shutdown or an error, then lets the sink finish.
    async fn run(mut self) -> Result<(), PipelineError> {
        let result = self.serve().await;
        // A job still in flight must finish before the next session reads the stored LSN, or
        // that session could stream again what the job is about to commit.
        if self.committer.busy() {
            let _ = self.committer.wait().await;
        }
        result?;
        self.stream.close().await?;
        info!("shut down cleanly");
        Ok(())
    }

    async fn serve(&mut self) -> Result<(), PipelineError> {
        loop {
            match self.next_wake().await? {
                Wake::Shutdown => return self.shut_down().await,
                Wake::Swap(swap) => self.on_swap(swap).await?,
                Wake::Rebucket(request) => self.on_rebucket(request).await?,
                Wake::Forget(request) => self.on_forget(request).await?,
                Wake::Replay(request) => self.on_replay(request).await?,
                Wake::Step => self.on_step().await?,
                Wake::CheckPublication => self.on_check_publication().await?,
                // What arrived while the sink worked goes next, so batches grow exactly as much
                // as the sink is behind.
                Wake::SinkDone if self.batcher.has_complete() => self.commit_batch().await?,
                Wake::SinkDone => {}
                Wake::Deadline => self.commit_batch().await?,
                Wake::Event(Some(event)) => self.on_event(event).await?,
                Wake::Event(None) => {
                    return Err(PipelineError::from(SourceError::ConnectionLost {
                        target: self.ctx.source.redacted(),
                        last_lsn: self.stream.confirmed(),
                        reason: "the server ended the stream".into(),
                    }));
                }
            }
        }
    }

    async fn next_wake(&mut self) -> Result<Wake, PipelineError> {
        let deadline = self
            .batcher
            .deadline()
            .filter(|_| self.batcher.can_commit_now());
        let idle = !self.batcher.in_tx();
        let walking = self.job.is_some() || self.joins.has_pending();
        // Admin actions wait for the walk, and for the end of the source transaction in hand.
        let free = idle && !walking;
        let busy = self.committer.busy();
        // One timer for the batcher's deadline and the look at the publication: the stream's
        // hot path registers no more timers than it did before joins were watched.
        let check_at = idle.then(|| self.joins.next_check());
        let timer = [deadline.map(Instant::from_std), check_at]
            .into_iter()
            .flatten()
            .min();
        Ok(tokio::select! {
            biased;
            _ = self.shutdown.changed() => Wake::Shutdown,
            swap = self.swaps.recv(), if self.pending_swap.is_none() => Wake::Swap(swap),
            request = self.rebuckets.recv(), if free => Wake::Rebucket(request),
            request = self.forgets.recv(), if free => Wake::Forget(request),
            request = self.replays.recv(), if free => Wake::Replay(request),
            _ = tokio::time::sleep_until(self.next_step), if walking && idle => Wake::Step,
            done = self.committer.wait(), if busy => {
                done?;
                Wake::SinkDone
            }
            _ = sleep_until_opt(timer) => {
                if check_at.is_some_and(|at| at <= Instant::now()) {
                    Wake::CheckPublication
                } else {
                    Wake::Deadline
                }
            }
            event = self.stream.recv() => Wake::Event(event?),
        })
    }

    /// Persists every complete transaction received, confirms, and closes cleanly.
    async fn shut_down(&mut self) -> Result<(), PipelineError> {
        if self.batcher.has_complete() {
            self.commit_batch().await?;
        }
        self.committer.sink().await?.rollback().await?;
        self.stream.send_status_now().await?;
        Ok(())
    }

    /// Hands the complete transactions to the sink, then counts a new version's outcomes.
    async fn commit_batch(&mut self) -> Result<(), PipelineError> {
        self.batcher
            .commit(
                &mut self.committer,
                &mut self.rules,
                &self.transform,
                self.server_end,
            )
            .await?;
        self.check_rollback().await;
        Ok(())
    }

    /// Hands every complete transaction received to the sink and waits for it: then work that
    /// writes outside the stream's batches may use `committer.sink()`. Only between source
    /// transactions.
    async fn quiet_sink(&mut self) -> Result<(), PipelineError> {
        self.batcher
            .commit(
                &mut self.committer,
                &mut self.rules,
                &self.transform,
                self.server_end,
            )
            .await?;
        self.committer.sink().await?;
        Ok(())
    }

    async fn on_swap(&mut self, swap: Option<Swap>) -> Result<(), PipelineError> {
        self.pending_swap = swap;
        if !self.batcher.in_tx()
            && let Some(swap) = self.pending_swap.take()
        {
            self.apply_swap(swap).await?;
        }
        Ok(())
    }

    async fn on_rebucket(&mut self, request: Option<RebucketRequest>) -> Result<(), PipelineError> {
        let Some(RebucketRequest { table, reply }) = request else {
            return Ok(());
        };
        // Edges must reflect every change received before the pass reads them.
        let at = self.last_end;
        self.quiet_sink().await?;
        let role = self.role();
        let sink = self.committer.sink().await?;
        match RebucketJob::start(table, &self.tables, sink, at).await {
            Ok(Ok(job)) => self.job = Some(job.replying_to(reply)),
            Ok(Err(reason)) => reject(reply, reason),
            Err(e) => reject(reply, contain("rebucket", e, sink, role).await?),
        }
        Ok(())
    }

    /// The role sluice reads the source as.
    fn role(&self) -> &'a str {
        self.ctx.source.user.as_str()
    }

    /// A step of the walk failed (see `pipeline::admin_action`): a re-bucketing pass is
    /// abandoned and its caller told why; a walk of joined tables is tried again at the next
    /// look at the publication. The stream goes on.
    async fn walk_failed(&mut self, error: PipelineError) -> Result<(), PipelineError> {
        let role = self.role();
        let sink = self.committer.sink().await?;
        let Some(mut job) = self.job.take() else {
            return Err(error);
        };
        match job.walk() {
            Walk::Rebucket => {
                let reason = contain("rebucket", error, sink, role).await?;
                // Not resumed at the next start: the same error would stop it again.
                sink.clear_progress(Walk::Rebucket).await?;
                let reason = format!(
                    "{reason} (the pass stopped after {} rows; memberships already re-evaluated stay; run it again once fixed)",
                    job.rows()
                );
                reject(job.take_reply(), reason);
            }
            Walk::Snapshot => {
                contain("walk of joined tables", error, sink, role).await?;
                self.joins.retry_later(job.unfinished());
            }
        }
        Ok(())
    }

    async fn on_forget(&mut self, request: Option<ForgetRequest>) -> Result<(), PipelineError> {
        if let Some(request) = request {
            self.quiet_sink().await?;
            let role = self.role();
            let sink = self.committer.sink().await?;
            forget::run(
                request,
                &self.ctx.config.publication,
                &self.source,
                sink,
                role,
            )
            .await?;
        }
        Ok(())
    }

    async fn on_replay(&mut self, request: Option<ReplayRequest>) -> Result<(), PipelineError> {
        if let Some(request) = request {
            let (at, role) = (self.last_end, self.role());
            self.quiet_sink().await?;
            Replayer {
                source: &self.source,
                sink: self.committer.sink().await?,
                rules: &mut self.rules,
                transform: &self.transform,
                tables: &self.tables,
                rules_batch: self.ctx.config.rules.batch_size,
                at,
                role,
            }
            .run(request)
            .await?;
        }
        Ok(())
    }

    /// One chunk of the walk; starts the snapshot of joined tables when no walk runs.
    async fn on_step(&mut self) -> Result<(), PipelineError> {
        let started = Instant::now();
        let at = self.last_end;
        self.quiet_sink().await?;
        if self.job.is_none() {
            let joined = self.joins.take_pending();
            let role = self.role();
            let sink = self.committer.sink().await?;
            match RebucketJob::join(&self.source, joined.clone(), sink, at).await {
                Ok(job) => self.job = Some(job),
                Err(e) => {
                    contain("walk of joined tables", e, sink, role).await?;
                    self.joins.retry_later(joined);
                    self.next_step = Instant::now() + started.elapsed();
                    return Ok(());
                }
            }
        }
        let settings = &self.ctx.config;
        let step = match self.job.as_mut() {
            Some(job) => {
                job.step(
                    &self.source,
                    self.committer.sink().await?,
                    &mut self.rules,
                    &self.transform,
                    settings.snapshot.chunk_rows,
                    settings.rules.batch_size,
                    at,
                )
                .await
            }
            None => Ok(Step::Done),
        };
        let step = match step {
            Ok(step) => step,
            Err(e) => {
                self.walk_failed(e).await?;
                self.next_step = Instant::now() + started.elapsed();
                return Ok(());
            }
        };
        let pause = match step {
            Step::Done => {
                self.job = None;
                started.elapsed()
            }
            Step::More => started.elapsed(),
            Step::Wait => WALK_WAIT.max(started.elapsed()),
            Step::Unreadable => {
                if let Some(job) = self.job.take() {
                    self.joins.retry_later(job.unfinished());
                }
                started.elapsed()
            }
        };
        self.next_step = Instant::now() + pause;
        Ok(())
    }

    async fn on_check_publication(&mut self) -> Result<(), PipelineError> {
        self.quiet_sink().await?;
        let sink = self.committer.sink().await?;
        self.joins
            .check(&self.source, &mut self.tables, &mut self.refused, sink)
            .await
    }

    async fn on_event(&mut self, event: SourceEvent) -> Result<(), PipelineError> {
        match event {
            SourceEvent::Begin {
                final_lsn,
                xid,
                commit_time_us,
            } => {
                // A commit record that starts before the stored end LSN ends at or before it.
                self.skipping = final_lsn < self.stored;
                if self.skipping {
                    debug!(%final_lsn, stored = %self.stored, "skipping a transaction already persisted");
                } else {
                    crate::pipeline::lag::probe().begin(final_lsn, commit_time_us);
                    self.batcher.begin_tx(xid);
                }
            }
            SourceEvent::Change(mut change) => {
                if self.skipping
                    || self.is_sidecar(&change.table.schema, &change.table.name)
                    || self.refused.contains(change.table.oid)
                {
                    return Ok(());
                }
                self.keyed.key_change(&self.source, &mut change).await?;
                if let Some(names) = self.keyed.take_names() {
                    self.batcher.push(Pending::Relations(names));
                }
                self.batcher.push(Pending::Change(change));
                if self.batcher.over_limits() {
                    self.batcher
                        .write_chunk(
                            &mut self.committer,
                            &mut self.rules,
                            &self.transform,
                            self.server_end,
                        )
                        .await?;
                }
            }
            SourceEvent::Truncate { tables, .. } => {
                if self.skipping {
                    return Ok(());
                }
                let mut keyed_tables = Vec::with_capacity(tables.len());
                let tables: Vec<_> = tables
                    .into_iter()
                    .filter(|t| {
                        !self.is_sidecar(&t.schema, &t.name) && !self.refused.contains(t.oid)
                    })
                    .collect();
                for t in &tables {
                    // The current name: the one the table's memberships are stored under.
                    keyed_tables.push(self.keyed.keyed(&self.source, t).await?);
                }
                if let Some(names) = self.keyed.take_names() {
                    self.batcher.push(Pending::Relations(names));
                }
                if !keyed_tables.is_empty() {
                    self.batcher.push(Pending::Truncate(keyed_tables));
                }
            }
            SourceEvent::Commit {
                end_lsn,
                commit_time_us,
                ..
            } => self.on_commit(end_lsn, commit_time_us).await?,
            SourceEvent::Keepalive { wal_end } => self.on_keepalive(wal_end),
            SourceEvent::Relation(table) => {
                debug!(table = %table.qualified_name(), columns = table.columns.len(), "relation (schema) received");
                if !self.is_sidecar(&table.schema, &table.name) {
                    let unknown = !self.tables.iter().any(|t| t.schema.oid == table.oid);
                    if unknown {
                        // A table sluice does not know: it may have joined the publication.
                        self.joins.check_soon();
                    }
                    let shape = self.keyed.relation(&self.source, table).await?;
                    if unknown && let Some(gap) = shape.key_gap() {
                        // Refused before its first change arrives, rather than each change
                        // failing until the next look at the publication refuses it.
                        let reason = crate::pipeline::refused::gap_reason(&shape, gap);
                        self.refused
                            .refuse(shape.oid, shape.qualified_name(), reason);
                    }
                    follow_name_in(&mut self.tables, &shape);
                    // A rename moves the memberships after the changes received before it,
                    // in the same sink transaction as the changes that follow.
                    if let Some(names) = self.keyed.take_names() {
                        self.batcher.push(Pending::Relations(names));
                    }
                }
            }
            SourceEvent::Message { .. } => {}
        }
        Ok(())
    }

    async fn on_commit(&mut self, end_lsn: Lsn, commit_time_us: i64) -> Result<(), PipelineError> {
        self.server_end = self.server_end.max(end_lsn);
        self.last_end = self.last_end.max(end_lsn);
        if self.skipping {
            self.skipping = false;
            return Ok(());
        }
        let wrote = self.batcher.commit_tx(end_lsn, commit_time_us);
        if let Some(swap) = self.pending_swap.take() {
            self.apply_swap(swap).await?;
        } else if !wrote {
            // Nothing to store: like a keepalive, let the server release WAL up to it once
            // everything before it is persisted.
            self.confirm_if_idle(end_lsn);
        } else if self.batcher.over_limits() || !self.committer.busy() {
            // An idle sink takes the transaction at once (latency); a busy one gets what
            // accumulated when it finishes, unless the batch is full.
            self.commit_batch().await?;
        } else {
            // Meanwhile the transaction is evaluated, so that the sink's next job is ready
            // when it finishes.
            self.batcher
                .prepare(&mut self.rules, &self.transform)
                .await?;
        }
        Ok(())
    }

    fn on_keepalive(&mut self, wal_end: Lsn) {
        self.server_end = self.server_end.max(wal_end);
        // An idle publication must not pin WAL.
        if !self.skipping {
            self.confirm_if_idle(wal_end);
        }
    }

    /// Lets the server release WAL up to `lsn` when everything received is persisted: for LSNs
    /// that carry nothing to store (keepalives, transactions without published changes).
    fn confirm_if_idle(&mut self, lsn: Lsn) {
        if self.batcher.is_idle() && !self.committer.busy() && lsn > self.stream.confirmed() {
            self.stream.confirm(lsn);
            metrics::record_confirmed(lsn);
        }
    }

    /// Finishes the batch in flight with the old version, then makes `swap` the active version.
    async fn apply_swap(&mut self, swap: Swap) -> Result<(), PipelineError> {
        let last_end = self.last_end;
        self.batcher
            .commit(
                &mut self.committer,
                &mut self.rules,
                &self.transform,
                last_end,
            )
            .await?;
        // Outcomes of the outgoing version do not count against the incoming one.
        let _ = self.batcher.take_outcome_counts();
        let graph = match relation_graph(&swap.module, &self.tables) {
            Ok(graph) => graph,
            Err(e) => {
                error!(error = %e, "the new rules version declares relations that do not fit the published tables; keeping the active version");
                swap.refused(e.to_string(), self.module.version());
                return Ok(());
            }
        };
        let new_rules = match RulesWorker::start(Arc::clone(&swap.module)).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "the validated rules version failed to instantiate; keeping the active version");
                swap.refused(
                    format!("the validated version failed to instantiate: {e}"),
                    self.module.version(),
                );
                return Ok(());
            }
        };
        // Recorded before the swap: a version that cannot be recorded does not go live.
        let role = self.role();
        let sink = self.committer.sink().await?;
        if let Err(e) = sink
            .record_rule_version(swap.module.version(), last_end, swap.module.label(), true)
            .await
        {
            let reason = contain("reload", e.into(), sink, role).await?;
            swap.refused(reason, self.module.version());
            return Ok(());
        }
        let previous = std::mem::replace(&mut self.module, Arc::clone(&swap.module));
        self.rules = new_rules;
        self.transform.rules_version = self.module.version().to_owned();
        self.transform.relations = graph;
        self.ctx.active.store(Arc::clone(&self.module));
        let is_rollback = swap.trigger == Trigger::Rollback;
        swap.activated(previous.version(), last_end);
        self.rollback_watch =
            (self.ctx.config.reload.rollback && !is_rollback).then(|| RollbackWatch {
                previous,
                seen: 0,
                errors: 0,
            });
        Ok(())
    }

    /// Counts the new version's outcomes and, past the window, rolls it back if it failed too
    /// often.
    async fn check_rollback(&mut self) {
        let (seen, errors) = self.batcher.take_outcome_counts();
        let Some(w) = self.rollback_watch.as_mut() else {
            return;
        };
        w.seen += seen;
        w.errors += errors;
        let window = self.ctx.config.reload.rollback_window.max(1);
        let threshold = self.ctx.config.reload.rollback_error_rate;
        // Errors that already exceed the threshold over the whole window decide it now: waiting
        // for the rest of the window could only cost more failed changes (and, with a rule that
        // runs to its deadline, minutes).
        let decided = w.errors as f64 > threshold * window as f64;
        if w.seen < window && !decided {
            return;
        }
        let rate = w.errors as f64 / w.seen.max(1) as f64;
        if let Some(w) = self.rollback_watch.take().filter(|_| rate > threshold) {
            error!(
                error_rate = rate,
                threshold,
                changes = w.seen,
                failed = w.errors,
                back_to = w.previous.version(),
                "ROLLING BACK the rules: the new version failed on too many of its first changes"
            );
            metrics_rs::counter!(ROLLBACKS).increment(1);
            let swap = Swap {
                module: w.previous,
                trigger: Trigger::Rollback,
                requested_at: std::time::Instant::now(),
                compile: Duration::ZERO,
                reply: None,
            };
            let _ = self.ctx.swap_tx.send(swap).await;
        }
    }
}

/// Gives the published table with `shape`'s OID `shape`'s current name, so that a re-bucketing
/// pass started after a rename reads the table and stores its memberships under that name.
fn follow_name_in(tables: &mut [PublishedTable], shape: &TableSchema) {
    if let Some(t) = tables.iter_mut().find(|t| t.schema.oid == shape.oid)
        && (t.schema.schema != shape.schema || t.schema.name != shape.name)
    {
        let mut renamed = (*t.schema).clone();
        renamed.schema.clone_from(&shape.schema);
        renamed.name.clone_from(&shape.name);
        t.schema = Arc::new(renamed);
    }
}

/// Moves the memberships of tables renamed while sluice was stopped (their relation OID is
/// recorded under another name than the catalog's now) and records the names of tables seen for
/// the first time, in one sink transaction. Returns the stored name of every relation.
async fn follow_renames_at_start(
    tables: &[PublishedTable],
    sink: &mut Sink,
) -> Result<rustc_hash::FxHashMap<u32, String>, PipelineError> {
    let mut names = sink.relation_names().await?;
    let current: Vec<(u32, String)> = tables
        .iter()
        .map(|t| (t.schema.oid, t.schema.qualified_name()))
        .collect();
    let found = crate::model::reconcile(&current, &names);
    if found.is_empty() {
        return Ok(names);
    }
    for m in &found.moves {
        warn!(from = %m.from, to = %m.to, "table renamed while sluice was stopped: its memberships move to the new name (the changelog deletes each under the old name and inserts it under the new one)");
    }
    sink.write_relation_names(&found).await?;
    sink.commit_without_lsn().await?;
    names.extend(found.names);
    Ok(names)
}

/// A freshly swapped-in version on probation: rolled back if it fails too often at first.
struct RollbackWatch {
    previous: Arc<RulesModule>,
    seen: u64,
    errors: u64,
}

/// When the sink is the source database, where its sidecar tables are (they may be in a schema of
/// their own, `search_path` first), with those tables taken out of `tables`: a `FOR ALL TABLES` or
/// `FOR TABLES IN SCHEMA` publication publishes them, and their changes must never reach the
/// rules, or each write would come back as more writes.
async fn sidecar_in_source(
    rows: &RowJson,
    sink: &Sink,
    tables: &mut Vec<PublishedTable>,
) -> Result<Vec<(String, String)>, PipelineError> {
    if !rows.sink_is_source() {
        return Ok(Vec::new());
    }
    let located = crate::sink::schema::locations(sink.client())
        .await
        .map_err(|e| crate::sink::SinkError::sql("locating the sidecar tables", e))?;
    tables.retain(|t| {
        !located
            .iter()
            .any(|(schema, name)| *schema == t.schema.schema && *name == t.schema.name)
    });
    Ok(located)
}

impl Streaming<'_> {
    /// A table sluice writes: never fed back into the rules.
    fn is_sidecar(&self, schema: &str, name: &str) -> bool {
        (schema == "public" && SIDECAR_TABLES.contains(&name))
            || self.sidecar.iter().any(|(s, n)| s == schema && n == name)
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
