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
        "WAL bytes received (or announced by the server's keepalive) beyond the confirmed LSN"
    );
    metrics::describe_gauge!(
        LAG_SECONDS,
        "Seconds since the commit of the oldest transaction received and not yet persisted (0 when all is persisted)"
    );
    metrics::describe_gauge!(
        RULES_VERSION,
        "The active rules module version (label), value 1"
    );
    metrics::describe_counter!(SNAPSHOT_ROWS, "Rows read by the initial snapshot");
    metrics::describe_counter!(RECONNECTS, "Reconnections after a lost connection");
}

/// Creates every metric at 0 (and the lag gauges), so that a scrape right after start sees
/// each documented name: an alert on a metric that does not exist yet never fires.
/// `tables` are the published tables (`schema.table`), for the per-table change counter.
pub fn register_all(tables: impl IntoIterator<Item = String>) {
    for table in tables {
        for op in [Operation::Insert, Operation::Update, Operation::Delete] {
            counter!(CHANGES, "table" => table.clone(), "op" => op.as_str()).increment(0);
        }
    }
    for outcome in ["kept", "dropped", "errored"] {
        counter!(OUTCOMES, "outcome" => outcome).increment(0);
    }
    for name in [CHANGELOG_ROWS, RULE_FAILURES, SNAPSHOT_ROWS, RECONNECTS] {
        counter!(name).increment(0);
    }
    for name in [CONFIRMED_LSN, LAG_BYTES, LAG_SECONDS] {
        gauge!(name).increment(0.0);
    }
    // A histogram is rendered once registered, with all its buckets at 0.
    for name in [BATCH_ROWS, BATCH_SECONDS, RULE_SECONDS] {
        let _ = histogram!(name);
    }
}

/// Counts changelog rows written outside the stream's batches (snapshot, re-bucketing, replay),
/// so that `sluice_changelog_rows_total` is every row appended.
pub fn count_changelog_rows(rows: u64) {
    counter!(CHANGELOG_ROWS).increment(rows);
    crate::pipeline::status::count_changelog_rows(rows);
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
    crate::pipeline::status::count_changes(changes.len() as u64);
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
    count_changelog_rows(stats.changelog_rows);
    counter!(RULE_FAILURES).increment(stats.failures);
    histogram!(BATCH_ROWS).record(rows as f64);
    histogram!(BATCH_SECONDS).record(took.as_secs_f64());
}

/// Records the LSN persisted and confirmed. The lag gauges are computed when scraped
/// (`pipeline::lag`), not here: a confirmation is exactly what does not happen while sluice is
/// behind in a long transaction.
pub fn record_confirmed(lsn: Lsn) {
    gauge!(CONFIRMED_LSN).set(lsn.0 as f64);
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
