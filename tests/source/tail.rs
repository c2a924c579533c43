//! `sluice tail` against a live database: decoded changes as JSON lines.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::setup;

#[tokio::test]
async fn tail_prints_changes_as_json_lines() {
    let (db, _cfg, client) = setup(
        "tail",
        "CREATE TABLE items (id int PRIMARY KEY, owner text, score float8, tags text[])",
    )
    .await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["tail", "--database-url", &db.url, "--publication", "pub"])
        .args(["--slot", "tail_slot", "--create-slot"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Changes are streamed once tail's slot is consistent (its confirmed_flush_lsn is set).
    // The slot is listed before that, while it waits for every transaction open in the cluster
    // (the other tests' too), and a change written then may precede its consistent point and
    // never be streamed: wait for consistency, however long the load makes it.
    let admin = crate::pg::cluster().admin_client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while sluice::source::lookup_slot(&admin, "tail_slot")
        .await
        .unwrap()
        .and_then(|slot| slot.confirmed_flush_lsn)
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sluice tail's slot did not become consistent within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .batch_execute("INSERT INTO items VALUES (1, 'u1', 'NaN', '{a,NULL}')")
        .await
        .unwrap();
    client
        .batch_execute("UPDATE items SET owner = NULL WHERE id = 1")
        .await
        .unwrap();
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&serde_json::Value| l["kind"] == "commit")
        .count()
        < 2
    {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no output from sluice tail");
        lines.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    child.kill().unwrap();
    let _ = child.wait();
    let changes: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "change").collect();
    assert_eq!(changes.len(), 2, "{lines:#?}");
    assert_eq!(changes[0]["table"], "items");
    assert_eq!(changes[0]["op"], "insert");
    assert_eq!(
        changes[0]["new"],
        serde_json::json!({"id": 1, "owner": "u1", "score": "NaN", "tags": ["a", null]})
    );
    assert_eq!(changes[0]["old"], serde_json::Value::Null);
    assert_eq!(changes[1]["op"], "update");
    assert_eq!(
        changes[1]["new"],
        serde_json::json!({"id": 1, "owner": null, "score": "NaN", "tags": ["a", null]})
    );
}
