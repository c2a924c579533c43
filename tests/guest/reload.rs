//! One rule in three languages through `sluice run`: by-owner in Rust, hot-reloaded to its
//! Python build and then to its JavaScript build while changes stream, writes exactly the
//! sidecar rows (changelog, edges, rule failures) that the Rust module alone writes for the
//! same transactions.

use std::path::Path;
use std::time::Duration;

use crate::guest::{self, Lang};
use crate::pg;
use crate::support::{RunOpts, Sluice, changelog, edges, wait_for, wait_persisted, write};
use crate::wasm;

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text); \
    CREATE TABLE flags (id bigint PRIMARY KEY, user_id boolean); \
    INSERT INTO items VALUES (1, 'u1', 'a'), (2, 'u2', 'b'), (3, NULL, 'c'), (4, '', 'd'); \
    INSERT INTO flags VALUES (1, true); \
    CREATE PUBLICATION sluice_pub FOR TABLE items, flags;";

/// Three phases of streamed transactions; the reloading run swaps modules between them.
const PHASES: [&str; 3] = [
    "INSERT INTO items VALUES (10, 'u1', 'x'), (11, 'u3', 'y'), (12, NULL, 'z'); \
     UPDATE items SET user_id = 'u5' WHERE id = 1; DELETE FROM items WHERE id = 2; \
     INSERT INTO flags VALUES (2, false);",
    "INSERT INTO items VALUES (20, 'u7', 'x'), (21, '', 'y'); \
     UPDATE items SET user_id = 'u7' WHERE id = 10; DELETE FROM items WHERE id = 11; \
     UPDATE flags SET user_id = NULL WHERE id = 1;",
    "INSERT INTO items VALUES (30, 'u9', 'x'); UPDATE items SET user_id = NULL WHERE id = 20; \
     DELETE FROM items WHERE id = 3; INSERT INTO flags VALUES (3, true);",
];

/// Every sidecar row a run wrote, without sequence numbers, times and versions.
#[derive(Debug, PartialEq)]
struct Sidecar {
    changelog: Vec<crate::support::Entry>,
    edges: Vec<(String, String, String)>,
    failures: Vec<(String, String, i16, String)>,
}

async fn sidecar(client: &tokio_postgres::Client) -> Sidecar {
    let failures = client
        .query(
            "SELECT table_name, record_id, operation, error_text FROM sync_rule_failures ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    Sidecar {
        changelog: changelog(client).await,
        edges: edges(client).await,
        failures,
    }
}

async fn versions(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT version FROM sluice_rule_versions ORDER BY first_lsn, activated_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn sha(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Runs the workload with `modules[0]`, installing `modules[i]` over the module file before
/// phase `i` (the file watch reloads it) and waiting for it to be active.
async fn run(name: &str, modules: &[&Path]) -> (Sidecar, Vec<String>) {
    let db = pg::cluster().create_db(name).await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("rules.wasm");
    std::fs::copy(modules[0], &module).unwrap();
    let mut sluice = Sluice::start(
        &db,
        &module,
        RunOpts {
            config_toml: Some(format!(
                "[rules]\ncache_dir = \"{}\"\n",
                guest::compiled_cache()
            )),
            ..Default::default()
        },
    );
    crate::support::wait_snapshot(&client, &mut sluice).await;
    let mut floor = 0;
    for (phase, sql) in PHASES.iter().enumerate() {
        if let Some(next) = modules.get(phase).filter(|_| phase > 0) {
            wait_persisted(&client, floor, &mut sluice).await;
            let tmp = dir.path().join("rules.tmp");
            std::fs::copy(next, &tmp).unwrap();
            std::fs::rename(&tmp, &module).unwrap();
            // A Python or JavaScript module not compiled yet takes minutes in a debug build.
            wait_for(
                &format!("module {} to become active", next.display()),
                Duration::from_secs(600),
                &mut sluice,
                || async { versions(&client).await.len() > phase },
            )
            .await;
        }
        floor = write(&client, sql).await;
    }
    wait_persisted(&client, floor, &mut sluice).await;
    let written = sidecar(&client).await;
    sluice.stop();
    // Slots are cluster-wide and capped: give this one back for the tests still to run.
    client
        .execute(
            "SELECT pg_drop_replication_slot($1)",
            &[&crate::support::slot_for(&db)],
        )
        .await
        .unwrap();
    (written, versions(&client).await)
}

fn edge(table: &str, id: &str, bucket: &str) -> (String, String, String) {
    (table.into(), id.into(), bucket.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_reload_from_rust_to_python_to_javascript_writes_the_rust_rows() {
    let rust = wasm::module("by-owner");
    let python = guest::module(Lang::Python, &Lang::Python.example("by-owner"));
    let js = guest::module(Lang::JavaScript, &Lang::JavaScript.example("by-owner"));

    let (alone, alone_versions) = run("guest_rust_alone", &[&rust]).await;
    let (reloaded, reloaded_versions) = run("guest_reloaded", &[&rust, &python, &js]).await;

    assert_eq!(alone_versions, vec![sha(&rust)]);
    assert_eq!(reloaded_versions, vec![sha(&rust), sha(&python), sha(&js)]);
    assert_eq!(reloaded, alone);
    // What by-owner gives, so the comparison is not of two empty runs.
    assert_eq!(
        alone.edges,
        vec![
            edge("flags", "1", "global"),
            edge("items", "1", "user:u5"),
            edge("items", "10", "user:u7"),
            edge("items", "12", "global"),
            edge("items", "20", "global"),
            edge("items", "21", "global"),
            edge("items", "30", "user:u9"),
            edge("items", "4", "global"),
        ]
    );
    let bool_error =
        |v: &str| format!("flags: user_id must be text or an integer, got Value::Bool({v})");
    let failures: Vec<(&str, &str, String)> = alone
        .failures
        .iter()
        .map(|(table, id, _, error)| (table.as_str(), id.as_str(), error.clone()))
        .collect();
    assert_eq!(
        failures,
        vec![
            ("flags", "1", bool_error("true")),
            ("flags", "2", bool_error("false")),
            ("flags", "3", bool_error("true")),
        ]
    );
}
