//! Target 1 of issue 17: the initial snapshot of a 1,000,000-row table (by-owner rules, edges,
//! changelog and checksums written) against the floor the sidecar schema sets: a COPY of the
//! same changelog rows and edges into empty tables with the sidecar's indexes. Also printed:
//! the reference, a `COPY (SELECT ...) TO STDOUT` of the table plus a `COPY ... FROM STDIN` of
//! the same rows into an empty table of the same definition.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{
    Report, Sluice, cpu_by_process, create_items, insert_items_sql, print_cpu, psql_timed, query,
};
use crate::{pg, wasm};

const ROWS: u64 = 1_000_000;

pub fn run(report: &mut Report) {
    println!("\n== snapshot: {ROWS} rows ==");
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("bench_snapshot");
    create_items(cluster, &db.name);
    cluster.psql(&db.name, &insert_items_sql(ROWS));
    cluster.psql(&db.name, "VACUUM ANALYZE items");
    cluster.psql(
        &db.name,
        "CREATE TABLE items_copy (LIKE items INCLUDING ALL)",
    );

    // The reference, through psql so both directions cross a client connection as sluice's do.
    let dump = tempfile::NamedTempFile::new().unwrap();
    let psql =
        |sql: &str, stdin: Stdio, stdout: Stdio| psql_timed(cluster, &db.url, sql, stdin, stdout);
    let copy_out = psql(
        "COPY (SELECT * FROM items) TO STDOUT",
        Stdio::null(),
        Stdio::from(dump.reopen().unwrap()),
    );
    let copy_in = psql(
        "COPY items_copy FROM STDIN",
        Stdio::from(dump.reopen().unwrap()),
        Stdio::null(),
    );
    let reference = copy_out + copy_in;
    println!("reference: COPY out {copy_out:.2} s + COPY in {copy_in:.2} s = {reference:.2} s");

    // The floor the sidecar schema sets, whoever writes it: the same number of changelog rows and
    // edges, COPYed into empty tables with the sidecar's indexes.
    // In a schema of its own: sluice must find no sidecar tables of its own, as on a first start.
    cluster.psql(
        &db.name,
        &format!(
            "CREATE SCHEMA floor; SET search_path = floor; {}",
            sluice::sink::schema::sidecar_ddl()
        ),
    );
    let changelog_rows = tempfile::NamedTempFile::new().unwrap();
    let edge_rows = tempfile::NamedTempFile::new().unwrap();
    psql(
        "COPY (SELECT 'user:' || user_id, 'items', id::text, 1 FROM items ORDER BY id) TO STDOUT",
        Stdio::null(),
        Stdio::from(changelog_rows.reopen().unwrap()),
    );
    psql(
        "COPY (SELECT 'items', id::text, 'user:' || user_id, hashtext(title) FROM items ORDER BY id) TO STDOUT",
        Stdio::null(),
        Stdio::from(edge_rows.reopen().unwrap()),
    );
    let floor = psql(
        "COPY floor.sync_changelog (bucket_id, table_name, record_id, operation) FROM STDIN",
        Stdio::from(changelog_rows.reopen().unwrap()),
        Stdio::null(),
    ) + psql(
        "COPY floor.sync_bucket_edges (table_name, record_id, bucket_id, checksum) FROM STDIN",
        Stdio::from(edge_rows.reopen().unwrap()),
        Stdio::null(),
    );
    println!(
        "floor: COPY of {ROWS} changelog rows and {ROWS} edges into the sidecar's indexed tables: {floor:.2} s"
    );

    let module = wasm::module("by-owner");
    let needles = ["postgres", "sluice run"];
    let before = cpu_by_process(&needles);
    let mut s = Sluice::start(&db.url, &module, "bench_snapshot", &[], &[]);
    let streaming = s.wait_streaming(Duration::from_secs(1800));
    print_cpu("sluice's snapshot", &before, &cpu_by_process(&needles));
    let secs = (streaming - s.started).as_secs_f64();
    // The snapshot writes its chunks itself (not through the committer), so only the rules
    // time is in the metrics.
    let rule_secs = s.histogram_sum("sluice_rule_eval_seconds");
    let peak = s.stop();
    println!(
        "sluice snapshot: {secs:.2} s from process start ({:.0} rows/s; rules {rule_secs:.2} s; peak RSS {peak:.1} MiB)",
        ROWS as f64 / secs
    );
    let edges = query(cluster, &db.name, "SELECT count(*) FROM sync_bucket_edges");
    let changelog = query(cluster, &db.name, "SELECT count(*) FROM sync_changelog");
    assert_eq!(edges, ROWS.to_string(), "one edge per row");
    assert_eq!(changelog, ROWS.to_string(), "one changelog insert per row");

    let ratio = secs / floor;
    println!(
        "sluice / floor: {ratio:.2} (the floor alone is {:.2}x the reference)",
        floor / reference
    );
    report.add(
        "1. snapshot 1M rows: sluice / indexed-COPY floor",
        format!("{ratio:.2} ({secs:.1} s vs {floor:.1} s; COPY out+in {reference:.1} s)"),
        "<= 1.0 (stretch 0.5)",
        ratio <= 1.0,
    );
}
