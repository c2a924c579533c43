//! Previewing a rules change (`sluice diff`, `POST /rules/preview`) and the reload gate
//! `reload.preview_max_error_rate`: exact per-bucket enters and leaves against the memberships
//! the active rules stored, failures, `--table` and `--limit`, and that nothing is written.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::pg;
use crate::support::{
    RunOpts, Sluice, changelog, count, edges, free_admin_addr, slot_for, wait_for, wait_persisted,
    wait_snapshot, write,
};
use crate::wasm;

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text NOT NULL, deleted_at timestamptz); \
    CREATE TABLE notes (id int PRIMARY KEY, user_id text); \
    CREATE PUBLICATION sluice_pub FOR TABLE items, notes; \
    INSERT INTO items (id, user_id, title, deleted_at) VALUES \
      (1, 'u1', 'a', NULL), (2, 'u1', 'b', NULL), (3, 'u1', 'c', NULL), \
      (4, 'u2', 'panic', NULL), (5, 'u2', 'e', NULL), (6, NULL, 'f', NULL), \
      (7, 'u1', 'g', now()); \
    INSERT INTO notes (id, user_id) VALUES (1, 'u1'), (2, 'u1');";

/// multi-tenant by user: `org:<user_id>` where by-owner gives `user:<user_id>`; a row without a
/// user is dropped (by-owner puts it in `global`).
const RULES_CONFIG: &str = "[tenant_columns]\nitems = \"user_id\"\nnotes = \"user_id\"\n";

const TOKEN: &str = "preview-token-0123456789";

const PANIC_MESSAGE: &str = "rule panicked at tests/fixtures/panic-on-value/src/lib.rs:13: fixture refuses title 'panic' (id Value::Int(4))";

/// A database whose rows by-owner has snapshotted, and the running sluice.
async fn started(name: &str, toml: &str) -> (pg::TestDb, Sluice, String) {
    let db = pg::cluster().create_db(name).await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let admin = free_admin_addr();
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            config_toml: Some(format!("admin_addr = \"{admin}\"\n{toml}")),
            env: vec![("SLUICE_ADMIN_TOKEN".into(), TOKEN.into())],
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    (db, sluice, admin)
}

/// Stops sluice and drops its slot: the test cluster's slots are few and shared by every test
/// of the process, and a preview needs only what the snapshot stored.
async fn stop(db: &pg::TestDb, sluice: &mut Sluice) {
    assert!(sluice.stop().success(), "{}", sluice.log_text());
    db.client()
        .await
        .batch_execute(&format!(
            "SELECT pg_drop_replication_slot('{}')",
            slot_for(db)
        ))
        .await
        .unwrap();
}

/// Runs `sluice diff` with `args`; returns (success, stdout, stderr).
fn diff(db: &pg::TestDb, rules_config: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args([
        "diff",
        "--database-url",
        &db.url,
        "--publication",
        "sluice_pub",
    ])
    .args(args)
    .env_remove("SLUICE_DATABASE_URL")
    .env_remove("SLUICE_SINK_URL");
    if let Some(path) = rules_config {
        cmd.arg("--rules-config").arg(path);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn diff_json(db: &pg::TestDb, rules_config: Option<&Path>, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = diff(db, rules_config, &all);
    assert!(ok, "sluice diff failed: {err}");
    serde_json::from_str(&out).unwrap()
}

fn sha(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn rules_config_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, RULES_CONFIG).unwrap();
    path
}

fn ex(table: &str, id: &str) -> Value {
    json!({ "table": table, "record_id": id })
}

fn bucket(name: &str, enter: u64, leave: u64, enters: Vec<Value>, leaves: Vec<Value>) -> Value {
    json!({ "bucket": name, "enter": enter, "leave": leave, "enter_examples": enters, "leave_examples": leaves })
}

#[allow(clippy::too_many_arguments)]
fn table(
    name: &str,
    rows: u64,
    limited: bool,
    unchanged: u64,
    changed: u64,
    dropped: u64,
    failed: u64,
) -> Value {
    json!({ "table": name, "rows": rows, "limited": limited, "unchanged": unchanged,
            "changed": changed, "dropped": dropped, "failed": failed, "notes": [] })
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_counts_every_move_per_bucket_with_examples_and_writes_nothing() {
    let (db, mut sluice, _) = started("preview_moves", "").await;
    stop(&db, &mut sluice).await;
    let client = db.client().await;
    let (changelog_before, edges_before) = (changelog(&client).await, edges(&client).await);
    let multi = wasm::module("multi-tenant");
    let dir = tempfile::tempdir().unwrap();
    let config = rules_config_file(&dir);
    let report = diff_json(
        &db,
        Some(&config),
        &["--module", multi.to_str().unwrap(), "--examples", "2"],
    );
    assert_eq!(
        report,
        json!({
            "version": sha(&multi),
            "rows": 9,
            "failed": 0,
            "error_rate": 0.0,
            "limit": null,
            // Item 7 is soft-deleted: in no bucket before or after. Item 6 has no user: the
            // candidate drops it, so it leaves `global`.
            "tables": [table("items", 7, false, 1, 6, 2, 0), table("notes", 2, false, 0, 2, 0, 0)],
            "buckets": [
                bucket("org:u1", 5, 0, vec![ex("items", "1"), ex("items", "2")], vec![]),
                bucket("user:u1", 0, 5, vec![], vec![ex("items", "1"), ex("items", "2")]),
                bucket("org:u2", 2, 0, vec![ex("items", "4"), ex("items", "5")], vec![]),
                bucket("user:u2", 0, 2, vec![], vec![ex("items", "4"), ex("items", "5")]),
                bucket("global", 0, 1, vec![], vec![ex("items", "6")]),
            ],
            "other_buckets": null,
            "failures": [],
        })
    );
    assert_eq!(changelog(&client).await, changelog_before);
    assert_eq!(edges(&client).await, edges_before);
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_rule_failures").await,
        0
    );

    // The active rules against themselves: nothing moves.
    let by_owner = wasm::module("by-owner");
    let same = diff_json(&db, None, &["--module", by_owner.to_str().unwrap()]);
    assert_eq!(same["buckets"], json!([]));
    assert_eq!(
        same["tables"],
        json!([
            table("items", 7, false, 7, 0, 1, 0),
            table("notes", 2, false, 2, 0, 0, 0)
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_table_and_limit_restrict_the_rows_and_say_so() {
    let (db, mut sluice, _) = started("preview_limit", "").await;
    stop(&db, &mut sluice).await;
    let multi = wasm::module("multi-tenant");
    let module = multi.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = rules_config_file(&dir);

    // Items has 7 rows, notes exactly 2: only items is cut short.
    let report = diff_json(&db, Some(&config), &["--module", module, "--limit", "2"]);
    assert_eq!(report["limit"], 2);
    assert_eq!(
        report["tables"],
        json!([
            table("items", 2, true, 0, 2, 0, 0),
            table("notes", 2, false, 0, 2, 0, 0)
        ])
    );
    assert_eq!(report["buckets"][0]["bucket"], "org:u1");
    assert_eq!(report["buckets"][0]["enter"], 4);

    let (ok, out, err) = diff(
        &db,
        Some(&config),
        &["--module", module, "--table", "notes", "--limit", "1"],
    );
    assert!(ok, "{err}");
    let short = &sha(&multi)[..12];
    assert_eq!(
        out,
        format!(
            "preview of rules {short} against the stored memberships (nothing was written)\n  \
             notes: 1 rows (stopped at --limit 1: later rows not examined); 1 would change buckets, 0 unchanged, 0 in no bucket, 0 failed\n\
             \n\
             buckets (rows that would enter / leave):\n  \
             org:u1  +1 -0\n    \
             enter: notes 1\n  \
             user:u1  +0 -1\n    \
             leave: notes 1\n"
        )
    );

    let (ok, _, err) = diff(&db, Some(&config), &["--module", module, "--table", "nope"]);
    assert!(!ok);
    assert_eq!(
        err,
        "error: table nope is not in publication sluice_pub; published tables: items, notes\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_lists_the_rows_the_candidate_fails_on_and_keeps_their_memberships() {
    let (db, mut sluice, _) = started("preview_failures", "").await;
    stop(&db, &mut sluice).await;
    let panics = wasm::module("panic-on-value");
    let report = diff_json(
        &db,
        None,
        &["--module", panics.to_str().unwrap(), "--table", "items"],
    );
    assert_eq!(report["rows"], 7);
    assert_eq!(report["failed"], 1);
    assert_eq!(report["error_rate"], 1.0 / 7.0);
    assert_eq!(
        report["failures"],
        json!([{ "table": "items", "record_id": "4", "message": PANIC_MESSAGE }])
    );
    assert_eq!(
        report["tables"],
        json!([table("items", 7, false, 1, 5, 1, 1)])
    );
    // Item 4 fails: under dead-letter it keeps `user:u2`, so only item 5 leaves.
    let u2 = report["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bucket"] == "user:u2")
        .unwrap();
    assert_eq!(*u2, bucket("user:u2", 0, 1, vec![], vec![ex("items", "5")]));

    let (ok, out, err) = diff(
        &db,
        None,
        &[
            "--module",
            panics.to_str().unwrap(),
            "--table",
            "items",
            "--examples",
            "0",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.ends_with(&format!(
            "\nthe candidate fails on 1 rows (14.3% of those examined):\n  items 4: {PANIC_MESSAGE}\n"
        )),
        "{out}"
    );
}

/// POST /rules/preview with `token`; returns (status, body).
fn post_preview(admin: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut req = agent.post(&format!("http://{admin}/rules/preview"));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.send_json(&body).unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_preview_endpoint_needs_the_token_answers_as_diff_and_leaves_the_stream_alone() {
    let (db, mut sluice, admin) = started("preview_http", "").await;
    let client = db.client().await;
    let multi = wasm::module("multi-tenant");
    let dir = tempfile::tempdir().unwrap();
    let config = rules_config_file(&dir);
    let body = json!({ "module": multi, "rules_config": RULES_CONFIG, "table": "notes" });

    let (status, answer) = post_preview(&admin, None, body.clone());
    assert_eq!(
        (status, answer["status"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, answer) = post_preview(&admin, Some("not-the-token-0123456789"), body.clone());
    assert_eq!(status, 401, "{answer}");

    let (status, mut answer) = post_preview(&admin, Some(TOKEN), body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "done");
    answer.as_object_mut().unwrap().remove("status");
    let cli = diff_json(
        &db,
        Some(&config),
        &["--module", multi.to_str().unwrap(), "--table", "notes"],
    );
    assert_eq!(answer, cli);

    // Errors go back to the caller; the stream goes on with the active rules.
    let (status, answer) = post_preview(
        &admin,
        Some(TOKEN),
        json!({ "module": multi, "rules_config": RULES_CONFIG, "table": "nope" }),
    );
    assert_eq!(status, 422);
    assert_eq!(
        answer,
        json!({ "status": "rejected", "reason": "table nope is not in publication sluice_pub; published tables: items, notes" })
    );
    let not_wasm = dir.path().join("rules.toml");
    let (status, answer) = post_preview(&admin, Some(TOKEN), json!({ "module": not_wasm }));
    assert_eq!(status, 422);
    assert_eq!(
        answer["reason"],
        format!(
            "{} is not a rules module: give the path of a readable regular file that holds a \
             wasm32-wasip2 component (the sluice log says why this one is not)",
            not_wasm.display()
        )
    );
    let floor = write(&client, "INSERT INTO notes (id, user_id) VALUES (3, 'u3')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert!(
        edges(&client)
            .await
            .contains(&("notes".into(), "3".into(), "user:u3".into()))
    );
    assert!(sluice.is_running());
    stop(&db, &mut sluice).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_fails_on_too_many_current_rows_is_refused_before_it_goes_live() {
    let (db, mut sluice, admin) = started(
        "preview_gate",
        "[reload]\nwatch = false\npreview_max_error_rate = 0.1\n",
    )
    .await;
    let client = db.client().await;
    let by_owner_version = sha(&wasm::module("by-owner"));
    let panics = wasm::module("panic-on-value");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let reload = |module: &Path, rules_config: Option<&str>| {
        let mut resp = agent
            .post(&format!("http://{admin}/rules/reload"))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .send_json(json!({ "module": module, "rules_config": rules_config }))
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json::<Value>().unwrap())
    };

    // 1 of 9 rows fails (11.1%): above 0.1.
    let (status, answer) = reload(&panics, None);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer,
        json!({
            "status": "rejected",
            "active": by_owner_version,
            "reason": format!(
                "the candidate fails on 1 of the 9 current rows (11.1%), above \
                 reload.preview_max_error_rate = 0.1; it never saw a live change. First failures: \
                 items 4: {PANIC_MESSAGE}. `sluice diff --module {}` lists them",
                panics.display()
            ),
        })
    );
    let versions = || async {
        client
            .query("SELECT version FROM sluice_rule_versions", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(versions().await, vec![by_owner_version.clone()]);
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (8, 'u8', 'panic')",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    assert!(
        edges(&client)
            .await
            .contains(&("items".into(), "8".into(), "user:u8".into()))
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_rule_failures").await,
        0
    );

    // A candidate that fails on nothing passes the gate and goes live.
    let multi = wasm::module("multi-tenant");
    let (status, answer) = reload(&multi, Some(RULES_CONFIG));
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("activated")),
        "{answer}"
    );
    let floor = write(&client, "INSERT INTO notes (id, user_id) VALUES (9, 'u9')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    wait_for(
        "the new rules' edge",
        Duration::from_secs(30),
        &mut sluice,
        || async {
            edges(&client)
                .await
                .contains(&("notes".into(), "9".into(), "org:u9".into()))
        },
    )
    .await;
    assert!(
        sluice
            .log_text()
            .contains("above reload.preview_max_error_rate = 0.1")
    );
    stop(&db, &mut sluice).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_preview_says_which_tables_it_compares_without_cascades() {
    let db = pg::cluster().create_db("preview_related").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE regions (id int PRIMARY KEY, user_id text NOT NULL);
             CREATE TABLE customers (id int PRIMARY KEY, region_id int REFERENCES regions(id));
             CREATE TABLE orders (no int, customer_id int REFERENCES customers(id), PRIMARY KEY (customer_id, no));
             CREATE TABLE lines (id int PRIMARY KEY, order_no int NOT NULL, customer_id int NOT NULL,
               FOREIGN KEY (customer_id, order_no) REFERENCES orders(customer_id, no));
             CREATE PUBLICATION sluice_pub FOR TABLE regions, customers, orders, lines;
             INSERT INTO regions VALUES (1, 'ann');
             INSERT INTO customers VALUES (10, 1);",
        )
        .await
        .unwrap();
    let chain = wasm::module("related-chain");
    let mut sluice = Sluice::start(&db, &chain, RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    stop(&db, &mut sluice).await;
    assert!(
        edges(&client)
            .await
            .contains(&("customers".into(), "10".into(), "user:ann".into()))
    );
    let report = diff_json(
        &db,
        None,
        &["--module", chain.to_str().unwrap(), "--table", "customers"],
    );
    assert_eq!(
        report["tables"][0]["notes"],
        json!([
            "the candidate's relations involve this table: memberships that would cascade along \
             related rows are not modelled, each row is compared by its own buckets",
            "the stored memberships include what the active rules' relations cascade: rows may \
             show leaving buckets they only inherit",
        ])
    );
    // The customer's own buckets are none: compared without the cascade, it leaves the bucket
    // it inherits — which the notes above warn of.
    assert_eq!(
        report["buckets"],
        json!([bucket(
            "user:ann",
            0,
            1,
            vec![],
            vec![ex("customers", "10")]
        )])
    );
    let (ok, out, err) = diff(
        &db,
        None,
        &["--module", chain.to_str().unwrap(), "--table", "regions"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("\n    not modelled: the candidate's relations involve this table"),
        "{out}"
    );
    assert!(out.contains("\nno bucket gains or loses a row\n"), "{out}");
}
