//! Record ids are `key::text` under the canonical settings (issue 12, kind 2), the same from
//! the snapshot and the stream, whatever the database's own settings: every built-in type that
//! can be a primary key, checked against PostgreSQL itself as the oracle.

use std::collections::BTreeMap;

use crate::pg;
use crate::support::{
    Entry, RunOpts, Sluice, changelog, edges, wait_persisted, wait_snapshot, write,
};
use crate::wasm;

/// The canonical settings (DESIGN.md, sidecar tables): the oracle's session runs under them.
/// (`source::values::CANONICAL_SETTINGS` is sluice's copy; this one is the specification's.)
const CANONICAL: &str = "SET DateStyle = 'ISO, MDY'; SET IntervalStyle = postgres; \
    SET TimeZone = 'UTC'; SET extra_float_digits = 1; SET bytea_output = hex;";

/// (table suffix, key type, SQL literals of keys). Even-indexed keys exist before sluice starts
/// (the snapshot reads them), odd-indexed ones are inserted while it streams.
fn key_types() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    vec![
        ("int2", "int2", vec!["-32768", "0", "32767", "7"]),
        ("int4", "int4", vec!["-2147483648", "42", "2147483647"]),
        ("int8", "int8", vec!["9223372036854775807", "-1", "0"]),
        (
            "numeric",
            "numeric",
            vec![
                "1.50",
                "-0.000001",
                "123456789012345678901234567890.123",
                "'NaN'",
                "1e-20",
                "100",
            ],
        ),
        (
            "text",
            "text",
            vec![
                "'a b'",
                "'ünï'",
                "'q\"uote'",
                "''",
                "E'tab\\there'",
                "E'back\\\\slash'",
            ],
        ),
        ("varchar", "varchar(10)", vec!["'x'", "'y  '"]),
        ("bpchar", "char(6)", vec!["'ab'", "'abcdef'", "' a'"]),
        (
            "uuid",
            "uuid",
            vec![
                "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
                "'00000000-0000-0000-0000-000000000000'",
            ],
        ),
        (
            "date",
            "date",
            vec![
                "'2024-01-02'",
                "'0044-03-15 BC'",
                "'infinity'",
                "'-infinity'",
                "'10000-01-01'",
            ],
        ),
        (
            "time",
            "time",
            vec![
                "'03:04:05.678'",
                "'00:00:00'",
                "'24:00:00'",
                "'23:59:59.999999'",
            ],
        ),
        (
            "timetz",
            "timetz",
            vec!["'03:04:05+05:30'", "'03:04:05.5-08'", "'00:00:00+00'"],
        ),
        (
            "timestamp",
            "timestamp",
            vec![
                "'2024-01-02 03:04:05.678'",
                "'infinity'",
                "'-infinity'",
                "'0044-03-15 12:00:00 BC'",
                "'10000-01-01 00:00:00'",
                "'2000-01-01 00:00:00'",
            ],
        ),
        (
            "timestamptz",
            "timestamptz",
            vec![
                "'2024-01-02 03:04:05.678+00'",
                "'2024-06-30 23:59:59.999999+05:30'",
                "'infinity'",
                "'-infinity'",
                "'0044-03-15 12:00:00+00 BC'",
                "'1850-01-01 00:00:00+00'",
                "'10000-01-01 00:00:00+00'",
            ],
        ),
        (
            "interval",
            "interval",
            vec![
                "'1 day 02:00:00'",
                "'-1 mons'",
                "'1 year 2 mons 3 days 04:05:06.789'",
                "'0'",
            ],
        ),
        ("bool", "bool", vec!["true", "false"]),
        ("bytea", "bytea", vec!["'\\x00ff'", "''", "'abc'::bytea"]),
        (
            "float4",
            "float4",
            vec![
                "1.1",
                "0.1",
                "3.4028235e38",
                "1e-7",
                "'NaN'",
                "'Infinity'",
                "'-Infinity'",
                "'-0'",
                "123456",
                "1234567",
                "1e-5",
                "0.0001",
                "16777216",
            ],
        ),
        (
            "float8",
            "float8",
            vec![
                "0.1",
                "1e-300",
                "1e15",
                "123456789012345",
                "'NaN'",
                "'-Infinity'",
                "1.5e-5",
                "'-0'",
                "0.30000000000000004",
            ],
        ),
        ("oid", "oid", vec!["0", "4294967295", "12345"]),
        (
            "inet",
            "inet",
            vec![
                "'10.0.0.1'",
                "'10.0.0.0/8'",
                "'::1'",
                "'2001:db8::1/64'",
                "'192.168.1.5/24'",
            ],
        ),
        (
            "cidr",
            "cidr",
            vec!["'10.0.0.0/8'", "'2001:db8::/32'", "'192.168.1.5/32'"],
        ),
        (
            "macaddr",
            "macaddr",
            vec!["'08:00:2b:01:02:03'", "'ff:ff:ff:ff:ff:ff'"],
        ),
        ("macaddr8", "macaddr8", vec!["'08:00:2b:01:02:03:04:05'"]),
        ("enum", "mood", vec!["'happy'", "'sad'"]),
        ("name", "name", vec!["'abc'", "'Z z'"]),
        ("char", "\"char\"", vec!["'a'", "'Z'"]),
        ("domain", "label", vec!["'d1'", "'d2'"]),
        // Domains over the types whose `::text` differs from their output form: the cast is the
        // base type's.
        ("domain_bpchar", "code4", vec!["'ab'", "'abcd'", "' a'"]),
        (
            "domain_inet",
            "host",
            vec!["'10.0.0.1'", "'10.0.0.0/8'", "'::1'"],
        ),
        ("domain_int", "small_id", vec!["1", "-7", "2147483647"]),
        ("domain_bool", "flag", vec!["true", "false"]),
        ("domain_float", "ratio", vec!["0.1", "1e-5", "'NaN'"]),
        (
            "domain_timestamptz",
            "moment",
            vec!["'2024-01-02 03:04:05.678+00'", "'infinity'"],
        ),
        (
            "int_array",
            "int4[]",
            vec!["'{1,2,3}'", "'{}'", "'{NULL,-1}'"],
        ),
        (
            "text_array",
            "text[]",
            vec!["'{a,\"b c\",\"q\\\"t\"}'", "'{\"\"}'", "ARRAY['x']"],
        ),
        ("bpchar_array", "char(3)[]", vec!["'{a,bc}'", "'{\"  x\"}'"]),
        ("inet_array", "inet[]", vec!["'{10.0.0.1,::1/128}'"]),
        ("float_array", "float8[]", vec!["'{0.1,1e-5,NaN}'"]),
        ("money", "money", vec!["'12.34'", "'-1'", "'0'"]),
        ("range", "int4range", vec!["'[1,5)'", "'empty'", "'(,3]'"]),
        (
            "tsrange",
            "tstzrange",
            vec!["'[2024-01-02 03:04:05+00,infinity)'"],
        ),
        (
            "row",
            "pair",
            vec!["ROW(1, 'a b')::pair", "ROW(NULL, '')::pair"],
        ),
        ("bit", "bit(3)", vec!["B'101'", "B'000'"]),
        ("varbit", "varbit", vec!["B'101'", "B''"]),
        (
            "jsonb",
            "jsonb",
            vec!["'{\"b\": [1, 2.50], \"a\": null}'", "'\"s\"'"],
        ),
        ("pg_lsn", "pg_lsn", vec!["'16/B374D848'", "'0/0'"]),
    ]
}

/// One changelog entry per (id, op), for one table: what a fresh snapshot-or-stream insert and
/// then an update of each row give.
fn expected_changelog(table: &str, ids: &[String]) -> Vec<Entry> {
    let mut out: Vec<Entry> = ids
        .iter()
        .flat_map(|id| [1, 2].map(|op| ("global".to_owned(), table.to_owned(), id.clone(), op)))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn record_ids_are_the_keys_text_form_from_snapshot_and_stream_alike() {
    let db = pg::cluster().create_db("rid_types").await;
    let client = db.client().await;
    let types = key_types();
    let mut ddl = String::from(
        "CREATE TYPE mood AS ENUM ('happy', 'sad'); CREATE DOMAIN label AS text; \
         CREATE DOMAIN code4 AS char(4); CREATE DOMAIN host AS inet; \
         CREATE DOMAIN small_id AS int4 CHECK (VALUE <> 0); CREATE DOMAIN ratio AS float8; \
         CREATE DOMAIN moment AS timestamptz; CREATE TYPE pair AS (n int, s text); \
         CREATE DOMAIN flag AS bool; ",
    );
    let mut tables = Vec::new();
    for (suffix, sql_type, _) in &types {
        let table = format!("k_{suffix}");
        ddl.push_str(&format!(
            "CREATE TABLE {table} (k {sql_type} PRIMARY KEY, user_id text, note text); "
        ));
        tables.push(table);
    }
    // A composite key, declared out of column order, of two types whose text casts differ from
    // their output forms.
    ddl.push_str(
        "CREATE TABLE k_composite (at timestamptz, code char(4), user_id text, note text, \
             PRIMARY KEY (code, at)); ",
    );
    tables.push("k_composite".to_owned());
    ddl.push_str(&format!(
        "CREATE PUBLICATION sluice_pub FOR TABLE {};",
        tables.join(", ")
    ));
    // sluice must not depend on the database's own settings.
    ddl.push_str(&hostile_settings(&db));
    client.batch_execute(&ddl).await.unwrap();

    let insert = |before: bool| {
        let mut sql = String::new();
        for (suffix, _, keys) in &types {
            for (i, key) in keys.iter().enumerate() {
                if (i % 2 == 0) == before {
                    sql.push_str(&format!("INSERT INTO k_{suffix} (k) VALUES ({key}); "));
                }
            }
        }
        let composite = [
            "('2024-01-02 03:04:05.678+00', 'ab')",
            "('2024-01-02 03:04:05+02', 'ab')",
            "('infinity', 'abcd')",
        ];
        for (i, row) in composite.iter().enumerate() {
            if (i % 2 == 0) == before {
                sql.push_str(&format!(
                    "INSERT INTO k_composite (at, code) VALUES {row}; "
                ));
            }
        }
        sql
    };
    client.batch_execute(&insert(true)).await.unwrap();

    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    write(&client, &insert(false)).await;
    let updates: String = tables
        .iter()
        .map(|t| format!("UPDATE {t} SET note = 'n'; "))
        .collect();
    let floor = write(&client, &updates).await;
    wait_persisted(&client, floor, &mut sluice).await;

    // The oracle: PostgreSQL's own text form in a session with the canonical settings.
    let oracle = db.client().await;
    oracle.batch_execute(CANONICAL).await.unwrap();
    let mut expected_edges = Vec::new();
    let mut expected: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for table in &tables {
        let sql = if table == "k_composite" {
            "SELECT json_build_array(code::text, at::text)::text FROM k_composite".to_owned()
        } else {
            format!("SELECT k::text FROM {table}")
        };
        let mut ids: Vec<String> = oracle
            .query(&sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        if table == "k_composite" {
            // json_build_array spaces its elements; sluice's arrays are compact JSON.
            ids = ids
                .iter()
                .map(|j| {
                    let v: Vec<String> = serde_json::from_str(j).unwrap();
                    serde_json::to_string(&v).unwrap()
                })
                .collect();
        }
        for id in &ids {
            expected_edges.push((table.clone(), id.clone(), "global".to_owned()));
        }
        expected.insert(table.clone(), expected_changelog(table, &ids));
    }
    expected_edges.sort();

    let mut actual: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for entry in changelog(&client).await {
        actual.entry(entry.1.clone()).or_default().push(entry);
    }
    for entries in actual.values_mut() {
        entries.sort();
    }
    let mismatched: Vec<String> = tables
        .iter()
        .filter(|t| actual.get(*t) != expected.get(*t))
        .map(|t| {
            format!(
                "{t}:\n  sluice: {:?}\n  oracle: {:?}",
                actual.get(t),
                expected.get(t)
            )
        })
        .collect();
    assert!(
        mismatched.is_empty(),
        "changelog (sorted) against key::text:\n{}",
        mismatched.join("\n")
    );
    assert_eq!(edges(&client).await, expected_edges);
    assert_eq!(
        crate::support::count(&client, "SELECT count(*) FROM sync_rule_failures").await,
        0
    );
    // Every row still exists, so every edge has synchro's checksum: the current row was found
    // again by its key, whatever the key's type.
    let unread: Vec<String> = client
        .query(
            "SELECT DISTINCT table_name FROM sync_bucket_edges WHERE checksum IS NULL ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(unread.is_empty(), "edges without a checksum in {unread:?}");
}

/// Settings a database's sessions get by default, each one changing some text form.
fn hostile_settings(db: &pg::TestDb) -> String {
    format!(
        "ALTER DATABASE \"{0}\" SET datestyle = 'SQL, DMY'; ALTER DATABASE \"{0}\" SET timezone = 'Asia/Kolkata'; \
         ALTER DATABASE \"{0}\" SET intervalstyle = 'sql_standard'; ALTER DATABASE \"{0}\" SET extra_float_digits = -3; \
         ALTER DATABASE \"{0}\" SET bytea_output = 'escape';",
        db.name
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_see_the_same_values_from_snapshot_and_stream() {
    let db = pg::cluster().create_db("rid_values").await;
    let client = db.client().await;
    let columns = "title, c, i, b, ts, t, d, tm, iv, f4, f8, by, n, di, dts";
    let values = "'panic', 'ab', '10.0.0.1', true, '2024-01-02 03:04:05.678+02', \
        '2024-01-02 03:04:05', '2024-01-02', '03:04:05', '1 day 02:00:00', 1.1, 0.1, '\\x00ff', 1.50, \
        5, '2024-01-02 03:04:05.678+02'";
    client
        .batch_execute(&format!(
            "CREATE DOMAIN small_id AS int4 CHECK (VALUE <> 0); \
             CREATE DOMAIN moment AS timestamptz; CREATE DOMAIN later AS moment; \
             CREATE TABLE items (id int PRIMARY KEY, title text, c char(6), i inet, b bool, \
                 ts timestamptz, t timestamp, d date, tm time, iv interval, f4 float4, f8 float8, \
                 by bytea, n numeric, di small_id, dts later); \
             CREATE PUBLICATION sluice_pub FOR TABLE items; \
             INSERT INTO items (id, {columns}) VALUES (1, {values}); {}",
            hostile_settings(&db)
        ))
        .await
        .unwrap();
    // panic-on-value fails rows titled 'panic': their dead-letter payloads are what it was given.
    let mut sluice = Sluice::start(&db, &wasm::module("panic-on-value"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    let floor = write(
        &client,
        &format!("INSERT INTO items (id, {columns}) VALUES (2, {values})"),
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    let payloads: Vec<(String, serde_json::Value)> = client
        .query(
            "SELECT record_id, (payload->'new') - 'id' FROM sync_rule_failures ORDER BY record_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    assert_eq!(payloads[0].0, "1");
    assert_eq!(payloads[1].0, "2");
    assert_eq!(
        payloads[0].1, payloads[1].1,
        "snapshot row against stream row"
    );
    // A domain reads as its base type (through a domain over a domain too), from both.
    assert_eq!(payloads[0].1["di"], serde_json::json!(5), "{payloads:?}");
    assert_eq!(
        payloads[0].1["dts"],
        payloads[0].1["ts"].clone(),
        "{payloads:?}"
    );
}
