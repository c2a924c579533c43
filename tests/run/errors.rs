//! Bad input gets one clear line and loses nothing.

use std::time::Duration;

use crate::pg::{self, Cluster, ClusterOptions};
use crate::support::{RunOpts, Sluice, changelog};
use crate::wasm;

/// Runs sluice to its exit and returns its log, asserting a non-zero exit.
fn fails(db: &pg::TestDb, module: &std::path::Path, opts: RunOpts) -> String {
    let mut sluice = Sluice::start(db, module, opts);
    let status = sluice.wait(Duration::from_secs(60));
    let log = sluice.log_text();
    assert!(!status.success(), "sluice should have failed; log:\n{log}");
    log
}

fn error_line(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn table_without_primary_key_is_refused_with_the_fix() {
    let db = pg::cluster().create_db("err_nopk").await;
    db.client()
        .await
        .batch_execute("CREATE TABLE notes (body text, user_id text); CREATE PUBLICATION sluice_pub FOR TABLE notes;")
        .await
        .unwrap();
    let log = fails(&db, &wasm::module("by-owner"), RunOpts::default());
    assert_eq!(
        error_line(&log),
        "error: table notes has no primary key: sluice identifies rows by their key. Add one with `ALTER TABLE notes ADD PRIMARY KEY (...)`, or remove the table from the publication"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_identity_nothing_is_refused_with_the_fix() {
    let db = pg::cluster().create_db("err_rinothing").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, user_id text); ALTER TABLE items REPLICA IDENTITY NOTHING; \
             CREATE PUBLICATION sluice_pub FOR TABLE items;",
        )
        .await
        .unwrap();
    let log = fails(&db, &wasm::module("by-owner"), RunOpts::default());
    assert_eq!(
        error_line(&log),
        "error: table items has REPLICA IDENTITY NOTHING, so PostgreSQL does not send which row an update or delete touched: run `ALTER TABLE items REPLICA IDENTITY DEFAULT;`"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_publication_is_refused_with_the_fix() {
    let db = pg::cluster().create_db("err_nopub").await;
    let log = fails(&db, &wasm::module("by-owner"), RunOpts::default());
    let line = error_line(&log);
    assert!(
        line.starts_with(
            "error: publication \"sluice_pub\" does not exist in database \"err_nopub"
        ),
        "{line}"
    );
    assert!(
        line.contains("CREATE PUBLICATION sluice_pub FOR TABLE"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_module_is_refused_before_connecting() {
    let db = pg::cluster().create_db("err_nomodule").await;
    let log = fails(
        &db,
        std::path::Path::new("/nonexistent/rules.wasm"),
        RunOpts::default(),
    );
    let line = error_line(&log);
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains("/nonexistent/rules.wasm"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_config_key_is_refused_with_its_name() {
    let db = pg::cluster().create_db("err_config").await;
    let log = fails(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            config_toml: Some("[batch]\nmax_rowz = 3\n".into()),
            ..Default::default()
        },
    );
    let line = error_line(&log);
    assert!(
        line.contains("is invalid") && line.contains("unknown field `max_rowz`"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_level_replica_is_refused_with_the_fix() {
    let cluster = Cluster::start(ClusterOptions {
        settings: vec![("wal_level".into(), "replica".into())],
        ..Default::default()
    });
    let db = cluster.create_db("err_wal").await;
    db.client()
        .await
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, user_id text); CREATE PUBLICATION sluice_pub FOR TABLE items;")
        .await
        .unwrap();
    let log = fails(&db, &wasm::module("by-owner"), RunOpts::default());
    assert_eq!(
        error_line(&log),
        "error: wal_level is \"replica\" on the source server; logical replication needs `wal_level = logical` in postgresql.conf (or `ALTER SYSTEM SET wal_level = logical;`) and a server restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_slot_is_fatal_with_how_to_resnapshot_and_keeps_the_changelog() {
    let db = pg::cluster().create_db("err_dropslot").await;
    let client = db.client().await;
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, user_id text); CREATE PUBLICATION sluice_pub FOR TABLE items; INSERT INTO items VALUES (1, 'u1');")
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    crate::support::wait_snapshot(&client, &mut sluice).await;
    assert!(sluice.stop().success());
    let slot = crate::support::slot_for(&db);
    client
        .batch_execute(&format!("SELECT pg_drop_replication_slot('{slot}')"))
        .await
        .unwrap();
    let log = fails(&db, &wasm::module("by-owner"), RunOpts::default());
    let line = error_line(&log);
    assert!(line.starts_with(&format!("error: replication slot \"{slot}\" no longer exists, but sync_wal_position says changes up to ")), "{line}");
    assert!(
        line.contains(&format!(
            "DELETE FROM sync_wal_position WHERE slot_name = '{slot}'"
        )),
        "{line}"
    );
    assert_eq!(
        changelog(&client).await.len(),
        1,
        "nothing already written is lost"
    );
}

/// Settings that make no sense are refused at start, by `sluice run` itself, with the key and
/// its range, before anything connects: no sidecar table, no slot.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_range_settings_are_refused_with_the_key_and_range() {
    let db = pg::cluster().create_db("err_ranges").await;
    let cases = [
        (
            "[rules]\nmax_buckets_per_change = 0\n",
            "rules.max_buckets_per_change = 0 is out of range: it must be between 1 and 10000",
        ),
        (
            "[reload]\nrollback_error_rate = nan\n",
            "reload.rollback_error_rate = nan is not a number: it must be between 0.0 and 1.0 (the share of failed changes that rolls a new version back)",
        ),
        (
            "[reload]\nrollback_error_rate = 7.0\n",
            "reload.rollback_error_rate = 7.0 is out of range: it must be between 0.0 and 1.0 (the share of failed changes that rolls a new version back)",
        ),
        (
            "status_interval_ms = 0\n",
            "status_interval_ms = 0 is out of range: it must be between 100 and 3600000 milliseconds; keep it well below the server's wal_sender_timeout",
        ),
        (
            "[batch]\nmax_delay_ms = 18446744073709551615\n",
            "batch.max_delay_ms = 18446744073709551615 is out of range: it must be between 0 and 3600000 milliseconds",
        ),
        (
            "[rules]\nbatch_size = 10000000\n",
            "rules.batch_size = 10000000 is out of range: it must be between 1 and 65536 changes; a batch is copied into one module instance's memory, so a larger one cannot fit",
        ),
        (
            "[rules]\nmemory_mib = 0\n",
            "rules.memory_mib = 0 is out of range: it must be between 1 and 4096 MiB (a module's 32-bit memory holds at most 4 GiB)",
        ),
    ];
    for (toml, message) in cases {
        let log = fails(
            &db,
            &wasm::module("by-owner"),
            RunOpts {
                config_toml: Some(toml.into()),
                ..Default::default()
            },
        );
        assert_eq!(error_line(&log), format!("error: {message}"), "{toml}");
    }
    let client = db.client().await;
    let slots: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0, "a slot was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_identity_index_without_the_primary_key_is_refused_with_the_fix() {
    let db = pg::cluster().create_db("err_riindex").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL UNIQUE, user_id text); \
             ALTER TABLE items REPLICA IDENTITY USING INDEX items_code_key; \
             CREATE PUBLICATION sluice_pub FOR TABLE items;",
        )
        .await
        .unwrap();
    let log = fails(&db, &wasm::module("by-owner"), RunOpts::default());
    assert_eq!(
        error_line(&log),
        "error: table items has REPLICA IDENTITY USING INDEX items_code_key, which leaves out primary key column id: its deletes would not say which row they removed. Run `ALTER TABLE items REPLICA IDENTITY DEFAULT;` (or FULL)"
    );
    assert!(
        !log.contains("created replication slot"),
        "refused before anything is created:\n{log}"
    );
}

async fn server_version(db: &pg::TestDb) -> i32 {
    db.client()
        .await
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn primary_key_left_out_of_the_column_list_is_refused_with_the_fix() {
    let db = pg::cluster().create_db("err_collist").await;
    // Column lists exist from PostgreSQL 15 on; before, every column is published.
    if server_version(&db).await < 150000 {
        return;
    }
    db.client()
        .await
        .batch_execute(
            "CREATE SCHEMA app; \
             CREATE TABLE app.\"Items\" (id int, org text, user_id text, PRIMARY KEY (org, id)); \
             CREATE PUBLICATION \"Pub\" FOR TABLE app.\"Items\" (user_id, id);",
        )
        .await
        .unwrap();
    let log = fails(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            publication: Some("Pub".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        error_line(&log),
        "error: publication \"Pub\" does not publish primary key column org of table app.Items, so its changes cannot be tied to a row: publish the table with a column list that includes the key, or with none (`ALTER PUBLICATION \"Pub\" DROP TABLE app.\"Items\"; ALTER PUBLICATION \"Pub\" ADD TABLE app.\"Items\";`)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_primary_key_column_is_refused_with_the_fix() {
    let db = pg::cluster().create_db("err_genkey").await;
    db.client()
        .await
        .batch_execute(
            "CREATE TABLE items (n int, id int GENERATED ALWAYS AS (n * 2) STORED PRIMARY KEY, user_id text); \
             CREATE PUBLICATION sluice_pub FOR TABLE items;",
        )
        .await
        .unwrap();
    let log = fails(&db, &wasm::module("by-owner"), RunOpts::default());
    let expected = if server_version(&db).await >= 180000 {
        "error: primary key column id of table items is generated, and the publication does not publish generated columns, so its changes cannot be tied to a row: `ALTER PUBLICATION sluice_pub SET (publish_generated_columns = stored);`"
    } else {
        "error: primary key column id of table items is generated, and PostgreSQL before 18 never streams generated columns, so its changes cannot be tied to a row: key the table by ordinary columns, or use PostgreSQL 18 with publish_generated_columns = stored"
    };
    assert_eq!(error_line(&log), expected);
}
