//! Crashes: `kill -9` at random moments during a W1-sized workload, restarting each time. The
//! final changelog must equal the oracle exactly.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;

use crate::pg;
use crate::support::{RunOpts, Sluice, changelog, count, wait_persisted, write};
use crate::wasm;

pub fn workload(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/workloads")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read the shared workload {}: {e}. The repository must be checked out with ../shared beside it", path.display())
    })
}

/// The oracle for W1 with the by-owner rule, per record: the exact sequence of (bucket, op).
/// W1: ids 1..=100000 inserted with user 'u' || (id % 1000); ids 1..=50000 renamed; ids
/// 50001..=60000 moved to 'u' || ((id + 7) % 1000); ids 60001..=70000 deleted.
fn w1_oracle(id: i64) -> Vec<(String, i16)> {
    let owner = format!("user:u{}", id % 1000);
    match id {
        1..=50_000 => vec![(owner.clone(), 1), (owner, 2)],
        50_001..=60_000 => vec![
            (owner.clone(), 1),
            (owner, 3),
            (format!("user:u{}", (id + 7) % 1000), 1),
        ],
        60_001..=70_000 => vec![(owner.clone(), 1), (owner, 3)],
        _ => vec![(owner, 1)],
    }
}

/// A database with W1's shared schema and a `marker` table in its publication, and the run
/// options that stream it: what the W1 kill tests start from, checked by [`assert_w1_exact`].
pub async fn w1_db(name: &str) -> (pg::TestDb, tokio_postgres::Client, RunOpts) {
    let cluster = pg::cluster();
    let db = cluster.create_db(name).await;
    let client = db.client().await;
    cluster.psql(&db.name, &workload("w1-schema.sql"));
    client
        .batch_execute(
            "CREATE TABLE marker (id int PRIMARY KEY); ALTER PUBLICATION w1_pub ADD TABLE marker;",
        )
        .await
        .unwrap();
    let opts = RunOpts {
        publication: Some("w1_pub".into()),
        config_toml: Some("[batch]\nmax_rows = 3000\n".into()),
        ..Default::default()
    };
    (db, client, opts)
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_during_w1_loses_and_duplicates_nothing() {
    let (db, client, opts) = w1_db("crash_w1").await;
    let module = wasm::module("by-owner");

    // Snapshot of the empty table, so the whole workload comes through the stream.
    let mut sluice = Sluice::start(&db, &module, opts.clone());
    crate::support::wait_snapshot(&client, &mut sluice).await;

    let w1 = workload("w1.sql");
    let writer = {
        let name = db.name.clone();
        std::thread::spawn(move || pg::cluster().psql(&name, &w1))
    };
    let mut rng = rand::rng();
    let mut kills = 0;
    while kills < 12 || !writer.is_finished() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..1200))).await;
        sluice.kill9();
        kills += 1;
        sluice = Sluice::start(&db, &module, opts.clone());
        if kills > 60 {
            break;
        }
    }
    writer.join().unwrap();
    let floor = write(&client, "INSERT INTO marker VALUES (1)").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert!(kills >= 10);
    assert_w1_exact(&client).await;
}

/// The changelog holds exactly W1's entries through the by-owner rule, each record's history in
/// order, the phases in commit order; the edges are W1's 90,000.
pub async fn assert_w1_exact(client: &tokio_postgres::Client) {
    let entries = changelog(client).await;
    let items: Vec<_> = entries.iter().filter(|e| e.1 == "items").collect();
    assert_eq!(
        items.len(),
        180_000,
        "W1 with by-owner gives exactly 180,000 changelog rows"
    );
    let mut per_record: HashMap<i64, Vec<(String, i16)>> = HashMap::new();
    for (bucket, _, id, op) in &items {
        per_record
            .entry(id.parse().unwrap())
            .or_default()
            .push((bucket.clone(), *op));
    }
    assert_eq!(per_record.len(), 100_000);
    for (id, history) in &per_record {
        assert_eq!(history, &w1_oracle(*id), "record {id}");
    }
    // Commit order: W1's phases (inserts, renames, moves, deletes) commit one after another, so
    // their entries must appear in that order of seq.
    let mut inserted = std::collections::HashSet::new();
    let mut last_phase = 0;
    for (_, _, id, op) in &items {
        let id: i64 = id.parse().unwrap();
        let phase = match op {
            1 if inserted.insert(id) => 0,
            2 => 1,
            1 => 2, // the insert half of a move
            3 if id <= 60_000 => 2,
            _ => 3,
        };
        assert!(
            phase >= last_phase,
            "record {id} op {op} (phase {phase}) after phase {last_phase}: out of commit order"
        );
        last_phase = phase;
    }
    assert_eq!(
        count(
            client,
            "SELECT count(*) FROM sync_bucket_edges WHERE table_name = 'items'"
        )
        .await,
        90_000
    );
}
