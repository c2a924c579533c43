//! One table, one name; one row, one set of memberships, across catalog changes (issue 12,
//! kind 5): a renamed table's memberships move to its new name (the changelog deletes each under
//! the old name and inserts it under the new one), whether sluice was running or stopped, and
//! two different tables never share a `table_name`.

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

/// `sluice_relations` as (table_name, the relation's current name in the catalog).
async fn recorded_names(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT r.table_name, c.oid::regclass::text FROM sluice_relations r \
             JOIN pg_class c ON c.oid = r.relation_oid ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.into(), b.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_renamed_while_streaming_keeps_one_set_of_memberships() {
    let db = pg::cluster().create_db("names_rename").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, user_id text, title text); \
             CREATE PUBLICATION sluice_pub FOR TABLE items; \
             INSERT INTO items VALUES (1, 'u1', 'a'), (2, 'u2', 'b');",
        )
        .await
        .unwrap();
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

    // The example.
    write(&client, "ALTER TABLE items RENAME TO things").await;
    write(&client, "UPDATE things SET user_id = 'u3' WHERE id = 1").await;
    let floor = write(&client, "DELETE FROM things WHERE id = 2").await;
    // Persisted before the next rename: changes are stored under the table's name as the
    // catalog gives it when sluice reads them, which would otherwise already be the next one.
    wait_persisted(&client, floor, &mut sluice).await;
    // A move to another schema, with a change in the same transaction as the DDL.
    let floor = write(
        &client,
        "CREATE SCHEMA archive; ALTER TABLE things SET SCHEMA archive; \
         INSERT INTO archive.things VALUES (4, 'u4', 'd')",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    // A re-bucketing pass reads the table as the snapshot does (under its current name, through
    // the filter): nothing moves.
    rebucket_all(&admin);

    assert_eq!(
        changelog(&client).await,
        vec![
            // Snapshot.
            e("user:u1", "items", "1", 1),
            e("user:u2", "items", "2", 1),
            // The rename, at the first change after it.
            e("user:u1", "items", "1", 3),
            e("user:u1", "things", "1", 1),
            e("user:u2", "items", "2", 3),
            e("user:u2", "things", "2", 1),
            e("user:u1", "things", "1", 3),
            e("user:u3", "things", "1", 1),
            e("user:u2", "things", "2", 3),
            // The schema move.
            e("user:u3", "things", "1", 3),
            e("user:u3", "archive.things", "1", 1),
            e("user:u4", "archive.things", "4", 1),
        ]
    );
    assert_eq!(
        edges(&client).await,
        vec![
            edge("archive.things", "1", "user:u3"),
            edge("archive.things", "4", "user:u4"),
        ]
    );
    assert_eq!(
        recorded_names(&client).await,
        vec![pair("archive.things", "archive.things")]
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_renamed_while_stopped_move_at_start_even_when_names_are_swapped() {
    let db = pg::cluster().create_db("names_stopped").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, user_id text, title text); \
             CREATE TABLE a (id int PRIMARY KEY, user_id text); \
             CREATE TABLE b (id int PRIMARY KEY, user_id text); \
             CREATE PUBLICATION sluice_pub FOR TABLE items, a, b; \
             INSERT INTO items VALUES (1, 'u1', 'x'); \
             INSERT INTO a VALUES (1, 'ua'), (2, NULL); INSERT INTO b VALUES (1, 'ub'), (2, NULL);",
        )
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    assert!(sluice.stop().success(), "{}", sluice.log_text());

    // A change the stream has not delivered yet, then the renames.
    write(&client, "UPDATE items SET title = 'y' WHERE id = 1").await;
    write(
        &client,
        "ALTER TABLE items RENAME TO things; \
         ALTER TABLE a RENAME TO tmp; ALTER TABLE b RENAME TO a; ALTER TABLE tmp RENAME TO b;",
    )
    .await;
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    let floor = write(&client, "UPDATE b SET user_id = 'ua2' WHERE id = 1").await;
    wait_persisted(&client, floor, &mut sluice).await;

    assert_eq!(
        changelog(&client).await,
        vec![
            // Snapshot.
            e("user:ua", "a", "1", 1),
            e("global", "a", "2", 1),
            e("user:ub", "b", "1", 1),
            e("global", "b", "2", 1),
            e("user:u1", "items", "1", 1),
            // At start, every renamed table at once: a's rows go to b and b's to a, including
            // the two rows whose record id and bucket are the same in both.
            e("user:ua", "a", "1", 3),
            e("user:ua", "b", "1", 1),
            e("global", "a", "2", 3),
            e("global", "b", "2", 1),
            e("user:ub", "b", "1", 3),
            e("user:ub", "a", "1", 1),
            e("global", "b", "2", 3),
            e("global", "a", "2", 1),
            e("user:u1", "items", "1", 3),
            e("user:u1", "things", "1", 1),
            // The update made before the rename is under the table's one name.
            e("user:u1", "things", "1", 2),
            e("user:ua", "b", "1", 3),
            e("user:ua2", "b", "1", 1),
        ]
    );
    assert_eq!(
        edges(&client).await,
        vec![
            edge("a", "1", "user:ub"),
            edge("a", "2", "global"),
            edge("b", "1", "user:ua2"),
            edge("b", "2", "global"),
            edge("things", "1", "user:u1"),
        ]
    );
    assert_eq!(
        recorded_names(&client).await,
        vec![pair("a", "a"), pair("b", "b"), pair("things", "things")]
    );
    // The renamed tables' snapshot progress moved with them: none is taken for a table that
    // joined the publication and walked again (which would race the stream's change to it).
    let log = sluice.log_text();
    assert!(!log.contains("published but not snapshotted"), "{log}");
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_and_table_names_with_dots_and_quotes_never_collide() {
    let db = pg::cluster().create_db("names_distinct").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE SCHEMA \"a.b\"; CREATE SCHEMA a; CREATE SCHEMA \"q\"\"s\"; \
             CREATE TABLE \"a.b\".c (id int PRIMARY KEY, user_id text); \
             CREATE TABLE a.\"b.c\" (id int PRIMARY KEY, user_id text); \
             CREATE TABLE a.b (id int PRIMARY KEY, user_id text); \
             CREATE TABLE public.\"a.b\" (id int PRIMARY KEY, user_id text); \
             CREATE TABLE \"q\"\"s\".\"T \"\"1\"\"\" (id int PRIMARY KEY, user_id text); \
             CREATE TABLE public.\"Items\" (id int PRIMARY KEY, user_id text); \
             CREATE TABLE \"a.b\".d (id int PRIMARY KEY, user_id bool); \
             CREATE PUBLICATION sluice_pub FOR TABLE \"a.b\".c, a.\"b.c\", a.b, public.\"a.b\", \
                 \"q\"\"s\".\"T \"\"1\"\"\", public.\"Items\", \"a.b\".d; \
             INSERT INTO \"a.b\".c VALUES (1, 'u1'); INSERT INTO a.\"b.c\" VALUES (1, 'u1'); \
             INSERT INTO a.b VALUES (1, 'u1'); INSERT INTO public.\"a.b\" VALUES (1, 'u1'); \
             INSERT INTO \"q\"\"s\".\"T \"\"1\"\"\" VALUES (1, 'u1'); \
             INSERT INTO public.\"Items\" VALUES (1, 'u1');",
        )
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    let floor = write(
        &client,
        "INSERT INTO \"a.b\".c VALUES (2, 'u2'); INSERT INTO a.\"b.c\" VALUES (2, 'u2'); \
         INSERT INTO a.b VALUES (2, 'u2'); INSERT INTO public.\"a.b\" VALUES (2, 'u2'); \
         INSERT INTO \"q\"\"s\".\"T \"\"1\"\"\" VALUES (2, 'u2'); \
         INSERT INTO public.\"Items\" VALUES (2, 'u2'); INSERT INTO \"a.b\".d VALUES (2, true);",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;

    let names = [
        "\"a.b\"",
        "\"a.b\".c",
        "\"q\"\"s\".\"T \"\"1\"\"\"",
        "Items",
        "a.\"b.c\"",
        "a.b",
    ];
    let mut expected = Vec::new();
    for name in names {
        expected.push(edge(name, "1", "user:u1"));
        expected.push(edge(name, "2", "user:u2"));
    }
    // Sorted here: the database's collation would order the punctuation its own way.
    let mut stored = edges(&client).await;
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected);
    // The rules see the same name (by-owner names the table in its error for a bool user_id).
    let failures: Vec<(String, String)> = client
        .query("SELECT table_name, error_text FROM sync_rule_failures", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        failures,
        vec![pair(
            "\"a.b\".d",
            "\"a.b\".d: user_id must be text or an integer, got Value::Bool(true)"
        )]
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn names_swapped_while_streaming_move_together() {
    let db = pg::cluster().create_db("names_swap").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE SCHEMA billing; \
             CREATE TABLE a (id int PRIMARY KEY, user_id text); \
             CREATE TABLE b (id int PRIMARY KEY, user_id text); \
             CREATE TABLE billing.invoices (id int PRIMARY KEY, user_id text); \
             CREATE PUBLICATION sluice_pub FOR TABLE a, b, billing.invoices; \
             INSERT INTO a VALUES (1, 'ua'); INSERT INTO b VALUES (1, 'ub'); \
             INSERT INTO billing.invoices VALUES (1, 'ui');",
        )
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    write(
        &client,
        "ALTER TABLE a RENAME TO tmp; ALTER TABLE b RENAME TO a; ALTER TABLE tmp RENAME TO b",
    )
    .await;
    // A change to the table now called `a` (b's rows): both tables' memberships move at once.
    write(&client, "UPDATE a SET user_id = 'ub2' WHERE id = 1").await;
    let floor = write(&client, "UPDATE b SET user_id = 'ua2' WHERE id = 1").await;
    wait_persisted(&client, floor, &mut sluice).await;
    // A renamed schema renames its tables.
    write(&client, "ALTER SCHEMA billing RENAME TO accounts").await;
    let floor = write(
        &client,
        "UPDATE accounts.invoices SET user_id = 'ui2' WHERE id = 1",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;

    assert_eq!(
        changelog(&client).await,
        vec![
            // Snapshot, by schema and table.
            e("user:ui", "billing.invoices", "1", 1),
            e("user:ua", "a", "1", 1),
            e("user:ub", "b", "1", 1),
            e("user:ua", "a", "1", 3),
            e("user:ua", "b", "1", 1),
            e("user:ub", "b", "1", 3),
            e("user:ub", "a", "1", 1),
            e("user:ub", "a", "1", 3),
            e("user:ub2", "a", "1", 1),
            e("user:ua", "b", "1", 3),
            e("user:ua2", "b", "1", 1),
            e("user:ui", "billing.invoices", "1", 3),
            e("user:ui", "accounts.invoices", "1", 1),
            e("user:ui", "accounts.invoices", "1", 3),
            e("user:ui2", "accounts.invoices", "1", 1),
        ]
    );
    assert_eq!(
        edges(&client).await,
        vec![
            edge("a", "1", "user:ub2"),
            edge("accounts.invoices", "1", "user:ui2"),
            edge("b", "1", "user:ua2"),
        ]
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}
