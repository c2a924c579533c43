//! Issue 19: nothing a rule writes or returns, and no reload request, can stop or flood the
//! host. Each scenario runs the real `sluice run` under the default `dead-letter` policy and
//! checks the exact sidecar rows, that the process is still up, and that the next transaction
//! flows.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::pg;
use crate::support::{
    RunOpts, Sluice, changelog, count, wait_for, wait_persisted, wait_snapshot, write,
};
use crate::{report, wasm};

const SCHEMA: &str = "CREATE TABLE items (id int PRIMARY KEY, user_id text, title text);
CREATE PUBLICATION sluice_pub FOR TABLE items;";

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// POST `path` with a JSON body; returns (status, body text).
fn post(addr: &str, path: &str, body: serde_json::Value) -> (u16, String) {
    let mut resp = agent()
        .post(&format!("http://{addr}{path}"))
        .send_json(&body)
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

/// The rows the misbehaving fixture gives a well-behaved change.
fn kept(ids: impl IntoIterator<Item = i32>) -> Vec<(String, String, String, i16)> {
    ids.into_iter()
        .map(|i| {
            (
                format!("id:Value::Int({i})"),
                "items".to_owned(),
                i.to_string(),
                1i16,
            )
        })
        .collect()
}

async fn failures(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT record_id, error_text FROM sync_rule_failures ORDER BY record_id::int",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// No line of the log is longer than `max` bytes.
fn assert_log_lines_bounded(sluice: &Sluice, max: usize) {
    let log = sluice.log_text();
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert!(longest <= max, "a log line of {longest} bytes");
}

struct Running {
    sluice: Sluice,
    client: tokio_postgres::Client,
    admin: String,
    _db: pg::TestDb,
}

async fn start(name: &str, module: &Path, rules_config: &str, toml: &str, seed: &str) -> Running {
    let db = pg::cluster().create_db(name).await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    client.batch_execute(seed).await.unwrap();
    let admin = free_addr();
    let mut sluice = Sluice::start(
        &db,
        module,
        RunOpts {
            config_toml: Some(format!("admin_addr = \"{admin}\"\n{toml}")),
            rules_config: Some(rules_config.into()),
            ..Default::default()
        },
    );
    wait_snapshot(&client, &mut sluice).await;
    Running {
        sluice,
        client,
        admin,
        _db: db,
    }
}

/// Rows `from..=to` in one transaction, titled `trigger` where `titles` says so and `ok`
/// elsewhere; waits until it is persisted.
async fn insert(r: &mut Running, from: i32, to: i32, titles: &[(i32, &str)]) {
    let cases: String = titles
        .iter()
        .map(|(id, t)| format!("WHEN g = {id} THEN '{t}' "))
        .collect();
    let title = if cases.is_empty() {
        "'ok'".to_owned()
    } else {
        format!("CASE {cases}ELSE 'ok' END")
    };
    let floor = write(
        &r.client,
        &format!("INSERT INTO items SELECT g, 'u1', {title} FROM generate_series({from}, {to}) g;"),
    )
    .await;
    wait_persisted(&r.client, floor, &mut r.sluice).await;
}

/// A rule that prints (stdout, stderr, `dbg!`), reads stdin, or prints in `init`, is an ordinary
/// rule: in the snapshot, the stream and a rebucket, every row gets its buckets and nothing is
/// dead-lettered. This used to panic the process ("Cannot start a runtime from within a
/// runtime") on every start.
#[tokio::test(flavor = "multi_thread")]
async fn guest_output_is_discarded_in_snapshot_stream_and_rebucket() {
    let module = wasm::module("misbehaving-guest");
    let mut r = start(
        "guest_output",
        &module,
        "print-in-init",
        "",
        "INSERT INTO items VALUES (1, 'u1', 'print'), (2, 'u1', 'eprint'), (3, 'u1', 'stdin');",
    )
    .await;
    insert(
        &mut r,
        11,
        30,
        &[(13, "print"), (17, "eprint"), (19, "dbg"), (23, "stdin")],
    )
    .await;
    let mut expected = kept(1..=3);
    expected.extend(kept(11..=30));
    assert_eq!(changelog(&r.client).await, expected);
    let (status, body) = post(&r.admin, "/rebucket", serde_json::json!({}));
    assert_eq!(status, 200, "{body}");
    insert(&mut r, 31, 40, &[(35, "print")]).await;
    expected.extend(kept(31..=40));
    assert_eq!(
        changelog(&r.client).await,
        expected,
        "rebucket moved nothing"
    );
    assert_eq!(failures(&r.client).await, vec![]);
    // A reload of a module that prints in init activates like any other.
    let (status, body) = post(
        &r.admin,
        "/rules/reload",
        serde_json::json!({ "module": module, "rules_config": "print-in-init\n" }),
    );
    assert_eq!(status, 200, "{body}");
    insert(&mut r, 41, 42, &[(41, "print")]).await;
    assert!(r.sluice.is_running());
    assert!(r.sluice.stop().success(), "{}", r.sluice.log_text());
    let log = r.sluice.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        !log.contains("a rule printing"),
        "guest output reached the log: {log}"
    );
    report("guest writes to stdout/stderr/stdin", 1, 8, 0, 0);
}

/// Guest text is bounded (4 KiB), storable (no NUL) and one line, in `sync_rule_failures` and
/// the log; the stream goes on past each.
#[tokio::test(flavor = "multi_thread")]
async fn guest_text_is_bounded_storable_and_one_line() {
    let module = wasm::module("misbehaving-guest");
    let mut r = start("guest_text", &module, "", "", "").await;
    insert(&mut r, 1, 20, &[(3, "nul"), (7, "multiline"), (11, "huge")]).await;
    let cut = (40usize << 20) - 4048;
    assert_eq!(
        failures(&r.client).await,
        vec![
            ("3".into(), r"bad\u{0}thing".into()),
            (
                "7".into(),
                r"first line\u{a}2026-11-30T00:00:00Z ERROR sluice: forged host line\u{1b}[31m"
                    .into()
            ),
            (
                "11".into(),
                format!("{}... ({cut} more bytes cut)", "e".repeat(4048))
            ),
        ]
    );
    let expected: Vec<_> = kept((1..=20).filter(|i| ![3, 7, 11].contains(i)));
    assert_eq!(changelog(&r.client).await, expected);
    insert(&mut r, 21, 25, &[]).await;
    assert_eq!(
        count(&r.client, "SELECT count(*) FROM sync_changelog").await,
        22
    );
    assert!(r.sluice.is_running());
    assert_log_lines_bounded(&r.sluice, 10_000);
    let log = r.sluice.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-11-30T00:00:00Z")),
        "a guest forged a log line: {log}"
    );
    report("guest text: NUL, newline, 40 MiB", 1, 3, 0, 0);
}

/// A 10 MiB init error: a reload is refused with a bounded reply and a bounded log line, the
/// active version keeps running; at start, sluice exits 1 with one bounded line.
#[tokio::test(flavor = "multi_thread")]
async fn a_huge_init_error_is_bounded_in_replies_and_logs() {
    let module = wasm::module("misbehaving-guest");
    let by_owner = wasm::module("by-owner");
    let mut r = start("guest_init_error", &by_owner, "", "", "").await;
    let (status, body) = post(
        &r.admin,
        "/rules/reload",
        serde_json::json!({ "module": module, "rules_config": "huge-init-error" }),
    );
    assert_eq!(status, 422, "{}", &body[..body.len().min(500)]);
    assert!(body.len() < 5_000, "a reply of {} bytes", body.len());
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reason = reply["reason"].as_str().unwrap();
    let prefix = format!("module {}: init failed: iii", module.display());
    assert!(reason.starts_with(&prefix), "{reason}");
    assert!(
        reason.ends_with(&format!("... ({} more bytes cut)", (10 << 20) - 4048)),
        "{}",
        &reason[reason.len() - 100..]
    );
    let floor = write(
        &r.client,
        "INSERT INTO items VALUES (1, 'u1', 'after the refused reload')",
    )
    .await;
    wait_persisted(&r.client, floor, &mut r.sluice).await;
    assert_eq!(
        changelog(&r.client).await,
        vec![("user:u1".into(), "items".into(), "1".into(), 1)]
    );
    assert_log_lines_bounded(&r.sluice, 10_000);

    // At start: exit 1, one bounded error line.
    let db = pg::cluster().create_db("guest_init_error_start").await;
    db.client().await.batch_execute(SCHEMA).await.unwrap();
    let mut s = Sluice::start(
        &db,
        &module,
        RunOpts {
            rules_config: Some("huge-init-error".into()),
            ..Default::default()
        },
    );
    assert_eq!(s.wait(Duration::from_secs(60)).code(), Some(1));
    let log = s.log_text();
    let line = log.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(line.len() < 5_000, "an error line of {} bytes", line.len());
    assert!(line.ends_with(" more bytes cut)"), "{line}");
    report("10 MiB init error", 2, 2, 0, 0);
}

/// A rule that logs 1,000 lines and then traps: bisection re-instantiates it several times,
/// but the log budget (20 lines a second) is the module version's, not each instance's; the
/// suppressed lines are counted.
#[tokio::test(flavor = "multi_thread")]
async fn the_guest_log_budget_holds_across_reinstantiation() {
    let module = wasm::module("misbehaving-guest");
    let mut r = start("guest_log_flood", &module, "", "", "").await;
    let started = Instant::now();
    insert(&mut r, 1, 20, &[(7, "logtrap")]).await;
    let elapsed = started.elapsed();
    let got = failures(&r.client).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "7");
    assert!(got[0].1.starts_with("rule trapped: "), "{}", got[0].1);
    assert!(
        got[0]
            .1
            .ends_with("; the module logged: log line 999 before a trap"),
        "{}",
        got[0].1
    );
    // Let the second end, so that the count of suppressed lines is reported with the next call.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    insert(&mut r, 21, 21, &[]).await;
    let log = r.sluice.log_text();
    let forwarded = log.lines().filter(|l| l.contains("before a trap")).count();
    let seconds = elapsed.as_secs() as usize + 2;
    assert!(
        forwarded <= 20 * seconds,
        "{forwarded} guest lines in about {seconds} s"
    );
    assert!(
        log.contains("rules module logs more than 20 lines a second"),
        "{log}"
    );
    let suppressed: u64 = log
        .lines()
        .filter_map(|l| {
            l.split(" rules module log lines were suppressed")
                .next()
                .filter(|_| l.contains("were suppressed"))
                .and_then(|head| head.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum();
    // Each bisection step that reaches row 7 logs 1,000 lines: at least 2,000 in all.
    assert!(
        suppressed + forwarded as u64 >= 2_000,
        "{suppressed} suppressed + {forwarded} forwarded"
    );
    report("guest log flood across re-instantiation", 1, 1, 0, 0);
}

/// A batch that comes back with one outcome too many or too few is isolated like a trap: only
/// the change that caused it fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_outcome_count_fails_only_its_change() {
    let module = wasm::module("misbehaving-guest");
    let mut r = start("guest_outcome_count", &module, "", "", "").await;
    // Two transactions, persisted one after the other: a batch holding both would come back
    // with the right count.
    insert(&mut r, 1, 10, &[(7, "extra")]).await;
    insert(&mut r, 11, 20, &[(13, "fewer")]).await;
    let path = module.display();
    assert_eq!(
        failures(&r.client).await,
        vec![
            (
                "7".into(),
                format!(
                    "module {path} returned 2 outcomes for 1 changes; a rule must return exactly one per change"
                )
            ),
            (
                "13".into(),
                format!(
                    "module {path} returned 0 outcomes for 1 changes; a rule must return exactly one per change"
                )
            ),
        ]
    );
    let expected: Vec<_> = kept((1..=20).filter(|i| ![7, 13].contains(i)));
    assert_eq!(changelog(&r.client).await, expected);
    report("wrong outcome count", 1, 2, 0, 0);
}

/// Milliseconds each admin endpoint took to answer, probed every 50 ms until `stop`, and the
/// answers that were not 200 (path and status), for the caller to assert on with the log.
fn probe_admin(
    admin: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<u128>, Vec<(&'static str, Option<u16>)>) {
    let agent = agent();
    let mut took = Vec::new();
    let mut bad = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let started = Instant::now();
            let status = agent
                .get(&format!("http://{admin}{path}"))
                .call()
                .map(|r| r.status().as_u16())
                .ok();
            if status != Some(200) {
                bad.push((path, status));
            }
            took.push(started.elapsed().as_millis());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (took, bad)
}

/// A swap to a module that loops on every change, at the default limits (512-change calls,
/// 1 s deadline, rollback window 100 at 50 %): the batch costs its deadline plus the isolation
/// budget (two more missed deadlines), not a deadline per change; the version is rolled back right after
/// that batch; health, readiness and metrics answer throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_looping_swap_is_rolled_back_after_one_batch_and_admin_keeps_answering() {
    let by_owner = wasm::module("by-owner");
    let looping = wasm::module("misbehaving-guest");
    let mut r = start("guest_looping_swap", &by_owner, "", "", "").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (admin, stop) = (r.admin.clone(), stop.clone());
        std::thread::spawn(move || probe_admin(admin, stop))
    };
    let (status, body) = post(
        &r.admin,
        "/rules/reload",
        serde_json::json!({ "module": looping, "rules_config": "loop" }),
    );
    assert_eq!(status, 200, "{body}");
    let swapped = Instant::now();
    write(
        &r.client,
        "INSERT INTO items SELECT g, 'u' || g, 'x' FROM generate_series(1, 64) g;",
    )
    .await;
    let client = &r.client;
    wait_for(
        "the rollback",
        Duration::from_secs(60),
        &mut r.sluice,
        || async { count(client, "SELECT count(*) FROM sluice_rule_versions").await >= 3 },
    )
    .await;
    let rollback = swapped.elapsed();
    insert(&mut r, 100, 100, &[]).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (took, bad) = prober.join().unwrap();
    assert!(
        bad.is_empty(),
        "admin answers other than 200: {bad:?}; log:\n{}",
        r.sluice.log_text()
    );
    let slowest = took.iter().copied().max().unwrap_or(0);
    eprintln!(
        "GUEST-REPORT | looping swap at the defaults | swap to rollback {rollback:?} | admin probes {} | slowest {slowest} ms",
        took.len()
    );
    let failed = failures(&r.client).await;
    assert_eq!(failed.len(), 64, "{failed:?}");
    let deadline =
        "rule did not finish within the batch deadline of 1s (RuleLimits::batch_deadline)";
    let spent = "rule not evaluated for this change: its batch missed the deadline of 1s and isolating the changes that caused it used up the budget of 2 more missed deadlines or 10s in the rule (RuleLimits::isolation_budget)";
    assert!(
        failed.iter().all(|(_, e)| e == deadline || e == spent),
        "{failed:?}"
    );
    // The batch's miss, then the first two changes' (the isolation budget).
    assert_eq!(failed.iter().filter(|(_, e)| e == deadline).count(), 2);
    assert_eq!(
        changelog(&r.client).await,
        vec![("user:u1".into(), "items".into(), "100".into(), 1)],
        "after the rollback by-owner buckets again"
    );
    // One batch: its deadline and the two-deadline budget, then the swap back.
    assert!(rollback < Duration::from_secs(15), "{rollback:?}");
    assert!(slowest < 1_000, "an admin probe took {slowest} ms");
    assert!(r.sluice.log_text().contains("ROLLING BACK the rules"));
    report("looping swap rolled back", 1, 64, 0, 0);
}

/// Module paths that are not regular files of bounded size are refused quickly, and the reply
/// says nothing about what the path is; a symlink to a module is followed.
#[tokio::test(flavor = "multi_thread")]
async fn reload_paths_are_read_safely_and_replies_disclose_nothing() {
    let by_owner = wasm::module("by-owner");
    let mut r = start("guest_module_paths", &by_owner, "", "", "").await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.wasm");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let big = dir.path().join("big.wasm");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(257 << 20).unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a module").unwrap();
    let paths: Vec<PathBuf> = vec![
        "/dev/zero".into(),
        "/dev/urandom".into(),
        dir.path().to_owned(),
        fifo,
        big,
        text,
        "/nonexistent/rules.wasm".into(),
    ];
    for path in &paths {
        let started = Instant::now();
        let (status, body) = post(
            &r.admin,
            "/rules/reload",
            serde_json::json!({ "module": path }),
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{path:?}");
        assert_eq!(status, 422, "{body}");
        let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            reply["reason"],
            format!(
                "{} is not a rules module: give the path of a readable regular file that holds a wasm32-wasip2 component (the sluice log says why this one is not)",
                path.display()
            )
        );
    }
    let link = dir.path().join("link.wasm");
    std::os::unix::fs::symlink(wasm::module("misbehaving-guest"), &link).unwrap();
    let (status, body) = post(
        &r.admin,
        "/rules/reload",
        serde_json::json!({ "module": link }),
    );
    assert_eq!(status, 200, "{body}");
    insert(&mut r, 1, 1, &[]).await;
    assert_eq!(changelog(&r.client).await, kept([1]));
    let log = r.sluice.log_text();
    assert!(log.contains("it is not a regular file"), "{log}");
    assert!(
        log.contains("it is 269484032 bytes, over the limit of 268435456 bytes"),
        "{log}"
    );
    report(
        "module paths: devices, FIFO, directory, 257 MiB",
        1,
        paths.len(),
        0,
        0,
    );
}
