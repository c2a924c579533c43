//! Tables that join the publication get their existing rows, whether sluice was running or
//! stopped when they joined; tables that leave it can be forgotten.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::pg;
use crate::support::{
    Entry, RunOpts, Sluice, by_owner_bucket, changelog, count, edges, wait_for, wait_persisted,
    wait_snapshot, write,
};
use crate::wasm;

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, user_id text); \
    CREATE TABLE late (id int PRIMARY KEY, user_id text); \
    INSERT INTO items VALUES (1, 'u1'); \
    CREATE PUBLICATION sluice_pub FOR TABLE items;";

fn e(bucket: &str, table: &str, id: &str, op: i16) -> Entry {
    (bucket.into(), table.into(), id.into(), op)
}

fn edge(table: &str, id: &str, bucket: &str) -> (String, String, String) {
    (table.into(), id.into(), bucket.into())
}

fn opts(toml: &str) -> RunOpts {
    RunOpts {
        config_toml: Some(toml.into()),
        ..Default::default()
    }
}

async fn started(db: &pg::TestDb, opts: RunOpts) -> Sluice {
    let client = db.client().await;
    let mut sluice = Sluice::start(db, &wasm::module("by-owner"), opts);
    wait_snapshot(&client, &mut sluice).await;
    sluice
}

/// (rows_done, done) of a table's snapshot progress, if it has a row.
async fn progress(client: &tokio_postgres::Client, table: &str) -> Option<(i64, bool)> {
    client
        .query_opt(
            "SELECT rows_done, done FROM sluice_snapshot_progress WHERE table_name = $1",
            &[&table],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

async fn wait_joined(client: &tokio_postgres::Client, table: &str, sluice: &mut Sluice) {
    wait_for(
        &format!("the snapshot of joined table {table}"),
        Duration::from_secs(120),
        sluice,
        || async { progress(client, table).await.is_some_and(|(_, done)| done) },
    )
    .await;
}

/// Edges of a fresh evaluation of `table`'s current rows with the by-owner rule.
async fn fresh_edges(
    client: &tokio_postgres::Client,
    table: &str,
) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = client
        .query(&format!("SELECT id::text, user_id FROM {table}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let bucket = by_owner_bucket(r.get::<_, Option<&str>>(1));
            (table.to_owned(), r.get::<_, String>(0), bucket)
        })
        .collect();
    out.sort();
    out
}

/// A client that follows the changelog from the start ends with exactly the stored
/// memberships: per (table, record, bucket), the last operation is a delete exactly when there
/// is no edge, and a delete is never the first operation.
fn assert_changelog_folds_to_edges(log: &[Entry], edges: &[(String, String, String)]) {
    let mut last: BTreeMap<(String, String, String), i16> = BTreeMap::new();
    for (bucket, table, id, op) in log {
        let key = (table.clone(), id.clone(), bucket.clone());
        assert!(
            *op != 3 || last.contains_key(&key),
            "a delete of {key:?} that no insert preceded; changelog: {log:?}"
        );
        last.insert(key, *op);
    }
    let held: Vec<_> = last
        .into_iter()
        .filter(|(_, op)| *op != 3)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(held, edges, "the changelog does not fold to the edges");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_joining_while_running_gets_its_rows_and_the_writes_made_during_its_snapshot() {
    let db = pg::cluster().create_db("join_running").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute("INSERT INTO late SELECT g, 'u' || (g % 10) FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    let mut sluice = started(
        &db,
        opts("[snapshot]\nchunk_rows = 5\njoin_check_ms = 200\n"),
    )
    .await;
    assert_eq!(progress(&client, "late").await, None);

    // Nothing writes to `late` until its walk has begun: only the periodic look at the
    // publication can notice the join.
    client
        .batch_execute("ALTER PUBLICATION sluice_pub ADD TABLE late")
        .await
        .unwrap();
    wait_for(
        "the walk of late to begin",
        Duration::from_secs(60),
        &mut sluice,
        || async { progress(&client, "late").await.is_some_and(|(n, _)| n > 0) },
    )
    .await;
    // Writes during the walk, ahead of and behind its position: moves, deletes, inserts, and a
    // row moved twice.
    for k in 0..20 {
        let (low, high) = (10 + k * 3, 900 + k * 3);
        write(
            &client,
            &format!(
                "UPDATE late SET user_id = 'moved{k}' WHERE id IN ({low}, {high}); \
                 DELETE FROM late WHERE id IN ({}, {}); \
                 INSERT INTO late VALUES ({}, 'new'); \
                 UPDATE late SET user_id = NULL WHERE id = 500 + {k};",
                low + 1,
                high + 1,
                2000 + k
            ),
        )
        .await;
    }
    let during = progress(&client, "late").await;
    assert!(
        during.is_some_and(|(_, done)| !done),
        "the writes ended after the walk ({during:?}): they did not test the interleaving"
    );
    let floor = write(&client, "UPDATE late SET user_id = 'last' WHERE id = 2").await;
    wait_persisted(&client, floor, &mut sluice).await;
    wait_joined(&client, "late", &mut sluice).await;

    let mut expected = fresh_edges(&client, "late").await;
    expected.extend(fresh_edges(&client, "items").await);
    expected.sort();
    assert_eq!(expected.len(), 1000 - 40 + 20 + 1);
    assert_eq!(edges(&client).await, expected);
    let log = changelog(&client).await;
    assert_changelog_folds_to_edges(&log, &expected);
    // A row nobody wrote to has one entry: the walk's insert.
    let untouched: Vec<_> = log
        .iter()
        .filter(|(_, t, id, _)| t == "late" && id == "700")
        .collect();
    assert_eq!(untouched, vec![&e("user:u0", "late", "700", 1)]);
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_rule_failures").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relation_message_of_an_unknown_table_starts_its_snapshot() {
    let db = pg::cluster().create_db("join_relation").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute("INSERT INTO late VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    // The periodic look would come only after a day: the stream's Relation message does it.
    let mut sluice = started(&db, opts("[snapshot]\njoin_check_ms = 86400000\n")).await;
    client
        .batch_execute("ALTER PUBLICATION sluice_pub ADD TABLE late")
        .await
        .unwrap();
    let floor = write(&client, "UPDATE late SET user_id = 'c' WHERE id = 1").await;
    wait_persisted(&client, floor, &mut sluice).await;
    wait_joined(&client, "late", &mut sluice).await;
    assert_eq!(
        edges(&client).await,
        vec![
            edge("items", "1", "user:u1"),
            edge("late", "1", "user:c"),
            edge("late", "2", "user:b"),
        ]
    );
    // Row 1 through the stream (no membership yet: an insert), then the walk: row 1's
    // membership is already right, row 2 gets its insert.
    assert_eq!(
        changelog(&client).await,
        vec![
            e("user:u1", "items", "1", 1),
            e("user:c", "late", "1", 1),
            e("user:b", "late", "2", 1),
        ]
    );
    assert_eq!(progress(&client, "late").await, Some((2, true)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_that_joined_while_sluice_was_stopped_gets_its_rows_at_restart() {
    let db = pg::cluster().create_db("join_stopped").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute("INSERT INTO late VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    let o = opts("[snapshot]\njoin_check_ms = 86400000\n");
    let mut sluice = started(&db, o.clone()).await;
    sluice.stop();
    // While stopped: a write before the join (never streamed), the join, a write after it.
    for sql in [
        "UPDATE late SET user_id = 'a2' WHERE id = 1",
        "ALTER PUBLICATION sluice_pub ADD TABLE late",
        "INSERT INTO late VALUES (3, 'c')",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), o);
    wait_joined(&client, "late", &mut sluice).await;
    let floor = write(&client, "UPDATE late SET user_id = 'b2' WHERE id = 2").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        edges(&client).await,
        vec![
            edge("items", "1", "user:u1"),
            edge("late", "1", "user:a2"),
            edge("late", "2", "user:b2"),
            edge("late", "3", "user:c"),
        ]
    );
    let log = changelog(&client).await;
    // Row 3's insert may come from the stream or from the walk, first or second: one insert
    // either way, and at most an update that repeats it.
    let late: Vec<_> = log
        .iter()
        .filter(|(_, t, id, _)| t == "late" && id != "3")
        .cloned()
        .collect();
    assert_eq!(
        late,
        vec![
            e("user:a2", "late", "1", 1),
            e("user:b", "late", "2", 1),
            e("user:b", "late", "2", 3),
            e("user:b2", "late", "2", 1),
        ]
    );
    let row3: Vec<_> = log
        .iter()
        .filter(|(_, _, id, _)| id == "3")
        .map(|x| x.3)
        .collect();
    assert!(row3 == vec![1] || row3 == vec![1, 2], "row 3: {row3:?}");
    assert_changelog_folds_to_edges(&log, &edges(&client).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_left_in_the_publication_is_kept_and_a_removed_one_is_forgotten_on_request() {
    let db = pg::cluster().create_db("join_forget").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO late VALUES (1, 'a'), (2, NULL); \
             ALTER PUBLICATION sluice_pub ADD TABLE late;",
        )
        .await
        .unwrap();
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut sluice = started(
        &db,
        opts(&format!(
            "admin_addr = \"{admin}\"\n[snapshot]\njoin_check_ms = 200\n"
        )),
    )
    .await;
    let forget = |table: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&format!("http://{admin}/tables/forget"))
            .send_json(serde_json::json!({ "table": table }))
            .unwrap();
        let status = resp.status().as_u16();
        (
            status,
            resp.body_mut().read_json::<serde_json::Value>().unwrap(),
        )
    };

    let (status, body) = forget("late");
    assert_eq!(status, 422);
    assert_eq!(
        body,
        serde_json::json!({"status": "rejected", "reason": "table late is still in publication sluice_pub: its changes are streamed, so its memberships are kept. Remove it first with `ALTER PUBLICATION sluice_pub DROP TABLE ...;`"})
    );

    client
        .batch_execute("ALTER PUBLICATION sluice_pub DROP TABLE late")
        .await
        .unwrap();
    wait_for(
        "sluice to notice that late left",
        Duration::from_secs(30),
        &mut sluice,
        || async { progress(&client, "late").await.is_none() },
    )
    .await;
    // No longer streamed: its memberships stay as they were.
    let floor = write(
        &client,
        "UPDATE late SET user_id = 'z' WHERE id = 1; INSERT INTO items VALUES (2, 'u2');",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        edges(&client).await,
        vec![
            edge("items", "1", "user:u1"),
            edge("items", "2", "user:u2"),
            edge("late", "1", "user:a"),
            edge("late", "2", "global"),
        ]
    );
    assert!(sluice.log_text().contains("table left the publication"));

    // Through the CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["forget-table", "--admin-addr", &admin, "--table", "late"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "forgot late: 2 records lost their memberships, 2 deletes written to the changelog\n"
    );
    assert_eq!(
        edges(&client).await,
        vec![edge("items", "1", "user:u1"), edge("items", "2", "user:u2")]
    );
    assert_eq!(
        changelog(&client).await,
        vec![
            e("user:u1", "items", "1", 1),
            e("user:a", "late", "1", 1),
            e("global", "late", "2", 1),
            e("user:u2", "items", "2", 1),
            e("user:a", "late", "1", 3),
            e("global", "late", "2", 3),
        ]
    );

    // A second request finds nothing, fails alone, and the stream goes on.
    let (status, body) = forget("late");
    assert_eq!(status, 422);
    assert_eq!(
        body,
        serde_json::json!({"status": "rejected", "reason": "no memberships are stored for table late (name it as sync_bucket_edges.table_name does: schema-qualified unless in public)"})
    );
    let floor = write(&client, "INSERT INTO items VALUES (3, 'u3')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_bucket_edges").await,
        3
    );

    // Joining again snapshots it again.
    client
        .batch_execute("ALTER PUBLICATION sluice_pub ADD TABLE late")
        .await
        .unwrap();
    wait_joined(&client, "late", &mut sluice).await;
    assert_eq!(
        edges(&client).await[3..],
        [edge("late", "1", "user:z"), edge("late", "2", "global")]
    );
}

/// A table created in a schema that a `FOR ALL TABLES` or `FOR TABLES IN SCHEMA` publication
/// covers is noticed, whether sluice runs (created empty, then rows) or was stopped (created with
/// rows).
async fn created_tables_join(prefix: &str, schema_sql: &str, publication_sql: &str, table: &str) {
    let db = pg::cluster().create_db(prefix).await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "{schema_sql} CREATE TABLE items (id int PRIMARY KEY, user_id text); {publication_sql}"
        ))
        .await
        .unwrap();
    let o = opts("[snapshot]\njoin_check_ms = 200\n");
    let mut sluice = started(&db, o.clone()).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, user_id text)"
        ))
        .await
        .unwrap();
    wait_joined(&client, table, &mut sluice).await;
    let floor = write(
        &client,
        &format!("INSERT INTO {table} VALUES (1, 'a'), (2, 'b')"),
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    sluice.stop();
    let second = format!("{table}_2");
    client
        .batch_execute(&format!(
            "CREATE TABLE {second} (id int PRIMARY KEY, user_id text); \
             INSERT INTO {second} VALUES (7, 'c');"
        ))
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), o);
    wait_joined(&client, &second, &mut sluice).await;
    assert_eq!(
        edges(&client).await,
        vec![
            edge(table, "1", "user:a"),
            edge(table, "2", "user:b"),
            edge(&second, "7", "user:c"),
        ]
    );
    let log = changelog(&client).await;
    assert_eq!(
        log[..3],
        [
            e("user:a", table, "1", 1),
            e("user:b", table, "2", 1),
            e("user:c", &second, "7", 1),
        ]
    );
    // The second table's insert is also streamed (the publication covered it from its
    // creation): when the walk read the row first, the streamed insert repeats the membership
    // as an update.
    assert!(
        log[3..].is_empty() || log[3..] == [e("user:c", &second, "7", 2)],
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_created_under_a_for_all_tables_publication_joins() {
    created_tables_join(
        "join_all",
        "",
        "CREATE PUBLICATION sluice_pub FOR ALL TABLES;",
        "fresh",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_created_in_a_published_schema_joins() {
    let version: i32 = {
        let db = pg::cluster().create_db("join_schema_v").await;
        db.client()
            .await
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .unwrap()
            .get(0)
    };
    if version < 150000 {
        // PostgreSQL 14 has no FOR TABLES IN SCHEMA: the publication cannot be created at all.
        let db = pg::cluster().create_db("join_schema_14").await;
        let err = db
            .client()
            .await
            .batch_execute("CREATE SCHEMA app; CREATE PUBLICATION p FOR TABLES IN SCHEMA app")
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::SYNTAX_ERROR),
            "{err:?}"
        );
        return;
    }
    created_tables_join(
        "join_schema",
        "CREATE SCHEMA app;",
        "CREATE PUBLICATION sluice_pub FOR TABLES IN SCHEMA app, public;",
        "app.fresh",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_walk_waits_for_a_transaction_that_wrote_to_the_table_before_it_joined() {
    let db = pg::cluster().create_db("join_open_tx").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute("INSERT INTO late VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    let mut sluice = started(&db, opts("[snapshot]\njoin_check_ms = 200\n")).await;
    // A write made before the join, committed after it: PostgreSQL does not stream it, and a
    // walk that read the table before the commit would miss it.
    let writer = db.client().await;
    writer
        .batch_execute("BEGIN; UPDATE late SET user_id = 'w' WHERE id = 1")
        .await
        .unwrap();
    client
        .batch_execute("ALTER PUBLICATION sluice_pub ADD TABLE late")
        .await
        .unwrap();
    wait_for(
        "the walk to be planned",
        Duration::from_secs(30),
        &mut sluice,
        || async { progress(&client, "late").await.is_some() },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(progress(&client, "late").await, Some((0, false)));
    writer.batch_execute("COMMIT").await.unwrap();
    wait_joined(&client, "late", &mut sluice).await;
    assert_eq!(
        edges(&client).await,
        vec![
            edge("items", "1", "user:u1"),
            edge("late", "1", "user:w"),
            edge("late", "2", "user:b"),
        ]
    );
    assert_eq!(
        changelog(&client).await[1..],
        [e("user:w", "late", "1", 1), e("user:b", "late", "2", 1)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_joined_table_dropped_during_its_walk_stops_the_walk_not_the_stream() {
    let db = pg::cluster().create_db("join_dropped").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .batch_execute("INSERT INTO late SELECT g, 'u' FROM generate_series(1, 2000) g")
        .await
        .unwrap();
    let mut sluice = started(
        &db,
        opts("[snapshot]\nchunk_rows = 5\njoin_check_ms = 200\n"),
    )
    .await;
    client
        .batch_execute("ALTER PUBLICATION sluice_pub ADD TABLE late")
        .await
        .unwrap();
    wait_for(
        "the walk of late to begin",
        Duration::from_secs(60),
        &mut sluice,
        || async { progress(&client, "late").await.is_some_and(|(n, _)| n > 0) },
    )
    .await;
    client.batch_execute("DROP TABLE late").await.unwrap();
    wait_for(
        "sluice to notice that late left",
        Duration::from_secs(30),
        &mut sluice,
        || async { progress(&client, "late").await.is_none() },
    )
    .await;
    let floor = write(&client, "INSERT INTO items VALUES (2, 'u2')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert!(sluice.is_running());
    let log = sluice.log_text();
    assert!(
        log.contains("cannot read a table that joined the publication"),
        "{log}"
    );
    assert!(log.contains("table left the publication"), "{log}");
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM sync_bucket_edges WHERE table_name = 'items'"
        )
        .await,
        2
    );
}
