//! Figure 6: at a steady 1,000 changes/s, the time from a source commit returning to its
//! changelog rows being visible to a reader of `sync_changelog`.
//!
//! A writer commits 10 rows every 10 ms with `synchronous_commit = on` (the walsender only sends
//! flushed WAL; the test cluster defaults to off). A reader polls the changelog every
//! millisecond and notes when each row first appears.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Report, Sluice};
use crate::{pg, wasm};

const SECONDS: u64 = 20;
const ROWS_PER_TX: u64 = 10;
const TX_PER_SECOND: u64 = 100;

pub fn run(report: &mut Report) {
    println!(
        "\n== latency: {} changes/s for {SECONDS} s ==",
        ROWS_PER_TX * TX_PER_SECOND
    );
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("bench_latency");
    cluster.psql(
        &db.name,
        "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text NOT NULL);
         CREATE PUBLICATION bench_pub FOR TABLE items;",
    );
    let module = wasm::module("by-owner");
    let mut s = Sluice::start(&db.url, &module, "bench_latency", &[], &[]);
    s.wait_streaming(Duration::from_secs(120));

    let committed: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let total_tx = SECONDS * TX_PER_SECOND;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connect = || async {
            let (client, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            client
        };
        let writer = connect().await;
        let reader = connect().await;
        writer
            .batch_execute("SET synchronous_commit = on")
            .await
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poll = {
            let seen = seen.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut last_seq = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let rows = reader
                        .query(
                            "SELECT seq, record_id FROM sync_changelog WHERE seq > $1 ORDER BY seq",
                            &[&last_seq],
                        )
                        .await
                        .expect("poll changelog");
                    let now = Instant::now();
                    {
                        let mut seen = seen.lock().unwrap();
                        for row in rows {
                            last_seq = row.get(0);
                            let id: String = row.get(1);
                            seen.entry(id.parse().unwrap()).or_insert(now);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let insert = writer
            .prepare(
                "INSERT INTO items (id, user_id, title) SELECT g, 'u' || (g % 100), 'row ' || g \
                 FROM generate_series($1::int8, $2::int8) g",
            )
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        for tx in 0..total_tx {
            tokio::time::sleep_until(started + Duration::from_millis(tx * 1000 / TX_PER_SECOND))
                .await;
            let first = tx * ROWS_PER_TX + 1;
            writer
                .execute(
                    &insert,
                    &[&(first as i64), &((first + ROWS_PER_TX - 1) as i64)],
                )
                .await
                .expect("insert");
            committed.lock().unwrap().insert(tx, Instant::now());
        }
        // Let the last rows arrive.
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.lock().unwrap().len() < (total_tx * ROWS_PER_TX) as usize
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        poll.await.unwrap();
    });
    s.stop();

    let committed = committed.lock().unwrap();
    let seen = seen.lock().unwrap();
    let mut missing = 0;
    let mut latencies: Vec<f64> = Vec::new();
    for tx in 0..total_tx {
        let ids = (tx * ROWS_PER_TX + 1)..=(tx * ROWS_PER_TX + ROWS_PER_TX);
        let last_seen = ids.filter_map(|id| seen.get(&id)).max();
        match (committed.get(&tx), last_seen) {
            (Some(c), Some(v)) => {
                latencies.push(v.saturating_duration_since(*c).as_secs_f64() * 1000.0)
            }
            _ => missing += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));
    println!(
        "{} transactions: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, never seen {missing}",
        latencies.len()
    );
    report.add(
        "5. hold: commit to visible, p99, 1k/s",
        format!("{p99:.1} ms (p50 {p50:.1}, max {max:.1}, 1,000 changes/s)"),
        "<= 50 ms",
        p99 <= 50.0 && missing == 0,
    );
}
