//! One streaming session: decide where to start, snapshot if needed, then stream until shutdown
//! or a lost connection.

use std::sync::atomic::Ordering;

use std::sync::Arc;

use ::metrics as metrics_rs;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::model::Lsn;
use crate::pipeline::rebucket::RebucketJob;
use crate::pipeline::reload::{ROLLBACKS, Swap, Trigger};
use crate::rules::{RulesModule, RulesWorker};

use crate::pipeline::batcher::{Batcher, Pending};
use crate::pipeline::committer::Committer;
use crate::pipeline::snapshot::run_snapshot;
use crate::pipeline::transform::Transform;
use crate::pipeline::{Context, PipelineError, metrics, open_sink, preflight};
use crate::sink::schema::SIDECAR_TABLES;
use crate::source::row_json::RowJson;
use crate::source::{
    KeyedRelations, ReplicationConnection, ReplicationStream, SnapshotAction, SourceError,
    SourceEvent, StartOptions, lookup_slot,
};

/// Runs one session. `Ok(())` means a clean shutdown.
pub async fn session(ctx: &Context) -> Result<(), PipelineError> {
    let config = &ctx.config;
    let slot = config.slot.as_str();
    let source_sql = ctx.source.connect_sql().await?;
    crate::source::snapshot::pin_settings(&source_sql).await?;
    let tables = preflight(&source_sql, config).await?;
    let mut sink = open_sink(ctx).await?;
    let mut module = ctx.active.load_full();
    let mut rules = RulesWorker::start(Arc::clone(&module)).await?;
    let soft_delete = |table: &str| config.soft_delete_column_for(table).map(str::to_owned);
    let row_json = RowJson::connect(&ctx.source, &ctx.sink).await?;
    let mut transform = Transform {
        policy: config.failure_policy,
        rules_version: module.version().to_owned(),
        soft_delete: &soft_delete,
        rows: Some(&row_json),
    };

    let stored = sink.stored_lsn().await?;
    let slot_state = lookup_slot(&source_sql, slot).await?;
    let mut repl = ReplicationConnection::connect(&ctx.source).await?;

    // (exported snapshot name, consistent point) when the snapshot still has to run.
    let mut snapshot: Option<(Option<String>, Lsn)> = None;
    let start_lsn = match (&slot_state, stored) {
        (None, Some(lsn)) => {
            return Err(PipelineError::SlotDropped {
                slot: slot.to_owned(),
                lsn,
            });
        }
        (Some(s), _) if s.wal_status.as_deref() == Some("lost") => {
            return Err(PipelineError::SlotInvalidated {
                slot: slot.to_owned(),
            });
        }
        (Some(s), _) if s.plugin.as_deref() != Some("pgoutput") => {
            return Err(PipelineError::SlotPlugin {
                slot: slot.to_owned(),
                plugin: s.plugin.clone().unwrap_or_default(),
            });
        }
        (Some(s), _) if s.database.as_deref() != Some(ctx.source.dbname.as_str()) => {
            return Err(PipelineError::SlotOtherDatabase {
                slot: slot.to_owned(),
                database: s.database.clone().unwrap_or_default(),
            });
        }
        (Some(s), _) if s.active => {
            return Err(PipelineError::SlotBusy {
                slot: slot.to_owned(),
                pid: s.active_pid.unwrap_or(0),
            });
        }
        (None, None) => {
            // First start: the slot's exported snapshot and its consistent point make the
            // hand-off from snapshot to stream gapless.
            let created = repl.create_slot(slot, SnapshotAction::Export).await?;
            info!(slot, consistent_point = %created.consistent_point, "created replication slot");
            sink.record_rule_version(
                module.version(),
                created.consistent_point,
                &ctx.module_path,
                false,
            )
            .await?;
            snapshot = Some((created.snapshot_name, created.consistent_point));
            created.consistent_point
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
            warn!(slot, %consistent, "resuming an interrupted snapshot without its exported snapshot");
            snapshot = Some((None, consistent));
            consistent
        }
        (Some(s), Some(lsn)) => lsn.max(s.confirmed_flush_lsn.unwrap_or_default()),
    };
    if let Some((exported, consistent)) = snapshot {
        run_snapshot(
            &source_sql,
            exported.as_deref(),
            consistent,
            &tables,
            &mut sink,
            &mut rules,
            &transform,
            &config.snapshot,
            config.rules.batch_size,
        )
        .await?;
    }
    let stored = sink.stored_lsn().await?.unwrap_or(start_lsn);
    sink.record_rule_version(module.version(), start_lsn, &ctx.module_path, false)
        .await?;

    let mut stream = repl
        .start_replication(StartOptions {
            start_lsn,
            status_interval: std::time::Duration::from_millis(config.status_interval_ms),
            ..StartOptions::new(slot, vec![config.publication.clone()])
        })
        .await?;
    stream.confirm(stored);
    ctx.health.streaming.store(true, Ordering::Relaxed);
    ctx.health.has_streamed.store(true, Ordering::Relaxed);
    info!(slot, %start_lsn, stored = %stored, "streaming");

    let mut job = RebucketJob::resume(&tables, &sink).await?;
    let mut committer = Committer::new(sink, stream.acker());
    let mut batcher = Batcher::new(config);
    let mut skipping = false;
    // The stream's shapes with the primary key read from the catalog.
    let mut keyed = KeyedRelations::seeded(&tables);
    let mut server_end = stored;
    let mut shutdown = ctx.shutdown.clone();
    let mut swaps = ctx.swaps.lock().await;
    let mut rebuckets = ctx.rebuckets.lock().await;
    // Re-bucketing shares the loop with the stream: after each chunk it waits as long as the
    // chunk took, so a busy stream keeps at least half the time.
    let mut next_step = Instant::now();
    let mut pending_swap: Option<Swap> = None;
    let mut rollback_watch: Option<RollbackWatch> = None;
    // End LSN of the last commit received: a version swapped in now evaluates every transaction
    // that commits after it.
    let mut last_end = stored;
    let result: Result<(), PipelineError> = async {
    loop {
        let deadline = batcher.deadline().filter(|_| batcher.can_commit_now());
        let event = tokio::select! {
            biased;
            _ = shutdown.changed() => None,
            swap = swaps.recv(), if pending_swap.is_none() => {
                pending_swap = swap;
                if !batcher.in_tx()
                    && let Some(swap) = pending_swap.take()
                {
                    apply_swap(ctx, swap, &mut module, &mut rules, &mut transform, &mut batcher, &mut committer, last_end, &mut rollback_watch).await?;
                }
                continue;
            }
            request = rebuckets.recv(), if job.is_none() => {
                if let Some(request) = request {
                    // Edges must reflect every change received before the pass reads them.
                    if !batcher.in_tx() {
                        batcher.commit(&mut committer, &mut rules, &transform, server_end).await?;
                    }
                    job = RebucketJob::start(request, &tables, committer.sink().await?, last_end).await?;
                }
                continue;
            }
            _ = tokio::time::sleep_until(next_step), if job.is_some() && !batcher.in_tx() => {
                let started = Instant::now();
                batcher.commit(&mut committer, &mut rules, &transform, server_end).await?;
                let done = match job.as_mut() {
                    Some(j) => j.step(&source_sql, committer.sink().await?, &mut rules, &transform, config.snapshot.chunk_rows, config.rules.batch_size, last_end).await?,
                    None => false,
                };
                if done {
                    job = None;
                }
                next_step = Instant::now() + started.elapsed();
                continue;
            }
            // The sink finished a job: what arrived meanwhile goes next, so batches grow
            // exactly as much as the sink is behind.
            done = committer.wait(), if committer.busy() => {
                done?;
                if batcher.can_commit_now() {
                    batcher.commit(&mut committer, &mut rules, &transform, server_end).await?;
                    check_rollback(ctx, &mut rollback_watch, &mut batcher).await;
                }
                continue;
            }
            _ = sleep_until_opt(deadline) => {
                batcher.commit(&mut committer, &mut rules, &transform, server_end).await?;
                check_rollback(ctx, &mut rollback_watch, &mut batcher).await;
                continue;
            }
            event = stream.recv() => Some(event?),
        };
        let Some(event) = event else {
            // Shutdown: persist every complete transaction received, confirm, close cleanly.
            if batcher.can_commit_now() {
                batcher.commit(&mut committer, &mut rules, &transform, server_end).await?;
            }
            committer.sink().await?.rollback().await?;
            stream.send_status_now().await?;
            return Ok(());
        };
        let Some(event) = event else {
            return Err(PipelineError::from(SourceError::ConnectionLost {
                target: ctx.source.redacted(),
                last_lsn: stream.confirmed(),
                reason: "the server ended the stream".into(),
            }));
        };
        match event {
            SourceEvent::Begin { final_lsn, xid, .. } => {
                // A commit record that starts before the stored end LSN ends at or before it.
                skipping = final_lsn < stored;
                if skipping {
                    debug!(%final_lsn, %stored, "skipping a transaction already persisted");
                } else {
                    batcher.begin_tx(xid);
                }
            }
            SourceEvent::Change(mut change) => {
                if skipping || is_sidecar(&change.table.schema, &change.table.name) {
                    continue;
                }
                keyed.key_change(&source_sql, &mut change).await?;
                batcher.push(Pending::Change(change));
                if batcher.over_limits() {
                    batcher
                        .write_chunk(&mut committer, &mut rules, &transform, server_end)
                        .await?;
                }
            }
            SourceEvent::Truncate { tables, .. } => {
                if skipping {
                    continue;
                }
                let tables: Vec<_> = tables
                    .into_iter()
                    .filter(|t| !is_sidecar(&t.schema, &t.name))
                    .collect();
                if !tables.is_empty() {
                    batcher.push(Pending::Truncate(tables));
                }
            }
            SourceEvent::Commit {
                end_lsn,
                commit_time_us,
                ..
            } => {
                server_end = server_end.max(end_lsn);
                last_end = last_end.max(end_lsn);
                if skipping {
                    skipping = false;
                    continue;
                }
                let wrote = batcher.commit_tx(end_lsn, commit_time_us);
                if let Some(swap) = pending_swap.take() {
                    apply_swap(
                        ctx,
                        swap,
                        &mut module,
                        &mut rules,
                        &mut transform,
                        &mut batcher,
                        &mut committer,
                        last_end,
                        &mut rollback_watch,
                    )
                    .await?;
                } else if !wrote {
                    // Nothing to store: like a keepalive, let the server release WAL up to it
                    // once everything before it is persisted.
                    confirm_if_idle(&stream, &batcher, &committer, end_lsn, server_end);
                } else if batcher.over_limits() || !committer.busy() {
                    // An idle sink takes the transaction at once (latency); a busy one gets
                    // what accumulated when it finishes, unless the batch is full.
                    batcher
                        .commit(&mut committer, &mut rules, &transform, server_end)
                        .await?;
                    check_rollback(ctx, &mut rollback_watch, &mut batcher).await;
                }
            }
            SourceEvent::Keepalive { wal_end } => {
                server_end = server_end.max(wal_end);
                // An idle publication must not pin WAL.
                if !skipping {
                    confirm_if_idle(&stream, &batcher, &committer, wal_end, server_end);
                }
            }
            SourceEvent::Relation(table) => {
                debug!(table = %table.qualified_name(), columns = table.columns.len(), "relation (schema) received");
                if !is_sidecar(&table.schema, &table.name) {
                    keyed.relation(&source_sql, table).await?;
                }
            }
            SourceEvent::Message { .. } => {}
        }
    }
    }
    .await;
    // A job still in flight must finish before the next session reads the stored LSN, or that
    // session could stream again what the job is about to commit.
    if committer.busy() {
        let _ = committer.wait().await;
    }
    result?;
    stream.close().await?;
    info!("shut down cleanly");
    Ok(())
}

/// A freshly swapped-in version on probation: rolled back if it fails too often at first.
struct RollbackWatch {
    previous: Arc<RulesModule>,
    seen: u64,
    errors: u64,
}

/// Finishes the batch in flight with the old version, then makes `swap` the active version.
#[allow(clippy::too_many_arguments)]
async fn apply_swap(
    ctx: &Context,
    swap: Swap,
    module: &mut Arc<RulesModule>,
    rules: &mut RulesWorker,
    transform: &mut Transform<'_>,
    batcher: &mut Batcher,
    committer: &mut Committer,
    last_end: Lsn,
    watch: &mut Option<RollbackWatch>,
) -> Result<(), PipelineError> {
    batcher
        .commit(committer, rules, transform, last_end)
        .await?;
    // Outcomes of the outgoing version do not count against the incoming one.
    let _ = batcher.take_outcome_counts();
    let new_rules = match RulesWorker::start(Arc::clone(&swap.module)).await {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "the validated rules version failed to instantiate; keeping the active version");
            return Ok(());
        }
    };
    let previous = std::mem::replace(module, Arc::clone(&swap.module));
    *rules = new_rules;
    transform.rules_version = module.version().to_owned();
    ctx.active.store(Arc::clone(module));
    committer
        .sink()
        .await?
        .record_rule_version(module.version(), last_end, &ctx.module_path, true)
        .await?;
    let is_rollback = swap.trigger == Trigger::Rollback;
    swap.activated(previous.version(), last_end);
    *watch = (ctx.config.reload.rollback && !is_rollback).then(|| RollbackWatch {
        previous,
        seen: 0,
        errors: 0,
    });
    Ok(())
}

/// Counts the new version's outcomes and, past the window, rolls it back if it failed too often.
async fn check_rollback(ctx: &Context, watch: &mut Option<RollbackWatch>, batcher: &mut Batcher) {
    let (seen, errors) = batcher.take_outcome_counts();
    let Some(w) = watch.as_mut() else { return };
    w.seen += seen;
    w.errors += errors;
    let window = ctx.config.reload.rollback_window.max(1);
    let threshold = ctx.config.reload.rollback_error_rate;
    // Errors that already exceed the threshold over the whole window decide it now: waiting
    // for the rest of the window could only cost more failed changes (and, with a rule that
    // runs to its deadline, minutes).
    let decided = w.errors as f64 > threshold * window as f64;
    if w.seen < window && !decided {
        return;
    }
    let rate = w.errors as f64 / w.seen.max(1) as f64;
    if let Some(w) = watch.take().filter(|_| rate > threshold) {
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
            compile: std::time::Duration::ZERO,
            reply: None,
        };
        let _ = ctx.swap_tx.send(swap).await;
    }
}

/// Lets the server release WAL up to `lsn` when everything received is persisted: for LSNs that
/// carry nothing to store (keepalives, transactions without published changes).
fn confirm_if_idle(
    stream: &ReplicationStream,
    batcher: &Batcher,
    committer: &Committer,
    lsn: Lsn,
    server_end: Lsn,
) {
    if batcher.is_idle() && !committer.busy() && lsn > stream.confirmed() {
        stream.confirm(lsn);
        metrics::record_confirmed(lsn, server_end, None);
    }
}

fn is_sidecar(schema: &str, name: &str) -> bool {
    schema == "public" && SIDECAR_TABLES.contains(&name)
}

async fn sleep_until_opt(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
