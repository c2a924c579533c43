//! synchro's record checksum on the edges sluice writes, with Go's own `encoding/json` and
//! `hash/crc32` as the oracle (tests/oracles/synchro-checksum), over `row_to_json` of the final
//! rows: snapshot, stream and rebucket alike, every column type a sync schema uses; and read
//! only once the change's transaction is visible.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::go::synchro_checksums;
use crate::pg;
use crate::support::{RunOpts, Sluice, wait_persisted, wait_snapshot, write};
use crate::wasm;

/// Every type the checksum has to survive (and columns named `t` and `u`, which once made the
/// bulk read's own aliases ambiguous): numbers beyond float64 (precision and range), NaN
/// and the infinities, dates and times, arrays, nested json and jsonb, bytea, and text with
/// HTML characters, quotes, control characters and non-ASCII.
const TYPES: &str = "CREATE TABLE kinds (
    id int PRIMARY KEY,
    user_id text,
    n numeric, big int8, f8 float8, f4 float4, small int2,
    d date, t time, tz timetz, ts timestamp, tstz timestamptz, iv interval,
    ai int[], at text[], ats timestamptz[],
    j json, jb jsonb, b bytea, s text, u uuid, bo bool, body text
);
CREATE PUBLICATION sluice_pub FOR TABLE kinds;";

/// Rows `from..=to`, pseudo-random but fixed by `seed`.
fn rows_sql(seed: f64, from: i32, to: i32) -> String {
    format!(
        "SELECT setseed({seed});
         INSERT INTO kinds
         SELECT g, 'u' || (g % 4),
           CASE g % 6 WHEN 0 THEN 'NaN'::numeric WHEN 1 THEN 123456789012345678901234567890.123456789
             WHEN 2 THEN ('1' || repeat('0', 400))::numeric WHEN 3 THEN 0.000000001
             ELSE round((random() * 1e6)::numeric, 4) END,
           CASE g % 3 WHEN 0 THEN 9007199254740993 + g WHEN 1 THEN 9223372036854775807 ELSE (random() * 1e9)::int8 END,
           CASE g % 6 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity' WHEN 2 THEN '-Infinity'
             WHEN 3 THEN random() * 1e300 WHEN 4 THEN random() * 1e-300 ELSE 0.1 END,
           (random() * 1000)::float4, (g % 30000)::int2,
           date '2024-01-01' + (g % 400), time '03:04:05.678' + g * interval '1 second',
           timetz '03:04:05+02', timestamp '2024-01-02 03:04:05.678' + g * interval '1 hour',
           timestamptz '2024-01-02 03:04:05.678+00' + g * interval '1 minute',
           g * interval '1 day 2 hours 3.5 seconds',
           ARRAY[g, -g, NULL], ARRAY['a<b', 'c&d', NULL, 'e\"f'],
           ARRAY[timestamptz '2024-06-01 00:00:00+00' + g * interval '1 second'],
           ('{{\"z\": [1, 2.50, {{\"b\": null, \"a\": \"<&>\"}}],  \"a\": ' || g || '}}')::json,
           ('{{\"nested\": {{\"k\": [true, false, 1e25]}}, \"n\": ' || (g * 1.5) || '}}')::jsonb,
           decode(md5(g::text), 'hex'),
           E'<script>alert(\"x\")</script> & \\\\ \\t\\n\\r\\b\\f \\x01 é 東京 ' || chr(8232) || ' ' || g,
           md5(g::text)::uuid, g % 2 = 0,
           repeat('x', 3000) || g
         FROM generate_series({from}, {to}) g;"
    )
}

/// (id, row_to_json text) of every row, in id order.
async fn row_json(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT id::text, row_to_json(k)::text FROM kinds k ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// sluice's own implementation agrees with Go on every row of every type.
#[tokio::test(flavor = "multi_thread")]
async fn the_checksum_agrees_with_go_on_every_type() {
    let db = pg::cluster().create_db("checksum_types").await;
    let client = db.client().await;
    client.batch_execute(TYPES).await.unwrap();
    client.batch_execute(&rows_sql(0.25, 1, 300)).await.unwrap();
    let rows = row_json(&client).await;
    let texts: Vec<String> = rows.iter().map(|(_, j)| j.clone()).collect();
    let go = synchro_checksums(&texts);
    for ((id, text), go) in rows.iter().zip(go) {
        assert_eq!(
            sluice::sink::checksum::record_checksum(text),
            go,
            "row {id}: {text}"
        );
    }
    // synchro's own example.
    assert_eq!(
        synchro_checksums(&[r#"{"id":"u1","name":"Ann"}"#.to_owned()]),
        vec![227963769]
    );
}

/// The edges' checksums after a snapshot, a stream of inserts and updates (one leaving a
/// TOASTed column unchanged), and a rebucket, equal Go's checksum of each row as a client
/// hydrates it; each bucket's BIT_XOR equals the XOR of its rows' Go checksums.
#[tokio::test(flavor = "multi_thread")]
async fn edges_carry_synchros_checksum_from_snapshot_stream_and_rebucket() {
    let db = pg::cluster().create_db("checksum_edges").await;
    let client = db.client().await;
    client.batch_execute(TYPES).await.unwrap();
    client.batch_execute(&rows_sql(0.5, 1, 60)).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE users (id text PRIMARY KEY, name text);
             INSERT INTO users VALUES ('u1', 'Ann');
             ALTER PUBLICATION sluice_pub ADD TABLE users;",
        )
        .await
        .unwrap();
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            config_toml: Some(format!("admin_addr = \"{admin}\"\n")),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    let users: i32 = client
        .query_one(
            "SELECT checksum FROM sync_bucket_edges WHERE table_name = 'users'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 227963769, "synchro's own example, from the snapshot");

    write(&client, &rows_sql(0.75, 61, 120)).await;
    // Updates: one changes a value, one leaves the TOASTed body unchanged, one moves buckets.
    write(
        &client,
        "UPDATE kinds SET s = s || ' <updated>' WHERE id % 5 = 0",
    )
    .await;
    write(&client, "UPDATE kinds SET bo = NOT bo WHERE id % 7 = 0").await;
    let floor = write(
        &client,
        "UPDATE kinds SET user_id = 'moved' WHERE id % 11 = 0",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_edges_match_go(&client).await;

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let status = agent
        .post(&format!("http://{admin}/rebucket"))
        .send_json(serde_json::json!({}))
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200);
    assert_edges_match_go(&client).await;
    assert!(sluice.stop().success(), "{}", sluice.log_text());
    let log = sluice.log_text();
    assert!(!log.contains("cannot read the current rows"), "{log}");
}

async fn assert_edges_match_go(client: &tokio_postgres::Client) {
    let rows = row_json(client).await;
    let texts: Vec<String> = rows.iter().map(|(_, j)| j.clone()).collect();
    let go: BTreeMap<String, i32> = rows
        .iter()
        .map(|(id, _)| id.clone())
        .zip(synchro_checksums(&texts))
        .collect();
    let edges = client
        .query(
            "SELECT record_id, bucket_id, checksum FROM sync_bucket_edges WHERE table_name = 'kinds' ORDER BY record_id::int",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(edges.len(), rows.len(), "one edge per row");
    let mut xor: BTreeMap<String, i32> = BTreeMap::new();
    for e in &edges {
        let (id, bucket, checksum): (String, String, Option<i32>) = (e.get(0), e.get(1), e.get(2));
        assert_eq!(checksum, Some(go[&id]), "row {id}");
        *xor.entry(bucket).or_default() ^= go[&id];
    }
    let buckets = client
        .query(
            "SELECT bucket_id, bit_xor(checksum) FROM sync_bucket_edges WHERE table_name = 'kinds' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let stored: BTreeMap<String, i32> = buckets.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(stored, xor, "bucket checksums");
}

/// pgoutput delivers a transaction once its commit record is flushed, but other sessions see it
/// only when the committing backend has left the proc array. Read in between (a backend
/// descheduled for a moment, or one waiting for a synchronous standby), a row is missing or still
/// its previous version: sluice stored no checksum for an inserted row and the previous
/// version's for an updated one, and nothing corrected them until the row changed again (the
/// conformance tests above caught it now and then). Here a synchronous standby that never
/// connects holds the window open for two seconds, until the test lifts the requirement.
#[tokio::test(flavor = "multi_thread")]
async fn checksums_are_read_once_the_transaction_is_visible() {
    let source = pg::Cluster::start(pg::ClusterOptions {
        settings: vec![("synchronous_standby_names".into(), "absent_standby".into())],
        ..Default::default()
    });
    let db = source.create_db("visible_src").await;
    // The sidecar in another cluster: sluice's own commits must not wait for the standby.
    let sink_db = pg::cluster().create_db("visible_sink").await;
    let client = db.client().await;
    let sink = sink_db.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, user_id text, title text);
             INSERT INTO items VALUES (1, 'u1', 'before');
             CREATE TABLE marker (id int PRIMARY KEY);
             CREATE PUBLICATION sluice_pub FOR TABLE items, marker;",
        )
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
    wait_snapshot(&sink, &mut sluice).await;

    // Flushed and decoded at once, visible only once the standby requirement is lifted.
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            db.client()
                .await
                .batch_execute(
                    "SET synchronous_commit = on; BEGIN;
                     INSERT INTO items VALUES (2, 'u1', 'new');
                     UPDATE items SET title = 'after' WHERE id = 1;
                     COMMIT;",
                )
                .await
                .unwrap();
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !writer.is_finished(),
        "the commit should wait for the absent standby"
    );
    client
        .batch_execute("ALTER SYSTEM SET synchronous_standby_names = ''")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    writer.await.unwrap();
    let floor = write(&client, "INSERT INTO marker VALUES (1)").await;
    wait_persisted(&sink, floor, &mut sluice).await;

    let rows: Vec<(String, String)> = client
        .query(
            "SELECT id::text, row_to_json(i)::text FROM items i ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let texts: Vec<String> = rows.iter().map(|(_, j)| j.clone()).collect();
    let want: BTreeMap<String, Option<i32>> = rows
        .iter()
        .map(|(id, _)| id.clone())
        .zip(synchro_checksums(&texts).into_iter().map(Some))
        .collect();
    let stored: BTreeMap<String, Option<i32>> = sink
        .query(
            "SELECT record_id, checksum FROM sync_bucket_edges WHERE table_name = 'items'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        stored, want,
        "edge checksums (left) against the current rows' {rows:?}"
    );
    assert!(sluice.stop().success(), "{}", sluice.log_text());
}
