//! Standby, takeover and fencing (issue 15): a second `sluice run` on the same slot waits as a
//! standby and takes over within 5 s when the active process is killed, exits or freezes; a
//! frozen process that wakes up after the takeover commits nothing.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::crash::{assert_w1_exact, w1_db};
use crate::pg;
use crate::support::{
    Entry, RunOpts, Sluice, changelog, free_admin_addr, http_get, slot_for, stored_lsn,
    wait_persisted, wait_snapshot, write,
};
use crate::wasm;

/// What the issue promises for every takeover.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(5);

/// A `sluice run` with its own admin listener.
struct Replica {
    sluice: Sluice,
    admin: String,
}

impl Replica {
    fn start(db: &pg::TestDb, module: &Path, opts: &RunOpts) -> Replica {
        let admin = free_admin_addr();
        let mut opts = opts.clone();
        opts.extra_args
            .extend(["--admin-addr".into(), admin.clone()]);
        Replica {
            sluice: Sluice::start(db, module, opts),
            admin,
        }
    }

    fn readyz(&self) -> (u16, String) {
        http_get(&self.admin, "/readyz")
    }

    /// The `sluice_active` gauge, if the page has it.
    fn active_gauge(&self) -> Option<f64> {
        let (_, page) = http_get(&self.admin, "/metrics");
        page.lines()
            .find_map(|l| l.strip_prefix("sluice_active "))
            .and_then(|v| v.trim().parse().ok())
    }

    fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.sluice.pid() as i32, sig);
        }
    }
}

/// The pid in `sluice_leader.holder` (`host:pid`) for the test's slot.
async fn leader_pid(client: &tokio_postgres::Client, slot: &str) -> Option<u32> {
    let row = client
        .query_opt(
            "SELECT holder FROM sluice_leader WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .ok()??;
    row.get::<_, String>(0).rsplit(':').next()?.parse().ok()
}

/// Waits until `replica` is the leader and ready; returns how long that took from `since`.
async fn wait_leader(
    client: &tokio_postgres::Client,
    slot: &str,
    replica: &mut Replica,
    since: Instant,
) -> Duration {
    let pid = replica.sluice.pid();
    loop {
        if leader_pid(client, slot).await == Some(pid) && replica.readyz().0 == 200 {
            return since.elapsed();
        }
        assert!(
            replica.sluice.is_running(),
            "the standby exited; log:\n{}",
            replica.sluice.log_text()
        );
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "no takeover within 30 s; standby log:\n{}",
            replica.sluice.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `replica` says it is a standby.
async fn wait_standby(replica: &mut Replica) {
    let start = Instant::now();
    while !replica
        .sluice
        .log_text()
        .contains("standby: another sluice is active")
    {
        assert!(
            replica.sluice.is_running() && start.elapsed() < Duration::from_secs(60),
            "the second process did not become a standby; log:\n{}",
            replica.sluice.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A table in `sluice_pub` with `rows` rows, and the by-owner module.
async fn items_db(name: &str, rows: i64) -> (pg::TestDb, tokio_postgres::Client) {
    let db = pg::cluster().create_db(name).await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text); \
             CREATE PUBLICATION sluice_pub FOR TABLE items; \
             INSERT INTO items SELECT g, 'u' || (g % 7), 'seed' FROM generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
    (db, client)
}

/// The changelog of `items` per record: (bucket, op) in seq order.
fn per_record(entries: &[Entry]) -> HashMap<i64, Vec<(String, i16)>> {
    let mut out: HashMap<i64, Vec<(String, i16)>> = HashMap::new();
    for (bucket, table, id, op) in entries {
        assert_eq!(table, "items");
        out.entry(id.parse().unwrap())
            .or_default()
            .push((bucket.clone(), *op));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_is_a_standby_and_takes_over_after_kill_9() {
    let (db, client) = items_db("ha_standby", 3).await;
    let module = wasm::module("by-owner");
    let slot = slot_for(&db);
    let opts = RunOpts::default();
    let mut active = Replica::start(&db, &module, &opts);
    wait_snapshot(&client, &mut active.sluice).await;
    wait_leader(&client, &slot, &mut active, Instant::now()).await;
    assert_eq!(active.active_gauge(), Some(1.0));

    let mut standby = Replica::start(&db, &module, &opts);
    wait_standby(&mut standby).await;
    let log = standby.sluice.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("standby: another sluice is active"))
        .unwrap();
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(&format!("slot=\"{slot}\"")), "{line}");
    assert!(
        line.contains(&format!(":{}", active.sluice.pid())),
        "names the active process: {line}"
    );
    assert_eq!(http_get(&standby.admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(
        standby.readyz(),
        (
            503,
            "not ready: standby (another sluice is active on the slot)\n".into()
        )
    );
    assert_eq!(standby.active_gauge(), Some(0.0));
    // Still a standby a while later, and the active one still streams alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(standby.sluice.is_running());
    assert_eq!(standby.readyz().0, 503);
    let floor = write(&client, "INSERT INTO items VALUES (4, 'u4', 'x')").await;
    wait_persisted(&client, floor, &mut active.sluice).await;

    active.sluice.kill9();
    let took = wait_leader(&client, &slot, &mut standby, Instant::now()).await;
    assert!(took < TAKEOVER_LIMIT, "takeover took {took:?}");
    assert_eq!(standby.active_gauge(), Some(1.0));
    let floor = write(&client, "INSERT INTO items VALUES (5, 'u5', 'y')").await;
    wait_persisted(&client, floor, &mut standby.sluice).await;
    let e = |b: &str, id: &str, op: i16| (b.to_owned(), "items".to_owned(), id.to_owned(), op);
    assert_eq!(
        changelog(&client).await,
        vec![
            e("user:u1", "1", 1),
            e("user:u2", "2", 1),
            e("user:u3", "3", 1),
            e("user:u4", "4", 1),
            e("user:u5", "5", 1),
        ]
    );
    let log = standby.sluice.log_text();
    assert!(
        log.contains("leader: this process holds the slot's lease and streams"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_exit_hands_the_slot_to_the_standby() {
    let (db, client) = items_db("ha_exit", 2).await;
    let module = wasm::module("by-owner");
    let slot = slot_for(&db);
    let opts = RunOpts::default();
    let mut active = Replica::start(&db, &module, &opts);
    wait_snapshot(&client, &mut active.sluice).await;
    let mut standby = Replica::start(&db, &module, &opts);
    wait_standby(&mut standby).await;

    let since = Instant::now();
    assert!(
        active.sluice.stop().success(),
        "{}",
        active.sluice.log_text()
    );
    let took = wait_leader(&client, &slot, &mut standby, since).await;
    assert!(took < TAKEOVER_LIMIT, "takeover took {took:?}");
    let floor = write(&client, "UPDATE items SET user_id = 'u9' WHERE id = 1").await;
    wait_persisted(&client, floor, &mut standby.sluice).await;
    let e = |b: &str, id: &str, op: i16| (b.to_owned(), "items".to_owned(), id.to_owned(), op);
    assert_eq!(
        changelog(&client).await,
        vec![
            e("user:u1", "1", 1),
            e("user:u2", "2", 1),
            e("user:u1", "1", 3),
            e("user:u9", "1", 1),
        ]
    );
}

/// `txns` transactions of `rows` inserts each, every one also renaming the rows the previous
/// one inserted.
fn busy_workload(first_id: i64, txns: i64, rows: i64) -> String {
    let mut sql = String::new();
    for k in 0..txns {
        let lo = first_id + k * rows;
        let hi = lo + rows - 1;
        sql.push_str(&format!(
            "BEGIN; INSERT INTO items SELECT g, 'u' || (g % 7), 'new' FROM generate_series({lo}, {hi}) g; \
             UPDATE items SET title = 'renamed' WHERE id BETWEEN {} AND {}; COMMIT;\n",
            lo - rows,
            lo - 1
        ));
    }
    sql
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_leader_is_replaced_and_commits_nothing_when_it_wakes_up() {
    let (db, client) = items_db("ha_sigstop", 0).await;
    // A frozen process's walsender, blocked writing into full socket buffers, cannot be
    // terminated until its connection fails: the documented setting bounds that.
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET tcp_user_timeout = 2000",
            db.name
        ))
        .await
        .unwrap();
    let module = wasm::module("by-owner");
    let slot = slot_for(&db);
    // Small batches: the leader commits often, and is often inside a sink transaction.
    let opts = RunOpts {
        config_toml: Some("[batch]\nmax_rows = 500\n".into()),
        ..Default::default()
    };
    let mut old = Replica::start(&db, &module, &opts);
    wait_snapshot(&client, &mut old.sluice).await;
    let mut new = Replica::start(&db, &module, &opts);
    wait_standby(&mut new).await;

    let (first, txns, rows) = (1_000_000i64, 60i64, 2_000i64);
    let round = |r: i64| {
        let name = db.name.clone();
        let sql = busy_workload(first + r * txns * rows, txns, rows);
        std::thread::spawn(move || pg::cluster().psql(&name, &sql))
    };
    let mut rounds = 1i64;
    let mut writer = round(0);
    // Freeze it inside an open sink transaction (its sink session idle in transaction), so
    // that what it has written but not committed is what a wake-up could commit. On a fast
    // machine the leader is rarely caught there: the workload goes on, round after round,
    // until it is (a few rounds at most; the cap keeps a broken catch from running forever).
    let mut rng = rand::rng();
    let mut frozen_in_transaction = false;
    let since = loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        old.signal(libc::SIGSTOP);
        let since = Instant::now();
        let state: Option<String> = client
            .query_opt(
                "SELECT a.state FROM sluice_leader l JOIN pg_stat_activity a ON a.pid = l.sink_pid \
                 WHERE l.slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .and_then(|r| r.get(0));
        if state.as_deref() == Some("idle in transaction") {
            frozen_in_transaction = true;
            break since;
        }
        if writer.is_finished() {
            if rounds == 10 {
                break since;
            }
            writer.join().unwrap();
            writer = round(rounds);
            rounds += 1;
        }
        old.signal(libc::SIGCONT);
    };
    assert!(
        frozen_in_transaction,
        "never caught the leader inside a sink transaction in {rounds} rounds"
    );
    let took = wait_leader(&client, &slot, &mut new, since).await;
    assert!(took < TAKEOVER_LIMIT, "takeover took {took:?}");
    writer.join().unwrap();
    let floor = write(&client, "INSERT INTO items VALUES (1, 'u1', 'marker')").await;
    wait_persisted(&client, floor, &mut new.sluice).await;
    let lsn_before_wake = stored_lsn(&client).await;
    let entries_before_wake = changelog(&client).await;

    old.signal(libc::SIGCONT);
    let start = Instant::now();
    while !old.sluice.log_text().contains("fenced") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the woken process never said it was fenced; log:\n{}",
            old.sluice.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It stays up, as a standby, and the new leader keeps the slot.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(old.sluice.is_running(), "{}", old.sluice.log_text());
    assert_eq!(old.readyz().0, 503);
    assert_eq!(old.active_gauge(), Some(0.0));
    assert_eq!(leader_pid(&client, &slot).await, Some(new.sluice.pid()));
    // Nothing more was committed by the woken process: the sink is as the new leader left it.
    assert_eq!(stored_lsn(&client).await, lsn_before_wake);
    assert_eq!(changelog(&client).await, entries_before_wake);

    // And what the new leader committed is exact: every row inserted once, renamed once
    // (all but the last transaction's), the marker once.
    let last = first + rounds * txns * rows - 1;
    let history = per_record(&entries_before_wake);
    assert_eq!(history.len() as i64, rounds * txns * rows + 1);
    for id in first..=last {
        let bucket = format!("user:u{}", id % 7);
        let mut want = vec![(bucket.clone(), 1)];
        if id <= last - rows {
            want.push((bucket, 2));
        }
        assert_eq!(history.get(&id), Some(&want), "record {id}");
    }
    assert_eq!(history.get(&1), Some(&vec![("user:u1".to_owned(), 1)]));
    // Its open sink transaction held row locks the new leader needed.
    let log = new.sluice.log_text();
    assert!(
        log.contains("terminated the previous leader's sink session"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_active_process_twenty_times_during_w1_with_a_standby_loses_nothing() {
    // The oracle is W1's: the schema is the shared one, the transactions are w1.sql's.
    let (db, client, opts) = w1_db("ha_w1").await;
    let module = wasm::module("by-owner");
    let slot = slot_for(&db);
    let mut active = Replica::start(&db, &module, &opts);
    wait_snapshot(&client, &mut active.sluice).await;
    let mut standby = Replica::start(&db, &module, &opts);
    wait_standby(&mut standby).await;

    // W1 in 20 slices, one per kill: each kill lands while the active process works through
    // the slice just committed, never in an idle stream.
    let txns = w1_transactions();
    let n = txns.len();
    let slices: Vec<&[String]> = (0..20)
        .map(|i| &txns[i * n / 20..(i + 1) * n / 20])
        .collect();
    let mut rng = rand::rng();
    let mut times = Vec::new();
    let mut mid_slice = 0;
    for slice in &slices {
        let floor = write(&client, "SELECT 1").await;
        client.batch_execute(&slice.concat()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2500))).await;
        let since = Instant::now();
        active.sluice.kill9();
        let stored = stored_lsn(&client).await.unwrap_or(0);
        mid_slice += usize::from(stored > floor);
        times.push(wait_leader(&client, &slot, &mut standby, since).await);
        active = std::mem::replace(&mut standby, Replica::start(&db, &module, &opts));
        wait_standby(&mut standby).await;
    }
    assert_eq!(times.len(), 20);
    let floor = write(&client, "INSERT INTO marker VALUES (1)").await;
    wait_persisted(&client, floor, &mut active.sluice).await;
    times.sort();
    eprintln!(
        "HA-REPORT | takeover after kill -9 | {} kills ({mid_slice} after part of the slice was stored) | median {:?} | max {:?}",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(
        times[times.len() - 1] < TAKEOVER_LIMIT,
        "slowest takeover {:?}",
        times[times.len() - 1]
    );
    assert_w1_exact(&client).await;
}

/// W1's transactions as `w1.sql` runs them (100 of 1,000 inserts, 50 of 1,000 renames, 10
/// of 1,000 owner moves, 10 of 1,000 deletes), each `BEGIN; ...; COMMIT;`, so the test can
/// commit them in slices between kills.
fn w1_transactions() -> Vec<String> {
    let range = |b: i64| format!("id BETWEEN {} AND {}", b * 1000 + 1, b * 1000 + 1000);
    let txn = |sql: String| format!("BEGIN; {sql}; COMMIT;\n");
    let inserts = (0..100).map(|b| {
        txn(format!(
            "INSERT INTO items (id, user_id, list_id, title, done, updated_at) \
             SELECT g, 'u' || (g % 1000), g % 5000, 'item ' || g || ' ' || repeat('x', 40), false, now() \
             FROM generate_series({}, {}) g",
            b * 1000 + 1,
            b * 1000 + 1000
        ))
    });
    let renames = (0..50).map(|b| {
        txn(format!(
            "UPDATE items SET title = 'renamed ' || id, updated_at = now() WHERE {}",
            range(b)
        ))
    });
    let moves = (50..60).map(|b| {
        txn(format!(
            "UPDATE items SET user_id = 'u' || ((id + 7) % 1000), updated_at = now() WHERE {}",
            range(b)
        ))
    });
    let deletes = (60..70).map(|b| txn(format!("DELETE FROM items WHERE {}", range(b))));
    inserts.chain(renames).chain(moves).chain(deletes).collect()
}
