//! Failover of the source: a physical standby promoted while sluice is down. With a failover
//! slot (PostgreSQL 17+) synchronized to the standby, sluice resumes on the promoted standby
//! with nothing lost or duplicated; without one, it says which slot is missing on which server
//! and what to do.

use std::time::Duration;

use crate::pg::{self, Cluster, ClusterOptions, StandbyOptions, TestDb};
use crate::support::{RunOpts, Sluice, slot_for, wait_persisted, wait_snapshot};
use crate::{report, wasm, workload};

/// The physical slot of the standby on the primary.
const STANDBY_SLOT: &str = "standby1";

/// The same database on another server.
fn on(cluster: &Cluster, db: &TestDb) -> TestDb {
    TestDb {
        name: db.name.clone(),
        url: cluster.url(&db.name),
    }
}

/// Polls `sql` (one text value) on `cluster` until it returns `want`.
async fn wait_value(cluster: &Cluster, db: &str, sql: &str, want: &str, what: &str) {
    let start = std::time::Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(120) {
        last = cluster.psql(db, sql).trim().to_owned();
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}: {sql} gave {last:?}, want {want:?}");
}

/// Waits until the standby has replayed everything the primary has written so far.
async fn wait_replayed(primary: &Cluster, standby: &Cluster) {
    let lsn = primary.psql("postgres", "SELECT pg_current_wal_lsn()");
    let sql = format!(
        "SELECT pg_last_wal_replay_lsn() >= '{}'::pg_lsn",
        lsn.trim()
    );
    wait_value(standby, "postgres", &sql, "t", "the standby to replay").await;
}

/// `synced temporary validity confirmed_flush_lsn` of the slot, as text.
fn slot_state(slot: &str) -> String {
    format!(
        "SELECT concat_ws(' ', synced, temporary, coalesce(invalidation_reason, 'valid'), \
                          confirmed_flush_lsn) \
         FROM pg_replication_slots WHERE slot_name = '{slot}'"
    )
}

/// Waits until the standby's copy of `slot` is ready for failover: synced and no longer
/// temporary. The sync worker keeps a new copy temporary until the primary's slot has moved past
/// what the standby holds, so the primary's slot must keep moving meanwhile: small transactions
/// for sluice to confirm, and checkpoints for the running-transactions records that let the
/// slot's restart point advance.
async fn wait_failover_ready(
    primary: &Cluster,
    standby: &Cluster,
    client: &tokio_postgres::Client,
    slot: &str,
) {
    let start = std::time::Instant::now();
    let mut marker = 1000;
    loop {
        let last = standby.psql("postgres", &slot_state(slot));
        if last.starts_with("t f valid ") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the standby's copy of {slot} never became ready for failover: {last:?}"
        );
        workload::marker(client, marker).await;
        marker += 1;
        primary.psql("postgres", "CHECKPOINT");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promoted_standby_resumes_from_the_synchronized_failover_slot_exactly() {
    let primary = Cluster::start(ClusterOptions {
        bindir: Some(pg::bindir_at_least(17)),
        ..Default::default()
    });
    let standby = primary.standby(StandbyOptions {
        slot: Some(STANDBY_SLOT.to_owned()),
        settings: vec![("sync_replication_slots".into(), "on".into())],
    });
    // Logical walsenders of failover slots wait until the standby has the WAL they send, so
    // sluice never confirms a position the promoted standby lacks.
    primary.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'; SELECT pg_reload_conf();"
        ),
    );
    let db = primary.create_db("failover").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let module = wasm::module("by-owner");
    let mut sluice = Sluice::start(&db, &module, RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    let slot = slot_for(&db);
    assert_eq!(
        primary
            .psql(
                "postgres",
                &format!("SELECT failover FROM pg_replication_slots WHERE slot_name = '{slot}'"),
            )
            .trim(),
        "t",
        "sluice must create a failover slot on PostgreSQL 17+"
    );
    workload::run(&client, 1..=200).await;
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;
    wait_failover_ready(&primary, &standby, &client, &slot).await;
    // Killed while working: what it was doing is redone from the slot after the failover.
    workload::run(&client, 201..=300).await;
    sluice.kill9();
    workload::run(&client, 301..=350).await;
    drop(client);

    wait_replayed(&primary, &standby).await;
    let confirmed = primary.psql(
        "postgres",
        &format!("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"),
    );
    // Still ready, and at the primary's final position.
    wait_value(
        &standby,
        "postgres",
        &slot_state(&slot),
        &format!("t f valid {}", confirmed.trim()),
        "the slot to be synchronized to the standby",
    )
    .await;
    primary.stop();
    standby.promote();

    let moved = on(&standby, &db);
    let client = workload::durable_client(&moved).await;
    let mut sluice = Sluice::start(&moved, &module, RunOpts::default());
    workload::run(&client, 351..=400).await;
    let floor = workload::marker(&client, 2).await;
    wait_persisted(&client, floor, &mut sluice).await;
    let (lost, dup) = workload::lost_and_duplicated(&client, 1..=400).await;
    report("failover to a promoted standby", 1, 1, lost, dup);
    workload::assert_exact(&client, 1..=400).await;
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_without_the_slot_names_the_slot_the_server_and_the_fix() {
    let primary = Cluster::start(ClusterOptions::default());
    // No slot synchronization: the standby never gets sluice's slot.
    let standby = primary.standby(StandbyOptions {
        slot: Some(STANDBY_SLOT.to_owned()),
        settings: vec![],
    });
    let db = primary.create_db("noslot").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let module = wasm::module("by-owner");
    let mut sluice = Sluice::start(&db, &module, RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    workload::run(&client, 1..=20).await;
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert!(sluice.stop().success(), "{}", sluice.log_text());
    let stored = crate::support::stored_lsn(&client)
        .await
        .expect("a stored LSN") as u64;
    let stored = format!("{:X}/{:X}", stored >> 32, stored & 0xFFFF_FFFF);
    wait_replayed(&primary, &standby).await;
    let slot = slot_for(&db);
    let server = format!("127.0.0.1:{}", standby.port());

    // A standby in recovery as the source (the sink stays on the primary).
    let moved = on(&standby, &db);
    let mut sluice = Sluice::start(
        &moved,
        &module,
        RunOpts {
            extra_args: vec!["--sink-url".into(), db.url.clone()],
            ..Default::default()
        },
    );
    assert_eq!(sluice.wait(Duration::from_secs(60)).code(), Some(1));
    let log = sluice.log_text();
    let want = format!(
        "error: replication slot \"{slot}\" does not exist on {server}, which is a standby in recovery, but sync_wal_position says changes up to {stored} were consumed through it: sluice streams from the primary. Point --database-url at the primary; after a failover, promote this standby first"
    );
    assert!(log.contains(&want), "want {want:?} in:\n{log}");

    // The same standby, promoted, as source and sink.
    standby.promote();
    let mut sluice = Sluice::start(&moved, &module, RunOpts::default());
    assert_eq!(sluice.wait(Duration::from_secs(60)).code(), Some(1));
    let log = sluice.log_text();
    let want = format!(
        "error: replication slot \"{slot}\" does not exist on {server}, a promoted standby (timeline 2), but sync_wal_position says changes up to {stored} were consumed through it on the old primary: the slot was not synchronized to this server before its promotion"
    );
    assert!(log.contains(&want), "want {want:?} in:\n{log}");
    assert!(
        log.contains(&format!(
            "DELETE FROM sync_wal_position WHERE slot_name = '{slot}'"
        )),
        "{log}"
    );
}
