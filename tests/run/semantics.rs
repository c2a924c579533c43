//! The changelog semantics users rely on: synchro's cases, moves, truncate, TOAST, composite
//! keys, schema changes, failure policies, FOR ALL TABLES and a separate sink database.

use std::time::Duration;

use crate::pg;
use crate::support::{
    Entry, RunOpts, Sluice, changelog, count, edges, wait_for, wait_persisted, write,
};
use crate::wasm;

const ITEMS: &str = "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text NOT NULL, \
    deleted_at timestamptz, body text); \
    CREATE PUBLICATION sluice_pub FOR TABLE items;";

fn e(bucket: &str, table: &str, id: &str, op: i16) -> Entry {
    (bucket.into(), table.into(), id.into(), op)
}

async fn started(db: &pg::TestDb, opts: RunOpts) -> Sluice {
    let mut sluice = Sluice::start(db, &wasm::module("by-owner"), opts);
    let client = db.client().await;
    crate::support::wait_snapshot(&client, &mut sluice).await;
    sluice
}

#[tokio::test(flavor = "multi_thread")]
async fn synchro_cases_insert_update_soft_delete_null_owner_and_move() {
    let db = pg::cluster().create_db("run_synchro").await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let mut sluice = started(&db, RunOpts::default()).await;

    write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'a'), (2, NULL, 'b')",
    )
    .await;
    write(&client, "UPDATE items SET title = 'a2' WHERE id = 1").await;
    write(&client, "UPDATE items SET deleted_at = now() WHERE id = 1").await;
    write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (3, 'u1', 'c')",
    )
    .await;
    let floor = write(&client, "UPDATE items SET user_id = 'u2' WHERE id = 3").await;
    wait_persisted(&client, floor, &mut sluice).await;

    assert_eq!(
        changelog(&client).await,
        vec![
            e("user:u1", "items", "1", 1),
            e("global", "items", "2", 1),
            e("user:u1", "items", "1", 2),
            e("user:u1", "items", "1", 3),
            e("user:u1", "items", "3", 1),
            e("user:u1", "items", "3", 3),
            e("user:u2", "items", "3", 1),
        ]
    );
    assert_eq!(
        edges(&client).await,
        vec![
            ("items".into(), "2".into(), "global".into()),
            ("items".into(), "3".into(), "user:u2".into())
        ]
    );
    assert!(
        sluice.stop().success(),
        "SIGTERM must exit 0; log:\n{}",
        sluice.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn truncate_deletes_every_membership_of_the_table() {
    let db = pg::cluster().create_db("run_truncate").await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let mut sluice = started(&db, RunOpts::default()).await;
    write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'a'), (2, 'u2', 'b')",
    )
    .await;
    let floor = write(
        &client,
        "TRUNCATE items; INSERT INTO items (id, user_id, title) VALUES (3, 'u3', 'c')",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        changelog(&client).await,
        vec![
            e("user:u1", "items", "1", 1),
            e("user:u2", "items", "2", 1),
            e("user:u1", "items", "1", 3),
            e("user:u2", "items", "2", 3),
            e("user:u3", "items", "3", 1),
        ]
    );
    assert_eq!(
        edges(&client).await,
        vec![("items".into(), "3".into(), "user:u3".into())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_toast_column_is_not_null_and_composite_keys_and_new_columns_work() {
    let db = pg::cluster().create_db("run_toast").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text NOT NULL, deleted_at timestamptz, body text); \
             ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL; \
             CREATE TABLE memberships (org text, member int, user_id text, PRIMARY KEY (org, member)); \
             CREATE PUBLICATION sluice_pub FOR TABLE items, memberships;",
        )
        .await
        .unwrap();
    let mut sluice = started(&db, RunOpts::default()).await;
    // A 100 kB body is stored out of line; updating only the title leaves it unchanged in WAL.
    write(
        &client,
        "INSERT INTO items (id, user_id, title, body) VALUES (1, 'u1', 'a', repeat('x', 100000))",
    )
    .await;
    write(&client, "UPDATE items SET title = 'b' WHERE id = 1").await;
    write(&client, "INSERT INTO memberships VALUES ('o,1', 7, 'u9')").await;
    write(
        &client,
        "ALTER TABLE items ADD COLUMN priority int DEFAULT 0",
    )
    .await;
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title, priority) VALUES (2, 'u2', 'c', 5)",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        changelog(&client).await,
        vec![
            e("user:u1", "items", "1", 1),
            e("user:u1", "items", "1", 2),
            e("user:u9", "memberships", r#"["o,1","7"]"#, 1),
            e("user:u2", "items", "2", 1),
        ]
    );
    // The checksum of the update must differ from a row whose body is NULL.
    let checksums: Vec<Option<i32>> = client
        .query(
            "SELECT checksum FROM sync_bucket_edges WHERE table_name = 'items' ORDER BY record_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(checksums.len(), 2);
    assert!(checksums.iter().all(Option::is_some));
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_rule_failures").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn for_all_tables_publication_with_sidecar_in_the_same_database_does_not_feed_back() {
    sidecar_is_not_fed_back("run_alltables", "").await;
}

/// SECURITY.md's layout: the sidecar tables in a schema of their own, first in the search_path.
/// `FOR ALL TABLES` publishes them too; they are neither snapshotted nor streamed into the rules.
#[tokio::test(flavor = "multi_thread")]
async fn for_all_tables_publication_with_sidecar_in_its_own_schema_does_not_feed_back() {
    sidecar_is_not_fed_back("run_alltables_schema", "sluice").await;
}

async fn sidecar_is_not_fed_back(name: &str, sidecar_schema: &str) {
    let db = pg::cluster().create_db(name).await;
    let setup = if sidecar_schema.is_empty() {
        String::new()
    } else {
        format!(
            "CREATE SCHEMA {sidecar_schema}; ALTER DATABASE {} SET search_path = {sidecar_schema}, public;",
            db.name
        )
    };
    db.client()
        .await
        .batch_execute(&format!(
            "{setup} CREATE TABLE public.items (id bigint PRIMARY KEY, user_id text, title text NOT NULL, deleted_at timestamptz); \
             CREATE PUBLICATION sluice_pub FOR ALL TABLES;"
        ))
        .await
        .unwrap();
    // A new session, which has the database's search_path.
    let client = db.client().await;
    let mut sluice = started(&db, RunOpts::default()).await;
    write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'a')",
    )
    .await;
    let floor = write(&client, "UPDATE items SET title = 'b' WHERE id = 1").await;
    wait_persisted(&client, floor, &mut sluice).await;
    // Let the sink's own commit come back through the publication first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = stored_position(&client).await;
    // Let a few more status intervals pass: a feedback loop would keep adding rows, or keep
    // committing the LSN of the sink's own transactions.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stored_position(&client).await, before);
    assert_eq!(
        changelog(&client).await,
        vec![e("user:u1", "items", "1", 1), e("user:u1", "items", "1", 2)]
    );
    if !sidecar_schema.is_empty() {
        let located: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'sync_changelog'",
                &[&sidecar_schema],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            located, 1,
            "the sidecar tables are in schema {sidecar_schema}"
        );
    }
    let log = sluice.log_text();
    assert!(
        !log.contains("snapshot of table started table=\"sluice."),
        "{log}"
    );
}

/// The stored LSN and its `updated_at`, as text (`updated_at` moves with every sink commit).
async fn stored_position(client: &tokio_postgres::Client) -> (i64, String) {
    let row = client
        .query_one(
            "SELECT confirmed_lsn, updated_at::text FROM sync_wal_position",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// PostgreSQL 14's pgoutput sends every transaction of the database, even those that change
/// nothing published (15 skips them): the sink's own commits among them. Storing their LSN was
/// itself a sink commit, which came back the same way, so an idle sluice committed to the sink
/// in a loop. A transaction without published changes stores nothing; the server learns its
/// LSN without a sink write. The same assertion holds, and runs, on every version.
#[tokio::test(flavor = "multi_thread")]
async fn transactions_without_published_changes_do_not_commit_to_the_sink() {
    let db = pg::cluster().create_db("run_emptytx").await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "{ITEMS} CREATE TABLE unpublished (id int PRIMARY KEY);"
        ))
        .await
        .unwrap();
    let mut sluice = started(&db, RunOpts::default()).await;
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'a')",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    let before = stored_position(&client).await;
    let unpublished = write(&client, "INSERT INTO unpublished VALUES (1)").await;
    // A feedback loop commits every few milliseconds; 1.5 s is many rounds of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(stored_position(&client).await, before);
    // The slot still moves past the unpublished transaction, so it pins no WAL.
    let slot = crate::support::slot_for(&db);
    wait_for(
        "the slot to confirm past the unpublished transaction",
        Duration::from_secs(60),
        &mut sluice,
        || async {
            client
                .query_one(
                    "SELECT (confirmed_flush_lsn - '0/0')::int8 FROM pg_replication_slots \
                     WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                > unpublished
        },
    )
    .await;
    assert_eq!(stored_position(&client).await, before);
    assert!(sluice.is_running());
    assert_eq!(
        changelog(&client).await,
        vec![e("user:u1", "items", "1", 1)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_url_writes_the_sidecar_into_another_database() {
    let cluster = pg::cluster();
    let db = cluster.create_db("run_src").await;
    let sink_db = cluster.create_db("run_sink").await;
    let client = db.client().await;
    let sink = sink_db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    client
        .batch_execute("INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'a')")
        .await
        .unwrap();
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            extra_args: vec!["--sink-url".into(), sink_db.url.clone()],
            ..Default::default()
        },
    );
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (2, 'u2', 'b')",
    )
    .await;
    wait_persisted(&sink, floor, &mut sluice).await;
    assert_eq!(
        changelog(&sink).await,
        vec![e("user:u1", "items", "1", 1), e("user:u2", "items", "2", 1)]
    );
    let in_source: i64 = count(
        &client,
        "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sync_%'",
    )
    .await;
    assert_eq!(in_source, 0, "no sidecar tables in the source database");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letter_records_the_failure_and_goes_on() {
    let db = pg::cluster().create_db("run_deadletter").await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("panic-on-value"), RunOpts::default());
    let floor = write(&client, "INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'a'), (2, 'u2', 'panic'), (3, 'u3', 'c')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        changelog(&client).await,
        vec![
            e("id:Value::Int(1)", "items", "1", 1),
            e("id:Value::Int(3)", "items", "3", 1)
        ]
    );
    let row = client
        .query_one("SELECT table_name, record_id, operation, payload->'new'->>'title', error_text FROM sync_rule_failures", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "items");
    assert_eq!(row.get::<_, String>(1), "2");
    assert_eq!(row.get::<_, i16>(2), 1);
    assert_eq!(row.get::<_, String>(3), "panic");
    let error: String = row.get(4);
    assert!(!error.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn halt_stops_before_the_failed_transaction_is_stored() {
    let db = pg::cluster().create_db("run_halt").await;
    let client = db.client().await;
    client.batch_execute(ITEMS).await.unwrap();
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("panic-on-value"),
        RunOpts {
            extra_args: vec!["--failure-policy".into(), "halt".into()],
            ..Default::default()
        },
    );
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'a')",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    let before = crate::support::stored_lsn(&client).await;
    write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (2, 'u2', 'panic')",
    )
    .await;
    let status = sluice.wait(Duration::from_secs(60));
    assert!(!status.success());
    let log = sluice.log_text();
    assert!(log.contains("rules failed on items key 2 at LSN"), "{log}");
    assert!(log.contains("Policy is halt"), "{log}");
    assert_eq!(
        crate::support::stored_lsn(&client).await,
        before,
        "the LSN must not advance past the failure"
    );
    assert_eq!(
        changelog(&client).await,
        vec![e("id:Value::Int(1)", "items", "1", 1)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_publication_does_not_pin_wal_while_other_tables_are_busy() {
    let db = pg::cluster().create_db("run_idle").await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "{ITEMS} CREATE TABLE busy (id serial PRIMARY KEY, v text);"
        ))
        .await
        .unwrap();
    let mut sluice = started(
        &db,
        RunOpts {
            config_toml: Some("status_interval_ms = 200\n".into()),
            ..Default::default()
        },
    )
    .await;
    let slot_lsn = || async {
        count(&client, &format!("SELECT (confirmed_flush_lsn - '0/0')::int8 FROM pg_replication_slots WHERE slot_name = '{}'", crate::support::slot_for(&db))).await
    };
    let first = slot_lsn().await;
    for _ in 0..20 {
        client
            .batch_execute(
                "INSERT INTO busy (v) SELECT repeat('x', 1000) FROM generate_series(1, 200)",
            )
            .await
            .unwrap();
    }
    let written = count(&client, "SELECT (pg_current_wal_lsn() - '0/0')::int8").await;
    wait_for(
        "confirmed_flush_lsn to pass the unpublished writes",
        Duration::from_secs(60),
        &mut sluice,
        || async { slot_lsn().await >= written },
    )
    .await;
    assert!(slot_lsn().await > first);
    assert_eq!(changelog(&client).await, vec![]);
}
