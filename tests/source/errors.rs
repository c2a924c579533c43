//! Each clear error, through a real server: the message names the cause and the fix.

use std::time::Duration;

use sluice::model::Lsn;
use sluice::pg::PgConfig;
use sluice::source::{
    ReplicationConnection, SnapshotAction, SourceError, SourceEvent, StartOptions, lookup_slot,
};

use crate::pg::{Cluster, ClusterOptions};
use crate::{create_slot, setup, start};

async fn start_err(cfg: &PgConfig, slot: &str, publications: &[&str]) -> SourceError {
    let conn = ReplicationConnection::connect(cfg).await.unwrap();
    let opts = StartOptions::new(slot, publications.iter().map(|p| p.to_string()).collect());
    match conn.start_replication(opts).await {
        Ok(_) => panic!("start_replication succeeded"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn wal_level_not_logical() {
    let cluster = Cluster::start(ClusterOptions {
        settings: vec![("wal_level".into(), "replica".into())],
        ..Default::default()
    });
    let cfg = PgConfig::parse(&cluster.url("postgres")).unwrap();
    let mut conn = ReplicationConnection::connect(&cfg).await.unwrap();
    let err = conn
        .create_slot("s_wal", SnapshotAction::NoExport)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "logical decoding needs wal_level = logical but the server has wal_level = replica; \
         set wal_level = logical in postgresql.conf and restart PostgreSQL"
    );
}

#[tokio::test]
async fn role_without_replication() {
    let (db, _cfg, client) = setup("err_role", "").await;
    client
        .batch_execute("CREATE ROLE plain_reader LOGIN")
        .await
        .unwrap();
    let cfg = PgConfig::parse(&db.url.replace("postgres@", "plain_reader@")).unwrap();
    let err = match ReplicationConnection::connect(&cfg).await {
        Ok(_) => panic!("connected without REPLICATION"),
        Err(e) => e,
    };
    assert_eq!(
        err.to_string(),
        "role \"plain_reader\" lacks the REPLICATION attribute; run `ALTER ROLE plain_reader REPLICATION` as a superuser"
    );
}

#[tokio::test]
async fn slot_missing() {
    let (_db, cfg, _client) = setup("err_slot", "").await;
    let err = start_err(&cfg, "no_such_slot", &["pub"]).await;
    assert!(matches!(&err, SourceError::SlotMissing { slot } if slot == "no_such_slot"));
    assert_eq!(
        err.to_string(),
        "replication slot \"no_such_slot\" does not exist; create it (sluice tail --create-slot, \
         or SELECT pg_create_logical_replication_slot('no_such_slot', 'pgoutput'))"
    );
}

#[tokio::test]
async fn slot_active_elsewhere_names_the_pid() {
    let (_db, cfg, _client) = setup("err_active", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let lsn = create_slot(&cfg, "s_busy").await;
    let first = start(&cfg, "s_busy", lsn).await;
    let admin = crate::pg::cluster().admin_client().await;
    let pid = lookup_slot(&admin, "s_busy")
        .await
        .unwrap()
        .unwrap()
        .active_pid
        .unwrap();
    let err = start_err(&cfg, "s_busy", &["pub"]).await;
    assert_eq!(
        err.to_string(),
        format!(
            "replication slot \"s_busy\" is active for PID {pid}; stop that consumer \
             (SELECT pg_terminate_backend({pid})) or use another slot"
        )
    );
    first.close().await.unwrap();
}

#[tokio::test]
async fn publication_missing() {
    let (db, cfg, _client) = setup("err_pub", "").await;
    create_slot(&cfg, "s_nopub").await;
    let err = start_err(&cfg, "s_nopub", &["pub", "nope"]).await;
    assert_eq!(
        err.to_string(),
        format!(
            "publication nope does not exist in database {:?}; create it with CREATE PUBLICATION nope FOR TABLE ...",
            db.name
        )
    );
}

#[tokio::test]
async fn slot_already_exists() {
    let (_db, cfg, _client) = setup("err_exists", "").await;
    create_slot(&cfg, "s_twice").await;
    let mut conn = ReplicationConnection::connect(&cfg).await.unwrap();
    let err = conn
        .create_slot("s_twice", SnapshotAction::NoExport)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::SlotExists { .. }), "{err}");
}

#[tokio::test]
async fn connection_lost_mid_stream_reports_the_last_lsn() {
    let (_db, cfg, client) = setup("err_lost", "CREATE TABLE t (id int PRIMARY KEY)").await;
    let lsn = create_slot(&cfg, "s_lost").await;
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let mut stream = start(&cfg, "s_lost", lsn).await;
    let events = crate::until_commits(&mut stream, 1).await;
    let Some(SourceEvent::Commit { commit_lsn, .. }) = events.last() else {
        panic!("{events:?}")
    };
    let commit_lsn = *commit_lsn;
    let admin = crate::pg::cluster().admin_client().await;
    admin
        .execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 's_lost'",
            &[],
        )
        .await
        .unwrap();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.recv())
            .await
            .unwrap()
        {
            Ok(Some(SourceEvent::Keepalive { .. })) => continue,
            Ok(other) => panic!("expected an error, got {other:?}"),
            Err(e) => break e,
        }
    };
    let SourceError::ConnectionLost { last_lsn, .. } = &err else {
        panic!("{err}")
    };
    assert!(*last_lsn >= commit_lsn && *last_lsn > Lsn::ZERO);
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("was lost after LSN {last_lsn}"))
            && msg.contains("terminating connection due to administrator command")
            && msg.ends_with("reconnect and resume from the last confirmed LSN"),
        "{msg}"
    );
}

/// A connection lost while looking up or taking over the slot is a reconnect, not a stop: `faults::network`
/// found sluice exiting when one of its cuts landed on the take-over's query.
#[tokio::test]
async fn a_connection_lost_while_taking_over_the_slot_is_retried() {
    let (db, _cfg, client) = setup("err_claim_cut", "").await;
    let victim = db.client().await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute("SELECT pg_terminate_backend($1, 10000)", &[&pid])
        .await
        .unwrap();
    let err = sluice::source::claim_slot(&victim, "s_claim")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("taking over replication slot \"s_claim\": "),
        "{text}"
    );
    let err = sluice::pipeline::PipelineError::from(err);
    assert!(err.is_transient(), "not retried: {err}");
    // The step before it, the slot's look-up, on the same dead session.
    let err = sluice::source::lookup_slot(&victim, "s_claim")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the connection was lost while looking up replication slot \"s_claim\": connection closed; sluice reconnects and resumes from the last confirmed LSN"
    );
    let err = sluice::pipeline::PipelineError::from(err);
    assert!(err.is_transient(), "not retried: {err}");
}
