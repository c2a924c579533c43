//! Reload by file after `sluice reload --module other.wasm`, and a Kubernetes ConfigMap's
//! symlink swap (issue 18, "Reload by file").

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::pg;
use crate::reload::{RULES_CONFIG, SCHEMA, free_addr, install, sha};
use crate::support::{RunOpts, Sluice, wait_for, wait_persisted, wait_snapshot, write};
use crate::wasm;

/// `(version, module_path)` of each recorded version, in order.
async fn recorded(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT version, module_path FROM sluice_rule_versions ORDER BY first_lsn, activated_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Inserts item `id` for user `u<id>` and returns the bucket sluice gave it.
async fn bucket_of_new_item(
    client: &tokio_postgres::Client,
    id: i64,
    sluice: &mut Sluice,
) -> String {
    let floor = write(
        client,
        &format!("INSERT INTO items (id, user_id, title) VALUES ({id}, 'u{id}', 't')"),
    )
    .await;
    wait_persisted(client, floor, sluice).await;
    client
        .query_one(
            "SELECT bucket_id FROM sync_changelog WHERE record_id = $1",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_versions(client: &tokio_postgres::Client, n: usize, sluice: &mut Sluice) {
    wait_for(
        &format!("{n} recorded rules versions"),
        Duration::from_secs(60),
        sluice,
        || async { recorded(client).await.len() >= n },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_reload_from_another_file_that_file_is_watched_and_recorded_absolute() {
    let db = pg::cluster().create_db("reload_other_file").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let (by_owner, multi) = (wasm::module("by-owner"), wasm::module("multi-tenant"));
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    install(&cwd.join("rules.wasm"), &std::fs::read(&by_owner).unwrap());
    install(&cwd.join("other.wasm"), &std::fs::read(&multi).unwrap());
    let admin = free_addr();
    // A relative --module, as an operator types it.
    let mut sluice = Sluice::start(
        &db,
        Path::new("rules.wasm"),
        RunOpts {
            rules_config: Some(RULES_CONFIG.into()),
            config_toml: Some(format!(
                "admin_addr = \"{admin}\"\n[reload]\ndebounce_ms = 50\n"
            )),
            cwd: Some(cwd.clone()),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    let path = |name: &str| cwd.join(name).display().to_string();
    assert_eq!(
        recorded(&client).await,
        vec![(sha(&by_owner), path("rules.wasm"))]
    );

    // The README's form, relative to the operator's directory.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["reload", "--admin-addr", &admin, "--module", "other.wasm"])
        .current_dir(&cwd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bucket_of_new_item(&client, 1, &mut sluice).await, "org:u1");
    assert_eq!(
        recorded(&client).await,
        vec![
            (sha(&by_owner), path("rules.wasm")),
            (sha(&multi), path("other.wasm"))
        ]
    );
    let log = sluice.log_text();
    assert!(
        log.contains("the active rules module is not the configured one: a restart loads the configured path; change --module (or rules.module) to keep this version")
            && log.contains(&format!("active={}", path("other.wasm")))
            && log.contains(&format!("configured={}", path("rules.wasm"))),
        "{log}"
    );

    // The configured file is no longer the active one: writing it changes nothing.
    install(&cwd.join("rules.wasm"), &std::fs::read(&multi).unwrap());
    install(&cwd.join("rules.wasm"), &std::fs::read(&by_owner).unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bucket_of_new_item(&client, 2, &mut sluice).await, "org:u2");
    assert_eq!(recorded(&client).await.len(), 2);

    // The active file is watched.
    install(&cwd.join("other.wasm"), &std::fs::read(&by_owner).unwrap());
    wait_versions(&client, 3, &mut sluice).await;
    assert_eq!(bucket_of_new_item(&client, 3, &mut sluice).await, "user:u3");
    assert_eq!(
        recorded(&client).await[2],
        (sha(&by_owner), path("other.wasm"))
    );
    assert_eq!(sluice.stop().code(), Some(0));
}

/// Installs `bytes` as a new ConfigMap version the way the kubelet does: a new timestamped
/// directory, a new `..data` symlink renamed over the old one, the old directory removed.
fn configmap_update(dir: &Path, version: &str, bytes: &[u8], old: Option<&str>) {
    let data = dir.join(version);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("rules.wasm"), bytes).unwrap();
    std::os::unix::fs::symlink(version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_symlink_swap_reloads() {
    let db = pg::cluster().create_db("reload_configmap").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let by_owner = std::fs::read(wasm::module("by-owner")).unwrap();
    let multi = std::fs::read(wasm::module("multi-tenant")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    configmap_update(&dir, "..2026_11_30_v1", &by_owner, None);
    std::os::unix::fs::symlink("..data/rules.wasm", dir.join("rules.wasm")).unwrap();
    let module = dir.join("rules.wasm");
    let mut sluice = Sluice::start(
        &db,
        &module,
        RunOpts {
            rules_config: Some(RULES_CONFIG.into()),
            config_toml: Some("[reload]\ndebounce_ms = 50\n".into()),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    assert_eq!(bucket_of_new_item(&client, 1, &mut sluice).await, "user:u1");

    configmap_update(&dir, "..2026_11_30_v2", &multi, Some("..2026_11_30_v1"));
    wait_versions(&client, 2, &mut sluice).await;
    assert_eq!(bucket_of_new_item(&client, 2, &mut sluice).await, "org:u2");
    // A second swap: the watch followed the path to the new version's directory.
    configmap_update(&dir, "..2026_11_30_v3", &by_owner, Some("..2026_11_30_v2"));
    wait_versions(&client, 3, &mut sluice).await;
    assert_eq!(bucket_of_new_item(&client, 3, &mut sluice).await, "user:u3");
    // The path recorded is the mounted one, not the versioned file behind it.
    let paths: Vec<String> = recorded(&client).await.into_iter().map(|r| r.1).collect();
    assert_eq!(paths, vec![module.display().to_string(); 3]);
    assert_eq!(sluice.stop().code(), Some(0));
}

/// Every rejection is one line, in the reply and in the log, whatever the compiler's message
/// looks like (a log line per rejection is what an operator greps and alerts on).
#[tokio::test(flavor = "multi_thread")]
async fn reload_rejections_are_one_line() {
    let db = pg::cluster().create_db("reload_one_line").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let s = crate::reload::start_with(&db, &wasm::module("by-owner"), "").await;
    let by_owner = std::fs::read(wasm::module("by-owner")).unwrap();
    let mut garbage = b"\0asm\x0d\0\x01\0".to_vec();
    garbage.extend_from_slice(b"not a component\nsecond line\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.wasm", by_owner[..by_owner.len() / 3].to_vec()),
        ("garbage.wasm", garbage),
        (
            "core.wasm",
            wat::parse_str("(module (func (export \"x\")))").unwrap(),
        ),
    ];
    for (name, bytes) in cases {
        let path = s.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (status, body) =
            crate::reload::post_reload(&s.admin, serde_json::json!({ "module": path }));
        assert_eq!(status, 422, "{body}");
        let reason = body["reason"].as_str().unwrap();
        assert!(!reason.contains('\n'), "{name}: {reason:?}");
    }
    let log = s.sluice.log_text();
    let lines: Vec<&str> = log.lines().collect();
    let rejected: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains("rules reload rejected"))
        .collect();
    assert_eq!(rejected.len(), 3, "{log}");
    // The next line is a log line of its own (a timestamp first), not the reason's continuation.
    for i in rejected {
        if let Some(next) = lines.get(i + 1) {
            assert!(
                next.starts_with("20"),
                "a continuation line in the log: {next:?}"
            );
        }
    }
}
