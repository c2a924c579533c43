//! Hot reload while streaming: every trigger, exactly-once across swaps, rejection of bad
//! modules, and automatic rollback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::pg;
use crate::support::{RunOpts, Sluice, changelog, count, wait_for, wait_persisted, write};
use crate::wasm;

pub(crate) fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Replaces `path` atomically with `bytes`, as a deploy tool would.
pub(crate) fn install(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// POST /rules/reload; returns (status, body).
pub(crate) fn post_reload(addr: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&format!("http://{addr}/rules/reload"))
        .send_json(&body)
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap())
}

pub(crate) async fn versions(client: &tokio_postgres::Client) -> Vec<(String, i64)> {
    client
        .query(
            "SELECT version, first_lsn FROM sluice_rule_versions ORDER BY first_lsn, activated_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

pub(crate) fn sha(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

pub(crate) const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text NOT NULL, deleted_at timestamptz); \
    CREATE PUBLICATION sluice_pub FOR TABLE items;";

/// multi-tenant configured to bucket items by user_id: `org:<user_id>`, where by-owner gives
/// `user:<user_id>`. by-owner ignores configuration, so both run with the same text.
pub(crate) const RULES_CONFIG: &str = "[tenant_columns]\nitems = \"user_id\"\n";

pub(crate) struct Started {
    pub sluice: Sluice,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub module: PathBuf,
}

pub(crate) async fn start_with(db: &pg::TestDb, initial: &Path, toml: &str) -> Started {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("rules.wasm");
    install(&module, &std::fs::read(initial).unwrap());
    let admin = free_addr();
    let mut sluice = Sluice::start(
        db,
        &module,
        RunOpts {
            rules_config: Some(RULES_CONFIG.into()),
            config_toml: Some(format!("admin_addr = \"{admin}\"\n{toml}")),
            ..Default::default()
        },
    );
    let client = db.client().await;
    crate::support::wait_snapshot(&client, &mut sluice).await;
    Started {
        sluice,
        admin,
        dir,
        module,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_by_file_sighup_and_endpoint_is_exactly_once_and_per_transaction() {
    let db = pg::cluster().create_db("reload_load").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let by_owner = wasm::module("by-owner");
    let multi = wasm::module("multi-tenant");
    let (a, b) = (
        std::fs::read(&by_owner).unwrap(),
        std::fs::read(&multi).unwrap(),
    );
    let (va, vb) = (sha(&by_owner), sha(&multi));
    let mut s = start_with(&db, &by_owner, "").await;

    // A steady writer: transactions of 50 inserts until stopped, at least 20,000 changes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let db = db.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = db.client().await;
            let mut floors = Vec::new();
            let mut k: i64 = 0;
            while k < 400 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let floor = write(
                    &client,
                    &format!("INSERT INTO items (id, user_id, title) SELECT g, 'u' || (g % 10), 't' FROM generate_series({}, {}) g", k * 50, k * 50 + 49),
                )
                .await;
                floors.push(floor);
                k += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            floors
        })
    };

    let swap_to = |expected: usize| {
        let client = &client;
        async move {
            let start = std::time::Instant::now();
            while versions(client).await.len() < expected {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "swap {expected} never became active"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let pid = s.sluice.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 1, 2: the module file changes on disk.
    install(&s.module, &b);
    swap_to(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    install(&s.module, &a);
    swap_to(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 3: the endpoint, with a new path.
    let other = s.dir.path().join("other.wasm");
    std::fs::write(&other, &b).unwrap();
    let (status, body) = post_reload(&s.admin, serde_json::json!({ "module": other }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "activated");
    assert_eq!(body["version"], vb.as_str());
    swap_to(4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 4: SIGHUP reloads the current path (other.wasm, now watched too: whichever of the watch
    // and the signal comes first activates it, the other finds it unchanged).
    std::fs::write(&other, &a).unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    swap_to(5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // 5, 6: endpoint again, then SIGHUP again.
    let third = s.dir.path().join("third.wasm");
    std::fs::write(&third, &b).unwrap();
    assert_eq!(
        post_reload(&s.admin, serde_json::json!({ "module": third })).0,
        200
    );
    swap_to(6).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&third, &a).unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    swap_to(7).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let floors = writer.await.unwrap();
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (-1, 'u1', 'end')",
    )
    .await;
    wait_persisted(&client, floor, &mut s.sluice).await;

    // The versions follow the swap order.
    let recorded = versions(&client).await;
    let order: Vec<&str> = recorded.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        order,
        vec![&va, &vb, &va, &vb, &va, &vb, &va],
        "recorded versions: {recorded:?}"
    );

    // Every change exactly once.
    let entries = changelog(&client).await;
    let rows = floors.len() * 50 + 1;
    assert!(rows >= 20_000);
    assert_eq!(entries.len(), rows, "one insert entry per row");
    let mut by_id = std::collections::HashMap::new();
    for (bucket, _, id, op) in &entries {
        assert_eq!(*op, 1);
        assert!(
            by_id
                .insert(id.parse::<i64>().unwrap(), bucket.clone())
                .is_none(),
            "row {id} twice"
        );
    }
    // Each transaction wholly by one version, and the one active at its commit LSN.
    let prefix_of = |v: &str| if v == va { "user:" } else { "org:" };
    for (k, floor) in floors.iter().enumerate() {
        let next = floors.get(k + 1).copied().unwrap_or(i64::MAX);
        let prefixes: std::collections::BTreeSet<&str> = (k as i64 * 50..k as i64 * 50 + 50)
            .map(|id| by_id[&id].split(':').next().unwrap())
            .collect();
        assert_eq!(
            prefixes.len(),
            1,
            "transaction {k} was evaluated by more than one version: {prefixes:?}"
        );
        let seen = format!("{}:", prefixes.iter().next().unwrap());
        // Versions possibly active for a commit somewhere in (floor, next).
        let allowed: std::collections::BTreeSet<&str> = recorded
            .iter()
            .enumerate()
            .filter(|(i, (_, first))| {
                let until = recorded.get(i + 1).map_or(i64::MAX, |(_, f)| *f);
                *first < next && until > *floor
            })
            .map(|(_, (v, _))| prefix_of(v))
            .collect();
        assert!(
            allowed.contains(seen.as_str()),
            "transaction {k} used {seen} but the versions active around its commit were {allowed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_modules_are_rejected_and_the_old_version_keeps_running() {
    let db = pg::cluster().create_db("reload_bad").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let by_owner = wasm::module("by-owner");
    let mut s = start_with(&db, &by_owner, "").await;
    let active = sha(&by_owner);

    let core = s.dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let other_world = s.dir.path().join("hello.wasm");
    std::fs::write(
        &other_world,
        wat::parse_str(
            r#"(component
                 (core module $m (func (export "hello") (result i32) i32.const 42))
                 (core instance $i (instantiate $m))
                 (func (export "hello") (result u32) (canon lift (core func $i "hello"))))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let cases = [
        (core, "is a core wasm module, not a component"),
        (
            other_world,
            "does not export `init` and `evaluate` of world sluice:rules/rules@0.2.0 (nor of @0.1.0)",
        ),
        (wasm::module("failing-init"), "init failed"),
    ];
    for (path, expected) in &cases {
        let (status, body) = post_reload(&s.admin, serde_json::json!({ "module": path }));
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["status"], "rejected");
        assert_eq!(body["active"], active.as_str());
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.contains(expected),
            "reason {reason:?} should contain {expected:?}"
        );
    }
    // A truncated file written in two steps: the half is rejected, the whole is picked up.
    let multi = std::fs::read(wasm::module("multi-tenant")).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&s.module)
            .unwrap();
        f.write_all(&multi[..multi.len() / 2]).unwrap();
        f.sync_all().unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let during = write(
            &client,
            "INSERT INTO items (id, user_id, title) VALUES (1, 'u1', 'during')",
        )
        .await;
        // Persisted before the file is completed: under load the stream may otherwise reach
        // this transaction only after the complete module is active (seen on a loaded machine).
        wait_persisted(&client, during, &mut s.sluice).await;
        f.write_all(&multi[multi.len() / 2..]).unwrap();
    }
    let start = std::time::Instant::now();
    while versions(&client).await.len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the complete file was never activated; log:\n{}",
            s.sluice.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (2, 'u2', 'after')",
    )
    .await;
    wait_persisted(&client, floor, &mut s.sluice).await;
    let recorded: Vec<String> = versions(&client)
        .await
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(
        recorded,
        vec![active.clone(), sha(&wasm::module("multi-tenant"))]
    );
    assert_eq!(
        changelog(&client).await,
        vec![
            ("user:u1".into(), "items".into(), "1".into(), 1),
            ("org:u2".into(), "items".into(), "2".into(), 1)
        ]
    );
    let log = s.sluice.log_text();
    assert!(log.contains("rules reload rejected"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_fails_every_change_is_rolled_back() {
    let db = pg::cluster().create_db("reload_rollback").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let by_owner = wasm::module("by-owner");
    let mut s = start_with(
        &db,
        &by_owner,
        "[reload]\nrollback_window = 20\nrollback_error_rate = 0.5\n",
    )
    .await;
    let bad = wasm::module("invalid-bucket-id");
    let (status, body) = post_reload(&s.admin, serde_json::json!({ "module": bad }));
    assert_eq!(status, 200, "{body}");
    // Every row titled 'empty' gets an empty (invalid) bucket id from the new version.
    for k in 0..5 {
        write(&client, &format!("INSERT INTO items (id, user_id, title) SELECT g, 'u1', 'empty' FROM generate_series({}, {}) g", k * 10, k * 10 + 9)).await;
    }
    wait_for(
        "the rollback",
        Duration::from_secs(60),
        &mut s.sluice,
        || async { versions(&client).await.len() >= 3 },
    )
    .await;
    let floor = write(
        &client,
        "INSERT INTO items (id, user_id, title) VALUES (1000, 'u7', 'empty')",
    )
    .await;
    wait_persisted(&client, floor, &mut s.sluice).await;
    let recorded: Vec<String> = versions(&client)
        .await
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(recorded, vec![sha(&by_owner), sha(&bad), sha(&by_owner)]);
    assert!(s.sluice.log_text().contains("ROLLING BACK the rules"));
    // The bad version's failures were dead-lettered; after the rollback by-owner buckets again.
    assert!(count(&client, "SELECT count(*) FROM sync_rule_failures").await >= 20);
    let last = changelog(&client).await.pop().unwrap();
    assert_eq!(last, ("user:u7".into(), "items".into(), "1000".into(), 1));
    // Exactly the running version is at 1; the one rolled back from went to 0 at the swap.
    let mut info = version_info(&s.admin);
    info.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![(sha(&bad), 0.0), (sha(&by_owner), 1.0)];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(info, expected);
}

/// The `sluice_rules_version_info` series on /metrics: (version, value).
fn version_info(addr: &str) -> Vec<(String, f64)> {
    let mut resp = ureq::get(&format!("http://{addr}/metrics")).call().unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("sluice_rules_version_info{version=\""))
        .map(|rest| {
            let (version, value) = rest.split_once("\"} ").unwrap();
            (version.to_owned(), value.trim().parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rebucket_after_a_rule_change_logs_exactly_the_moves_while_a_writer_runs() {
    let db = pg::cluster().create_db("rebucket").await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, org_id text, title text NOT NULL, deleted_at timestamptz); \
             CREATE PUBLICATION sluice_pub FOR TABLE items; \
             INSERT INTO items (id, user_id, org_id, title) \
               SELECT g, 'o' || (g % 10), CASE WHEN g % 2 = 0 THEN 'o' || (g % 10) ELSE 'x' || (g % 10) END, 't' \
               FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    let multi = wasm::module("multi-tenant");
    let admin = free_addr();
    let mut sluice = Sluice::start(
        &db,
        &multi,
        RunOpts {
            rules_config: Some("[tenant_columns]\nitems = \"org_id\"\n".into()),
            config_toml: Some(format!(
                "admin_addr = \"{admin}\"\n[snapshot]\nchunk_rows = 500\n"
            )),
            ..Default::default()
        },
    );
    crate::support::wait_snapshot(&client, &mut sluice).await;
    let snapshot_rows = changelog(&client).await.len();
    assert_eq!(snapshot_rows, 3000);

    // New rules: bucket by user_id. Even ids have org_id = user_id (no move); odd ids move.
    let (status, body) = post_reload(
        &admin,
        serde_json::json!({ "rules_config": "[tenant_columns]\nitems = \"user_id\"\n" }),
    );
    assert_eq!(status, 200, "{body}");

    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            let client = db.client().await;
            let mut last = 0;
            for k in 0..100i64 {
                last = write(&client, &format!("INSERT INTO items (id, user_id, org_id, title) VALUES ({}, 'w{}', 'zz', 'n')", 10_000 + k, k % 3)).await;
            }
            last
        })
    };
    let admin2 = admin.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .post(&format!("http://{admin2}/rebucket"))
            .send_json(serde_json::json!({}))
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_json::<serde_json::Value>().unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["status"], "done");
    let floor = writer.await.unwrap();
    wait_persisted(&client, floor, &mut sluice).await;

    let entries = changelog(&client).await;
    let after = &entries[snapshot_rows..];
    // The snapshot's rows: exactly one move (delete + insert) for every odd id, nothing else.
    let mut moves: Vec<_> = after
        .iter()
        .filter(|e| e.2.parse::<i64>().unwrap() < 10_000)
        .cloned()
        .collect();
    moves.sort();
    let mut expected = Vec::new();
    for g in (1..=3000i64).filter(|g| g % 2 == 1) {
        expected.push((
            format!("org:o{}", g % 10),
            "items".to_string(),
            g.to_string(),
            1i16,
        ));
        expected.push((
            format!("org:x{}", g % 10),
            "items".to_string(),
            g.to_string(),
            3i16,
        ));
    }
    expected.sort();
    assert_eq!(moves.len(), expected.len(), "exactly the moves");
    assert_eq!(moves, expected);
    // The writer's rows: its insert is present once (the pass may also have seen a row before the
    // stream did, which turns the stream's insert into an update of the same membership).
    for k in 0..100i64 {
        let id = (10_000 + k).to_string();
        let ops: Vec<(String, i16)> = after
            .iter()
            .filter(|e| e.2 == id)
            .map(|e| (e.0.clone(), e.3))
            .collect();
        let bucket = format!("org:w{}", k % 3);
        assert!(
            ops == vec![(bucket.clone(), 1)]
                || ops == vec![(bucket.clone(), 1), (bucket.clone(), 2)],
            "row {id}: {ops:?}"
        );
    }
    // Edges equal a fresh evaluation of the current rows.
    let mut fresh: Vec<(String, String, String)> = client
        .query("SELECT id::text, user_id FROM items", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                "items".to_string(),
                r.get::<_, String>(0),
                format!("org:{}", r.get::<_, String>(1)),
            )
        })
        .collect();
    fresh.sort();
    crate::support::assert_same_edges(&crate::support::edges(&client).await, &fresh);
    assert_eq!(
        count(&client, "SELECT count(*) FROM sluice_rebucket_progress").await,
        0,
        "progress is cleared when done"
    );
}
