//! The workload every network and restart scenario runs: numbered small transactions on
//! `items`, each committed durably, with an exact changelog oracle for the by-owner rule.

use crate::pg::TestDb;
use crate::support::{Entry, changelog};

pub const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, user_id text, title text);
CREATE TABLE marker (id int PRIMARY KEY);
CREATE PUBLICATION sluice_pub FOR TABLE items, marker;";

/// Transaction `i` inserts item `i` (owner `u{i % 7}`); when `i` is even it also renames item
/// `i - 1`, so the stream carries updates too.
fn txn_sql(i: i64) -> String {
    let mut sql = format!("INSERT INTO items VALUES ({i}, 'u{}', 't{i}');", i % 7);
    if i % 2 == 0 {
        sql.push_str(&format!(
            "UPDATE items SET title = 'renamed' WHERE id = {};",
            i - 1
        ));
    }
    sql
}

/// The changelog rows transaction `i` produces with by-owner.
pub fn expected_for(i: i64) -> Vec<Entry> {
    let mut out = vec![(
        format!("user:u{}", i % 7),
        "items".to_owned(),
        i.to_string(),
        1,
    )];
    if i % 2 == 0 {
        out.push((
            format!("user:u{}", (i - 1) % 7),
            "items".to_owned(),
            (i - 1).to_string(),
            2,
        ));
    }
    out
}

pub fn expected(range: std::ops::RangeInclusive<i64>) -> Vec<Entry> {
    range.flat_map(expected_for).collect()
}

/// A client whose commits are durable before they return (the harness runs
/// `synchronous_commit = off`, and some scenarios crash the server).
pub async fn durable_client(db: &TestDb) -> tokio_postgres::Client {
    let c = db.client().await;
    c.batch_execute("SET synchronous_commit = on")
        .await
        .unwrap();
    c
}

/// Commits transactions `range`, one each.
pub async fn run(client: &tokio_postgres::Client, range: std::ops::RangeInclusive<i64>) {
    for i in range {
        client
            .batch_execute(&format!("BEGIN; {} COMMIT;", txn_sql(i)))
            .await
            .unwrap_or_else(|e| panic!("workload transaction {i}: {e}"));
    }
}

/// The items part of the changelog must equal the oracle for `range`, row for row, in order.
pub async fn assert_exact(client: &tokio_postgres::Client, range: std::ops::RangeInclusive<i64>) {
    let actual: Vec<Entry> = changelog(client)
        .await
        .into_iter()
        .filter(|e| e.1 == "items")
        .collect();
    let expected = expected(range);
    if actual != expected {
        let first = actual
            .iter()
            .zip(&expected)
            .position(|(a, e)| a != e)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "changelog differs from the oracle: {} rows, {} expected; first difference at {first}: {:?} vs {:?}",
            actual.len(),
            expected.len(),
            actual.get(first),
            expected.get(first)
        );
    }
}

/// Lost and duplicated change counts against the oracle (for the report table).
pub async fn lost_and_duplicated(
    client: &tokio_postgres::Client,
    range: std::ops::RangeInclusive<i64>,
) -> (usize, usize) {
    use std::collections::HashMap;
    let mut have: HashMap<Entry, usize> = HashMap::new();
    for e in changelog(client)
        .await
        .into_iter()
        .filter(|e| e.1 == "items")
    {
        *have.entry(e).or_default() += 1;
    }
    let mut want: HashMap<Entry, usize> = HashMap::new();
    for e in expected(range) {
        *want.entry(e).or_default() += 1;
    }
    let lost = want
        .iter()
        .map(|(e, n)| n.saturating_sub(*have.get(e).unwrap_or(&0)))
        .sum();
    let dup = have
        .iter()
        .map(|(e, n)| n.saturating_sub(*want.get(e).unwrap_or(&0)))
        .sum();
    (lost, dup)
}

/// A marker transaction; returns the floor for `wait_persisted`.
pub async fn marker(client: &tokio_postgres::Client, id: i32) -> i64 {
    crate::support::write(client, &format!("INSERT INTO marker VALUES ({id})")).await
}
