//! W1 benchmark: sluice's end-to-end drain rate against `pg_recvlogical` on the same WAL.
//!
//! Run with `cargo bench --bench w1`. It starts a throwaway PostgreSQL, creates a
//! `pg_recvlogical` slot and a sluice slot, runs `../shared/workloads/w1-schema.sql` and `w1.sql`,
//! then times both consumers draining exactly the same WAL, one after the other, and prints both
//! rates, their ratio and sluice's peak RSS.

#[path = "../common/pg.rs"]
mod pg;
#[path = "../common/wasm.rs"]
mod wasm;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHANGES: f64 = 170_000.0;

fn workload(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/workloads")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn query(cluster: &pg::Cluster, db: &str, sql: &str) -> String {
    cluster.psql(db, sql).trim().to_owned()
}

fn main() {
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("bench_w1");
    cluster.psql(&db.name, &workload("w1-schema.sql"));
    cluster.psql(
        &db.name,
        "CREATE TABLE marker (id int PRIMARY KEY); ALTER PUBLICATION w1_pub ADD TABLE marker;",
    );
    let module = wasm::module("by-owner");

    // sluice takes its own slot and snapshots the still-empty table, then stops: the whole
    // workload will come through its stream.
    let sluice_bin = env!("CARGO_BIN_EXE_sluice");
    let run_args = |extra: &[&str]| {
        let mut cmd = Command::new(sluice_bin);
        cmd.args(["run", "--database-url", &db.url, "--module"])
            .arg(&module)
            .args(["--publication", "w1_pub", "--slot", "bench_sluice"])
            .args(extra)
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null());
        cmd
    };
    let mut first = run_args(&[]).spawn().expect("start sluice");
    while query(cluster, &db.name, "SELECT count(*) FROM sync_wal_position") != "1" {
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    first.wait().unwrap();
    query(
        cluster,
        &db.name,
        "SELECT pg_create_logical_replication_slot('bench_recv', 'pgoutput')",
    );

    let started = Instant::now();
    cluster.psql(&db.name, &workload("w1.sql"));
    println!("W1 generated in {:.2} s", started.elapsed().as_secs_f64());
    cluster.psql(&db.name, "INSERT INTO marker VALUES (1)");
    let end_lsn = query(cluster, &db.name, "SELECT pg_current_wal_lsn()");

    // The ceiling: pg_recvlogical draining the same WAL through pgoutput.
    let out = tempfile::NamedTempFile::new().unwrap();
    let started = Instant::now();
    let status = Command::new(cluster.bin("pg_recvlogical"))
        .args([
            "-d",
            &db.url,
            "-S",
            "bench_recv",
            "--start",
            "-E",
            &end_lsn,
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=w1_pub",
            "-f",
        ])
        .arg(out.path())
        .status()
        .expect("run pg_recvlogical");
    let recv_secs = started.elapsed().as_secs_f64();
    assert!(status.success(), "pg_recvlogical failed");

    // sluice: from start until sync_wal_position passes the marker's commit.
    let marker_floor: i64 = query(
        cluster,
        &db.name,
        &format!("SELECT ('{end_lsn}'::pg_lsn - '0/0')::int8 - 1"),
    )
    .parse()
    .unwrap();
    let started = Instant::now();
    let mut child = run_args(&[]).spawn().expect("start sluice");
    let mut peak = 0;
    loop {
        peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
        let stored = query(
            cluster,
            &db.name,
            "SELECT coalesce(max(confirmed_lsn), 0) FROM sync_wal_position",
        );
        if stored.parse::<i64>().unwrap_or(0) >= marker_floor {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("sluice exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let sluice_secs = started.elapsed().as_secs_f64();
    peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();

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
    let recv_rate = CHANGES / recv_secs;
    let sluice_rate = CHANGES / sluice_secs;
    println!("pg_recvlogical: {recv_secs:.2} s, {recv_rate:.0} changes/s");
    println!(
        "sluice (by-owner, end to end): {sluice_secs:.2} s, {sluice_rate:.0} changes/s (includes process start and module compile)"
    );
    println!(
        "ratio sluice / pg_recvlogical: {:.2}",
        sluice_rate / recv_rate
    );
    println!("sluice peak RSS: {:.1} MiB", peak as f64 / 1024.0);
    println!("changelog rows: {rows} (expected 180000), edges: {edges} (expected 90000)");
    assert_eq!(rows, "180000");
    assert_eq!(edges, "90000");
}
