//! The snapshot holds exactly what the publication publishes (issue 12, kind 3): rows outside a
//! row filter are never synced, and the rules see the same columns in the snapshot as in the
//! stream, whatever leaves a column out of the stream (a column list, a generated column).
//!
//! Row filters and column lists exist from PostgreSQL 15, streamed generated columns from 18:
//! each test reads the server's version and asserts what that version does, including the
//! server refusing the syntax it does not have.

use crate::pg;
use crate::support::{
    Entry, RunOpts, Sluice, changelog, edges, free_admin_addr, rebucket_all, wait_persisted,
    wait_snapshot, write,
};
use crate::wasm;

fn e(bucket: &str, table: &str, id: &str, op: i16) -> Entry {
    (bucket.into(), table.into(), id.into(), op)
}

fn edge(table: &str, id: &str, bucket: &str) -> (String, String, String) {
    (table.into(), id.into(), bucket.into())
}

async fn server_version(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .unwrap()
        .get(0)
}

/// The SQLSTATE of a statement the server refuses.
async fn refused(client: &tokio_postgres::Client, sql: &str) -> String {
    let error = client
        .batch_execute(sql)
        .await
        .expect_err("the server accepted it");
    error.code().expect("a server error").code().to_owned()
}

/// The warnings sluice logged about columns the stream does not carry, without colours.
fn unstreamed_warnings(sluice: &Sluice) -> Vec<String> {
    sluice
        .log_text()
        .lines()
        .filter(|l| l.contains("the stream does not carry these columns"))
        .map(strip_ansi)
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ ... m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_outside_the_row_filter_are_never_synced() {
    let db = pg::cluster().create_db("pub_rowfilter").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, user_id text, title text); \
             CREATE TABLE notes (id int PRIMARY KEY, user_id text, hidden bool NOT NULL); \
             ALTER TABLE notes REPLICA IDENTITY FULL; \
             INSERT INTO items VALUES (1, 'u1', 'a'), (150, 'secret1', 'b'); \
             INSERT INTO notes VALUES (1, 'u1', false), (2, 'secret2', true);",
        )
        .await
        .unwrap();
    let publication = "CREATE PUBLICATION sluice_pub FOR TABLE items WHERE (id < 100), \
                       notes WHERE (NOT hidden)";
    if server_version(&client).await < 150000 {
        // PostgreSQL 14 has no row filters: the WHERE is a syntax error.
        assert_eq!(refused(&client, publication).await, "42601");
        return;
    }
    client.batch_execute(publication).await.unwrap();
    let admin = free_admin_addr();
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            config_toml: Some(format!("admin_addr = \"{admin}\"\n")),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;

    write(&client, "INSERT INTO items VALUES (151, 'secret3', 'c')").await;
    write(&client, "INSERT INTO items VALUES (2, 'u2', 'd')").await;
    // Out of the filter: PostgreSQL sends the update as a delete of the old row.
    write(&client, "UPDATE items SET id = 160 WHERE id = 2").await;
    // Into the filter: sent as an insert of the new row.
    write(&client, "UPDATE items SET id = 3 WHERE id = 150").await;
    // Outside before and after: nothing is sent.
    write(&client, "UPDATE items SET title = 'x' WHERE id = 151").await;
    // A filter on a non-key column (the replica identity is FULL, so the old row is known).
    write(&client, "UPDATE notes SET hidden = true WHERE id = 1").await;
    write(&client, "UPDATE notes SET hidden = false WHERE id = 2").await;
    // Note 1 is hidden: its delete is not published either.
    write(&client, "DELETE FROM notes WHERE id = 1").await;
    let floor = write(&client, "DELETE FROM notes WHERE id = 2").await;
    wait_persisted(&client, floor, &mut sluice).await;
    // A re-bucketing pass reads the table as the snapshot does (under its current name, through
    // the filter): nothing moves.
    rebucket_all(&admin);

    assert_eq!(
        changelog(&client).await,
        vec![
            // Snapshot: row 150 and note 2 are outside the filters.
            e("user:u1", "items", "1", 1),
            e("user:u1", "notes", "1", 1),
            // Stream.
            e("user:u2", "items", "2", 1),
            e("user:u2", "items", "2", 3),
            e("user:secret1", "items", "3", 1),
            e("user:u1", "notes", "1", 3),
            e("user:secret2", "notes", "2", 1),
            e("user:secret2", "notes", "2", 3),
        ]
    );
    assert_eq!(
        edges(&client).await,
        vec![
            edge("items", "1", "user:u1"),
            edge("items", "3", "user:secret1"),
        ]
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_column_list_hides_the_same_columns_from_snapshot_and_stream() {
    let db = pg::cluster().create_db("pub_collist").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, user_id text, title text); \
             INSERT INTO docs VALUES (1, 'u1', 'a');",
        )
        .await
        .unwrap();
    let publication = "CREATE PUBLICATION sluice_pub FOR TABLE docs (id, title)";
    if server_version(&client).await < 150000 {
        // PostgreSQL 14 has no column lists: the list is a syntax error.
        assert_eq!(refused(&client, publication).await, "42601");
        return;
    }
    client.batch_execute(publication).await.unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    write(&client, "UPDATE docs SET title = 'a2' WHERE id = 1").await;
    let floor = write(&client, "INSERT INTO docs VALUES (2, 'u2', 'b')").await;
    wait_persisted(&client, floor, &mut sluice).await;

    // by-owner buckets a table without user_id in `global`, in the snapshot as in the stream.
    assert_eq!(
        changelog(&client).await,
        vec![
            e("global", "docs", "1", 1),
            e("global", "docs", "1", 2),
            e("global", "docs", "2", 1),
        ]
    );
    let warnings = unstreamed_warnings(&sluice);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("table=docs") && warnings[0].contains("columns=\"user_id\""),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains(" WARN "),
        "logged at warn level: {warnings:?}"
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

/// The example: `user_id` generated from `owner_email`. `publish` is the publication's
/// `WITH` clause, if any.
async fn generated_column_run(db_name: &str, publish: &str) -> (Vec<Entry>, Vec<String>) {
    let db = pg::cluster().create_db(db_name).await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id int PRIMARY KEY, owner_email text, \
                 user_id text GENERATED ALWAYS AS (split_part(owner_email, '@', 1)) STORED, title text); \
             CREATE PUBLICATION sluice_pub FOR TABLE items {publish}; \
             INSERT INTO items (id, owner_email, title) VALUES (1, 'alice@example.com', 'a');"
        ))
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    write(&client, "UPDATE items SET title = 'a2' WHERE id = 1").await;
    let floor = write(
        &client,
        "INSERT INTO items (id, owner_email, title) VALUES (2, 'bob@example.com', 'b')",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    let warnings = unstreamed_warnings(&sluice);
    assert!(sluice.stop().success(), "{}", sluice.log_text());
    (changelog(&client).await, warnings)
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_columns_are_shown_to_the_rules_exactly_when_the_stream_carries_them() {
    let version = server_version(&pg::cluster().admin_client().await).await;
    // Without publish_generated_columns (before 18 there is no such thing), the stream never
    // carries `user_id`: the rules see the row without it from the snapshot on.
    let (entries, warnings) = generated_column_run("pub_gen_default", "").await;
    assert_eq!(
        entries,
        vec![
            e("global", "items", "1", 1),
            e("global", "items", "1", 2),
            e("global", "items", "2", 1),
        ]
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("table=items") && warnings[0].contains("columns=\"user_id\""),
        "{warnings:?}"
    );

    let with_stored = "WITH (publish_generated_columns = stored)";
    if version < 180000 {
        let db = pg::cluster().create_db("pub_gen_refused").await;
        let client = db.client().await;
        client
            .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
            .await
            .unwrap();
        // "unrecognized publication parameter", raised as a syntax error.
        assert_eq!(
            refused(
                &client,
                &format!("CREATE PUBLICATION p FOR TABLE t {with_stored}")
            )
            .await,
            "42601"
        );
        return;
    }
    // 18 streams them when the publication says so: the rules see `user_id` everywhere.
    let (entries, warnings) = generated_column_run("pub_gen_stored", with_stored).await;
    assert_eq!(
        entries,
        vec![
            e("user:alice", "items", "1", 1),
            e("user:alice", "items", "1", 2),
            e("user:bob", "items", "2", 1),
        ]
    );
    assert_eq!(warnings, Vec::<String>::new());
}
