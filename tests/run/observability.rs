//! Lag you can alert on, metrics that exist from the start, the status line and `sluice status`
//! (issue 18).

use std::process::Command;
use std::time::Duration;

use crate::pg;
use crate::support::{
    RunOpts, Sluice, count, free_admin_addr, slot_for, stored_lsn, wait_for, wait_persisted,
    wait_snapshot, write,
};
use crate::wasm;

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, user_id text); \
    INSERT INTO items VALUES (1, 'u1'), (2, 'u2'), (3, NULL); \
    CREATE PUBLICATION sluice_pub FOR TABLE items;";

fn scrape(admin: &str) -> String {
    let mut resp = ureq::get(&format!("http://{admin}/metrics"))
        .call()
        .unwrap();
    resp.body_mut().read_to_string().unwrap()
}

/// The value of the sample `name` (with its labels, if any) in a scrape.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// The metric names the README's "Health and metrics" section documents.
fn documented_metrics() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("### Health and metrics").unwrap();
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n### ").unwrap() + 4];
    let mut names: Vec<String> = section
        .split('`')
        .filter(|s| s.starts_with("sluice_"))
        .map(|s| {
            s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn lsn_text(v: i64) -> String {
    let v = v as u64;
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_metric_exists_from_the_start_and_the_status_line_is_logged() {
    let db = pg::cluster().create_db("obs_metrics").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let admin = free_admin_addr();
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            config_toml: Some(format!(
                "admin_addr = \"{admin}\"\nstatus_log_interval_ms = 200\n"
            )),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    let page = scrape(&admin);
    let names = documented_metrics();
    assert!(names.len() >= 14, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            !page.lines().any(|l| {
                l.strip_prefix(n.as_str())
                    .is_some_and(|rest| rest.starts_with([' ', '{', '_']))
            })
        })
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in\n{page}");
    // The snapshot's rows are counted among the changelog rows.
    assert_eq!(sample(&page, "sluice_snapshot_rows_total"), Some(3.0));
    assert_eq!(sample(&page, "sluice_changelog_rows_total"), Some(3.0));
    assert_eq!(sample(&page, "sluice_rule_failures_total"), Some(0.0));
    assert_eq!(sample(&page, "sluice_reconnects_total"), Some(0.0));
    assert_eq!(sample(&page, "sluice_refused_tables"), Some(0.0));
    assert_eq!(
        sample(
            &page,
            "sluice_changes_total{table=\"public.items\",op=\"delete\"}"
        ),
        Some(0.0)
    );
    // Idle, nothing is pending. On PostgreSQL 14 sluice's own sink commits come back as empty
    // transactions (15+ skips them), one of which may be in flight at the scrape: then the lag
    // is its age, milliseconds.
    let lag = sample(&page, "sluice_replication_lag_seconds");
    assert!(lag.is_some_and(|s| (0.0..1.0).contains(&s)), "{lag:?}");

    let floor = write(&client, "INSERT INTO items VALUES (4, 'u4')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    let stored = stored_lsn(&client).await.unwrap();
    let version: String = client
        .query_one("SELECT version FROM sluice_rule_versions", &[])
        .await
        .unwrap()
        .get(0);
    // A line logged after the write was persisted: everything up to the stored LSN (or beyond,
    // as keepalives for the other tests' WAL are confirmed too) is confirmed.
    let logged_before = sluice.log_text().lines().count();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let log = sluice.log_text();
        if let Some(line) = log
            .lines()
            .skip(logged_before)
            .find(|l| l.contains(" status ") && l.contains("confirmed_lsn="))
        {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no status line:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let confirmed = line
        .split("confirmed_lsn=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|lsn| lsn.split_once('/'))
        .map(|(hi, lo)| {
            (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
        })
        .unwrap();
    assert!(
        confirmed >= stored as u64,
        "{line} (stored {})",
        lsn_text(stored)
    );
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("state=\"streaming\""), "{line}");
    // Idle: nothing pending, or on PostgreSQL 14 an empty transaction of sluice's own sink
    // commits in flight (see the scrape above).
    let lag_seconds: f64 = line
        .split("lag_seconds=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    assert!((0.0..1.0).contains(&lag_seconds), "{line}");
    // Bytes may be a keepalive's WAL end for the other tests' databases, received a moment
    // before it is confirmed: present, not necessarily 0.
    assert!(line.contains(" lag_bytes="), "{line}");
    assert!(line.contains(&format!("rules_version={version}")), "{line}");
    assert!(line.contains("changes_per_s="), "{line}");
    assert!(line.contains("changelog_rows_per_s="), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_grows_while_a_transaction_waits_to_be_persisted_and_falls_after() {
    let db = pg::cluster().create_db("obs_lag").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let admin = free_admin_addr();
    let mut sluice = Sluice::start(
        &db,
        &wasm::module("by-owner"),
        RunOpts {
            config_toml: Some(format!("admin_addr = \"{admin}\"\n")),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    // Hold the row sluice stores its LSN in: the next sink commit waits, as behind a slow sink.
    let blocker = db.client().await;
    blocker
        .batch_execute("BEGIN; SELECT * FROM sync_wal_position FOR UPDATE")
        .await
        .unwrap();
    let floor = write(
        &client,
        "INSERT INTO items SELECT g, 'u' FROM generate_series(10, 5009) g",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let page = scrape(&admin);
    let seconds = sample(&page, "sluice_replication_lag_seconds").unwrap();
    let bytes = sample(&page, "sluice_replication_lag_bytes").unwrap();
    assert!(
        (2.0..60.0).contains(&seconds),
        "lag_seconds {seconds}\n{page}"
    );
    assert!(bytes > 0.0, "lag_bytes {bytes}\n{page}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let later = sample(&scrape(&admin), "sluice_replication_lag_seconds").unwrap();
    assert!(later >= seconds + 0.5, "{seconds} then {later}");

    blocker.batch_execute("COMMIT").await.unwrap();
    wait_persisted(&client, floor, &mut sluice).await;
    // Once persisted, the lag falls to 0 (a keepalive for the other tests' WAL may be received
    // a moment before it is confirmed, hence the wait).
    wait_for(
        "the lag to fall to 0",
        Duration::from_secs(30),
        &mut sluice,
        || async {
            let page = scrape(&admin);
            sample(&page, "sluice_replication_lag_seconds") == Some(0.0)
                && sample(&page, "sluice_replication_lag_bytes") == Some(0.0)
        },
    )
    .await;
    assert_eq!(
        count(&client, "SELECT count(*) FROM sync_bucket_edges").await,
        5003
    );
}

/// `sluice status` for `db`'s slot; its stdout as `key: value` pairs.
fn status(db: &pg::TestDb) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["status", "--database-url", &db.url, "--slot", &slot_for(db)])
        .env_remove("SLUICE_DATABASE_URL")
        .env_remove("SLUICE_SINK_URL")
        .env_remove("SLUICE_SLOT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap_or_else(|| panic!("{l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn sluice_status_prints_the_slot_and_the_sink_with_or_without_a_running_process() {
    let db = pg::cluster().create_db("obs_status").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let slot = slot_for(&db);

    let before = status(&db);
    assert_eq!(field(&before, "slot"), slot);
    assert!(field(&before, "slot_state").starts_with("missing"));

    let mut sluice = Sluice::start(&db, &wasm::module("by-owner"), RunOpts::default());
    wait_snapshot(&client, &mut sluice).await;
    let floor = write(&client, "INSERT INTO items VALUES (4, 'u4')").await;
    wait_persisted(&client, floor, &mut sluice).await;
    let pid: i32 = client
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    let running = status(&db);
    assert_eq!(field(&running, "slot_state"), format!("active (pid {pid})"));
    assert_eq!(field(&running, "wal_status"), "reserved");
    assert_eq!(field(&running, "safe_wal_size_bytes"), "unlimited");
    assert_eq!(field(&running, "max_slot_wal_keep_size"), "-1");
    let stored = stored_lsn(&client).await.unwrap();
    assert_eq!(field(&running, "stored_lsn"), lsn_text(stored));
    let (version, first_lsn): (String, i64) = client
        .query_one(
            "SELECT version, first_lsn FROM sluice_rule_versions ORDER BY first_lsn DESC LIMIT 1",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert!(
        field(&running, "rules_version")
            .starts_with(&format!("{version} (from {}, ", lsn_text(first_lsn))),
        "{running:?}"
    );
    assert_eq!(field(&running, "snapshot"), "complete (1 tables, 3 rows)");
    assert_eq!(field(&running, "rebucket"), "none");

    assert!(sluice.stop().success());
    let stopped = status(&db);
    let (confirmed, retained): (String, i64) = client
        .query_one(
            "SELECT confirmed_flush_lsn::text, (pg_current_wal_lsn() - restart_lsn)::int8 \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        field(&stopped, "slot_state"),
        "inactive (no sluice streaming from it)"
    );
    assert_eq!(field(&stopped, "confirmed_flush_lsn"), confirmed);
    // The cluster's WAL moves with the other tests' databases: retained WAL only grows.
    let shown: i64 = field(&stopped, "retained_wal_bytes").parse().unwrap();
    assert!(shown > 0 && shown <= retained, "{shown} vs {retained}");
    assert_eq!(
        field(&stopped, "lag_seconds"),
        "unknown (no process streaming)"
    );
    assert_eq!(field(&stopped, "stored_lsn"), lsn_text(stored));
}
