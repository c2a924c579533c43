//! Figures 1 and 2 and the reload latency, on workload W1.
//!
//! Three slots start at the same point before W1 is generated: one for `pg_recvlogical`, one for
//! sluice end to end and one for sluice with a discarding sink. Each consumer then drains exactly
//! the same WAL, one after the other. sluice's time runs from the moment it streams (`/readyz`)
//! to the moment it has confirmed the marker transaction written after W1; its start-up (module
//! compile, connections) is reported separately.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{
    Report, Sluice, cpu_by_process, lsn_number, prime_slot, print_cpu, psql_timed, query,
    recvlogical, workload,
};
use crate::{pg, wasm};

const CHANGES: f64 = 170_000.0;

pub fn run(report: &mut Report) {
    println!("\n== W1: {CHANGES} row changes in 270 transactions ==");
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("bench_w1");
    cluster.psql(&db.name, &workload("w1-schema.sql"));
    cluster.psql(
        &db.name,
        "CREATE TABLE marker (id int PRIMARY KEY); CREATE PUBLICATION bench_pub FOR TABLE items, marker;",
    );
    let module = wasm::module("by-owner");
    prime_slot(&db.url, &module, "bench_sluice");
    prime_slot(&db.url, &module, "bench_discard");
    query(
        cluster,
        &db.name,
        "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput'), \
                pg_create_logical_replication_slot('bench_warm', 'pgoutput')",
    );

    let started = std::time::Instant::now();
    cluster.psql(&db.name, &workload("w1.sql"));
    println!("W1 generated in {:.2} s", started.elapsed().as_secs_f64());
    cluster.psql(&db.name, "INSERT INTO marker VALUES (1)");
    let end_lsn = query(cluster, &db.name, "SELECT pg_current_wal_insert_lsn()");
    let marker = lsn_number(cluster, &db.name, &end_lsn) - 1;

    // The first reader of fresh WAL pays for bringing it into the page cache: a warm-up drain
    // on its own slot keeps that cost out of every measured run.
    let warm = recvlogical(cluster, &db.url, "bench_warm", &end_lsn);
    println!("warm-up drain (not counted): {warm:.2} s");
    let before = cpu_by_process(&["postgres"]);
    let recv_secs = recvlogical(cluster, &db.url, "bench_recv", &end_lsn);
    print_cpu("pg_recvlogical", &before, &cpu_by_process(&["postgres"]));
    let recv_rate = CHANGES / recv_secs;
    println!("pg_recvlogical: {recv_secs:.2} s, {recv_rate:.0} changes/s");

    // Decoding and rules alone.
    let discard_env = [("SLUICE_BENCHMARK_DISCARD_SINK", "1")];
    let needles = ["postgres", "sluice run"];
    let before = cpu_by_process(&needles);
    let mut s = Sluice::start(&db.url, &module, "bench_discard", &[], &discard_env);
    let streaming = s.wait_streaming(Duration::from_secs(120));
    let done = s.wait_confirmed(marker, Duration::from_secs(600));
    print_cpu(
        "sluice, discarding sink",
        &before,
        &cpu_by_process(&needles),
    );
    let discard_secs = (done - streaming).as_secs_f64();
    let discard_rate = CHANGES / discard_secs;
    println!(
        "sluice, discarding sink: {discard_secs:.2} s, {discard_rate:.0} changes/s (start-up before streaming {:.2} s)",
        (streaming - s.started).as_secs_f64()
    );
    s.stop();

    // End to end.
    let before = cpu_by_process(&needles);
    let mut s = Sluice::start(&db.url, &module, "bench_sluice", &[], &[]);
    let streaming = s.wait_streaming(Duration::from_secs(120));
    let done = s.wait_confirmed(marker, Duration::from_secs(600));
    print_cpu("sluice end to end", &before, &cpu_by_process(&needles));
    let e2e_secs = (done - streaming).as_secs_f64();
    let e2e_rate = CHANGES / e2e_secs;
    let (sink_secs, rule_secs) = (
        s.histogram_sum("sluice_batch_write_seconds"),
        s.histogram_sum("sluice_rule_eval_seconds"),
    );
    println!(
        "sluice end to end: {e2e_secs:.2} s, {e2e_rate:.0} changes/s (start-up before streaming {:.2} s; sink jobs {sink_secs:.2} s, rules {rule_secs:.2} s)",
        (streaming - s.started).as_secs_f64()
    );
    reload_latency(&s, report);
    let peak = s.stop();
    println!("sluice peak RSS during W1: {peak:.1} MiB");

    let rows = query(
        cluster,
        &db.name,
        "SELECT count(*) FROM sync_changelog WHERE table_name = 'items'",
    );
    let edges = query(
        cluster,
        &db.name,
        "SELECT count(*) FROM sync_bucket_edges WHERE table_name = 'items'",
    );
    assert_eq!(rows, "180000", "W1 changelog rows");
    assert_eq!(edges, "90000", "W1 edges");

    // A floor for the end-to-end figure: the database's own cost of appending W1's 180,000
    // changelog rows to an empty table with the sidecar's indexes, in one COPY, whoever writes
    // them. The edges (100,000 inserts, 50,000 checksum updates, 10,000 moves and deletes) come
    // on top.
    cluster.psql(
        &db.name,
        "CREATE TABLE floor_changelog (LIKE sync_changelog INCLUDING ALL)",
    );
    let dump = tempfile::NamedTempFile::new().unwrap();
    psql_timed(
        cluster,
        &db.url,
        "COPY (SELECT bucket_id, table_name, record_id, operation FROM sync_changelog ORDER BY seq) TO STDOUT",
        Stdio::null(),
        Stdio::from(dump.reopen().unwrap()),
    );
    let floor = psql_timed(
        cluster,
        &db.url,
        "COPY floor_changelog (bucket_id, table_name, record_id, operation) FROM STDIN",
        Stdio::from(dump.reopen().unwrap()),
        Stdio::null(),
    );
    println!(
        "floor: COPY of W1's 180,000 changelog rows alone takes {floor:.2} s; with it as the whole sink, the ratio could be at most {:.2}",
        recv_secs / floor
    );

    let ratio = e2e_rate / recv_rate;
    report.add(
        "1. W1 end to end / pg_recvlogical",
        format!("{ratio:.2} ({e2e_rate:.0} vs {recv_rate:.0} changes/s)"),
        ">= 0.5",
        ratio >= 0.5,
    );
    let ratio = discard_rate / recv_rate;
    report.add(
        "2. W1 decode + rules / pg_recvlogical",
        format!("{ratio:.2} ({discard_rate:.0} vs {recv_rate:.0} changes/s)"),
        ">= 0.9",
        ratio >= 0.9,
    );
}

/// Trigger to active, against compile time, with the stream idle: six swaps alternating between
/// two versions.
fn reload_latency(s: &Sluice, report: &mut Report) {
    let by_owner = wasm::module("by-owner");
    let other = wasm::module("multi-tenant");
    let rules_config = serde_json::json!("[tenant_columns]\nitems = \"user_id\"\n");
    let agent = crate::support::agent();
    let mut worst_overhead = 0;
    for i in 0..6 {
        let body = if i % 2 == 0 {
            serde_json::json!({ "module": other, "rules_config": rules_config })
        } else {
            serde_json::json!({ "module": by_owner, "rules_config": "" })
        };
        let answer: serde_json::Value = agent
            .post(&format!("http://{}/rules/reload", s.admin))
            .send_json(&body)
            .expect("POST /rules/reload")
            .body_mut()
            .read_json()
            .expect("reload answer");
        assert_eq!(answer["status"], "activated", "{answer}");
        let compile = answer["compile_ms"].as_u64().unwrap_or(0);
        let latency = answer["latency_ms"].as_u64().unwrap_or(0);
        worst_overhead = worst_overhead.max(latency.saturating_sub(compile));
        println!("reload: compile {compile} ms, trigger to active {latency} ms");
    }
    report.add(
        "reload: trigger to active, beyond compile",
        format!("{worst_overhead} ms worst of 6"),
        "< 200 ms",
        worst_overhead < 200,
    );
}
