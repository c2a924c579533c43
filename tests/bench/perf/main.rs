//! The performance benchmark: every target of issue 17 (and the figures of issues 8, 15 and 19
//! it keeps), each measured against a reference taken in the same run on the same machine,
//! printed as one table at the end.
//!
//! ```text
//! cargo bench --bench perf                     # all sections (about 9 minutes)
//! cargo bench --bench perf -- w1 latency       # some: w1 rules snapshot memory latency rollback cascade takeover
//! ```
//!
//! Sections:
//! - `w1`: (2) W1 end to end against its own sink floor (W1's output replayed in bulk
//!   statements), with `pg_recvlogical` on the same WAL for reference; (4) the same with the
//!   sink discarding (benchmark-only mode), i.e. decoding and rules alone, against
//!   `pg_recvlogical`; the walsender's CPU on sluice's own WAL; `--sink-url` to another
//!   database; (5) reload latency. `SLUICE_BENCH_QUICK=1` (CI) keeps only the ratios and the
//!   exactness checks.
//! - `rules`: (3) by-owner through Wasm against the same rule compiled natively.
//! - `snapshot`: (1) the initial snapshot of 1,000,000 rows against the indexed-COPY floor
//!   (and, for reference, a `COPY (SELECT ...) TO STDOUT` plus a `COPY ... FROM STDIN`).
//! - `memory`: (5) one transaction of 2,000,000 inserts: sluice's peak RSS, changelog complete.
//! - `latency`: (5) commit-to-visible latency in the changelog at a steady 1,000 changes/s.
//! - `rollback`: (issue 19) swap to rollback for a rule that loops on every change, and admin
//!   latency meanwhile.
//! - `cascade`: (issue 14) an owner change of an order with 1,000 details, against a change
//!   that moves nothing.
//! - `takeover`: (issue 15) takeover time after kill -9 of the leader with a standby, median and
//!   maximum of 20; W1 end to end with and without fencing.
//!
//! `BENCH_SLUICE_LOG=sluice=debug` passes a log filter to the sluice processes (stderr).

#[path = "../../common/pg.rs"]
mod pg;
#[path = "../../common/wasm.rs"]
mod wasm;

mod cascade;
mod latency;
mod memory;
mod rollback;
mod rules;
mod snapshot;
mod support;
mod takeover;
mod w1;

fn main() {
    let sections: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    let mut report = support::Report::default();
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    if want("w1") {
        w1::run(&mut report);
    }
    if want("rules") {
        rules::run(&mut report);
    }
    if want("snapshot") {
        snapshot::run(&mut report);
    }
    if want("memory") {
        memory::run(&mut report);
    }
    if want("latency") {
        latency::run(&mut report);
    }
    if want("rollback") {
        rollback::run(&mut report);
    }
    if want("cascade") {
        cascade::run(&mut report);
    }
    if want("takeover") {
        takeover::run(&mut report);
    }
    report.print();
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
