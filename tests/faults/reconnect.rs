//! An outage of the source server: every retry line says why, the wait between attempts never
//! exceeds `reconnect.max_backoff_ms`, and sluice resumes soon after the server is back. Also the
//! `application_name`s that `pg_stat_activity` and `pg_stat_replication` show.

use std::time::{Duration, Instant};

use crate::pg::{Cluster, ClusterOptions};
use crate::support::{RunOpts, Sluice, slot_for, wait_persisted, wait_snapshot};
use crate::{wasm, workload};

const RETRY_LINE: &str = "connection lost; reconnecting and resuming from the stored LSN";

/// The `retry_in_ms` of each retry line.
fn retry_waits(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(RETRY_LINE))
        .filter_map(|l| {
            let rest = &l[l.find("retry_in_ms=")? + "retry_in_ms=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_retried_with_the_cause_and_a_capped_backoff() {
    let cluster = Cluster::start(ClusterOptions::default());
    let db = cluster.create_db("outage").await;
    let client = workload::durable_client(&db).await;
    client.batch_execute(workload::SCHEMA).await.unwrap();
    let cap_ms = 1_000;
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            env: vec![("SLUICE_RECONNECT_MAX_BACKOFF_MS".into(), cap_ms.to_string())],
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    workload::run(&client, 1..=50).await;
    let floor = workload::marker(&client, 1).await;
    wait_persisted(&client, floor, &mut sluice).await;

    // Who is who: the replication connection carries the slot, the others plain `sluice`.
    let slot = slot_for(&db);
    let names = client
        .query_one(
            "SELECT (SELECT application_name FROM pg_stat_replication r \
                     JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1), \
                    (SELECT array_agg(DISTINCT application_name) FROM pg_stat_activity \
                     WHERE datname = current_database() AND backend_type = 'client backend' \
                       AND pid <> pg_backend_pid())",
            &[&slot],
        )
        .await
        .unwrap();
    assert_eq!(names.get::<_, String>(0), format!("sluice-{slot}"));
    assert_eq!(names.get::<_, Vec<String>>(1), vec!["sluice".to_owned()]);
    drop(client);

    cluster.stop();
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.start_again();
    let back = Instant::now();
    let client = workload::durable_client(&db).await;
    workload::run(&client, 51..=100).await;
    let floor = workload::marker(&client, 2).await;
    wait_persisted(&client, floor, &mut sluice).await;
    let resumed = back.elapsed();
    workload::assert_exact(&client, 1..=100).await;

    let log = sluice.log_text();
    let retries: Vec<&str> = log.lines().filter(|l| l.contains(RETRY_LINE)).collect();
    assert!(retries.len() >= 3, "too few retries in:\n{log}");
    // Each line says why: the session ended by the shutdown, the server refusing connections
    // while down, or still shutting down or starting up.
    let causes = [
        "Connection refused",
        "unexpected end of file",
        "terminating connection due to administrator command",
        "the database system is shutting down",
        "the database system is starting up",
    ];
    for line in &retries {
        assert!(
            causes.iter().any(|c| line.contains(c)),
            "a retry line without its cause: {line}"
        );
    }
    let refused = retries
        .iter()
        .filter(|l| l.contains("Connection refused"))
        .count();
    assert!(
        refused >= 3,
        "{refused} retries saw the server down:\n{log}"
    );
    let waits = retry_waits(&log);
    assert_eq!(waits.len(), retries.len(), "{log}");
    assert_eq!(waits[..3], [250, 500, 1000], "{log}");
    assert_eq!(waits.iter().max(), Some(&cap_ms), "{log}");
    // The cap plus time to reconnect, stream and write: well below the old 16 s waits.
    assert!(
        resumed < Duration::from_millis(cap_ms) + Duration::from_secs(8),
        "resumed {resumed:?} after the server came back:\n{log}"
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}
