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

/// CPU seconds (user + system) of every process whose command line starts with one of `prefixes`,
/// keyed by pid, with its title.
fn cpu_by_process(prefixes: &[&str]) -> std::collections::HashMap<u32, (String, f64)> {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut out = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !prefixes.iter().any(|p| title.contains(p)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
        out.insert(pid, (title.trim().to_owned(), ticks / tick));
    }
    out
}

fn print_cpu_diff(
    before: &std::collections::HashMap<u32, (String, f64)>,
    after: &std::collections::HashMap<u32, (String, f64)>,
) {
    let mut rows: Vec<(f64, String)> = after
        .iter()
        .map(|(pid, (title, secs))| {
            let base = before.get(pid).map_or(0.0, |b| b.1);
            (secs - base, title.clone())
        })
        .filter(|(d, _)| *d > 0.005)
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (secs, title) in rows {
        println!("  cpu {secs:6.2} s  {title}");
    }
}

fn query(cluster: &pg::Cluster, db: &str, sql: &str) -> String {
    cluster.psql(db, sql).trim().to_owned()
}

fn agent_get(url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    agent
        .get(url)
        .call()
        .expect("GET")
        .body_mut()
        .read_to_string()
        .unwrap()
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
            .env("SLUICE_LOG", std::env::var("BENCH_SLUICE_LOG").unwrap_or("warn".into()))
            .stdout(Stdio::null());
        cmd
    };
    let mut first = run_args(&[]).spawn().expect("start sluice");
    while query(
        cluster,
        &db.name,
        "SELECT count(*) FROM pg_class WHERE relname = 'sync_wal_position'",
    ) != "1"
        || query(cluster, &db.name, "SELECT count(*) FROM sync_wal_position") != "1"
    {
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
    let cpu_before = cpu_by_process(&["postgres"]);
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
    println!("CPU during pg_recvlogical's drain ({recv_secs:.2} s wall):");
    print_cpu_diff(&cpu_before, &cpu_by_process(&["postgres"]));
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
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let cpu_before = cpu_by_process(&["postgres", sluice_bin]);
    let mut child = run_args(&["--admin-addr", &admin])
        .spawn()
        .expect("start sluice");
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
    println!("CPU during sluice's drain ({sluice_secs:.2} s wall):");
    print_cpu_diff(&cpu_before, &cpu_by_process(&["postgres", sluice_bin]));
    peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));

    // Where the time went, from sluice's own metrics.
    let metrics_text = agent_get(&format!("http://{admin}/metrics"));
    let sum_of = |name: &str| -> f64 {
        metrics_text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_sum")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (sink_secs, rule_secs) = (
        sum_of("sluice_batch_write_seconds"),
        sum_of("sluice_rule_eval_seconds"),
    );

    // Reload latency: trigger to active, against compile time, with the stream idle, five
    // swaps alternating between two versions.
    let other = wasm::module("multi-tenant");
    let rules_config = serde_json::json!("[tenant_columns]\nitems = \"user_id\"\n");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut reloads = Vec::new();
    for i in 0..6 {
        let body = if i % 2 == 0 {
            serde_json::json!({ "module": other, "rules_config": rules_config })
        } else {
            serde_json::json!({ "module": module, "rules_config": "" })
        };
        let answer: serde_json::Value = agent
            .post(&format!("http://{admin}/rules/reload"))
            .send_json(&body)
            .expect("POST /rules/reload")
            .body_mut()
            .read_json()
            .unwrap();
        assert_eq!(answer["status"], "activated", "{answer}");
        reloads.push((
            answer["compile_ms"].as_u64().unwrap(),
            answer["latency_ms"].as_u64().unwrap(),
        ));
    }
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
    println!(
        "of sluice's time: sink writes {sink_secs:.2} s, rules {rule_secs:.2} s (the rest: start-up, decoding, waiting)"
    );
    for (compile, latency) in &reloads {
        println!(
            "reload: compile {compile} ms, trigger to active {latency} ms, swap overhead {} ms",
            latency.saturating_sub(*compile)
        );
    }
    assert_eq!(rows, "180000");
    assert_eq!(edges, "90000");
}
