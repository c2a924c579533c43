//! The preview's arithmetic: comparing what a candidate rules version would give each row with
//! the memberships stored in the sink, in bounded memory.
//!
//! Rows are tallied as they stream past and are then forgotten: what is kept is a count per
//! bucket (for at most [`MAX_BUCKETS`] distinct buckets; the rest are summed into one line), a
//! few example record ids per bucket and a few failures. So a preview of a table of any size needs
//! the memory of one chunk plus a bounded report.

use std::collections::HashMap;

use serde::Serialize;

/// Buckets reported one by one; enters and leaves in further buckets are summed in
/// [`PreviewReport::other_buckets`]. A rule that gives every user a bucket would otherwise make
/// the report as large as the user table.
pub const MAX_BUCKETS: usize = 10_000;

/// A row named in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Example {
    pub table: String,
    pub record_id: String,
}

/// How a bucket's membership would change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BucketDiff {
    pub bucket: String,
    /// Rows the candidate puts in the bucket that are not in it now.
    pub enter: u64,
    /// Rows in the bucket now that the candidate takes out (moved elsewhere, or dropped).
    pub leave: u64,
    /// The first rows (in table, then key order) that would enter.
    pub enter_examples: Vec<Example>,
    /// The first rows (in table, then key order) that would leave.
    pub leave_examples: Vec<Example>,
}

/// The sum over buckets beyond [`MAX_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OtherBuckets {
    pub buckets: u64,
    pub enter: u64,
    pub leave: u64,
}

/// A row the candidate fails on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PreviewFailure {
    pub table: String,
    /// Empty when the row's key could not be determined.
    pub record_id: String,
    pub message: String,
}

/// What the preview saw of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableSummary {
    pub table: String,
    /// Rows evaluated.
    pub rows: u64,
    /// The walk stopped at the row limit (`--limit`): later rows of the table were not examined.
    pub limited: bool,
    /// Rows whose memberships would not change.
    pub unchanged: u64,
    /// Rows that would enter or leave at least one bucket.
    pub changed: u64,
    /// Rows the candidate drops (in no bucket).
    pub dropped: u64,
    /// Rows the candidate fails on.
    pub failed: u64,
    /// What the comparison does not model for this table (relations, see the README).
    pub notes: Vec<String>,
}

/// The whole preview: per table, per bucket, and the failures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PreviewReport {
    /// The candidate's version (sha256 of the module).
    pub version: String,
    /// Rows evaluated, over all tables.
    pub rows: u64,
    /// Rows the candidate fails on, over all tables.
    pub failed: u64,
    /// `failed / rows` (0 when no rows).
    pub error_rate: f64,
    /// The row limit per table, if one was given.
    pub limit: Option<u64>,
    pub tables: Vec<TableSummary>,
    /// Buckets with at least one row entering or leaving, most rows moving first, then by name.
    pub buckets: Vec<BucketDiff>,
    pub other_buckets: Option<OtherBuckets>,
    /// The first failures, in table and key order; `failed` counts them all.
    pub failures: Vec<PreviewFailure>,
}

/// Limits on what the report keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportLimits {
    /// Example record ids per bucket and direction.
    pub examples: usize,
    /// Failures listed.
    pub failures: usize,
}

/// Accumulates rows into a [`PreviewReport`].
pub struct Tally {
    limits: ReportLimits,
    buckets: HashMap<String, BucketDiff>,
    other: OtherBuckets,
    other_names: std::collections::HashSet<String>,
    report: PreviewReport,
}

impl Tally {
    /// An empty tally for candidate `version`.
    pub fn new(version: &str, limit: Option<u64>, limits: ReportLimits) -> Self {
        Tally {
            limits,
            buckets: HashMap::new(),
            other: OtherBuckets::default(),
            other_names: std::collections::HashSet::new(),
            report: PreviewReport {
                version: version.to_owned(),
                limit,
                ..PreviewReport::default()
            },
        }
    }

    /// Starts the summary of the next table.
    pub fn begin_table(&mut self, table: &str, notes: Vec<String>) {
        self.report.tables.push(TableSummary {
            table: table.to_owned(),
            notes,
            ..TableSummary::default()
        });
    }

    /// Marks the current table as cut short by the row limit.
    pub fn limited(&mut self) {
        if let Some(t) = self.report.tables.last_mut() {
            t.limited = true;
        }
    }

    /// A row the candidate evaluated: `desired` its buckets (empty when dropped), `stored` its
    /// memberships now.
    pub fn row(&mut self, table: &str, record_id: &str, desired: &[String], stored: &[String]) {
        let mut changed = false;
        // A bucket the rules name twice is one membership, as the edge diff stores it.
        let mut desired: Vec<&String> = desired.iter().collect();
        desired.sort_unstable();
        desired.dedup();
        for &bucket in desired.iter().filter(|b| !stored.contains(**b)) {
            changed = true;
            self.count(bucket, table, record_id, true);
        }
        for bucket in stored.iter().filter(|b| !desired.contains(b)) {
            changed = true;
            self.count(bucket, table, record_id, false);
        }
        let Some(t) = self.report.tables.last_mut() else {
            return;
        };
        t.rows += 1;
        if desired.is_empty() {
            t.dropped += 1;
        }
        if changed {
            t.changed += 1;
        } else {
            t.unchanged += 1;
        }
    }

    /// A row the candidate fails on.
    pub fn failure(&mut self, table: &str, record_id: &str, message: &str) {
        if let Some(t) = self.report.tables.last_mut() {
            t.rows += 1;
            t.failed += 1;
        }
        if self.report.failures.len() < self.limits.failures {
            self.report.failures.push(PreviewFailure {
                table: table.to_owned(),
                record_id: record_id.to_owned(),
                message: message.to_owned(),
            });
        }
    }

    fn count(&mut self, bucket: &str, table: &str, record_id: &str, enter: bool) {
        if !self.buckets.contains_key(bucket) && self.buckets.len() >= MAX_BUCKETS {
            if self.other_names.len() < MAX_BUCKETS && self.other_names.insert(bucket.to_owned()) {
                self.other.buckets += 1;
            }
            if enter {
                self.other.enter += 1;
            } else {
                self.other.leave += 1;
            }
            return;
        }
        let diff = self
            .buckets
            .entry(bucket.to_owned())
            .or_insert_with(|| BucketDiff {
                bucket: bucket.to_owned(),
                ..BucketDiff::default()
            });
        let (n, examples) = if enter {
            (&mut diff.enter, &mut diff.enter_examples)
        } else {
            (&mut diff.leave, &mut diff.leave_examples)
        };
        *n += 1;
        if examples.len() < self.limits.examples {
            examples.push(Example {
                table: table.to_owned(),
                record_id: record_id.to_owned(),
            });
        }
    }

    /// The finished report.
    pub fn finish(mut self) -> PreviewReport {
        let r = &mut self.report;
        r.rows = r.tables.iter().map(|t| t.rows).sum();
        r.failed = r.tables.iter().map(|t| t.failed).sum();
        r.error_rate = if r.rows == 0 {
            0.0
        } else {
            r.failed as f64 / r.rows as f64
        };
        let mut buckets: Vec<BucketDiff> = self.buckets.into_values().collect();
        buckets.sort_by(|a, b| {
            (b.enter + b.leave)
                .cmp(&(a.enter + a.leave))
                .then_with(|| a.bucket.cmp(&b.bucket))
        });
        r.buckets = buckets;
        if self.other.enter + self.other.leave > 0 {
            r.other_buckets = Some(self.other);
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    const LIMITS: ReportLimits = ReportLimits {
        examples: 1,
        failures: 1,
    };

    #[test]
    fn moves_count_an_enter_and_a_leave_and_keep_the_first_examples() {
        let mut t = Tally::new("v", Some(9), LIMITS);
        t.begin_table("items", vec![]);
        t.row("items", "1", &s(&["org:a"]), &s(&["user:a"]));
        t.row(
            "items",
            "2",
            &s(&["org:a", "global"]),
            &s(&["user:a", "global"]),
        );
        t.row("items", "3", &s(&["global"]), &s(&["global"]));
        t.row("items", "4", &[], &s(&["global"]));
        t.failure("items", "5", "boom");
        t.failure("items", "6", "boom again");
        let r = t.finish();
        assert_eq!(r.rows, 6);
        assert_eq!(r.failed, 2);
        assert!((r.error_rate - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(r.limit, Some(9));
        let names: Vec<(&str, u64, u64)> = r
            .buckets
            .iter()
            .map(|b| (b.bucket.as_str(), b.enter, b.leave))
            .collect();
        assert_eq!(
            names,
            vec![("org:a", 2, 0), ("user:a", 0, 2), ("global", 0, 1)]
        );
        assert_eq!(
            r.buckets[1].leave_examples,
            vec![Example {
                table: "items".into(),
                record_id: "1".into()
            }]
        );
        let t = &r.tables[0];
        assert_eq!(
            (t.rows, t.unchanged, t.changed, t.dropped, t.failed),
            (6, 1, 3, 1, 2)
        );
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].record_id, "5");
    }

    #[test]
    fn buckets_beyond_the_cap_are_summed() {
        let mut t = Tally::new("v", None, LIMITS);
        t.begin_table("items", vec![]);
        for i in 0..MAX_BUCKETS + 3 {
            t.row("items", &i.to_string(), &[format!("b:{i}")], &[]);
        }
        t.row("items", "x", &s(&["b:extra"]), &s(&["b:0"]));
        let r = t.finish();
        assert_eq!(r.buckets.len(), MAX_BUCKETS);
        assert_eq!(
            r.other_buckets,
            Some(OtherBuckets {
                buckets: 4,
                enter: 4,
                leave: 0
            })
        );
        assert_eq!(r.rows, MAX_BUCKETS as u64 + 4);
    }

    #[test]
    fn no_rows_is_no_error_rate() {
        let r = Tally::new("v", None, LIMITS).finish();
        assert_eq!((r.rows, r.failed, r.error_rate), (0, 0, 0.0));
        assert!(r.other_buckets.is_none());
    }
}
