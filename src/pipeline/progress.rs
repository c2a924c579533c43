//! Showing snapshot progress: a progress bar on a terminal, periodic log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

/// The snapshot's expected row count, corrected as rows arrive.
///
/// The planner's `reltuples` is -1 for a table never analysed and may be far off for one
/// analysed long ago, so a table's estimate only stands until its rows say otherwise: while it
/// is read it counts as at least the rows read so far, and once done as exactly those.
#[derive(Debug, Default)]
pub struct RowEstimate {
    /// (table, estimate, rows read, done)
    tables: Vec<(String, u64, u64, bool)>,
    current: Option<usize>,
}

impl RowEstimate {
    /// `estimates` per table; negative statistics count as 0.
    pub fn new(estimates: impl IntoIterator<Item = (String, i64)>) -> Self {
        RowEstimate {
            tables: estimates
                .into_iter()
                .map(|(t, e)| (t, e.max(0) as u64, 0, false))
                .collect(),
            current: None,
        }
    }

    fn start(&mut self, table: &str) {
        self.current = self.tables.iter().position(|t| t.0 == table);
    }

    fn read(&mut self, n: u64) {
        if let Some(t) = self.current.and_then(|i| self.tables.get_mut(i)) {
            t.2 += n;
        }
    }

    fn done(&mut self, table: &str) {
        if let Some(t) = self.tables.iter_mut().find(|t| t.0 == table) {
            t.3 = true;
        }
    }

    /// The rows expected in all: never below the rows read.
    pub fn total(&self) -> u64 {
        self.tables
            .iter()
            .map(|&(_, estimate, read, done)| if done { read } else { estimate.max(read) })
            .sum()
    }
}

/// Progress of the snapshot across tables.
pub struct SnapshotProgressView {
    bar: Option<ProgressBar>,
    estimate: RowEstimate,
    tables_total: usize,
    tables_done: usize,
    rows: u64,
    started: Instant,
    last_log: Instant,
}

impl SnapshotProgressView {
    /// `estimate` starts from the planner's statistics, so the length and ETA are estimates
    /// until the last table is read.
    pub fn new(estimate: RowEstimate) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(estimate.total().max(1));
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
            tables_total: estimate.tables.len(),
            estimate,
            tables_done: 0,
            rows: 0,
            started: Instant::now(),
            last_log: Instant::now(),
        }
    }

    pub fn table_started(&mut self, table: &str) {
        self.estimate.start(table);
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
        self.estimate.read(n);
        if let Some(bar) = &self.bar {
            bar.set_length(self.estimate.total().max(1));
            bar.inc(n);
        } else if self.last_log.elapsed() >= Duration::from_secs(5) {
            self.last_log = Instant::now();
            let rate = self.rows as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            info!(
                rows = self.rows,
                of_about = self.estimate.total(),
                rows_per_sec = rate as u64,
                "snapshot progress"
            );
        }
    }

    pub fn table_done(&mut self, table: &str) {
        self.tables_done += 1;
        self.estimate.done(table);
        if let Some(bar) = &self.bar {
            bar.set_length(self.estimate.total().max(1));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_or_missing_estimate_is_corrected_by_the_rows_read() {
        // The table: never analysed (-1), and one analysed at 51,701 rows that has
        // 301,507 by now.
        let mut e = RowEstimate::new([
            ("public.tasks".to_owned(), 51_701),
            ("public.audit".to_owned(), -1),
            ("public.users".to_owned(), 1_000),
        ]);
        assert_eq!(e.total(), 52_701);
        e.start("public.tasks");
        let mut read = 0;
        for _ in 0..30 {
            e.read(10_000);
            read += 10_000;
            assert!(e.total() >= read, "{read} rows read of ~{}", e.total());
        }
        e.read(1_507);
        read += 1_507;
        assert_eq!(e.total(), 301_507 + 1_000);
        e.done("public.tasks");
        e.start("public.audit");
        e.read(5);
        read += 5;
        assert_eq!(e.total(), 301_507 + 5 + 1_000);
        e.done("public.audit");
        // An estimate above the real count shrinks to it once the table is done.
        e.start("public.users");
        e.read(600);
        read += 600;
        assert_eq!(e.total(), 301_507 + 5 + 1_000);
        e.done("public.users");
        assert_eq!(e.total(), read);
    }
}
