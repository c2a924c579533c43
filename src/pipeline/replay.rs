//! Replaying dead letters: the admin action behind `POST /failures/replay` and
//! `sluice replay-failures`.
//!
//! Under `on_rule_failure = "dead-letter"` a change the rules failed on writes nothing but its
//! row in `sync_rule_failures`, so clients never hear of it. A replay re-evaluates the *current*
//! row of each failed key with the active rules, written as the stream would write a change of
//! it (not membership-only): an update in every bucket the row stays in, an insert where it
//! arrives, a delete where it leaves; a key whose row no longer exists gets the deletes of its
//! stored memberships. The failures replayed are marked `resolved_at`, in the same sink
//! transaction, so a second replay finds nothing to do. A key the active rules still fail on
//! stays unresolved (and no second failure row is written for it).
//!
//! It runs on the stream loop between source transactions, like `rebucket` and `forget-table`,
//! so its writes never interleave with a streamed change of the same row. Reading the current
//! row may be ahead of the stream; the stream's later changes of that row then apply on top, as
//! after a rebucket chunk. It runs to its end in pages of failures; a page commits on its own, so
//! an interrupted replay leaves the rest unresolved for the next one.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;
use tracing::info;

use crate::model::Lsn;
use crate::pipeline::PipelineError;
use crate::pipeline::admin_action::contain;
use crate::pipeline::batcher::evaluate_all;
use crate::pipeline::transform::Transform;
use crate::pipeline::vanished::gone_row;
use crate::rules::RulesWorker;
use crate::sink::failures::Unresolved;
use crate::sink::{Sink, SinkItem};
use crate::source::catalog::PublishedTable;
use crate::source::rows_by_key::{key_texts, read_rows};

/// Failures read and settled per sink transaction.
const PAGE: i64 = 500;

/// Which unresolved failures to replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayFilter {
    /// Only failures at or after this LSN.
    pub since: Option<Lsn>,
    /// Only this table (as `sync_rule_failures.table_name` names it).
    pub table: Option<String>,
}

/// A request to replay the unresolved failures that match a filter.
pub struct ReplayRequest {
    pub filter: ReplayFilter,
    pub reply: Option<oneshot::Sender<ReplayOutcome>>,
}

/// What a replay did, or why it did not run.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ReplayOutcome {
    Done {
        /// Failure rows marked resolved.
        resolved: u64,
        /// Distinct rows re-evaluated (or found gone).
        keys: u64,
        /// Of those, rows that no longer exist.
        gone: u64,
        /// Failure rows left unresolved: the active rules still fail on the row, or its table
        /// is not published. (Failures whose key is unknown are not replayed at all.)
        unresolved: u64,
        changelog_rows: u64,
    },
    Rejected {
        reason: String,
    },
}

/// The sending end, for the admin listener.
#[derive(Clone)]
pub struct ReplayHandle {
    tx: mpsc::Sender<ReplayRequest>,
}

impl ReplayHandle {
    /// Replays and waits for the outcome.
    pub async fn replay(&self, filter: ReplayFilter) -> ReplayOutcome {
        let (reply, rx) = oneshot::channel();
        let request = ReplayRequest {
            filter,
            reply: Some(reply),
        };
        if self.tx.send(request).await.is_err() {
            return ReplayOutcome::Rejected {
                reason: "the pipeline is shutting down".into(),
            };
        }
        rx.await.unwrap_or(ReplayOutcome::Rejected {
            reason: "the pipeline stopped during the replay; failures not yet resolved stay unresolved, run it again".into(),
        })
    }
}

/// A handle and the pipeline's receiver.
pub fn channel() -> (ReplayHandle, mpsc::Receiver<ReplayRequest>) {
    let (tx, rx) = mpsc::channel(4);
    (ReplayHandle { tx }, rx)
}

/// What the replay needs from the stream loop.
pub struct Replayer<'a, 'b> {
    pub source: &'a Client,
    pub sink: &'a mut Sink,
    pub rules: &'a mut RulesWorker,
    pub transform: &'a Transform<'b>,
    pub tables: &'a [PublishedTable],
    pub rules_batch: usize,
    /// Stamped on the re-evaluated changes (the stream's last commit).
    pub at: Lsn,
    /// The role sluice reads the source as (named in the fix of a permission error).
    pub role: &'a str,
}

impl Replayer<'_, '_> {
    /// Runs `request`; a failure other than a lost connection fails the request alone. The sink
    /// must have no open transaction.
    pub async fn run(mut self, request: ReplayRequest) -> Result<(), PipelineError> {
        let outcome = match self.replay(&request.filter).await {
            Ok(outcome) => outcome,
            // What was replayed before the failure stays resolved.
            Err(e) => ReplayOutcome::Rejected {
                reason: contain("replay-failures", e, self.sink, self.role).await?,
            },
        };
        if let Some(reply) = request.reply {
            let _ = reply.send(outcome);
        }
        Ok(())
    }

    async fn replay(&mut self, filter: &ReplayFilter) -> Result<ReplayOutcome, PipelineError> {
        let (mut resolved, mut keys, mut gone, mut unresolved, mut changelog_rows) =
            (0, 0, 0, 0, 0);
        // Failures the replay itself might record have higher ids: the walk stops below them.
        let last_id = self.sink.last_failure_id().await?;
        let mut after = 0i64;
        loop {
            let page = self
                .sink
                .unresolved_failures(filter.since, filter.table.as_deref(), after, last_id, PAGE)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let settled = self.settle(&page).await?;
            self.sink.resolve_failures(&settled.resolved).await?;
            self.sink.commit_without_lsn().await?;
            resolved += settled.resolved.len() as u64;
            unresolved += (page.len() - settled.resolved.len()) as u64;
            keys += settled.keys;
            gone += settled.gone;
            crate::pipeline::metrics::count_changelog_rows(settled.changelog_rows);
            changelog_rows += settled.changelog_rows;
        }
        info!(
            resolved,
            keys, gone, unresolved, changelog_rows, "replayed rule failures"
        );
        Ok(ReplayOutcome::Done {
            resolved,
            keys,
            gone,
            unresolved,
            changelog_rows,
        })
    }

    /// Re-evaluates the keys of one page and writes their records inside the open transaction.
    async fn settle(&mut self, page: &[Unresolved]) -> Result<Settled, PipelineError> {
        let mut by_table: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for f in page {
            by_table
                .entry(&f.table_name)
                .or_default()
                .insert(&f.record_id);
        }
        let mut settled = Settled::default();
        let mut replayed: BTreeSet<(String, String)> = BTreeSet::new();
        for (name, ids) in by_table {
            let Some(table) = self
                .tables
                .iter()
                .find(|t| t.schema.qualified_name() == name)
            else {
                continue;
            };
            let arity = table.schema.primary_key.len();
            let wanted: Vec<&str> = ids
                .into_iter()
                .filter(|id| key_texts(id, arity).is_some())
                .collect();
            let key_list: Vec<Vec<String>> = wanted
                .iter()
                .filter_map(|id| key_texts(id, arity))
                .collect();
            let rows = read_rows(self.source, table, &key_list, self.at).await?;
            let mut items =
                evaluate_all(rows, self.rules, self.transform, self.rules_batch).await?;
            let mut failing = BTreeSet::new();
            items.retain(|item| match item {
                SinkItem::Failure(f) => {
                    failing.extend(f.record_id.clone());
                    false
                }
                _ => true,
            });
            let found: BTreeSet<String> = items
                .iter()
                .filter_map(|item| match item {
                    SinkItem::Record(r) => Some(r.record_id.clone()),
                    _ => None,
                })
                .chain(failing.iter().cloned())
                .collect();
            for id in &wanted {
                if !found.contains(*id) {
                    items.push(SinkItem::Record(gone_row(
                        name,
                        (*id).to_owned(),
                        &self.transform.relations,
                    )));
                    settled.gone += 1;
                }
            }
            settled.keys += wanted.len() as u64;
            settled.changelog_rows += self.sink.write(&items, true).await?.changelog_rows;
            for id in wanted.into_iter().filter(|id| !failing.contains(*id)) {
                replayed.insert((name.to_owned(), id.to_owned()));
            }
        }
        settled.resolved = page
            .iter()
            .filter(|f| replayed.contains(&(f.table_name.clone(), f.record_id.clone())))
            .map(|f| f.id)
            .collect();
        Ok(settled)
    }
}

#[derive(Default)]
struct Settled {
    resolved: Vec<i64>,
    keys: u64,
    gone: u64,
    changelog_rows: u64,
}
