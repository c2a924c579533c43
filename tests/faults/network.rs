//! Network faults through the test's TCP proxy: connections cut mid-CopyBoth, a stall longer
//! than `wal_sender_timeout`, and a sink connection cut around its COMMIT (outcome unknown).

use std::time::Duration;

use crate::pg::{self, Cluster, ClusterOptions, TestDb};
use crate::proxy::{CommitCut, Proxy};
use crate::support::{RunOpts, Sluice, wait_for, wait_persisted, wait_snapshot};
use crate::{report, wasm, workload};

/// `db` with its URL pointing at the proxy.
fn through(db: &TestDb, proxy: &Proxy, real_port: u16) -> TestDb {
    let url = proxy.url(&db.url, real_port);
    assert_ne!(url, db.url, "the proxy URL must differ from the direct one");
    TestDb {
        name: db.name.clone(),
        url,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_cut_mid_copyboth_lose_nothing() {
    let cluster = pg::cluster();
    let db = cluster.create_db("net_cut").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let proxy = Proxy::start(cluster.port()).await;
    let via = through(&db, &proxy, cluster.port());
    let mut sluice = Sluice::start(&via, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;

    let last = if crate::long() { 3000 } else { 600 };
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            let c = workload::durable_client(&db).await;
            workload::run(&c, 1..=last).await;
        })
    };
    let mut cuts = 0;
    while !writer.is_finished() || cuts < 6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if proxy.cut_all() > 0 {
            cuts += 1;
        }
        assert!(
            sluice.is_running(),
            "sluice exited on a cut:\n{}",
            sluice.log_text()
        );
        if cuts > 40 {
            break;
        }
    }
    writer.await.unwrap();
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;
    let (lost, dup) = workload::lost_and_duplicated(&client, 1..=last).await;
    report("connections cut mid-CopyBoth", 1, cuts, lost, dup);
    workload::assert_exact(&client, 1..=last).await;
    assert!(
        proxy.accepted() > 2 * cuts,
        "sluice reconnected through the proxy"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stall_longer_than_wal_sender_timeout_loses_nothing() {
    let cluster = Cluster::start(ClusterOptions {
        settings: vec![("wal_sender_timeout".into(), "2s".into())],
        ..Default::default()
    });
    let db = cluster.create_db("net_stall").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let proxy = Proxy::start(cluster.port()).await;
    let via = through(&db, &proxy, cluster.port());
    let mut sluice = Sluice::start(&via, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;

    let stalls = 2;
    for round in 0..stalls {
        let first = round * 200 + 1;
        workload::run(&client, first..=first + 99).await;
        proxy.pause(true);
        workload::run(&client, first + 100..=first + 199).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        proxy.pause(false);
        // The server ended the stalled walsender; wait for sluice to notice and stream again
        // before the next stall, so that each stall hits a streaming session.
        let log_path = sluice.log.clone();
        wait_for(
            "sluice to reconnect after the stall",
            Duration::from_secs(30),
            &mut sluice,
            || {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                async move {
                    text.matches("connection lost; reconnecting").count() > round as usize
                        && text.matches(" streaming ").count() > round as usize + 1
                }
            },
        )
        .await;
    }
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;
    let last = stalls * 200;
    let (lost, dup) = workload::lost_and_duplicated(&client, 1..=last).await;
    report("stall > wal_sender_timeout", 1, stalls as usize, lost, dup);
    workload::assert_exact(&client, 1..=last).await;
    let log = sluice.log_text();
    assert!(
        log.matches("connection lost; reconnecting").count() >= stalls as usize,
        "the server should have ended each stalled walsender, and sluice reconnected:\n{log}"
    );
}

/// The sink's connection is cut right around its COMMIT: sluice cannot know whether the batch
/// committed and must learn it from sync_wal_position on reconnect.
#[tokio::test(flavor = "multi_thread")]
async fn a_sink_cut_around_commit_is_resolved_from_the_stored_lsn() {
    let cluster = pg::cluster();
    let db = cluster.create_db("net_commit").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let proxy = Proxy::start(cluster.port()).await;
    let sink_url = proxy.url(&db.url, cluster.port());
    let opts = RunOpts {
        extra_args: vec!["--sink-url".into(), sink_url],
        ..Default::default()
    };
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), opts);
    wait_snapshot(&client, &mut sluice).await;

    let modes = [
        CommitCut::AfterCommit,
        CommitCut::BeforeCommit,
        CommitCut::AfterCommit,
        CommitCut::BeforeCommit,
    ];
    for (round, mode) in modes.iter().enumerate() {
        let done = proxy.commit_cuts_done();
        proxy.arm_commit_cut(*mode);
        let first = round as i64 * 100 + 1;
        workload::run(&client, first..=first + 99).await;
        wait_for(
            &format!("the proxy to cut a COMMIT ({mode:?})"),
            Duration::from_secs(30),
            &mut sluice,
            || async { proxy.commit_cuts_done() > done },
        )
        .await;
    }
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;
    let last = modes.len() as i64 * 100;
    let (lost, dup) = workload::lost_and_duplicated(&client, 1..=last).await;
    report(
        "sink cut around COMMIT (outcome unknown)",
        1,
        modes.len(),
        lost,
        dup,
    );
    workload::assert_exact(&client, 1..=last).await;
    let log = sluice.log_text();
    assert!(
        log.matches("connection lost; reconnecting").count() >= modes.len(),
        "each cut should be a logged reconnect:\n{log}"
    );
}
