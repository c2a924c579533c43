//! Targets 2 and 4 of issue 17 and the reload latency, on workload W1.
//!
//! Slots start at the same point before W1 is generated: one for `pg_recvlogical`, one for
//! sluice end to end, one for sluice with a discarding sink, one for sluice writing to another
//! database of the cluster (`--sink-url`). Each consumer then drains exactly the same WAL, one
//! after the other. sluice's time runs from the moment it streams (`/readyz`) to the moment it
//! has confirmed the marker transaction written after W1; its start-up (module compile,
//! connections) is reported separately.
//!
//! The sink floor is what PostgreSQL needs to absorb exactly W1's output, replayed from
//! sluice's own changelog in bulk statements, 10,000 changelog rows (`batch.max_rows`) a
//! transaction: the changelog rows, the edge deletes, inserts and checksum updates, and the
//! stored LSN, into a copy of the sidecar tables with their indexes.
//!
//! `SLUICE_BENCH_QUICK=1` (CI) skips the reload latency and the `--sink-url` run. Every run
//! checks exactness (the changelog and edges W1 must give); timings never fail it.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{
    Report, Sluice, cpu_by_process, cpu_of, lsn_number, prime_slot, print_cpu, psql_timed, query,
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
    let quick = std::env::var("SLUICE_BENCH_QUICK").is_ok_and(|v| v == "1");
    let module = wasm::module("by-owner");
    prime_slot(&db.url, &module, "bench_sluice", &[]);
    prime_slot(&db.url, &module, "bench_discard", &[]);
    let other = cluster.create_db_blocking("bench_w1_sink");
    let other_sink = ["--sink-url", other.url.as_str()];
    if !quick {
        prime_slot(&db.url, &module, "bench_other_sink", &other_sink);
    }
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
    let after = cpu_by_process(&needles);
    print_cpu("sluice, discarding sink", &before, &after);
    let discard_walsender = cpu_of(&before, &after, "walsender");
    let discard_secs = (done - streaming).as_secs_f64();
    let discard_rate = CHANGES / discard_secs;
    println!(
        "sluice, discarding sink: {discard_secs:.2} s, {discard_rate:.0} changes/s (start-up before streaming {:.2} s)",
        (streaming - s.started).as_secs_f64()
    );
    s.stop();

    // Into another database first: the WAL after the marker then holds none of the same-database
    // run's sidecar writes, which its walsender would decode too.
    let other_run = (!quick).then(|| other_database_sink(&db, &other, &module, marker));

    // End to end.
    let before = cpu_by_process(&needles);
    let mut s = Sluice::start(&db.url, &module, "bench_sluice", &[], &[]);
    let streaming = s.wait_streaming(Duration::from_secs(120));
    let done = s.wait_confirmed(marker, Duration::from_secs(600));
    let after = cpu_by_process(&needles);
    print_cpu("sluice end to end", &before, &after);
    let e2e_walsender = cpu_of(&before, &after, "walsender");
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
    if !quick {
        reload_latency(&s, report);
    }
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

    println!(
        "walsender CPU on sluice's own WAL (end to end minus discarding): {:.2} s ({e2e_walsender:.2} s against {discard_walsender:.2} s)",
        e2e_walsender - discard_walsender
    );

    let floor = sink_floor(cluster, &db);
    let ratio = floor / e2e_secs;
    println!(
        "sink floor: W1's output replayed in bulk statements takes {floor:.2} s; sluice end to end {e2e_secs:.2} s"
    );
    report.add(
        "2. W1 end to end: sink floor / sluice",
        format!(
            "{ratio:.2} ({e2e_secs:.2} s vs floor {floor:.2} s; pg_recvlogical {recv_secs:.2} s)"
        ),
        ">= 0.9",
        ratio >= 0.9,
    );
    let ratio = discard_rate / recv_rate;
    report.add(
        "4. W1 decode + rules, discarding sink / pg_recvlogical",
        format!("{ratio:.2} ({discard_rate:.0} vs {recv_rate:.0} changes/s)"),
        ">= 0.9",
        ratio >= 0.9,
    );

    if let Some((secs, walsender)) = other_run {
        println!(
            "sluice end to end with --sink-url to another database: {secs:.2} s (same database {e2e_secs:.2} s); walsender CPU {walsender:.2} s (same database {e2e_walsender:.2} s)"
        );
        let changelog = "SELECT md5(string_agg(bucket_id || ' ' || record_id || ' ' || operation, ',' ORDER BY seq)) FROM sync_changelog WHERE table_name = 'items'";
        assert_eq!(
            query(cluster, &other.name, changelog),
            query(cluster, &db.name, changelog),
            "the changelog in another database differs from the one in the source database"
        );
    }
}

/// The same W1 into a sink in another database of the cluster: its WAL is still written to the
/// same server, but no walsender decodes it for sluice's slot. Returns the time from streaming
/// to the marker and the walsender's CPU.
fn other_database_sink(
    db: &pg::TestDb,
    other: &pg::TestDb,
    module: &std::path::Path,
    marker: u64,
) -> (f64, f64) {
    let needles = ["postgres", "sluice run"];
    let before = cpu_by_process(&needles);
    let extra = ["--sink-url", other.url.as_str()];
    let mut s = Sluice::start(&db.url, module, "bench_other_sink", &extra, &[]);
    let streaming = s.wait_streaming(Duration::from_secs(120));
    let done = s.wait_confirmed(marker, Duration::from_secs(600));
    let after = cpu_by_process(&needles);
    print_cpu("sluice, sink in another database", &before, &after);
    s.stop();
    (
        (done - streaming).as_secs_f64(),
        cpu_of(&before, &after, "walsender"),
    )
}

/// Replays W1's output, as sluice wrote it, into a copy of the sidecar tables (schema `floor`)
/// in bulk statements, one transaction per 10,000 changelog rows; returns the replay's wall
/// time. Checks that the replay ends with the edges sluice ended with.
fn sink_floor(cluster: &pg::Cluster, db: &pg::TestDb) -> f64 {
    cluster.psql(
        &db.name,
        &format!(
            "CREATE SCHEMA floor; SET search_path = floor; {}
             RESET search_path;
             CREATE TABLE floor_ops AS SELECT (row_number() OVER (ORDER BY seq) - 1) / 10000 AS chunk, \
                 seq, bucket_id, table_name, record_id, operation \
               FROM sync_changelog WHERE table_name = 'items';
             CREATE INDEX ON floor_ops (chunk, operation);
             VACUUM ANALYZE floor_ops;",
            sluice::sink::schema::sidecar_ddl()
        ),
    );
    let chunks: u64 = query(cluster, &db.name, "SELECT max(chunk) + 1 FROM floor_ops")
        .parse()
        .expect("chunk count");
    let mut script = String::new();
    for k in 0..chunks {
        script.push_str(&format!(
            "BEGIN;
INSERT INTO floor.sync_changelog (bucket_id, table_name, record_id, operation)
  SELECT bucket_id, table_name, record_id, operation FROM floor_ops WHERE chunk = {k} ORDER BY seq;
DELETE FROM floor.sync_bucket_edges e USING floor_ops o
  WHERE o.chunk = {k} AND o.operation = 3
  AND e.table_name = o.table_name AND e.record_id = o.record_id AND e.bucket_id = o.bucket_id;
INSERT INTO floor.sync_bucket_edges (table_name, record_id, bucket_id, checksum)
  SELECT table_name, record_id, bucket_id, hashtext(record_id) FROM floor_ops WHERE chunk = {k} AND operation = 1;
INSERT INTO floor.sync_bucket_edges (table_name, record_id, bucket_id, checksum, updated_at)
  SELECT table_name, record_id, bucket_id, hashtext(record_id || 'u'), now() FROM floor_ops WHERE chunk = {k} AND operation = 2
  ON CONFLICT (table_name, record_id, bucket_id) DO UPDATE SET checksum = EXCLUDED.checksum, updated_at = EXCLUDED.updated_at;
INSERT INTO floor.sync_wal_position (slot_name, confirmed_lsn) VALUES ('floor', {k})
  ON CONFLICT (slot_name) DO UPDATE SET confirmed_lsn = EXCLUDED.confirmed_lsn, updated_at = now();
COMMIT;
"
        ));
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let secs = psql_timed(
        cluster,
        &db.url,
        &format!("\\i {}", file.path().display()),
        Stdio::null(),
        Stdio::null(),
    );
    let edges = "SELECT md5(string_agg(record_id || ' ' || bucket_id, ',' ORDER BY record_id, bucket_id)) FROM {}sync_bucket_edges WHERE table_name = 'items'";
    assert_eq!(
        query(cluster, &db.name, &edges.replace("{}", "floor.")),
        query(cluster, &db.name, &edges.replace("{}", "public.")),
        "the floor's replay must end with sluice's edges"
    );
    secs
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
        "5. hold: reload beyond compile",
        format!("{worst_overhead} ms worst of 6"),
        "< 200 ms",
        worst_overhead < 200,
    );
}
