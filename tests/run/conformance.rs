//! Conformance of what `sluice run` writes with the read path of synchro's server (trainstar/synchro
//! at 9c1dafd) and the clients that apply its pulls.
//!
//! A randomized todo workload (users, lists, items, tags; seeded) runs while simulated clients
//! pull, the way that server serves them:
//! - the changelog of the client's buckets after its checkpoint, in `seq` order, one page at a
//!   time (`LIMIT n + 1` to know whether there is more);
//! - within a page, only the latest entry of each record (table, id) counts, across the client's
//!   buckets;
//! - records to insert or update are hydrated from the current rows with `row_to_json`, looked up
//!   by primary key and keyed by `"id"::text`; a record gone by then (deleted later) is skipped;
//! - the client upserts what was hydrated, removes what was deleted, and moves its checkpoint to
//!   the page's last seq.
//!
//! One client per bucket (`global`, `user:<id>`) keeps the rows and, at the end, synchro's record
//! checksum of each (Go's own, over the hydrated text); one client per user subscribes to
//! `user:<id>` and `global` together, so the moves between them go through the server's
//! cross-bucket deduplication. At a quiet point after the snapshot and after the workload, every
//! store must hold exactly what a fresh evaluation of by-owner over the application rows says
//! (an SQL join), each record's checksum must equal its edge's, and each bucket's XOR must equal
//! `BIT_XOR(checksum)` over its edges. The changelog itself must replay cleanly per bucket: an
//! insert only where the bucket does not hold the record, an update or a delete only where it
//! does, ending on the edges.
//!
//! The second test does the same with `kill -9` of sluice twice during the snapshot and at
//! several moments of the workload. Beside it runs a reference `sluice run` that is never killed
//! (its own slot, its own sink database): the two changelogs must be equal entry for entry. The
//! checks above cannot see a transaction written twice, because the edge diff turns a replayed
//! change into plausible entries (an insert becomes an update) that converge.
//!
//! Set `SLUICE_CONFORMANCE_SEED` to replay a workload (the kill moments and the interleaving of
//! pulls still vary with timing).
//!
//! The database's default `TimeZone` and `IntervalStyle` are not UTC and `postgres`: a sync
//! server hydrates in a session with the database's defaults, and the checksums must agree with
//! what it sends.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::go::synchro_checksums;
use crate::pg::{self, TestDb};
use crate::support::{
    Entry, RunOpts, Sluice, changelog, slot_for, stored_lsn, wait_persisted, wait_snapshot, write,
};
use crate::wasm;

const SCHEMA: &str = "
CREATE TABLE users (id text PRIMARY KEY, name text NOT NULL, joined timestamptz NOT NULL);
CREATE TABLE lists (
    id int PRIMARY KEY,
    user_id text REFERENCES users ON DELETE SET NULL,
    title text NOT NULL,
    archived bool NOT NULL DEFAULT false
);
CREATE TABLE items (
    id bigint PRIMARY KEY,
    list_id int NOT NULL REFERENCES lists ON DELETE CASCADE,
    user_id text REFERENCES users ON DELETE SET NULL,
    title text NOT NULL,
    done bool NOT NULL DEFAULT false,
    position float8,
    amount numeric,
    due timestamptz,
    estimate interval,
    labels text[],
    meta jsonb,
    body text,
    deleted_at timestamptz
);
-- Out of line and uncompressed: long bodies travel as unchanged TOAST in updates that keep them.
ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE INDEX ON items (list_id);
CREATE INDEX ON items (user_id);
CREATE INDEX ON lists (user_id);
CREATE TABLE tags (id uuid PRIMARY KEY, user_id text REFERENCES users ON DELETE SET NULL, label text NOT NULL);
CREATE INDEX ON tags (user_id);
CREATE PUBLICATION sluice_pub FOR TABLE users, lists, items, tags;
";

/// The published tables and the type of their `id`, which the server's hydration parses the
/// changelog's record ids as.
const TABLES: [(&str, &str); 4] = [
    ("users", "text"),
    ("lists", "int4"),
    ("items", "int8"),
    ("tags", "uuid"),
];

/// Every user id the workload may create; each gets a client. Quotes, HTML characters and
/// non-ASCII travel into bucket ids and record ids.
const USERS: [&str; 12] = [
    "u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "o'neil", "zoë", "a<b>&c",
];

/// Users that also get a client subscribing to `user:<id>` and `global` together.
const TWO_BUCKET_USERS: [&str; 5] = ["u0", "u1", "u2", "o'neil", "a<b>&c"];

/// Transactions of the workload after the snapshot.
const TRANSACTIONS: usize = 220;

const OPTS_TOML: &str = "[snapshot]\nchunk_rows = 50\n[batch]\nmax_rows = 250\n";

#[tokio::test(flavor = "multi_thread")]
async fn clients_pulling_through_synchros_read_path_end_with_each_buckets_rows_and_checksums() {
    conformance("conformance", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_pulling_through_synchros_read_path_agree_across_kill_9() {
    conformance("conformance_kill", true).await;
}

async fn conformance(label: &str, kills: bool) {
    let seed = match std::env::var("SLUICE_CONFORMANCE_SEED") {
        Ok(s) => s.trim().parse().expect("SLUICE_CONFORMANCE_SEED is a u64"),
        Err(_) => rand::random(),
    };
    let ctx =
        format!("{label}, seed {seed} (replay the workload with SLUICE_CONFORMANCE_SEED={seed})");
    eprintln!("{ctx}");
    let started = Instant::now();
    let db = pg::cluster().create_db(label).await;
    {
        let admin = db.client().await;
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{0}\" SET timezone = 'Asia/Kathmandu';
                 ALTER DATABASE \"{0}\" SET intervalstyle = 'iso_8601';",
                db.name
            ))
            .await
            .unwrap();
    }
    // Opened after the ALTER: the session has the database's defaults, as a sync server's would.
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let mut workload = Workload::new(seed);
    for sql in workload.initial() {
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{ctx}: initial rows: {e}\n{sql}"));
    }
    let transactions: Vec<String> = (0..TRANSACTIONS).map(|_| workload.transaction()).collect();

    let module = wasm::module("by-owner");
    let opts = RunOpts {
        config_toml: Some(OPTS_TOML.into()),
        ..Default::default()
    };
    let mut kill_rng = StdRng::seed_from_u64(seed.rotate_left(17));
    let mut sluice = Sluice::start(&db, &module, opts.clone());
    // Beside the one that is killed, a reference that never is: its own slot, its own sink
    // database. Same WAL, same rules, so the same changelog, entry for entry.
    let mut reference = if kills {
        let sink_db = pg::cluster().create_db("conformance_ref").await;
        let slot: String = format!("ref_{}", slot_for(&db)).chars().take(63).collect();
        let run = Sluice::start(
            &db,
            &module,
            RunOpts {
                slot: Some(slot),
                extra_args: vec!["--sink-url".into(), sink_db.url.clone()],
                ..opts.clone()
            },
        );
        Some((sink_db.client().await, run))
    } else {
        None
    };
    // (snapshot rows persisted when killed, whether the snapshot was still running)
    let mut snapshot_kills = Vec::new();
    if kills {
        // Twice in the snapshot, after a random number of persisted rows: it resumes after its
        // last persisted chunk, and the second time it is a resumed one that dies.
        let first = kill_rng.random_range(1..600);
        for threshold in [first, first + kill_rng.random_range(50..600)] {
            let wait = Instant::now();
            loop {
                let rows = client
                    .query_one(
                        "SELECT coalesce(sum(rows_done), 0)::int8 FROM sluice_snapshot_progress",
                        &[],
                    )
                    .await
                    .map(|r| r.get::<_, i64>(0))
                    .unwrap_or(0);
                if rows >= threshold || stored_lsn(&client).await.is_some() {
                    break;
                }
                assert!(
                    sluice.is_running() && wait.elapsed() < Duration::from_secs(120),
                    "{ctx}: no snapshot progress; log:\n{}",
                    sluice.log_text()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            sluice.kill9();
            let rows = count(
                &client,
                "SELECT coalesce(sum(rows_done), 0)::int8 FROM sluice_snapshot_progress",
            )
            .await;
            snapshot_kills.push((rows, stored_lsn(&client).await.is_none()));
            sluice = Sluice::start(&db, &module, opts.clone());
        }
    }
    wait_snapshot(&client, &mut sluice).await;
    if let Some((sink, run)) = reference.as_mut() {
        wait_snapshot(sink, run).await;
    }

    let mut clients = SyncClient::all();
    for c in &mut clients {
        c.catch_up(&client).await;
    }
    verify(&client, &clients, &format!("{ctx}, after the snapshot")).await;

    // The workload, with every client pulling one page at a time while it runs.
    let stop = Arc::new(AtomicBool::new(false));
    let puller = tokio::spawn(pull_until(db.clone(), clients, Arc::clone(&stop), seed));
    let writer = tokio::spawn(run_transactions(
        db.clone(),
        transactions,
        seed,
        ctx.clone(),
    ));
    let mut stream_kills = Vec::new();
    if kills {
        // At random moments while the workload is written (at most 30 times on a slow
        // machine), and at least five times.
        while (!writer.is_finished() && stream_kills.len() < 30) || stream_kills.len() < 5 {
            tokio::time::sleep(Duration::from_millis(kill_rng.random_range(300..1300))).await;
            sluice.kill9();
            stream_kills.push(stored_lsn(&client).await);
            sluice = Sluice::start(&db, &module, opts.clone());
        }
    }
    writer.await.expect("the workload's writer");
    let floor = write(
        &client,
        "UPDATE users SET name = name || '.' WHERE id = (SELECT min(id) FROM users)",
    )
    .await;
    wait_persisted(&client, floor, &mut sluice).await;
    if let Some((sink, run)) = reference.as_mut() {
        wait_persisted(sink, floor, run).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut clients = puller.await.expect("the pulling clients");
    let interleaved: u64 = clients.iter().map(|c| c.pages).sum();
    for c in &mut clients {
        c.catch_up(&client).await;
    }
    verify(&client, &clients, &format!("{ctx}, after the workload")).await;
    assert_changelog_replays_cleanly(&client, &ctx).await;
    if let Some((sink, mut run)) = reference {
        assert_same_changelog(&changelog(&client).await, &changelog(&sink).await, &ctx);
        assert!(
            run.stop().success(),
            "{ctx}: the reference run; log:\n{}",
            run.log_text()
        );
    }
    assert!(
        sluice.stop().success(),
        "{ctx}: SIGTERM must exit 0; log:\n{}",
        sluice.log_text()
    );

    let changelog_rows = count(&client, "SELECT count(*) FROM sync_changelog").await;
    assert!(
        changelog_rows > 4_000,
        "{ctx}: the workload is too small to mean much ({changelog_rows} changelog rows)"
    );
    let skipped: u64 = clients.iter().map(|c| c.skipped).sum();
    eprintln!(
        "{ctx}: {changelog_rows} changelog rows; {interleaved} pages pulled during the workload, \
         {} in all; {skipped} hydrations skipped (row deleted since); kills in the snapshot (rows persisted, \
         still running): {snapshot_kills:?}; {} kills in the stream; {:.1} s",
        clients.iter().map(|c| c.pages).sum::<u64>(),
        stream_kills.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        interleaved > 0,
        "{ctx}: no page was pulled while the workload ran"
    );
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

/// A seeded generator of valid transactions, tracking just enough of the rows to keep keys and
/// foreign keys valid.
struct Workload {
    rng: StdRng,
    users: BTreeSet<&'static str>,
    lists: BTreeSet<i32>,
    /// item id → list id
    items: BTreeMap<i64, i32>,
    tags: BTreeSet<String>,
    next_list: i32,
    next_item: i64,
}

/// An SQL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

const TITLES: [&str; 10] = [
    "buy milk",
    "call <mom> & dad",
    "fix \"the\" bug",
    "café",
    "東京 trip",
    "it's done",
    "naïve 🚀",
    "tab\there",
    "line\nbreak",
    "</script>",
];

impl Workload {
    fn new(seed: u64) -> Self {
        Workload {
            rng: StdRng::seed_from_u64(seed),
            users: BTreeSet::new(),
            lists: BTreeSet::new(),
            items: BTreeMap::new(),
            tags: BTreeSet::new(),
            next_list: 1,
            next_item: 1,
        }
    }

    /// The rows before sluice starts: they arrive through the snapshot.
    fn initial(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..8 {
            out.push(self.create_user());
        }
        for _ in 0..30 {
            out.push(self.create_list());
        }
        for _ in 0..5 {
            let rows: Vec<String> = (0..200).map(|_| self.new_item_row(None)).collect();
            out.push(format!("INSERT INTO items VALUES {};", rows.join(", ")));
        }
        out.push(self.insert_tags(20));
        out
    }

    /// One transaction: one to three statements of a random kind.
    fn transaction(&mut self) -> String {
        let statements = self.rng.random_range(1..=3);
        let mut sql = String::new();
        for _ in 0..statements {
            sql.push_str(&self.statement());
            sql.push('\n');
        }
        sql
    }

    fn statement(&mut self) -> String {
        match self.rng.random_range(0..100) {
            0..=21 => {
                let n = self.rng.random_range(1..=8);
                let rows: Vec<String> = (0..n).map(|_| self.new_item_row(None)).collect();
                format!("INSERT INTO items VALUES {};", rows.join(", "))
            }
            22..=40 => self.update_items(),
            41..=49 => {
                // Moves between owners, to and from NULL (global).
                let mut sql = String::new();
                for _ in 0..self.rng.random_range(1..=3) {
                    if let Some(id) = self.item() {
                        let owner = self.owner();
                        sql.push_str(&format!(
                            "UPDATE items SET user_id = {owner} WHERE id = {id};"
                        ));
                    }
                }
                sql
            }
            50..=55 => {
                let mut sql = String::new();
                for _ in 0..self.rng.random_range(1..=3) {
                    if let Some(id) = self.item() {
                        self.items.remove(&id);
                        sql.push_str(&format!("DELETE FROM items WHERE id = {id};"));
                    }
                }
                sql
            }
            56..=60 => {
                // Soft delete or restore (deleted_at is sluice's default soft-delete column).
                let Some(id) = self.item() else {
                    return String::new();
                };
                if self.rng.random_bool(0.6) {
                    format!("UPDATE items SET deleted_at = now() WHERE id = {id};")
                } else {
                    format!("UPDATE items SET deleted_at = NULL, done = NOT done WHERE id = {id};")
                }
            }
            61..=63 => {
                // A new primary key: the old record leaves, a new one arrives.
                let Some(old) = self.item() else {
                    return String::new();
                };
                let new = self.next_item;
                self.next_item += 1;
                let list = self.items.remove(&old).expect("tracked");
                self.items.insert(new, list);
                format!(
                    "UPDATE items SET id = {new}, title = title || ' (rekeyed)' WHERE id = {old};"
                )
            }
            64..=67 => {
                let list = self.list();
                format!(
                    "UPDATE items SET done = NOT done, position = position + 1 WHERE list_id = {list};"
                )
            }
            68..=70 => {
                // A list moves with its items.
                let list = self.list();
                let owner = self.owner();
                format!(
                    "UPDATE lists SET user_id = {owner} WHERE id = {list}; \
                     UPDATE items SET user_id = {owner} WHERE list_id = {list};"
                )
            }
            71..=73 => {
                if self.lists.len() > 12 && self.rng.random_bool(0.4) {
                    // Its items go too (ON DELETE CASCADE).
                    let list = self.list();
                    self.lists.remove(&list);
                    self.items.retain(|_, l| *l != list);
                    format!("DELETE FROM lists WHERE id = {list};")
                } else if self.rng.random_bool(0.5) {
                    self.create_list()
                } else {
                    let list = self.list();
                    let title = lit(TITLES.choose(&mut self.rng).expect("titles"));
                    format!(
                        "UPDATE lists SET title = {title}, archived = NOT archived WHERE id = {list};"
                    )
                }
            }
            74..=77 => {
                let absent = USERS.iter().any(|u| !self.users.contains(u));
                match self.rng.random_range(0..3) {
                    0 if absent => self.create_user(),
                    1 if self.users.len() > 4 => {
                        // Their lists, items and tags go to global (ON DELETE SET NULL).
                        let user = self.user().expect("users");
                        self.users.remove(user);
                        format!("DELETE FROM users WHERE id = {};", lit(user))
                    }
                    _ => {
                        let user = self.user().expect("users");
                        format!(
                            "UPDATE users SET name = name || '+' WHERE id = {};",
                            lit(user)
                        )
                    }
                }
            }
            78..=86 => self.tag_statement(),
            87..=94 => {
                // Churn inside one transaction: insert, update twice, maybe delete.
                let list = self.list();
                let row = self.new_item_row(Some(list));
                let id = self.next_item - 1;
                let mut sql = format!(
                    "INSERT INTO items VALUES {row}; \
                     UPDATE items SET title = title || ' 1' WHERE id = {id}; \
                     UPDATE items SET title = title || ' 2', done = true WHERE id = {id};"
                );
                if self.rng.random_bool(0.5) {
                    self.items.remove(&id);
                    sql.push_str(&format!(" DELETE FROM items WHERE id = {id};"));
                }
                sql
            }
            95..=96 => {
                // A large transaction: several sink chunks (batch.max_rows = 250).
                let list = self.list();
                let n = self.rng.random_range(150..=400);
                let rows: Vec<String> = (0..n).map(|_| self.new_item_row(Some(list))).collect();
                format!("INSERT INTO items VALUES {};", rows.join(", "))
            }
            _ => {
                if self.rng.random_bool(0.3) {
                    self.tags.clear();
                    "TRUNCATE tags;".to_owned()
                } else {
                    let n = self.rng.random_range(3..=10);
                    self.insert_tags(n)
                }
            }
        }
    }

    fn update_items(&mut self) -> String {
        let n = self.rng.random_range(1..=6);
        let mut sql = String::new();
        for _ in 0..n {
            let Some(id) = self.item() else { break };
            let set = match self.rng.random_range(0..6) {
                0 => format!(
                    "title = {}",
                    lit(&format!(
                        "{} #{}",
                        TITLES.choose(&mut self.rng).expect("titles"),
                        self.rng.random_range(0..1000)
                    ))
                ),
                1 => format!("amount = {}", self.amount()),
                2 => format!(
                    "meta = jsonb_set(coalesce(meta, '{{}}'), '{{n}}', '{}')",
                    self.rng.random_range(0..1_000_000)
                ),
                3 => format!("body = {}", self.body()),
                4 => format!(
                    "due = due + interval '{} minutes', estimate = estimate * 2",
                    self.rng.random_range(1..10_000)
                ),
                _ => "done = NOT done".to_owned(),
            };
            sql.push_str(&format!("UPDATE items SET {set} WHERE id = {id};"));
        }
        sql
    }

    fn tag_statement(&mut self) -> String {
        let tag = self
            .tags
            .iter()
            .nth(self.rng.random_range(0..self.tags.len().max(1)))
            .cloned();
        match (self.rng.random_range(0..5), tag) {
            (0, Some(tag)) => {
                self.tags.remove(&tag);
                format!("DELETE FROM tags WHERE id = {};", lit(&tag))
            }
            (1, Some(tag)) => {
                let new = self.uuid();
                self.tags.remove(&tag);
                self.tags.insert(new.clone());
                format!(
                    "UPDATE tags SET id = {} WHERE id = {};",
                    lit(&new),
                    lit(&tag)
                )
            }
            (2, Some(tag)) => {
                let owner = self.owner();
                format!(
                    "UPDATE tags SET user_id = {owner}, label = label || '!' WHERE id = {};",
                    lit(&tag)
                )
            }
            _ => {
                let n = self.rng.random_range(1..=3);
                self.insert_tags(n)
            }
        }
    }

    fn insert_tags(&mut self, n: usize) -> String {
        let rows: Vec<String> = (0..n)
            .map(|_| {
                let id = self.uuid();
                self.tags.insert(id.clone());
                let owner = self.owner();
                let label = lit(TITLES.choose(&mut self.rng).expect("titles"));
                format!("({}, {owner}, {label})", lit(&id))
            })
            .collect();
        format!("INSERT INTO tags VALUES {};", rows.join(", "))
    }

    fn create_user(&mut self) -> String {
        let absent: Vec<&'static str> = USERS
            .iter()
            .copied()
            .filter(|u| !self.users.contains(u))
            .collect();
        let user = *absent.choose(&mut self.rng).expect("an absent user");
        self.users.insert(user);
        format!(
            "INSERT INTO users VALUES ({}, {}, timestamptz '2024-01-01 00:00:00+00' + interval '{} seconds');",
            lit(user),
            lit(&format!("{user} <{}>", self.rng.random_range(0..100))),
            self.rng.random_range(0..10_000_000)
        )
    }

    fn create_list(&mut self) -> String {
        let id = self.next_list;
        self.next_list += 1;
        self.lists.insert(id);
        let owner = self.owner();
        let title = lit(TITLES.choose(&mut self.rng).expect("titles"));
        format!("INSERT INTO lists VALUES ({id}, {owner}, {title}, false);")
    }

    /// A new item's row (in a random list unless given), as a VALUES tuple.
    fn new_item_row(&mut self, list: Option<i32>) -> String {
        let id = self.next_item;
        self.next_item += 1;
        let list = list.unwrap_or_else(|| self.list());
        self.items.insert(id, list);
        let owner = self.owner();
        let title = lit(&format!(
            "{} {id}",
            TITLES.choose(&mut self.rng).expect("titles")
        ));
        let r = &mut self.rng;
        let done = r.random_bool(0.3);
        let position = r.random::<f64>() * 1000.0;
        let due = if r.random_bool(0.3) {
            "NULL".to_owned()
        } else {
            format!(
                "timestamptz '2024-03-10 12:00:00+00' + interval '{} minutes'",
                r.random_range(0..500_000)
            )
        };
        let estimate = format!(
            "interval '{} hours {} minutes'",
            r.random_range(0..40),
            r.random_range(0..60)
        );
        let labels = match r.random_range(0..3) {
            0 => "NULL".to_owned(),
            1 => "'{}'".to_owned(),
            _ => "ARRAY['a<b', 'c&d', NULL, 'e\"f']".to_owned(),
        };
        let meta = format!(
            "'{{\"n\": {}, \"tags\": [\"<x>\", \"&\"], \"nested\": {{\"x\": {}.50, \"big\": 12345678901234567890}}}}'",
            r.random_range(0..1000),
            r.random_range(0..1000)
        );
        let amount = self.amount();
        let body = self.body();
        format!(
            "({id}, {list}, {owner}, {title}, {done}, {position}, {amount}, {due}, {estimate}, {labels}, {meta}, {body}, NULL)"
        )
    }

    fn amount(&mut self) -> String {
        if self.rng.random_bool(0.2) {
            "NULL".to_owned()
        } else {
            format!(
                "{}.{:02}",
                self.rng.random_range(0..100_000),
                self.rng.random_range(0..100)
            )
        }
    }

    /// NULL, short, or long enough to be stored out of line.
    fn body(&mut self) -> String {
        match self.rng.random_range(0..10) {
            0 => {
                let text: String = (0..2500)
                    .map(|_| self.rng.random_range(b'a'..=b'z') as char)
                    .collect();
                lit(&text)
            }
            1..=3 => lit(TITLES.choose(&mut self.rng).expect("titles")),
            _ => "NULL".to_owned(),
        }
    }

    fn uuid(&mut self) -> String {
        let a: u128 = self.rng.random();
        let h = format!("{a:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    /// An owner: a present user, or NULL (the `global` bucket).
    fn owner(&mut self) -> String {
        match self.user() {
            Some(user) if !self.rng.random_bool(0.15) => lit(user),
            _ => "NULL".to_owned(),
        }
    }

    fn user(&mut self) -> Option<&'static str> {
        let users: Vec<&'static str> = self.users.iter().copied().collect();
        users.choose(&mut self.rng).copied()
    }

    fn list(&mut self) -> i32 {
        let i = self.rng.random_range(0..self.lists.len());
        *self.lists.iter().nth(i).expect("a list")
    }

    fn item(&mut self) -> Option<i64> {
        if self.items.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.items.len());
        self.items.keys().nth(i).copied()
    }
}

async fn run_transactions(db: TestDb, transactions: Vec<String>, seed: u64, ctx: String) {
    let client = db.client().await;
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(2));
    for (i, sql) in transactions.iter().enumerate() {
        client
            .batch_execute(&format!("BEGIN;\n{sql}COMMIT;"))
            .await
            .unwrap_or_else(|e| panic!("{ctx}: transaction {i} failed: {e:?}\n{sql}"));
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The server's read path and the clients
// ---------------------------------------------------------------------------------------------

/// (table_name, record id as `"id"::text`)
pub(crate) type Key = (String, String);

/// A client of the sync server, with the rows it holds.
pub(crate) struct SyncClient {
    buckets: Vec<String>,
    /// The last seq it has applied.
    checkpoint: i64,
    /// Its local rows: the `row_to_json` text the server hydrated.
    pub(crate) store: BTreeMap<Key, String>,
    pages: u64,
    /// Records the server could not hydrate (deleted since the entry was written).
    skipped: u64,
}

impl SyncClient {
    /// A client subscribed to `buckets` that has never pulled.
    pub(crate) fn new(buckets: Vec<String>) -> SyncClient {
        SyncClient {
            buckets,
            checkpoint: 0,
            store: BTreeMap::new(),
            pages: 0,
            skipped: 0,
        }
    }

    /// One client per bucket, then one per user of [`TWO_BUCKET_USERS`] over both its buckets.
    fn all() -> Vec<SyncClient> {
        let new = SyncClient::new;
        let mut clients = vec![new(vec!["global".to_owned()])];
        clients.extend(USERS.iter().map(|u| new(vec![format!("user:{u}")])));
        clients.extend(
            TWO_BUCKET_USERS
                .iter()
                .map(|u| new(vec![format!("user:{u}"), "global".to_owned()])),
        );
        clients
    }

    fn name(&self) -> String {
        format!("client of {:?}", self.buckets)
    }

    /// Pulls pages until one comes back empty.
    pub(crate) async fn catch_up(&mut self, db: &tokio_postgres::Client) {
        while self.pull(db, 1000).await {}
    }

    /// One pull of at most `limit` changelog entries, applied. False when there was nothing.
    async fn pull(&mut self, db: &tokio_postgres::Client, limit: i64) -> bool {
        let rows = db
            .query(
                "SELECT seq, bucket_id, table_name, record_id, operation FROM sync_changelog \
                 WHERE bucket_id = ANY($1) AND seq > $2 ORDER BY seq LIMIT $3",
                &[&self.buckets, &self.checkpoint, &(limit + 1)],
            )
            .await
            .expect("reading the changelog");
        let Some(last) = rows.iter().take(limit as usize).last() else {
            return false;
        };
        let new_checkpoint: i64 = last.get(0);
        // The latest entry of each record in the page wins, across the client's buckets.
        let mut latest: Vec<(Key, i16)> = Vec::new();
        let mut at: HashMap<Key, usize> = HashMap::new();
        for row in rows.iter().take(limit as usize) {
            let key: Key = (row.get(2), row.get(3));
            let op: i16 = row.get(4);
            match at.get(&key) {
                Some(&i) => latest[i].1 = op,
                None => {
                    at.insert(key.clone(), latest.len());
                    latest.push((key, op));
                }
            }
        }
        let mut changed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut deleted = Vec::new();
        for ((table, record), op) in latest {
            match op {
                1 | 2 => changed.entry(table).or_default().push(record),
                3 => deleted.push((table, record)),
                other => panic!("{}: operation {other} in the changelog", self.name()),
            }
        }
        for (table, ids) in changed {
            let hydrated = hydrate(db, &table, &ids).await;
            let wanted: HashSet<&String> = ids.iter().collect();
            self.skipped += (ids.len() - hydrated.len()) as u64;
            for (id, json) in hydrated {
                assert!(
                    wanted.contains(&id),
                    "{}: {table} row {id:?} was hydrated for record ids {ids:?}: the changelog's record_id is not \"id\"::text",
                    self.name()
                );
                self.store.insert((table.clone(), id), json);
            }
        }
        for key in deleted {
            self.store.remove(&key);
        }
        self.checkpoint = new_checkpoint;
        self.pages += 1;
        true
    }
}

/// The current rows of `ids`, as (`"id"::text`, `row_to_json` text). Like synchro's server: by
/// primary key, the record ids parsed as the key's type; rows that no longer exist are absent.
/// `db`'s session settings are the server's (`"id"::text` follows them). Tables other than the
/// workload's are looked up in the catalog.
pub(crate) async fn hydrate(
    db: &tokio_postgres::Client,
    table: &str,
    ids: &[String],
) -> Vec<(String, String)> {
    let key_type = match TABLES.iter().find(|(t, _)| *t == table) {
        Some((_, key_type)) => (*key_type).to_owned(),
        None => db
            .query_opt(
                "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attname = 'id'",
                &[&table],
            )
            .await
            .unwrap_or_else(|e| panic!("looking up {table}.id: {e}"))
            .unwrap_or_else(|| {
                panic!("the changelog names {table:?}, which the server does not sync")
            })
            .get(0),
    };
    let sql = format!(
        "SELECT t.id::text, row_to_json(t)::text FROM {table} t WHERE t.id = ANY($1::text[]::{key_type}[])"
    );
    db.query(&sql, &[&ids])
        .await
        .unwrap_or_else(|e| panic!("hydrating {table} {ids:?}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Pulls one page per client at a time, with a random page size, until `stop`.
async fn pull_until(
    db: TestDb,
    mut clients: Vec<SyncClient>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Vec<SyncClient> {
    let conn = db.client().await;
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1));
    while !stop.load(Ordering::Relaxed) {
        for c in &mut clients {
            let limit = *[5, 20, 100, 1000].choose(&mut rng).expect("limits");
            c.pull(&conn, limit).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clients
}

// ---------------------------------------------------------------------------------------------
// The oracle and the checks
// ---------------------------------------------------------------------------------------------

/// What each bucket should hold, from the application rows alone: by-owner joined over the
/// owner (`user:<id>`, or `global` without one; users themselves have no owner column), without
/// soft-deleted items.
async fn expected(db: &tokio_postgres::Client) -> BTreeMap<String, BTreeMap<Key, String>> {
    let rows = db
        .query(
            "SELECT CASE WHEN u.id IS NULL THEN 'global' ELSE 'user:' || u.id END, 'items', i.id::text, row_to_json(i)::text
               FROM items i LEFT JOIN users u ON u.id = i.user_id WHERE i.deleted_at IS NULL
             UNION ALL
             SELECT CASE WHEN u.id IS NULL THEN 'global' ELSE 'user:' || u.id END, 'lists', l.id::text, row_to_json(l)::text
               FROM lists l LEFT JOIN users u ON u.id = l.user_id
             UNION ALL
             SELECT CASE WHEN u.id IS NULL THEN 'global' ELSE 'user:' || u.id END, 'tags', g.id::text, row_to_json(g)::text
               FROM tags g LEFT JOIN users u ON u.id = g.user_id
             UNION ALL
             SELECT 'global', 'users', u.id, row_to_json(u)::text FROM users u",
            &[],
        )
        .await
        .unwrap();
    let mut out: BTreeMap<String, BTreeMap<Key, String>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0))
            .or_default()
            .insert((r.get(1), r.get(2)), r.get(3));
    }
    out
}

/// Differences between what a store holds and what it should, at most a few of each kind.
fn store_problems(
    who: &str,
    actual: &BTreeMap<Key, String>,
    want: &BTreeMap<Key, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let missing: Vec<_> = want.keys().filter(|k| !actual.contains_key(*k)).collect();
    let extra: Vec<_> = actual.keys().filter(|k| !want.contains_key(*k)).collect();
    let stale: Vec<_> = want
        .iter()
        .filter(|(k, v)| actual.get(*k).is_some_and(|a| a != *v))
        .map(|(k, v)| format!("{k:?}: holds {} instead of {v}", actual[k]))
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "{who} lacks {} rows, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(8)]
        ));
    }
    if !extra.is_empty() {
        out.push(format!(
            "{who} holds {} rows it should not, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(8)]
        ));
    }
    if !stale.is_empty() {
        out.push(format!(
            "{who} holds {} outdated rows, e.g. {:?}",
            stale.len(),
            &stale[..stale.len().min(3)]
        ));
    }
    out
}

/// Every client's store against the oracle; the edges against the oracle; every record checksum
/// and every bucket checksum the clients compute against the edges.
async fn verify(db: &tokio_postgres::Client, clients: &[SyncClient], ctx: &str) {
    let expected = expected(db).await;
    let empty = BTreeMap::new();
    let mut problems = Vec::new();
    for bucket in expected.keys() {
        if !clients.iter().any(|c| c.buckets == [bucket.clone()]) {
            problems.push(format!("no client for bucket {bucket}"));
        }
    }
    for c in clients {
        let mut want = BTreeMap::new();
        for b in &c.buckets {
            want.extend(expected.get(b).unwrap_or(&empty).clone());
        }
        problems.extend(store_problems(&c.name(), &c.store, &want));
    }

    // The edges: exactly the oracle's memberships, each with a checksum.
    let edge_rows = db
        .query(
            "SELECT bucket_id, table_name, record_id, checksum FROM sync_bucket_edges",
            &[],
        )
        .await
        .unwrap();
    let mut edges: BTreeMap<(String, Key), Option<i32>> = BTreeMap::new();
    for r in &edge_rows {
        edges.insert((r.get(0), (r.get(1), r.get(2))), r.get(3));
    }
    let members: BTreeSet<(String, Key)> = expected
        .iter()
        .flat_map(|(b, rows)| rows.keys().map(move |k| (b.clone(), k.clone())))
        .collect();
    let edge_keys: BTreeSet<(String, Key)> = edges.keys().cloned().collect();
    let missing: Vec<_> = members.difference(&edge_keys).take(8).collect();
    let extra: Vec<_> = edge_keys.difference(&members).take(8).collect();
    if !missing.is_empty() || !extra.is_empty() {
        problems.push(format!(
            "edges differ from the oracle: {} edges, {} memberships; missing {missing:?}; extra {extra:?}",
            edge_keys.len(),
            members.len()
        ));
    }
    let unset: Vec<_> = edges
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(k, _)| k)
        .take(8)
        .collect();
    if !unset.is_empty() {
        problems.push(format!("edges without a checksum: {unset:?}"));
    }

    // Checksums, as the server sends them with each hydrated record and a client XORs them.
    let texts: BTreeSet<&String> = clients
        .iter()
        .filter(|c| c.buckets.len() == 1)
        .flat_map(|c| c.store.values())
        .collect();
    let texts: Vec<String> = texts.into_iter().cloned().collect();
    let go: HashMap<&String, i32> = texts.iter().zip(synchro_checksums(&texts)).collect();
    let server: BTreeMap<String, i32> = db
        .query(
            "SELECT bucket_id, bit_xor(checksum) FROM sync_bucket_edges GROUP BY bucket_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for c in clients.iter().filter(|c| c.buckets.len() == 1) {
        let bucket = &c.buckets[0];
        let mut xor = 0i32;
        let mut differing = Vec::new();
        for (key, text) in &c.store {
            let checksum = go[text];
            xor ^= checksum;
            match edges.get(&(bucket.clone(), key.clone())) {
                Some(Some(edge)) if *edge == checksum => {}
                edge => differing.push(format!("{key:?}: client {checksum}, edge {edge:?}")),
            }
        }
        if !differing.is_empty() {
            problems.push(format!(
                "{}: {} record checksums differ from the edges', e.g. {:?}",
                c.name(),
                differing.len(),
                &differing[..differing.len().min(5)]
            ));
        }
        let stored = server.get(bucket).copied().unwrap_or(0);
        if stored != xor {
            problems.push(format!(
                "{}: bucket checksum {stored} (BIT_XOR of the edges), the client's XOR is {xor}",
                c.name()
            ));
        }
    }
    let hint = if problems.iter().any(|p| p.contains("checksum")) {
        "\n(An edge without a checksum, or with the previous version's, after its row's last \
         change: is the row read before its transaction is visible? See \
         checksum::checksums_are_read_once_the_transaction_is_visible.)"
    } else {
        ""
    };
    assert!(
        problems.is_empty(),
        "{ctx}: the clients disagree with the database:\n{}{hint}",
        problems.join("\n")
    );
}

/// Replays the whole changelog per (bucket, record) as a client holding that bucket would: an
/// insert must find the record absent, an update or a delete present; the end must be the edges.
/// A duplicated or lost entry (a crash replaying a transaction twice, or skipping one) breaks it.
async fn assert_changelog_replays_cleanly(db: &tokio_postgres::Client, ctx: &str) {
    let rows = db
        .query(
            "SELECT seq, bucket_id, table_name, record_id, operation FROM sync_changelog ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let mut held: HashSet<(String, String, String)> = HashSet::new();
    let mut bad = Vec::new();
    for r in &rows {
        let (seq, op): (i64, i16) = (r.get(0), r.get(4));
        let key: (String, String, String) = (r.get(1), r.get(2), r.get(3));
        let fine = match op {
            1 => held.insert(key.clone()),
            2 => held.contains(&key),
            3 => held.remove(&key),
            _ => false,
        };
        if !fine {
            bad.push(format!("seq {seq}: op {op} on {key:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{ctx}: {} changelog entries a client would mis-apply (insert of a held record, update or delete of one not held), e.g.:\n{}",
        bad.len(),
        bad[..bad.len().min(20)].join("\n")
    );
    let edges: HashSet<(String, String, String)> = db
        .query(
            "SELECT bucket_id, table_name, record_id FROM sync_bucket_edges",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let missing: Vec<_> = edges.difference(&held).take(8).collect();
    let extra: Vec<_> = held.difference(&edges).take(8).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{ctx}: replaying the changelog does not end on the edges: edges it never inserted {missing:?}; memberships it never deleted {extra:?}"
    );
}

/// The changelog of the run that was killed equals the reference's, entry for entry: nothing
/// lost, nothing written twice (a replayed transaction would add entries that the edge diff
/// makes look plausible: an insert turned update, a spurious move and its way back).
fn assert_same_changelog(killed: &[Entry], reference: &[Entry], ctx: &str) {
    if killed == reference {
        return;
    }
    let first = killed
        .iter()
        .zip(reference)
        .position(|(a, b)| a != b)
        .unwrap_or(killed.len().min(reference.len()));
    let around = |log: &[Entry]| -> Vec<String> {
        log.iter()
            .enumerate()
            .skip(first.saturating_sub(3))
            .take(12)
            .map(|(i, e)| format!("  #{i} {e:?}"))
            .collect()
    };
    panic!(
        "{ctx}: the changelog written across kill -9 ({} entries) differs from the reference run's ({} entries) from entry #{first}:\nkilled:\n{}\nreference:\n{}",
        killed.len(),
        reference.len(),
        around(killed).join("\n"),
        around(reference).join("\n")
    );
}
