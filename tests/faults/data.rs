//! Hostile data through snapshot and stream: names that need quoting, NaN and infinity (also as
//! keys), arrays of composites, 1,600 columns, and a 20 MB value (100 MB with
//! SLUICE_LONG_FAULTS=1).

use std::time::Duration;

use crate::pg;
use crate::support::{RunOpts, Sluice, changelog, count, wait_persisted, wait_snapshot, write};
use crate::wasm;

fn entry(bucket: &str, table: &str, record: &str, op: i16) -> crate::support::Entry {
    (bucket.into(), table.into(), record.into(), op)
}

#[tokio::test(flavor = "multi_thread")]
async fn names_that_need_quoting_work_in_snapshot_and_stream() {
    let db = pg::cluster().create_db("data_quoting").await;
    let client = db.client().await;
    client
        .batch_execute(
            r#"CREATE SCHEMA "My ""Odd"" Schema";
            CREATE TABLE "My ""Odd"" Schema"."Select Ünïcode ""T""" (
                "Order" int, "user id" text, user_id text, "KEY; DROP" text,
                PRIMARY KEY ("Order", "KEY; DROP"));
            CREATE TABLE "UPPER" ("Id" int PRIMARY KEY, user_id text);
            INSERT INTO "My ""Odd"" Schema"."Select Ünïcode ""T""" VALUES (1, 'a', 'u1', 'k''1'), (2, 'b', 'u2', 'k"2');
            INSERT INTO "UPPER" VALUES (1, 'u3');
            CREATE PUBLICATION "Pub ""X""" FOR TABLE "My ""Odd"" Schema"."Select Ünïcode ""T""", "UPPER";"#,
        )
        .await
        .unwrap();
    let opts = RunOpts {
        publication: Some("Pub \"X\"".into()),
        config_toml: Some("[snapshot]\nchunk_rows = 1\n".into()),
        ..Default::default()
    };
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), opts);
    wait_snapshot(&client, &mut sluice).await;
    let floor = write(
        &client,
        r#"INSERT INTO "My ""Odd"" Schema"."Select Ünïcode ""T""" VALUES (3, 'c', 'u1', 'k,3');
        UPDATE "My ""Odd"" Schema"."Select Ünïcode ""T""" SET user_id = 'u9' WHERE "Order" = 1;
        DELETE FROM "My ""Odd"" Schema"."Select Ünïcode ""T""" WHERE "Order" = 2;
        UPDATE "UPPER" SET "Id" = 2 WHERE "Id" = 1;"#,
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    // Parts containing `"` (or `.`) are quoted as quote_ident does, so no two tables share a name.
    let t = r#""My ""Odd"" Schema"."Select Ünïcode ""T""""#;
    let mut got = changelog(&client).await;
    // The snapshot's table order is not part of the contract: compare it as a set.
    got[..3].sort();
    assert_eq!(
        got,
        vec![
            entry("user:u1", t, r#"["1","k'1"]"#, 1),
            entry("user:u2", t, r#"["2","k\"2"]"#, 1),
            entry("user:u3", "UPPER", "1", 1),
            entry("user:u1", t, r#"["3","k,3"]"#, 1),
            entry("user:u1", t, r#"["1","k'1"]"#, 3),
            entry("user:u9", t, r#"["1","k'1"]"#, 1),
            entry("user:u2", t, r#"["2","k\"2"]"#, 3),
            entry("user:u3", "UPPER", "1", 3),
            entry("user:u3", "UPPER", "2", 1),
        ]
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_rule_failures").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nan_infinity_composite_arrays_and_nan_keys() {
    let db = pg::cluster().create_db("data_values").await;
    let client = db.client().await;
    client
        .batch_execute(
            r#"CREATE TYPE pair AS (a int, b text);
            CREATE TABLE vals (k float8 PRIMARY KEY, user_id text, n numeric, t timestamptz, d date,
                               pairs pair[], r float4);
            INSERT INTO vals VALUES
              ('NaN', 'u1', 'NaN', 'infinity', '-infinity', ARRAY[ROW(1, 'x,"y"')::pair, ROW(NULL, NULL)::pair], 'NaN'),
              ('Infinity', 'u1', 'Infinity', '-infinity', 'infinity', '{}', '-Infinity'),
              ('-Infinity', 'u1', '-Infinity', now(), now(), NULL, 'Infinity'),
              (1.5, 'u1', 1.5, now(), now(), ARRAY[ROW(2, '}{\')::pair], 0);
            CREATE PUBLICATION sluice_pub FOR TABLE vals;"#,
        )
        .await
        .unwrap();
    let opts = RunOpts {
        config_toml: Some("[snapshot]\nchunk_rows = 1\n".into()),
        ..Default::default()
    };
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), opts);
    wait_snapshot(&client, &mut sluice).await;
    let floor = write(
        &client,
        r#"UPDATE vals SET user_id = 'u2', pairs = ARRAY[ROW(3, E'\\')::pair] WHERE k = 'NaN';
        DELETE FROM vals WHERE k = '-Infinity';
        INSERT INTO vals VALUES (-0.0, 'u3', 'NaN', 'infinity', 'infinity', ARRAY[ROW(4, 'q')::pair], 'NaN');
        INSERT INTO vals (k, user_id) VALUES (1e-5, 'u3'), (1e15, 'u3'), (-2.5e300, 'u3');"#,
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        changelog(&client).await,
        vec![
            // Snapshot in key order: -Infinity < 1.5 < Infinity < NaN.
            entry("user:u1", "vals", "-Infinity", 1),
            entry("user:u1", "vals", "1.5", 1),
            entry("user:u1", "vals", "Infinity", 1),
            entry("user:u1", "vals", "NaN", 1),
            entry("user:u1", "vals", "NaN", 3),
            entry("user:u2", "vals", "NaN", 1),
            entry("user:u1", "vals", "-Infinity", 3),
            entry("user:u3", "vals", "0", 1),
            entry("user:u3", "vals", "1e-05", 1),
            entry("user:u3", "vals", "1e+15", 1),
            entry("user:u3", "vals", "-2.5e+300", 1),
        ]
    );
    // record_id is the key's text form as PostgreSQL prints it.
    let mut server: Vec<String> = client
        .query("SELECT k::text FROM vals", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    server.sort();
    let mut ours: Vec<String> = crate::support::edges(&client)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    ours.sort();
    assert_eq!(ours, server);
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_rule_failures").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_with_1600_columns() {
    let db = pg::cluster().create_db("data_wide").await;
    let client = db.client().await;
    let cols: Vec<String> = (1..=1598).map(|i| format!("c{i} int")).collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE wide (id int PRIMARY KEY, user_id text, {});
             INSERT INTO wide (id, user_id, c1598) SELECT g, 'u' || g, g FROM generate_series(1, 50) g;
             CREATE PUBLICATION sluice_pub FOR TABLE wide;",
            cols.join(", ")
        ))
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    let floor = write(
        &client,
        "INSERT INTO wide (id, user_id, c1) SELECT g, 'u' || g, g FROM generate_series(51, 100) g;
         UPDATE wide SET c700 = 7 WHERE id <= 100;",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    let mut expected: Vec<_> = (1..=100)
        .map(|i| entry(&format!("user:u{i}"), "wide", &i.to_string(), 1))
        .collect();
    expected.extend((1..=100).map(|i| entry(&format!("user:u{i}"), "wide", &i.to_string(), 2)));
    assert_eq!(changelog(&client).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_text_value_in_snapshot_and_stream() {
    let mb: i64 = if crate::long() { 100 } else { 20 };
    let db = pg::cluster().create_db("data_huge").await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE big (id int PRIMARY KEY, user_id text, body text);
             ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO big VALUES (1, 'u1', repeat('a', {mb} << 20));
             CREATE PUBLICATION sluice_pub FOR TABLE big;"
        ))
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    let floor = write(
        &client,
        &format!(
            "INSERT INTO big VALUES (2, 'u2', repeat('b', {mb} << 20));
             UPDATE big SET user_id = 'u3' WHERE id = 1;"
        ),
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        changelog(&client).await,
        vec![
            entry("user:u1", "big", "1", 1),
            entry("user:u2", "big", "2", 1),
            entry("user:u1", "big", "1", 3),
            entry("user:u3", "big", "1", 1),
        ]
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", sluice.pid())).unwrap();
    crate::report_memory(&format!("{mb} MB text value"), &status);
    assert!(sluice.stop().success());
    let _ = Duration::ZERO;
}
