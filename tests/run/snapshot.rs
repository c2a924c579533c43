//! Snapshot hand-off and restart: no gap, no duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::pg;
use crate::support::{RunOpts, Sluice, by_owner_bucket, changelog, edges, wait_persisted, write};
use crate::wasm;

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text NOT NULL, deleted_at timestamptz); \
    CREATE PUBLICATION sluice_pub FOR TABLE items;";

/// Edges from a fresh evaluation of the current rows with the by-owner rule.
async fn fresh_edges(client: &tokio_postgres::Client) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = client
        .query(
            "SELECT id::text, user_id FROM items WHERE deleted_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                "items".to_string(),
                r.get::<_, String>(0),
                by_owner_bucket(r.get::<_, Option<&str>>(1)),
            )
        })
        .collect();
    out.sort();
    out
}

/// One writer transaction: insert a new row and update an older one. Returns (floor, inserted
/// id, updated id).
async fn writer_tx(client: &tokio_postgres::Client, k: i64) -> (i64, i64, i64) {
    let id = 1_000_000 + k;
    let updated = if k == 0 { 1 } else { 1_000_000 + k / 2 };
    let floor = write(
        client,
        &format!(
            "INSERT INTO items (id, user_id, title) VALUES ({id}, 'w{}', 't'); \
             UPDATE items SET title = 'upd {k}' WHERE id = {updated};",
            k % 50
        ),
    )
    .await;
    (floor, id, updated)
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_hand_off_under_concurrent_writes_has_no_gap_and_no_duplicate() {
    let db = pg::cluster().create_db("snap_handoff").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute("INSERT INTO items (id, user_id, title) SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'u' || (g % 100) END, 'x' FROM generate_series(1, 20000) g")
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let db = db.clone();
        tokio::spawn(async move {
            let client = db.client().await;
            let mut log = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                log.push(writer_tx(&client, k).await);
                k += 1;
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            config_toml: Some("[snapshot]\nchunk_rows = 1000\n".into()),
            ..Default::default()
        },
    );
    crate::support::wait_snapshot(&client, &mut sluice).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let log = writer.await.unwrap();
    let floor = write(&client, "UPDATE items SET title = 'last' WHERE id = 2").await;
    wait_persisted(&client, floor, &mut sluice).await;

    crate::support::assert_same_edges(&edges(&client).await, &fresh_edges(&client).await);

    let consistent: i64 = client
        .query_one(
            "SELECT min(consistent_lsn) FROM sluice_snapshot_progress",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Per record: the number of update entries the stream must have produced. A writer
    // transaction whose floor is at or above the consistent point committed after it; one whose
    // successor's floor is at or below it committed before it (and is in the snapshot). Only the
    // single transaction straddling the point is ambiguous.
    let mut min_updates: BTreeMap<String, usize> = BTreeMap::new();
    let mut max_updates: BTreeMap<String, usize> = BTreeMap::new();
    let mut inserted_after = BTreeSet::new();
    for (i, (floor, id, updated)) in log.iter().enumerate() {
        let next_floor = log.get(i + 1).map_or(i64::MAX, |n| n.0);
        let after = *floor >= consistent;
        let before = next_floor <= consistent;
        if after {
            inserted_after.insert(id.to_string());
            *min_updates.entry(updated.to_string()).or_default() += 1;
        }
        if !before {
            *max_updates.entry(updated.to_string()).or_default() += 1;
        }
    }
    *min_updates.entry("2".into()).or_default() += 1;
    *max_updates.entry("2".into()).or_default() += 1;
    let entries = changelog(&client).await;
    let mut inserts: BTreeMap<String, usize> = BTreeMap::new();
    let mut updates: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, id, op) in &entries {
        match op {
            1 => *inserts.entry(id.clone()).or_default() += 1,
            2 => *updates.entry(id.clone()).or_default() += 1,
            other => panic!("unexpected operation {other} for {id}"),
        }
    }
    let rows: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        inserts.len() as i64,
        rows,
        "every row has exactly one insert entry"
    );
    assert!(inserts.values().all(|&n| n == 1), "no row inserted twice");
    for (id, n) in &updates {
        let lo = min_updates.get(id).copied().unwrap_or(0);
        let hi = max_updates.get(id).copied().unwrap_or(0);
        assert!(
            lo <= *n && *n <= hi,
            "record {id}: {n} update entries, expected {lo}..={hi}"
        );
    }
    for (id, lo) in &min_updates {
        assert!(
            updates.get(id).copied().unwrap_or(0) >= *lo,
            "record {id}: updates missing"
        );
    }
    assert!(
        !inserted_after.is_empty(),
        "the writer must have overlapped the stream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_mid_stream_resumes_with_no_duplicates_and_no_gaps() {
    let db = pg::cluster().create_db("snap_restart").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    crate::support::wait_snapshot(&client, &mut sluice).await;
    let mut expected = Vec::new();
    for k in 0..300i64 {
        if k == 100 {
            assert!(sluice.stop().success(), "log:\n{}", sluice.log_text());
        }
        if k == 200 {
            sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
        }
        write(
            &client,
            &format!(
                "INSERT INTO items (id, user_id, title) VALUES ({k}, 'u{}', 't')",
                k % 3
            ),
        )
        .await;
        expected.push((
            format!("user:u{}", k % 3),
            "items".to_string(),
            k.to_string(),
            1i16,
        ));
        if k % 2 == 1 {
            write(
                &client,
                &format!("UPDATE items SET title = 'u' WHERE id = {}", k - 1),
            )
            .await;
            expected.push((
                format!("user:u{}", (k - 1) % 3),
                "items".to_string(),
                (k - 1).to_string(),
                2i16,
            ));
        }
    }
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (-1, NULL, 'end')",
    )
    .await;
    expected.push(("global".into(), "items".into(), "-1".into(), 1));
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(changelog(&client).await, expected);
}
