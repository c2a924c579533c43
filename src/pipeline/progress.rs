//! Showing snapshot progress: a progress bar on a terminal, periodic log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

/// Progress of the snapshot across tables.
pub struct SnapshotProgressView {
    bar: Option<ProgressBar>,
    tables_total: usize,
    tables_done: usize,
    rows: u64,
    started: Instant,
    last_log: Instant,
}

impl SnapshotProgressView {
    /// `estimated_rows` comes from the planner's statistics (`pg_class.reltuples`), so the ETA
    /// is an estimate too.
    pub fn new(tables_total: usize, estimated_rows: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(estimated_rows.max(1));
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} snapshot {msg} [{bar:30}] {human_pos}/~{human_len} rows ({per_sec}, ETA {eta}) {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        SnapshotProgressView {
            bar,
            tables_total,
            tables_done: 0,
            rows: 0,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    pub fn table_started(&mut self, table: &str) {
        let msg = format!("[{}/{}] {table}", self.tables_done + 1, self.tables_total);
        if let Some(bar) = &self.bar {
            bar.set_message(msg);
        } else {
            info!(
                table,
                tables_done = self.tables_done,
                tables_total = self.tables_total,
                "snapshot of table started"
            );
        }
    }

    pub fn rows(&mut self, n: u64) {
        self.rows += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            let rate = self.rows as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            info!(
                rows = self.rows,
                rows_per_sec = rate as u64,
                "snapshot progress"
            );
        }
    }

    pub fn table_done(&mut self, _table: &str, _rows: u64) {
        self.tables_done += 1;
    }

    pub fn finish(self, total: u64) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        info!(
            rows = total,
            tables = self.tables_total,
            seconds = self.started.elapsed().as_secs_f64(),
            "snapshot complete"
        );
    }
}
