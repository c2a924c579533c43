//! Issue 15: how long a standby takes to take over after `kill -9` of the leader (median and
//! maximum over 20 kills), and what fencing costs W1 (the same WAL drained end to end with the
//! epoch check in every sink COMMIT and without it, benchmark-only).

use std::time::{Duration, Instant};

use crate::support::{Report, Sluice, lsn_number, prime_slot, query, workload};
use crate::{pg, wasm};

const KILLS: usize = 20;

pub fn run(report: &mut Report) {
    println!(
        "\n== takeover: {KILLS} kill -9s of the leader, a standby each time; fencing on W1 =="
    );
    takeover_times(report);
    fencing_cost(report);
}

fn takeover_times(report: &mut Report) {
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("bench_takeover");
    cluster.psql(
        &db.name,
        "CREATE TABLE marker (id int PRIMARY KEY); CREATE PUBLICATION bench_pub FOR TABLE marker;",
    );
    let module = wasm::module("by-owner");
    let start = || Sluice::start(&db.url, &module, "bench_ha", &[], &[]);
    let mut leader = start();
    leader.wait_streaming(Duration::from_secs(120));
    let mut standby = start();
    wait_standby(&standby);
    let mut times = Vec::with_capacity(KILLS);
    for _ in 0..KILLS {
        let killed = Instant::now();
        let _ = leader.child.kill();
        let _ = leader.child.wait();
        let took = standby.wait_streaming(Duration::from_secs(60)) - killed;
        times.push(took.as_secs_f64());
        leader = std::mem::replace(&mut standby, start());
        wait_standby(&standby);
    }
    leader.stop();
    drop(standby);
    times.sort_by(f64::total_cmp);
    let (median, max) = (times[KILLS / 2], times[KILLS - 1]);
    println!(
        "takeover after kill -9: median {median:.2} s, max {max:.2} s over {KILLS} kills (kill to the standby's /readyz 200)"
    );
    report.add(
        "takeover after kill -9 (median / max of 20)",
        format!("{median:.2} s / {max:.2} s"),
        "< 5 s",
        max < 5.0,
    );
}

/// Waits until `s` reports `sluice_active 0` (it looked at the lease and is a standby).
fn wait_standby(s: &Sluice) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.metric("sluice_active") != Some(0.0)
        || !crate::support::agent()
            .get(&format!("http://{}/readyz", s.admin))
            .call()
            .ok()
            .is_some_and(|mut r| {
                r.body_mut()
                    .read_to_string()
                    .unwrap_or_default()
                    .contains("standby")
            })
    {
        assert!(Instant::now() < deadline, "the standby never said so");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fencing_cost(report: &mut Report) {
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("bench_fencing");
    cluster.psql(&db.name, &workload("w1-schema.sql"));
    cluster.psql(
        &db.name,
        "CREATE TABLE marker (id int PRIMARY KEY); CREATE PUBLICATION bench_pub FOR TABLE items, marker;",
    );
    let module = wasm::module("by-owner");
    prime_slot(&db.url, &module, "bench_unfenced", &[]);
    prime_slot(&db.url, &module, "bench_fenced", &[]);
    cluster.psql(&db.name, &workload("w1.sql"));
    cluster.psql(&db.name, "INSERT INTO marker VALUES (1)");
    let end_lsn = query(cluster, &db.name, "SELECT pg_current_wal_insert_lsn()");
    let marker = lsn_number(cluster, &db.name, &end_lsn) - 1;

    let mut secs = Vec::new();
    for (slot, env) in [
        ("bench_unfenced", &[("SLUICE_BENCHMARK_UNFENCED", "1")][..]),
        ("bench_fenced", &[][..]),
    ] {
        // Each run starts from empty sidecar data, as the first did.
        cluster.psql(&db.name, "TRUNCATE sync_changelog, sync_bucket_edges");
        let mut s = Sluice::start(&db.url, &module, slot, &[], env);
        let streaming = s.wait_streaming(Duration::from_secs(120));
        let done = s.wait_confirmed(marker, Duration::from_secs(600));
        s.stop();
        let rows = query(
            cluster,
            &db.name,
            "SELECT count(*) FROM sync_changelog WHERE table_name = 'items'",
        );
        assert_eq!(rows, "180000", "W1 changelog rows ({slot})");
        let took = (done - streaming).as_secs_f64();
        println!("W1 end to end, {slot}: {took:.2} s");
        secs.push(took);
    }
    let ratio = secs[1] / secs[0];
    println!("fencing costs W1 a factor of {ratio:.3} (fenced / unfenced time)");
    report.add(
        "W1 time with fencing / without",
        format!("{ratio:.3}"),
        "about 1",
        ratio < 1.1,
    );
}
