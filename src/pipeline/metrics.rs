//! The pipeline's Prometheus metrics. Names are stable: dashboards depend on them.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::model::{Change, Lsn, Operation, Outcome};
use crate::sink::WriteStats;

pub const CHANGES: &str = "sluice_changes_total";
pub const OUTCOMES: &str = "sluice_rule_outcomes_total";
pub const CHANGELOG_ROWS: &str = "sluice_changelog_rows_total";
pub const RULE_FAILURES: &str = "sluice_rule_failures_total";
pub const BATCH_ROWS: &str = "sluice_batch_rows";
pub const BATCH_SECONDS: &str = "sluice_batch_write_seconds";
pub const RULE_SECONDS: &str = "sluice_rule_eval_seconds";
pub const CONFIRMED_LSN: &str = "sluice_confirmed_lsn";
pub const LAG_BYTES: &str = "sluice_replication_lag_bytes";
pub const LAG_SECONDS: &str = "sluice_replication_lag_seconds";
pub const RULES_VERSION: &str = "sluice_rules_version_info";
pub const SNAPSHOT_ROWS: &str = "sluice_snapshot_rows_total";
pub const RECONNECTS: &str = "sluice_reconnects_total";

/// Describes every metric once, so /metrics has HELP lines.
pub fn describe() {
    metrics::describe_counter!(CHANGES, "Row changes received, by table and operation");
    metrics::describe_counter!(OUTCOMES, "Rule outcomes: kept, dropped, errored");
    metrics::describe_counter!(CHANGELOG_ROWS, "Rows appended to sync_changelog");
    metrics::describe_counter!(RULE_FAILURES, "Changes recorded in sync_rule_failures");
    metrics::describe_histogram!(BATCH_ROWS, "Rows per sink transaction chunk");
    metrics::describe_histogram!(BATCH_SECONDS, "Time to write one sink chunk");
    metrics::describe_histogram!(RULE_SECONDS, "Time spent in the rules module per chunk");
    metrics::describe_gauge!(
        CONFIRMED_LSN,
        "Last LSN persisted and confirmed to PostgreSQL"
    );
    metrics::describe_gauge!(
        LAG_BYTES,
        "WAL bytes between the server's WAL end and the confirmed LSN"
    );
    metrics::describe_gauge!(
        LAG_SECONDS,
        "Seconds between the last persisted commit's timestamp and now"
    );
    metrics::describe_gauge!(
        RULES_VERSION,
        "The active rules module version (label), value 1"
    );
    metrics::describe_counter!(SNAPSHOT_ROWS, "Rows read by the initial snapshot");
    metrics::describe_counter!(RECONNECTS, "Reconnections after a lost connection");
}

/// Counts a chunk's changes and outcomes, aggregated first so the hot path does not touch the
/// registry per row.
pub fn record_chunk(changes: &[Change], outcomes: &[Outcome], rule_time: Duration) {
    let mut by_table: rustc_hash::FxHashMap<(&str, &str, Operation), u64> = Default::default();
    for c in changes {
        *by_table
            .entry((c.table.schema.as_str(), c.table.name.as_str(), c.op))
            .or_default() += 1;
    }
    for ((schema, name, op), n) in by_table {
        counter!(CHANGES, "table" => format!("{schema}.{name}"), "op" => op.as_str()).increment(n);
    }
    let (mut kept, mut dropped, mut errored) = (0, 0, 0);
    for o in outcomes {
        match o {
            Outcome::Keep(_) => kept += 1,
            Outcome::Drop => dropped += 1,
            Outcome::Error(_) => errored += 1,
        }
    }
    counter!(OUTCOMES, "outcome" => "kept").increment(kept);
    counter!(OUTCOMES, "outcome" => "dropped").increment(dropped);
    counter!(OUTCOMES, "outcome" => "errored").increment(errored);
    histogram!(RULE_SECONDS).record(rule_time.as_secs_f64());
}

pub fn record_write(stats: WriteStats, rows: usize, took: Duration) {
    counter!(CHANGELOG_ROWS).increment(stats.changelog_rows);
    counter!(RULE_FAILURES).increment(stats.failures);
    histogram!(BATCH_ROWS).record(rows as f64);
    histogram!(BATCH_SECONDS).record(took.as_secs_f64());
}

pub fn record_confirmed(lsn: Lsn, server_wal_end: Lsn, commit_time_us: Option<i64>) {
    gauge!(CONFIRMED_LSN).set(lsn.0 as f64);
    gauge!(LAG_BYTES).set(server_wal_end.0.saturating_sub(lsn.0) as f64);
    if let Some(us) = commit_time_us {
        // pgoutput times are microseconds since 2000-01-01.
        const PG_EPOCH_UNIX_US: i64 = 946_684_800_000_000;
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        gauge!(LAG_SECONDS).set(((now_us - PG_EPOCH_UNIX_US - us) as f64 / 1e6).max(0.0));
    }
}

/// Marks `version` as the active rules version (1) and `previous`, the one it replaced, as no
/// longer active (0): exactly one version is at 1, so a dashboard summing the gauge or picking
/// the label at 1 sees the running version, not every version ever activated.
pub fn record_rules_version(previous: Option<&str>, version: &str) {
    if let Some(previous) = previous.filter(|previous| *previous != version) {
        gauge!(RULES_VERSION, "version" => previous.to_owned()).set(0.0);
    }
    gauge!(RULES_VERSION, "version" => version.to_owned()).set(1.0);
}
