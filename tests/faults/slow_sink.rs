//! A slow sink: the sink connection goes through the proxy at a trickle. sluice's memory stays
//! bounded, the slot's lag grows while the sink is slow and recovers once it is fast again.

use std::time::Duration;

use crate::pg;
use crate::proxy::Proxy;
use crate::support::{RunOpts, Sluice, slot_for, wait_for, wait_persisted, wait_snapshot};
use crate::{report, wasm, workload};

/// Bytes of WAL the slot has not confirmed yet.
async fn slot_lag(admin: &tokio_postgres::Client, slot: &str) -> i64 {
    admin
        .query_one(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_sink_keeps_memory_bounded_and_the_lag_recovers() {
    let cluster = pg::cluster();
    let db = cluster.create_db("slow_sink").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let proxy = Proxy::start(cluster.port()).await;
    let opts = RunOpts {
        extra_args: vec!["--sink-url".into(), proxy.url(&db.url, cluster.port())],
        config_toml: Some("status_interval_ms = 500\n".into()),
        ..Default::default()
    };
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), opts);
    wait_snapshot(&client, &mut sluice).await;
    let slot = slot_for(&db);
    let admin = cluster.admin_client().await;

    // 64 KiB/s each way: far below what the workload needs.
    proxy.throttle(64 << 10);
    let last: i64 = if crate::long() { 20_000 } else { 4_000 };
    workload::run(&client, 1..=last).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lag_slow = slot_lag(&admin, &slot).await;
    assert!(
        lag_slow > 100_000,
        "the slot should lag while the sink is slow, lag is {lag_slow} bytes"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", sluice.pid())).unwrap();
    let hwm_kb = crate::report_memory("slow sink, throttled", &status);
    assert!(sluice.is_running());

    proxy.throttle(0);
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;
    // Once caught up, the idle keepalive confirmation brings the lag back to (almost) nothing.
    wait_for(
        "the slot lag to recover",
        Duration::from_secs(30),
        &mut sluice,
        || async { slot_lag(&admin, &slot).await < 64 << 10 },
    )
    .await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", sluice.pid())).unwrap();
    let hwm_after = crate::report_memory("slow sink, after catching up", &status);
    eprintln!("FAULTS-LAG | slow sink | {lag_slow} bytes while throttled -> recovered");
    assert!(
        hwm_kb < 256 << 10 && hwm_after < 256 << 10,
        "peak RSS {hwm_after} kB: memory must stay bounded"
    );
    let (lost, dup) = workload::lost_and_duplicated(&client, 1..=last).await;
    report("slow sink (64 KiB/s)", 1, 1, lost, dup);
    workload::assert_exact(&client, 1..=last).await;
}
