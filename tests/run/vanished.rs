//! Memberships of rows that no longer exist: a re-snapshot after a lost slot and a `rebucket`
//! remove them with changelog deletes, write nothing for rows that did not change, and keep a
//! row the stream inserted while the walk ran.

use std::time::Duration;

use crate::pg;
use crate::support::{
    RunOpts, Sluice, changelog, count, edges, slot_for, wait_for, wait_persisted, wait_snapshot,
    write,
};
use crate::wasm;

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `(table, id, user:<user_id>)` for every current row of `table`: the by-owner oracle.
async fn current_edges(
    client: &tokio_postgres::Client,
    table: &str,
) -> Vec<(String, String, String)> {
    let mut rows: Vec<(String, String, String)> = client
        .query(&format!("SELECT id::text, user_id FROM {table}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                table.to_string(),
                r.get::<_, String>(0),
                format!("user:{}", r.get::<_, String>(1)),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn entry(bucket: &str, table: &str, id: &str, op: i16) -> (String, String, String, i16) {
    (bucket.into(), table.into(), id.into(), op)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resnapshot_after_a_lost_slot_deletes_vanished_rows_and_logs_only_differences() {
    let db = pg::cluster().create_db("vanish_resnap").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE tasks (id int PRIMARY KEY, user_id text NOT NULL, title text NOT NULL); \
             CREATE PUBLICATION sluice_pub FOR TABLE tasks; \
             INSERT INTO tasks SELECT g, 'u' || (g % 3), 't' FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let module = wasm::module("by-owner");
    let opts = RunOpts {
        config_toml: Some("[snapshot]\nchunk_rows = 7\n".into()),
        ..Default::default()
    };
    let mut sluice = Sluice::start(&db, &module, opts.clone());
    wait_snapshot(&client, &mut sluice).await;
    assert!(sluice.stop().success());
    assert_eq!(changelog(&client).await.len(), 20);

    // The slot is lost, and the rows change while nothing watches.
    let slot = slot_for(&db);
    client
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot('{slot}'); \
             DELETE FROM tasks WHERE id IN (3, 4); \
             UPDATE tasks SET user_id = 'moved' WHERE id = 5; \
             UPDATE tasks SET title = 'changed' WHERE id = 6;"
        ))
        .await
        .unwrap();
    let mut failed = Sluice::start(&db, &module, opts.clone());
    assert!(!failed.wait(Duration::from_secs(60)).success());
    let log = failed.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"));
    // The recovery SQL exactly as the error message gives it.
    let sql = line
        .split('`')
        .find(|part| part.starts_with("DELETE FROM sync_wal_position"))
        .unwrap_or_else(|| panic!("no recovery SQL in {line}"));
    client.batch_execute(sql).await.unwrap();

    let mut sluice = Sluice::start(&db, &module, opts);
    wait_snapshot(&client, &mut sluice).await;
    let entries = changelog(&client).await;
    assert_eq!(
        entries[20..].to_vec(),
        vec![
            entry("user:u2", "tasks", "5", 3),
            entry("user:moved", "tasks", "5", 1),
            entry("user:u0", "tasks", "6", 2),
            entry("user:u0", "tasks", "3", 3),
            entry("user:u1", "tasks", "4", 3),
        ],
        "a move, a content change and two deletes; nothing for the 16 unchanged rows"
    );
    assert_eq!(edges(&client).await, current_edges(&client, "tasks").await);
    assert_eq!(
        count(&client, "SELECT count(*) FROM sluice_walk_seen").await,
        0,
        "what the walk read is forgotten at its end"
    );
    assert!(sluice.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn rebucket_removes_a_vanished_rows_edges_and_keeps_a_row_the_stream_inserted_meanwhile() {
    let db = pg::cluster().create_db("vanish_rebucket").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, user_id text NOT NULL); \
             CREATE PUBLICATION sluice_pub FOR TABLE items; \
             INSERT INTO items SELECT g, 'u' || (g % 5) FROM generate_series(1, 30000) g;",
        )
        .await
        .unwrap();
    let admin = free_addr();
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            config_toml: Some(format!(
                "admin_addr = \"{admin}\"\n[snapshot]\nchunk_rows = 100\n"
            )),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    let before = changelog(&client).await.len();
    // A membership left behind by a row that no longer exists (as an older sluice's re-snapshot
    // left them).
    client
        .batch_execute(
            "INSERT INTO sync_bucket_edges (table_name, record_id, bucket_id, checksum) \
             VALUES ('items', '99999', 'user:ghost', NULL)",
        )
        .await
        .unwrap();

    let pass = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&format!("http://{admin}/rebucket"))
            .send_json(serde_json::json!({}))
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_json::<serde_json::Value>().unwrap(),
        )
    });
    // Once the walk is past the first keys, the stream inserts a row there.
    wait_for(
        "the walk's first chunks",
        Duration::from_secs(60),
        &mut sluice,
        || async {
            count(
                &client,
                "SELECT coalesce(max(rows_done), 0) FROM sluice_rebucket_progress WHERE NOT done",
            )
            .await
                >= 200
        },
    )
    .await;
    let floor = write(&client, "INSERT INTO items VALUES (0, 'late')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM sluice_rebucket_progress WHERE NOT done"
        )
        .await,
        1,
        "the stream wrote the row while the walk was still running"
    );
    let (status, body) = pass.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "done", "{body}");
    assert_eq!(
        body["changelog_rows"], 1,
        "only the vanished row's delete: {body}"
    );

    let mut after = changelog(&client).await[before..].to_vec();
    after.sort();
    assert_eq!(
        after,
        vec![
            entry("user:ghost", "items", "99999", 3),
            entry("user:late", "items", "0", 1),
        ]
    );
    assert_eq!(edges(&client).await, current_edges(&client, "items").await);
    assert!(sluice.stop().success());
}

/// A vanished row of a table in the rules' relations also loses its related-row state and links,
/// and the rows that had memberships through it lose them.
#[tokio::test(flavor = "multi_thread")]
async fn a_resnapshot_settles_the_dependants_of_a_vanished_related_row() {
    let db = pg::cluster().create_db("vanish_related").await;
    let client = db.client().await;
    client
        .batch_execute(crate::related::SHARED_LISTS)
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO lists VALUES (1, 'ann', 'groceries'); INSERT INTO items VALUES (10, 1, 'milk'); \
             INSERT INTO list_members VALUES (1, 'bob');",
        )
        .await
        .unwrap();
    let module = wasm::module("shared-lists");
    let mut sluice = Sluice::start(&db, &module, RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    assert!(sluice.stop().success());
    let before = changelog(&client).await.len();
    let members = r#"["1","bob"]"#;
    assert_eq!(
        count(
            &client,
            &format!("SELECT count(*) FROM sluice_row_links WHERE child_id = '{members}'")
        )
        .await,
        2,
        "the member row links to its list through both of the module's relations"
    );

    let slot = slot_for(&db);
    client
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot('{slot}'); \
             DELETE FROM list_members WHERE list_id = 1 AND user_id = 'bob'; \
             DELETE FROM sync_wal_position WHERE slot_name = '{slot}'; \
             DELETE FROM sluice_snapshot_progress WHERE slot_name = '{slot}';"
        ))
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &module, RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    let mut after = changelog(&client).await[before..].to_vec();
    after.sort();
    assert_eq!(
        after,
        vec![
            entry("user:ann", "list_members", members, 3),
            entry("user:bob", "items", "10", 3),
            entry("user:bob", "list_members", members, 3),
            entry("user:bob", "lists", "1", 3),
        ]
    );
    let mut oracle: Vec<(String, String, String)> = client
        .query(crate::related::SHARED_LISTS_ORACLE, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    oracle.sort();
    assert_eq!(edges(&client).await, oracle);
    assert_eq!(
        count(
            &client,
            &format!(
                "SELECT (SELECT count(*) FROM sluice_row_state WHERE record_id = '{members}') \
                      + (SELECT count(*) FROM sluice_row_links WHERE child_id = '{members}')"
            )
        )
        .await,
        0,
        "the vanished member row's state and link are gone"
    );
    assert!(sluice.stop().success());
}
