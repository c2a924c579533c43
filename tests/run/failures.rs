//! Dead letters you can see and replay: each failure is logged, `sluice failures` summarises
//! them from the sink, and a replay after the rules are fixed writes what clients missed, once.

use std::process::Command;

use crate::pg;
use crate::support::{
    RunOpts, Sluice, changelog, count, edges, wait_persisted, wait_snapshot, write,
};
use crate::wasm;

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn post(addr: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("http://{addr}{path}"))
        .send_json(&body)
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap())
}

/// `sluice failures` against the sink; its stdout.
fn failures_cli(db: &pg::TestDb) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["failures", "--sink-url", &db.url, "--limit", "2"])
        .env_remove("SLUICE_DATABASE_URL")
        .env_remove("SLUICE_SINK_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn entry(bucket: &str, id: &str, op: i16) -> (String, String, String, i16) {
    (bucket.into(), "items".into(), id.into(), op)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_fixing_the_rules_writes_what_clients_missed_once() {
    let db = pg::cluster().create_db("replay_failures").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, org_id text NOT NULL, flag bool NOT NULL DEFAULT true, title text); \
             ALTER TABLE items REPLICA IDENTITY FULL; \
             CREATE PUBLICATION sluice_pub FOR TABLE items; \
             INSERT INTO items (id, org_id, title) SELECT g, 'o1', 't' FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let admin = free_addr();
    let good = "[tenant_columns]\nitems = \"org_id\"\n";
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("multi-tenant"),
        RunOpts {
            rules_config: Some(good.into()),
            config_toml: Some(format!(
                "admin_addr = \"{admin}\"\n[reload]\nrollback = false\n"
            )),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    assert_eq!(changelog(&client).await.len(), 10);

    // A bad version: its tenant column is a boolean, which names no tenant (a delete's old row
    // has it too: REPLICA IDENTITY FULL).
    let (status, body) = post(
        &admin,
        "/rules/reload",
        serde_json::json!({ "rules_config": "[tenant_columns]\nitems = \"flag\"\n" }),
    );
    assert_eq!(status, 200, "{body}");
    let floor = write(
        &client,
        "UPDATE items SET title = 'x' WHERE id IN (1, 3); \
         UPDATE items SET org_id = 'o2' WHERE id = 2; \
         DELETE FROM items WHERE id = 4;",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM sync_rule_failures WHERE resolved_at IS NULL"
        )
        .await,
        4
    );
    assert_eq!(
        changelog(&client).await.len(),
        10,
        "the failed changes wrote nothing"
    );
    // Without colour codes (log files get them until the logging change lands).
    let log = strip_ansi(&sluice.log_text());
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("the rules failed on a change"))
        .collect();
    assert_eq!(warned.len(), 4, "{log}\n{warned:#?}");
    assert!(
        warned.iter().all(|l| l.contains("table=items")
            && l.contains("lsn=")
            && l.contains("must be text or an integer to name a tenant")),
        "{warned:#?}"
    );
    for key in ["key=1", "key=2", "key=3", "key=4"] {
        assert!(warned.iter().any(|l| l.contains(key)), "{key}: {warned:#?}");
    }
    let listed = failures_cli(&db);
    assert!(
        listed.starts_with("4 unresolved rule failures (0 resolved)\n"),
        "{listed}"
    );
    assert!(
        listed.contains("  items  4 failures, 4 rows, LSN "),
        "{listed}"
    );
    assert_eq!(listed.matches("\n  #").count(), 2, "--limit 2: {listed}");

    // The fix, then the replay.
    let (status, body) = post(
        &admin,
        "/rules/reload",
        serde_json::json!({ "rules_config": good }),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&admin, "/failures/replay", serde_json::json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({ "status": "done", "resolved": 4, "keys": 4, "gone": 1, "unresolved": 0, "changelog_rows": 5 })
    );
    let mut replayed = changelog(&client).await[10..].to_vec();
    replayed.sort();
    assert_eq!(
        replayed,
        vec![
            entry("org:o1", "1", 2),
            entry("org:o1", "2", 3),
            entry("org:o1", "3", 2),
            entry("org:o1", "4", 3),
            entry("org:o2", "2", 1),
        ]
    );
    let stored = edges(&client).await;
    assert!(!stored.iter().any(|e| e.1 == "4"), "{stored:?}");
    assert!(stored.contains(&("items".into(), "2".into(), "org:o2".into())));
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM sync_rule_failures WHERE resolved_at IS NOT NULL"
        )
        .await,
        4
    );
    let listed = failures_cli(&db);
    assert_eq!(listed, "0 unresolved rule failures (4 resolved)\n");

    // Idempotent: nothing left to do.
    let (status, body) = post(&admin, "/failures/replay", serde_json::json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({ "status": "done", "resolved": 0, "keys": 0, "gone": 0, "unresolved": 0, "changelog_rows": 0 })
    );
    assert_eq!(changelog(&client).await.len(), 15);
    assert!(sluice.stop().success());
}
