//! The admin listener as an operator exposes it: the bearer token on the mutating endpoints,
//! the refusal to listen off loopback without one, and a log file fit for a file.

use std::process::Command;
use std::time::Duration;

use crate::pg;
use crate::support::{RunOpts, Sluice, changelog, wait_for, wait_snapshot, write};
use crate::wasm;

const TOKEN: &str = "s3cr3t-0123456789-abcdef";
const WRONG: &str = "s3cr3t-0123456789-abcdeX";

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text NOT NULL, deleted_at timestamptz); \
    CREATE PUBLICATION sluice_pub FOR TABLE items;";

const RULES_CONFIG: &str = "[tenant_columns]\nitems = \"user_id\"\n";

const MISSING_REASON: &str = "this endpoint changes what clients receive and needs the admin token: send `Authorization: Bearer <token>` with the token sluice was started with (admin_token_file or SLUICE_ADMIN_TOKEN); `sluice reload`, `sluice rebucket` and `sluice forget-table` take --admin-token-file or SLUICE_ADMIN_TOKEN";
const WRONG_REASON: &str = "the bearer token is not the admin token this sluice was started with: check admin_token_file or SLUICE_ADMIN_TOKEN on both sides";

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// POSTs `body` to `path`, with `token` as a bearer token when given; returns (status,
/// WWW-Authenticate, body).
fn post(
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, Option<String>, serde_json::Value) {
    let mut req = agent().post(&format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req.send_json(&body).unwrap();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = resp.status().as_u16();
    (status, challenge, resp.body_mut().read_json().unwrap())
}

fn get(addr: &str, path: &str) -> u16 {
    agent()
        .get(&format!("http://{addr}{path}"))
        .call()
        .unwrap()
        .status()
        .as_u16()
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

/// Runs a control subcommand; returns (success, stdout, stderr).
fn control(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .env_remove("SLUICE_ADMIN_TOKEN")
        .env_remove("SLUICE_ADMIN_TOKEN_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_actions_need_the_token_and_change_nothing_without_it() {
    let db = pg::cluster().create_db("admin_token").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let by_owner = wasm::module("by-owner");
    let multi = wasm::module("multi-tenant");
    let admin = free_addr();
    let mut sluice = Sluice::start(
        &db,
        &by_owner,
        RunOpts {
            rules_config: Some(RULES_CONFIG.into()),
            config_toml: Some(format!(
                "admin_addr = \"{admin}\"\nadmin_token_file = \"{}\"\n",
                token_file.display()
            )),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'a'), (2, 'u2', 'b')",
    )
    .await;
    wait_for(
        "two changelog rows",
        Duration::from_secs(30),
        &mut sluice,
        || async { changelog(&client).await.len() == 2 },
    )
    .await;
    let before_changelog = changelog(&client).await;
    let before_versions = versions(&client).await;
    assert_eq!(before_versions.len(), 1);

    // Probes and scrapers need no token.
    assert_eq!(get(&admin, "/healthz"), 200);
    assert_eq!(get(&admin, "/readyz"), 200);
    assert_eq!(get(&admin, "/metrics"), 200);

    // Every mutating endpoint: no token and a wrong token are refused with what to do.
    let module = serde_json::json!({ "module": multi });
    let actions = [
        ("/rules/reload", module.clone()),
        ("/rebucket", serde_json::json!({})),
        ("/tables/forget", serde_json::json!({ "table": "items" })),
    ];
    for (path, body) in &actions {
        for (token, reason) in [(None, MISSING_REASON), (Some(WRONG), WRONG_REASON)] {
            let (status, challenge, answer) = post(&admin, path, token, body.clone());
            assert_eq!(status, 401, "{path} with {token:?}: {answer}");
            assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="sluice admin""#));
            assert_eq!(
                answer,
                serde_json::json!({ "status": "unauthorized", "reason": reason }),
                "{path}"
            );
        }
        let (status, _, _) = post(&admin, path, Some(&TOKEN[..TOKEN.len() - 1]), body.clone());
        assert_eq!(status, 401, "{path} with a prefix of the token");
    }
    // A moment for anything wrongly let through to land, then: nothing changed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(versions(&client).await, before_versions);
    assert_eq!(changelog(&client).await, before_changelog);

    // The right token: the reload is done.
    let (status, _, answer) = post(&admin, "/rules/reload", Some(TOKEN), module);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "activated", "{answer}");
    assert_eq!(versions(&client).await.len(), 2);

    // The control subcommands: refused without a token, through with it from either source.
    let (ok, _, stderr) = control(&["rebucket", "--admin-addr", &admin], &[]);
    assert!(!ok);
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!(
            "error: the admin listener at {admin} refused the request: {MISSING_REASON}; no token was given: pass --admin-token-file or set SLUICE_ADMIN_TOKEN"
        )
    );
    let (ok, stdout, stderr) = control(
        &["rebucket", "--admin-addr", &admin],
        &[("SLUICE_ADMIN_TOKEN", TOKEN)],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("re-bucketed 2 rows of "), "{stdout}");
    let (ok, stdout, stderr) = control(
        &[
            "reload",
            "--admin-addr",
            &admin,
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--module",
            by_owner.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("activated "), "{stdout}");
    assert_eq!(versions(&client).await.len(), 3);
    let wrong_file = dir.path().join("wrong-token");
    std::fs::write(&wrong_file, WRONG).unwrap();
    let (ok, _, stderr) = control(
        &[
            "forget-table",
            "--admin-addr",
            &admin,
            "--admin-token-file",
            wrong_file.to_str().unwrap(),
            "--table",
            "items",
        ],
        &[],
    );
    assert!(!ok);
    assert_eq!(
        stderr.lines().last().unwrap(),
        format!("error: the admin listener at {admin} refused the request: {WRONG_REASON}")
    );

    sluice.stop();
    let log = sluice.log_text();
    assert_eq!(log.matches("admin request refused").count(), 11, "{log}");
    assert!(log.contains("need the admin token"), "{log}");
    for secret in [TOKEN, WRONG, &TOKEN[..12]] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_off_loopback_without_a_token_is_refused_before_connecting() {
    let db = pg::cluster().create_db("admin_exposed").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let port = free_addr().rsplit(':').next().unwrap().to_owned();
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            extra_args: vec!["--admin-addr".into(), format!("0.0.0.0:{port}")],
            ..Default::default()
        },
    );
    let status = sluice.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        sluice.log_text().trim_end().lines().last().unwrap(),
        format!(
            "error: the admin listener 0.0.0.0:{port} is not a loopback address and no admin token is configured: anyone who can reach it could load a rules module or rewrite memberships. Set admin_token_file (or --admin-token-file, SLUICE_ADMIN_TOKEN_FILE) or SLUICE_ADMIN_TOKEN, or listen on 127.0.0.1"
        )
    );
    // Refused before anything connected: no sidecar table, no slot.
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'sync_wal_position'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0);

    // The same address with the token in the environment starts.
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            extra_args: vec!["--admin-addr".into(), format!("0.0.0.0:{port}")],
            env: vec![("SLUICE_ADMIN_TOKEN".into(), TOKEN.into())],
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    let local = format!("127.0.0.1:{port}");
    assert_eq!(get(&local, "/healthz"), 200);
    let (status, _, _) = post(&local, "/rebucket", None, serde_json::json!({}));
    assert_eq!(status, 401);
    sluice.stop();
    assert!(!sluice.log_text().contains(TOKEN));
}

/// A log written to a file is plain text, and the server's notices on sluice's SQL connections
/// (idempotent DDL's `already exists, skipping`, here a trigger's) stay out of the info log.
#[tokio::test(flavor = "multi_thread")]
async fn a_log_file_has_no_colour_and_server_notices_are_debug() {
    let db = pg::cluster().create_db("admin_log").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let module = wasm::module("by-owner");
    let start = |filter: &str| {
        Sluice::start(
            &db,
            &module,
            RunOpts {
                // The default level, not the suite's sluice=debug: what an operator sees.
                env: vec![("SLUICE_LOG".into(), filter.into())],
                ..Default::default()
            },
        )
    };
    let mut first = start("info");
    wait_snapshot(&client, &mut first).await;
    first.stop();
    // Every changelog write now makes the server send sluice's sink connection a notice.
    client
        .batch_execute(
            "CREATE FUNCTION chatty() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE NOTICE 'relation \"sync_changelog\" already exists, skipping'; RETURN NULL; END $$; \
             CREATE TRIGGER chatty AFTER INSERT ON sync_changelog FOR EACH STATEMENT EXECUTE FUNCTION chatty();",
        )
        .await
        .unwrap();
    let mut second = start("info");
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'a')",
    )
    .await;
    crate::support::wait_persisted(&client, floor, &mut second).await;
    second.stop();
    let mut third = start("info,sluice::pg=debug");
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (2, 'u2', 'b')",
    )
    .await;
    crate::support::wait_persisted(&client, floor, &mut third).await;
    third.stop();
    for (which, s) in [("first", &first), ("second", &second), ("third", &third)] {
        let log = s.log_text();
        assert!(
            log.contains(" INFO "),
            "{which} start logged nothing:\n{log}"
        );
        assert!(
            !log.contains('\u{1b}'),
            "{which} start's log has escapes:\n{log}"
        );
        assert!(
            !log.contains("NOTICE:"),
            "{which} start's log has notices:\n{log}"
        );
        assert!(
            !log.lines()
                .any(|l| l.contains(" INFO ") && l.contains("already exists")),
            "{which} start's log has notices at info:\n{log}"
        );
    }
    // Not lost: at debug, each changelog write's notice is there.
    let log = third.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains(" DEBUG sluice::pg: server notice: relation \"sync_changelog\" already exists, skipping"))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(changelog(&client).await.len(), 2);
}
