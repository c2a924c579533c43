//! Slot trouble: dropped while running, invalidated by `max_slot_wal_keep_size`, and two sluice
//! processes on one slot (the second waits as a standby). Each gives a clear error, and nothing
//! persisted is lost.

use std::time::Duration;

use crate::pg::{self, Cluster, ClusterOptions};
use crate::support::{RunOpts, Sluice, slot_for, wait_for, wait_persisted, wait_snapshot};
use crate::{report, wasm, workload};

#[tokio::test(flavor = "multi_thread")]
async fn slot_dropped_while_running_is_a_clear_fatal_error() {
    let db = pg::cluster().create_db("slot_drop").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    workload::run(&client, 1..=100).await;
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;

    // An active slot cannot be dropped: end its walsender first, and race sluice's reconnect.
    let slot = slot_for(&db);
    let admin = pg::cluster().admin_client().await;
    let mut dropped = false;
    for _ in 0..200 {
        let _ = admin
            .execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active",
                &[&slot],
            )
            .await;
        if admin
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .is_ok()
        {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(dropped, "could not drop the slot");
    let status = sluice.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", sluice.log_text());
    let log = sluice.log_text();
    let expected = format!(
        "error: replication slot \"{slot}\" no longer exists, but sync_wal_position says changes up to"
    );
    assert!(log.contains(&expected), "want {expected:?} in:\n{log}");
    assert!(log.contains(&format!(
        "DELETE FROM sync_wal_position WHERE slot_name = '{slot}'"
    )));
    let (lost, dup) = workload::lost_and_duplicated(&client, 1..=100).await;
    report("slot dropped while running", 1, 1, lost, dup);
    workload::assert_exact(&client, 1..=100).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slot_invalidated_by_max_slot_wal_keep_size_is_a_clear_fatal_error() {
    let cluster = Cluster::start(ClusterOptions {
        settings: vec![
            ("max_slot_wal_keep_size".into(), "1MB".into()),
            ("max_wal_size".into(), "32MB".into()),
            ("min_wal_size".into(), "32MB".into()),
        ],
        ..Default::default()
    });
    let db = cluster.create_db("slot_lost").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let module = wasm::module("by-owner");
    let mut sluice = Sluice::start(&db, &module, RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    workload::run(&client, 1..=50).await;
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert!(sluice.stop().success());

    // While sluice is down, push the slot past max_slot_wal_keep_size.
    let slot = slot_for(&db);
    let admin = cluster.admin_client().await;
    for _ in 0..4 {
        client
            .batch_execute("INSERT INTO marker SELECT g FROM generate_series(100, 20000) g ON CONFLICT DO NOTHING; DELETE FROM marker WHERE id >= 100;")
            .await
            .unwrap();
        admin
            .batch_execute("SELECT pg_switch_wal(); CHECKPOINT;")
            .await
            .unwrap();
    }
    let wal_status: String = admin
        .query_one(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wal_status, "lost", "the test could not invalidate the slot");

    let mut sluice = Sluice::start(&db, &module, RunOpts::default());
    let status = sluice.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", sluice.log_text());
    let log = sluice.log_text();
    let expected = format!(
        "error: replication slot \"{slot}\" has been invalidated by the server (wal_status = lost, usually max_slot_wal_keep_size)"
    );
    assert!(log.contains(&expected), "want {expected:?} in:\n{log}");
    // What was persisted before stays exactly as it was.
    let (lost, dup) = workload::lost_and_duplicated(&client, 1..=50).await;
    report("slot invalidated (max_slot_wal_keep_size)", 1, 1, lost, dup);
    workload::assert_exact(&client, 1..=50).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sluice_on_the_same_slot_waits_as_a_standby_and_leaves_the_first_intact() {
    let db = pg::cluster().create_db("slot_two").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let module = wasm::module("by-owner");
    let mut first = Sluice::start(&db, &module, RunOpts::default());
    wait_snapshot(&client, &mut first).await;
    workload::run(&client, 1..=200).await;

    let mut second = Sluice::start(&db, &module, RunOpts::default());
    let slot = slot_for(&db);
    let log_path = second.log.clone();
    wait_for(
        "the second process to say it is a standby",
        Duration::from_secs(60),
        &mut second,
        || {
            let path = log_path.clone();
            async move {
                std::fs::read_to_string(path)
                    .unwrap_or_default()
                    .contains("standby: another sluice is active on this slot")
            }
        },
    )
    .await;

    workload::run(&client, 201..=400).await;
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut first).await;
    let (lost, dup) = workload::lost_and_duplicated(&client, 1..=400).await;
    report("two sluice processes on one slot", 1, 1, lost, dup);
    workload::assert_exact(&client, 1..=400).await;
    let log = second.log_text();
    assert!(log.contains(&format!("slot=\"{slot}\"")), "{log}");
    assert!(!log.contains("created replication slot"), "{log}");
    assert!(
        !log.contains("leader: this process holds"),
        "the standby took the lead: {log}"
    );
    assert!(second.is_running(), "{log}");
    assert!(first.stop().success(), "{}", first.log_text());
}
