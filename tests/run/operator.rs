//! What an operator meets first (issue 18, "Smaller items"): a flag beside an invalid variable
//! of the same setting, the debug log, error texts with each cause once, and no "resuming" for
//! a snapshot that never started.

use std::process::Command;
use std::time::Duration;

use crate::pg;
use crate::support::{RunOpts, Sluice, changelog, slot_for, wait_snapshot};
use crate::wasm;

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, user_id text); \
    INSERT INTO items VALUES (1, 'u1'); CREATE PUBLICATION sluice_pub FOR TABLE items;";

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

fn e(bucket: &str, id: &str) -> crate::support::Entry {
    (bucket.into(), "items".into(), id.into(), 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slot_made_beforehand_is_not_called_an_interrupted_snapshot() {
    let db = pg::cluster().create_db("fresh_sink").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot_for(&db)],
        )
        .await
        .unwrap();
    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    assert_eq!(changelog(&client).await, vec![e("user:u1", "1")]);
    assert_eq!(sluice.stop().code(), Some(0));
    let log = sluice.log_text();
    assert!(!log.contains("resuming an interrupted snapshot"), "{log}");
    assert!(
        log.contains("the slot exists but this sink has no snapshot of it yet: copying every published table from the start"),
        "{log}"
    );
}

/// `SLUICE_ADMIN_ADDR=""` beside `--admin-addr` (the case) and an invalid
/// `SLUICE_FAILURE_POLICY` beside `--failure-policy`: the flags win, sluice runs.
#[tokio::test(flavor = "multi_thread")]
async fn flags_beside_invalid_variables_of_the_same_settings_run() {
    let db = pg::cluster().create_db("flag_over_env").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let addr = crate::support::free_admin_addr();
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            extra_args: vec![
                "--admin-addr".into(),
                addr.clone(),
                "--failure-policy".into(),
                "halt".into(),
            ],
            env: vec![
                ("SLUICE_ADMIN_ADDR".into(), String::new()),
                ("SLUICE_FAILURE_POLICY".into(), "explode".into()),
            ],
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    let health = ureq::get(&format!("http://{addr}/healthz")).call().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(sluice.stop().code(), Some(0));
}

/// The README's `SLUICE_LOG=debug` gives sluice's debug lines and none of wasmtime's or
/// cranelift's (a compile that is not cached logs thousands); `RUST_LOG=debug` gives those too.
#[tokio::test(flavor = "multi_thread")]
async fn sluice_log_debug_is_sluices_own_lines() {
    let text = readme();
    for documented in ["`SLUICE_LOG=debug`", "`RUST_LOG=debug`", "`NO_COLOR`"] {
        assert!(text.contains(documented), "README lost {documented}");
    }
    let db = pg::cluster().create_db("log_debug").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let run = |env: Vec<(&str, &str)>| {
        let mut env: Vec<(String, String)> =
            env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        env.push(("SLUICE_RULES_CACHE_DIR".into(), "off".into()));
        Sluice::start(
            &db,
            &wasm::module("by-owner"),
            RunOpts {
                env,
                ..Default::default()
            },
        )
    };
    // The target of each debug or trace line.
    let debug_targets = |log: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| {
                let (_, rest) = l
                    .split_once(" DEBUG ")
                    .or_else(|| l.split_once(" TRACE "))?;
                Some(rest.split([':', ' ']).next().unwrap_or("").to_owned())
            })
            .collect()
    };
    let mut sluice = run(vec![("SLUICE_LOG", "debug")]);
    wait_snapshot(&client, &mut sluice).await;
    assert_eq!(sluice.stop().code(), Some(0));
    let targets = debug_targets(&sluice.log_text());
    assert!(!targets.is_empty(), "no debug lines at all");
    let foreign: Vec<&String> = targets.iter().filter(|t| *t != "sluice").collect();
    assert!(
        foreign.is_empty(),
        "debug lines of other crates: {foreign:?}"
    );

    let mut sluice = run(vec![("SLUICE_LOG", ""), ("RUST_LOG", "debug")]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_snapshot(&client, &mut sluice).await;
    assert_eq!(sluice.stop().code(), Some(0));
    let targets = debug_targets(&sluice.log_text());
    assert!(
        targets
            .iter()
            .any(|t| t.starts_with("cranelift") || t.starts_with("wasmtime")),
        "RUST_LOG=debug shows no wasmtime or cranelift lines"
    );
}

/// The `error:` line a failing command ends with.
fn sluice_err(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_remove("SLUICE_DATABASE_URL")
        .env_remove("SLUICE_SINK_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let at = stderr
        .find("error: ")
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    stderr[at..].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_cause_of_an_error_appears_once_on_one_line() {
    let missing = sluice_err(&[
        "run",
        "--database-url",
        "postgres://nobody@127.0.0.1:1/x",
        "--module",
        "/nonexistent/rules.wasm",
    ]);
    assert_eq!(missing.lines().count(), 1, "{missing}");
    assert_eq!(missing.matches("(os error 2)").count(), 1, "{missing}");
    assert!(missing.contains("/nonexistent/rules.wasm"), "{missing}");

    // A database error: tokio-postgres prints its cause, and returns it as the source too.
    let db = pg::cluster().create_db("err_once").await;
    let err = sluice_err(&["failures", "--database-url", &db.url]);
    let what = "relation \"sync_rule_failures\" does not exist";
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches(what).count(), 1, "{err}");
    assert!(!err.contains("db error: db error"), "{err}");
}
