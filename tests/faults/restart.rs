//! PostgreSQL restarts (`pg_ctl restart -m fast|immediate`) while sluice streams: sluice
//! reconnects by itself and the changelog equals the oracle exactly.

use std::time::Duration;

use crate::pg::{Cluster, ClusterOptions};
use crate::support::{RunOpts, Sluice, wait_persisted, wait_snapshot};
use crate::{report, wasm, workload};

async fn restarts_lose_nothing(mode: &'static str) {
    let cluster = std::sync::Arc::new(Cluster::start(ClusterOptions::default()));
    let db = cluster.create_db("restart").await;
    db.client()
        .await
        .batch_execute(workload::SCHEMA)
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    let client = db.client().await;
    wait_snapshot(&client, &mut sluice).await;
    drop(client);

    let rounds = 3;
    let per_round = 400;
    for round in 0..rounds {
        let first = round * per_round + 1;
        let writer = workload::durable_client(&db).await;
        workload::run(&writer, first..=first + per_round - 1).await;
        drop(writer);
        // Restart while sluice is still working through what was just written.
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.restart(mode))
            .await
            .unwrap();
        assert!(
            sluice.is_running(),
            "sluice exited on a server restart:\n{}",
            sluice.log_text()
        );
    }
    let client = workload::durable_client(&db).await;
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;
    let last = rounds * per_round;
    let (lost, dup) = workload::lost_and_duplicated(&client, 1..=last).await;
    report(
        &format!("pg restart -m {mode}"),
        1,
        rounds as usize,
        lost,
        dup,
    );
    workload::assert_exact(&client, 1..=last).await;
    let log = sluice.log_text();
    assert!(
        log.contains("connection lost; reconnecting and resuming from the stored LSN"),
        "sluice should have logged its reconnects:\n{log}"
    );
    // Shuts down cleanly after all that.
    assert!(sluice.stop().success(), "{}", sluice.log_text());
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_restart_fast_while_streaming_loses_nothing() {
    restarts_lose_nothing("fast").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_restart_immediate_while_streaming_loses_nothing() {
    restarts_lose_nothing("immediate").await;
}
