//! Fault injection and hostile input against the real `sluice` binary and a real PostgreSQL:
//! server restarts, slot trouble, network faults through a TCP proxy, hostile rules and data, a
//! slow sink. Each scenario ends by comparing the changelog with an exact oracle.
//!
//! `SLUICE_LONG_FAULTS=1` runs the longer variants (more rounds, bigger values).

#[path = "../common/pg.rs"]
mod pg;
// Shared with tests/run, which uses helpers this binary does not.
#[allow(dead_code)]
#[path = "../run/support.rs"]
mod support;
#[path = "../common/wasm.rs"]
mod wasm;

mod corpus;
mod crash;
mod data;
mod failover;
mod guest;
mod join;
mod network;
mod proxy;
mod reconnect;
mod restart;
mod rules;
mod slot;
mod slow_sink;
mod workload;

/// Whether the long variants run.
pub fn long() -> bool {
    std::env::var("SLUICE_LONG_FAULTS").is_ok_and(|v| v == "1")
}

/// One row of the closing table (scenario | runs | faults injected | lost | duplicated), printed
/// so `cargo test --test faults -- --nocapture` collects it.
pub fn report(scenario: &str, runs: usize, faults: usize, lost: usize, duplicated: usize) {
    eprintln!("FAULTS-REPORT | {scenario} | {runs} | {faults} | {lost} | {duplicated}");
}

/// Peak resident memory of a sluice process, from its /proc status text, printed for the report.
pub fn report_memory(what: &str, status: &str) -> u64 {
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    eprintln!("FAULTS-MEMORY | {what} | VmHWM {} MiB", kb / 1024);
    kb
}
