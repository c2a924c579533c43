//! Hostile and broken rules, each through `sluice run`: the host stays up, exactly the affected
//! change is dead-lettered, its neighbours in the same transaction get their real buckets, and
//! later changes flow at full speed.

use std::time::{Duration, Instant};

use crate::pg;
use crate::support::{RunOpts, Sluice, changelog, count, wait_persisted, wait_snapshot, write};
use crate::{report, wasm};

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, user_id text, title text);
CREATE PUBLICATION sluice_pub FOR TABLE items;";

/// Rows 1..=20 in one transaction, row 7 carrying `trigger`; then rows 101..=600 in another.
/// Returns the stored failure (record_id, operation, error_text).
async fn one_bad_change(package: &str, trigger: &str) -> (String, i16, String) {
    one_bad_change_within(package, trigger, 300).await
}

/// [`one_bad_change`] with a batch deadline of `deadline_ms`.
async fn one_bad_change_within(
    package: &str,
    trigger: &str,
    deadline_ms: u64,
) -> (String, i16, String) {
    let db = pg::cluster()
        .create_db(&format!("hostile_{}", package.replace('-', "_")))
        .await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let opts = RunOpts {
        config_toml: Some(format!(
            "[rules]\ndeadline_ms = {deadline_ms}\nmemory_mib = 32\n"
        )),
        ..Default::default()
    };
    let mut sluice = Sluice::start(&db, &wasm::module(package), opts);
    wait_snapshot(&client, &mut sluice).await;

    let floor = write(
        &client,
        &format!(
            "INSERT INTO items SELECT g, 'u1', CASE WHEN g = 7 THEN '{trigger}' ELSE 'ok' END FROM generate_series(1, 20) g;"
        ),
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    let expected: Vec<_> = (1..=20)
        .filter(|i| *i != 7)
        .map(|i| {
            (
                format!("id:Value::Int({i})"),
                "items".to_owned(),
                i.to_string(),
                1i16,
            )
        })
        .collect();
    assert_eq!(changelog(&client).await, expected);

    // Throughput recovers: a clean transaction right after is written promptly and whole.
    let started = Instant::now();
    let floor = write(
        &client,
        "INSERT INTO items SELECT g, 'u1', 'ok' FROM generate_series(101, 600) g;",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    let recovered = started.elapsed();
    assert!(
        recovered < Duration::from_secs(10),
        "500 clean changes after the bad one took {recovered:?}"
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM sync_changelog WHERE record_id::int > 100"
        )
        .await,
        500
    );
    assert!(sluice.is_running());
    let failures = client
        .query(
            "SELECT table_name, record_id, operation, error_text FROM sync_rule_failures",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(failures.len(), 1, "exactly one dead-letter row");
    let f = &failures[0];
    assert_eq!(f.get::<_, String>(0), "items");
    assert!(sluice.stop().success(), "{}", sluice.log_text());
    report(&format!("hostile rule: {package} ({trigger})"), 1, 1, 0, 0);
    (f.get(1), f.get(2), f.get(3))
}

fn assert_failure(got: (String, i16, String), error_text: &str) {
    assert_eq!(got, ("7".to_owned(), 1, error_text.to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_dead_lettered() {
    let got = one_bad_change("loop-forever", "loop").await;
    assert_failure(
        got,
        "rule did not finish within the batch deadline of 300ms (RuleLimits::batch_deadline)",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_is_dead_lettered() {
    // The cap, not the deadline, is under test: on a loaded machine growing 32 MiB of guest
    // memory can outlast a 300 ms deadline (tests/rules misbehaving saw it in CI).
    let got = one_bad_change_within("memory-bomb", "bomb", 4000).await;
    assert_failure(
        got,
        "rule exceeded the memory cap of 33554432 bytes (RuleLimits::memory_bytes)",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deep_recursion_is_dead_lettered() {
    let got = one_bad_change("hostile-outputs", "recurse").await;
    assert_failure(
        got,
        "rule trapped: stack overflow, probably (the innermost 16 calls go round 1 function): wasm trap: out of bounds memory access",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_is_dead_lettered() {
    let got = one_bad_change("panic-on-value", "panic").await;
    assert_failure(
        got,
        "rule panicked at tests/fixtures/panic-on-value/src/lib.rs:13: fixture refuses title 'panic' (id Value::Int(7))",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_buckets_are_dead_lettered() {
    let got = one_bad_change("ten-thousand-buckets", "many").await;
    assert_failure(
        got,
        "rule returned 10000 bucket ids for one change; at most 64 are allowed (RuleLimits::max_buckets_per_change)",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_buckets_are_dead_lettered() {
    let got = one_bad_change("hostile-outputs", "many").await;
    assert_failure(
        got,
        "rule returned 100000 bucket ids for one change; at most 64 are allowed (RuleLimits::max_buckets_per_change)",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_megabyte_bucket_id_is_dead_lettered() {
    let got = one_bad_change("hostile-outputs", "huge").await;
    assert_failure(
        got,
        &format!(
            "rule returned a bucket id of 10485760 bytes ({:?}...); at most 255 are allowed",
            "h".repeat(32)
        ),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_bucket_id_is_dead_lettered() {
    let got = one_bad_change("hostile-outputs", "badutf8").await;
    assert_failure(
        got,
        "rule trapped: invalid utf-8 sequence of 1 bytes from index 1",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_bucket_ids_are_dead_lettered() {
    let long = format!(
        "rule returned a bucket id of 256 bytes ({:?}...); at most 255 are allowed",
        "x".repeat(32)
    );
    for (trigger, error) in [
        ("empty", "rule returned an empty bucket id"),
        (
            "control",
            "rule returned bucket id \"user:\\u{7}\", which contains control character U+0007",
        ),
        ("long", long.as_str()),
        (
            "zwsp",
            "rule returned bucket id \"user:\\u{200b}1\", which contains format character U+200B (invisible characters make ids that look alike; see wit/rules.wit)",
        ),
        (
            "rlo",
            "rule returned bucket id \"user:\\u{202e}1\", which contains format character U+202E (invisible characters make ids that look alike; see wit/rules.wit)",
        ),
        (
            "bom",
            "rule returned bucket id \"\\u{feff}user:1\", which contains format character U+FEFF (invisible characters make ids that look alike; see wit/rules.wit)",
        ),
        (
            "lsep",
            "rule returned bucket id \"user:1\\u{2028}\", which contains line separator U+2028 (an id is one line; see wit/rules.wit)",
        ),
    ] {
        let got = one_bad_change("invalid-bucket-id", trigger).await;
        assert_failure(got, error);
    }
}

/// `sluice run` with a module that must be refused at load: exit 1, one clear line, and nothing
/// written: no sidecar table, no replication slot.
async fn refused_at_load(module: &std::path::Path) -> (String, Duration) {
    let db = pg::cluster().create_db("hostile_load").await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let started = Instant::now();
    let mut sluice = Sluice::start(
        &db,
        module,
        RunOpts {
            config_toml: Some("[rules]\ndeadline_ms = 300\n".into()),
            ..Default::default()
        },
    );
    let status = sluice.wait(Duration::from_secs(60));
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Some(1), "{}", sluice.log_text());
    let log = sluice.log_text();
    let line = log
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in:\n{log}"))
        .to_owned();
    assert_eq!(
        count(
            &client,
            r"SELECT count(*) FROM pg_tables WHERE tablename LIKE 'sync\_%' OR tablename LIKE 'sluice\_%'"
        )
        .await,
        0,
        "sidecar tables were created"
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        )
        .await,
        0,
        "a replication slot was created"
    );
    (line, elapsed)
}

#[tokio::test(flavor = "multi_thread")]
async fn init_that_never_returns_is_refused_at_load() {
    let module = wasm::module("init-never-returns");
    let (line, elapsed) = refused_at_load(&module).await;
    assert_eq!(
        line,
        format!(
            "error: module {}: init trapped: init did not finish within the init deadline of 5s (RuleLimits::init_deadline)",
            module.display()
        )
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_init_is_refused_at_load() {
    let module = wasm::module("failing-init");
    let (line, _) = refused_at_load(&module).await;
    assert_eq!(
        line,
        format!(
            "error: module {}: init failed: failing-init rejects every configuration (got 0 bytes)",
            module.display()
        )
    );
}

/// A module importing sockets, the filesystem or the clock is refused by `sluice run` before it
/// touches the database, with an error that names the import (tests/rules/check.rs checks the
/// whole message).
#[tokio::test(flavor = "multi_thread")]
async fn modules_importing_what_the_host_does_not_provide_are_refused_at_load() {
    for (package, import) in [
        ("imports-sockets", "wasi:sockets/network@0.2.6"),
        ("imports-filesystem", "wasi:filesystem/types@0.2.6"),
        ("imports-clocks", "wasi:clocks/monotonic-clock@0.2.6"),
    ] {
        let module = wasm::module(package);
        let (line, _) = refused_at_load(&module).await;
        assert!(
            line.starts_with(&format!(
                "error: module {} imports `{import}`",
                module.display()
            )),
            "{line}"
        );
        assert!(line.contains(", which sluice does not provide: "), "{line}");
        report(&format!("refused at load: {package}"), 1, 1, 0, 0);
    }
}
