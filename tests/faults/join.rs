//! `kill -9` while a table that joined the publication is being snapshotted: the restart
//! finishes the walk from its last persisted chunk, and every row ends with exactly its
//! memberships, each logged once.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::pg;
use crate::support::{
    RunOpts, Sluice, by_owner_bucket, changelog, edges, wait_for, wait_persisted, write,
};
use crate::wasm;

const ROWS: i64 = 3000;

async fn progress(client: &tokio_postgres::Client) -> Option<(i64, bool)> {
    client
        .query_opt(
            "SELECT rows_done, done FROM sluice_snapshot_progress WHERE table_name = 'late'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_the_snapshot_of_a_joined_table_and_the_restart_finishes_it() {
    let db = pg::cluster().create_db("fault_join").await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id int PRIMARY KEY, user_id text); \
             CREATE TABLE late (id int PRIMARY KEY, user_id text); \
             INSERT INTO late SELECT g, 'u' || (g % 10) FROM generate_series(1, {ROWS}) g; \
             CREATE PUBLICATION sluice_pub FOR TABLE items;"
        ))
        .await
        .unwrap();
    let module = wasm::module("by-owner");
    let opts = RunOpts {
        config_toml: Some("[snapshot]\nchunk_rows = 20\njoin_check_ms = 200\n".into()),
        ..Default::default()
    };
    let mut sluice = Sluice::start(&db, &module, opts.clone());
    crate::support::wait_snapshot(&client, &mut sluice).await;
    client
        .batch_execute("ALTER PUBLICATION sluice_pub ADD TABLE late")
        .await
        .unwrap();

    // Three kills, each once the walk has gone further; a write to late while sluice is down.
    let mut kills = 0;
    for (k, past) in [(0, 100), (1, 800), (2, 1600)] {
        wait_for(
            "the walk to advance",
            Duration::from_secs(120),
            &mut sluice,
            || async { progress(&client).await.is_some_and(|(n, _)| n >= past) },
        )
        .await;
        let at = progress(&client).await;
        assert!(
            at.is_some_and(|(_, done)| !done),
            "the walk finished before kill {k}: {at:?}"
        );
        sluice.kill9();
        kills += 1;
        write(
            &client,
            &format!(
                "UPDATE late SET user_id = 'moved{k}' WHERE id IN ({}, {})",
                50 + k,
                2900 + k
            ),
        )
        .await;
        sluice = Sluice::start(&db, &module, opts.clone());
    }
    let floor = write(&client, "INSERT INTO items VALUES (1, 'u1')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    wait_for(
        "the walk to finish",
        Duration::from_secs(180),
        &mut sluice,
        || async { progress(&client).await.is_some_and(|(_, done)| done) },
    )
    .await;

    let mut expected: Vec<(String, String, String)> = client
        .query("SELECT 'late', id::text, user_id FROM late UNION ALL SELECT 'items', id::text, user_id FROM items", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), by_owner_bucket(r.get::<_, Option<&str>>(2))))
        .collect();
    expected.sort();
    let stored = edges(&client).await;
    assert_eq!(stored.len() as i64, ROWS + 1);
    assert_eq!(stored, expected);

    // Rows nobody wrote to: exactly one insert each, whatever chunk a kill interrupted.
    let moved: Vec<String> = (0..3)
        .flat_map(|k| [50 + k, 2900 + k])
        .map(|i| i.to_string())
        .collect();
    let mut per_record: BTreeMap<String, Vec<(String, i16)>> = BTreeMap::new();
    for (bucket, table, id, op) in changelog(&client).await {
        if table == "late" {
            per_record.entry(id).or_default().push((bucket, op));
        }
    }
    let mut lost = 0;
    let mut duplicated = 0;
    for id in 1..=ROWS {
        let id = id.to_string();
        let entries = per_record.get(&id).cloned().unwrap_or_default();
        if moved.contains(&id) {
            // Moved while down: it ends in its new bucket, last operation an insert or update.
            let last = entries
                .iter()
                .rev()
                .find(|(b, _)| b.starts_with("user:moved"));
            assert!(
                last.is_some_and(|(_, op)| *op != 3),
                "row {id}: {entries:?}"
            );
            continue;
        }
        let want = vec![(format!("user:u{}", id.parse::<i64>().unwrap() % 10), 1)];
        match entries.len() {
            0 => lost += 1,
            1 => assert_eq!(entries, want, "row {id}"),
            _ => duplicated += 1,
        }
    }
    crate::report(
        "kill -9 during a joined table's snapshot",
        1,
        kills,
        lost,
        duplicated,
    );
    assert_eq!((lost, duplicated), (0, 0));
}
