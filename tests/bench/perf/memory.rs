//! Figure 5: one transaction inserting 2,000,000 rows streams through with bounded memory, and
//! its changelog is complete.

use std::time::{Duration, Instant};

use crate::support::{
    Report, Sluice, create_items, insert_items_sql, lsn_number, prime_slot, query,
};
use crate::{pg, wasm};

const ROWS: u64 = 2_000_000;

pub fn run(report: &mut Report) {
    println!("\n== memory: one transaction of {ROWS} inserts ==");
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("bench_memory");
    create_items(cluster, &db.name);
    let module = wasm::module("by-owner");
    prime_slot(&db.url, &module, "bench_memory", &[]);
    let started = Instant::now();
    cluster.psql(&db.name, &insert_items_sql(ROWS));
    println!(
        "transaction generated in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let end_lsn = query(cluster, &db.name, "SELECT pg_current_wal_insert_lsn()");
    let end = lsn_number(cluster, &db.name, &end_lsn) - 1;

    let mut s = Sluice::start(&db.url, &module, "bench_memory", &[], &[]);
    let streaming = s.wait_streaming(Duration::from_secs(120));
    let done = s.wait_confirmed(end, Duration::from_secs(1800));
    let peak = s.stop();
    let secs = (done - streaming).as_secs_f64();
    let changelog = query(
        cluster,
        &db.name,
        "SELECT count(*), count(DISTINCT record_id) FROM sync_changelog",
    );
    println!(
        "streamed in {secs:.1} s ({:.0} changes/s), peak RSS {peak:.1} MiB, changelog rows|distinct records: {changelog}",
        ROWS as f64 / secs
    );
    let complete = changelog == format!("{ROWS}|{ROWS}");
    report.add(
        "5. hold: peak RSS, one 2M-row transaction",
        format!(
            "{peak:.0} MiB, changelog {}",
            if complete { "complete" } else { "INCOMPLETE" }
        ),
        "<= 150 MB, complete",
        peak * 1.048_576 <= 150.0 && complete,
    );
}
