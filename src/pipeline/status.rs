//! The periodic status line: one INFO line every `status_log_interval_ms` (a minute by default)
//! with the confirmed LSN (everything before it is persisted), the lag, the rates since the last line and the active rules version, so
//! that a log alone shows whether sluice keeps up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::info;

use crate::pipeline::lag;

static CHANGES: AtomicU64 = AtomicU64::new(0);
static CHANGELOG_ROWS: AtomicU64 = AtomicU64::new(0);

/// Counts changes received (for the rate in the status line).
pub fn count_changes(n: u64) {
    CHANGES.fetch_add(n, Ordering::Relaxed);
}

/// Counts changelog rows written (for the rate in the status line).
pub fn count_changelog_rows(n: u64) {
    CHANGELOG_ROWS.fetch_add(n, Ordering::Relaxed);
}

/// Logs the status line every `interval`, forever; `version` gives the active rules version
/// and `streaming` whether the pipeline streams now.
pub async fn log_every(
    interval: Duration,
    version: impl Fn() -> String,
    streaming: impl Fn() -> bool,
) {
    let mut last = (Instant::now(), totals());
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = (Instant::now(), totals());
        let seconds = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| ((a.saturating_sub(b)) as f64 / seconds).round();
        let changes_per_s = rate(now.1.0, last.1.0);
        let changelog_rows_per_s = rate(now.1.1, last.1.1);
        let version = version();
        let state = if streaming() {
            "streaming"
        } else {
            "not streaming (snapshot or reconnecting)"
        };
        match lag::probe().read(lag::now_us()) {
            Some(l) => info!(
                state,
                confirmed_lsn = %l.confirmed,
                lag_seconds = (l.seconds * 10.0).round() / 10.0,
                lag_bytes = l.bytes,
                changes_per_s,
                changelog_rows_per_s,
                rules_version = %version,
                "status"
            ),
            None => info!(
                state,
                changes_per_s,
                changelog_rows_per_s,
                rules_version = %version,
                "status"
            ),
        }
        last = now;
    }
}

fn totals() -> (u64, u64) {
    (
        CHANGES.load(Ordering::Relaxed),
        CHANGELOG_ROWS.load(Ordering::Relaxed),
    )
}
