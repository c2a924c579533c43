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

/// The README's form, as written: no slot to name or create beforehand, and none left behind.
#[tokio::test]
async fn the_readmes_form_reads_through_a_temporary_slot_that_is_gone_after_exit() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let form = "sluice tail --database-url URL --publication P";
    assert!(
        readme.contains(&format!("`{form}`")),
        "README lost {form:?}"
    );
    let (db, _cfg, client) = setup("tail_readme", "CREATE TABLE items (id int PRIMARY KEY)").await;
    let args: Vec<String> = form
        .split(' ')
        .skip(1)
        .map(|w| match w {
            "URL" => db.url.clone(),
            "P" => "pub".to_owned(),
            w => w.to_owned(),
        })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let slot = format!("sluice_tail_{}", child.id());
    let admin = crate::pg::cluster().admin_client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let row = admin
            .query_opt(
                "SELECT temporary, confirmed_flush_lsn IS NOT NULL FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            assert!(row.get::<_, bool>(0), "{slot} is not temporary");
            if row.get::<_, bool>(1) {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sluice tail's slot {slot} did not become consistent within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .batch_execute("INSERT INTO items VALUES (7)")
        .await
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads to the end, so that tail never writes into a closed pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let change = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no change from sluice tail");
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        if line["kind"] == "change" {
            break line;
        }
    };
    assert_eq!(change["new"], serde_json::json!({"id": 7}));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert!(child.wait().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sluice::source::lookup_slot(&admin, &slot)
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the temporary slot {slot} outlived sluice tail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
