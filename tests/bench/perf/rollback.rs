//! Issue 19's worst case: the active rules are swapped, at the default limits (512-change calls,
//! 1 s deadline, rollback window 100 at 50 %), for a module that loops on every change, while
//! 20 rows/s arrive in the background and one 512-row transaction lands. Reported: the time
//! from the swap to the rollback, and how long `/healthz`, `/readyz` and `/metrics` took to
//! answer meanwhile (probed every 20 ms from another thread).
//!
//! The reference is the batch deadline itself: the swap costs the batch its deadline, plus the
//! isolation budget of two deadlines, plus the swap back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Report, Sluice, agent};
use crate::{pg, wasm};

pub fn run(report: &mut Report) {
    println!("\n== rollback: a swap to a module that loops on every change, at the defaults ==");
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("bench_rollback");
    cluster.psql(
        &db.name,
        "CREATE TABLE items (id bigint PRIMARY KEY, user_id text, title text NOT NULL);
         CREATE PUBLICATION bench_pub FOR TABLE items;",
    );
    let mut s = Sluice::start(
        &db.url,
        &wasm::module("by-owner"),
        "bench_rollback",
        &[],
        &[],
    );
    s.wait_streaming(Duration::from_secs(120));

    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (stop, cluster, name) = (stop.clone(), cluster, db.name.clone());
        std::thread::spawn(move || {
            let mut id = 1_000_000u64;
            while !stop.load(Ordering::Relaxed) {
                cluster.psql(
                    &name,
                    &format!("INSERT INTO items VALUES ({id}, 'u{id}', 'background')"),
                );
                id += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let prober = {
        let (stop, admin) = (stop.clone(), s.admin.clone());
        std::thread::spawn(move || {
            let agent = agent();
            let mut took: Vec<f64> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for path in ["/healthz", "/readyz", "/metrics"] {
                    let started = Instant::now();
                    let ok = agent
                        .get(&format!("http://{admin}{path}"))
                        .call()
                        .is_ok_and(|r| r.status() == 200);
                    assert!(ok, "{path} did not answer 200");
                    took.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            took
        })
    };

    let swapped = Instant::now();
    let mut resp = agent()
        .post(&format!("http://{}/rules/reload", s.admin))
        .send_json(serde_json::json!({
            "module": wasm::module("misbehaving-guest"),
            "rules_config": "loop",
        }))
        .expect("reload");
    assert_eq!(
        resp.status(),
        200,
        "{}",
        resp.body_mut().read_to_string().unwrap_or_default()
    );
    cluster.psql(
        &db.name,
        "INSERT INTO items SELECT g, 'u' || g, 'batch' FROM generate_series(1, 512) g",
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while s.metric("sluice_rules_rollbacks_total").unwrap_or(0.0) < 1.0 {
        s.check();
        assert!(Instant::now() < deadline, "no rollback within 10 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rollback = swapped.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    background.join().unwrap();
    let mut took = prober.join().unwrap();
    s.stop();

    took.sort_by(f64::total_cmp);
    let pct = |p: f64| took[((took.len() as f64 - 1.0) * p).round() as usize];
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));
    println!(
        "swap to rollback {rollback:.2} s; {} admin requests: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        took.len()
    );
    report.add(
        "19. swap to rollback, rule looping (defaults)",
        format!("{rollback:.2} s ({:.1}x the 1 s deadline)", rollback),
        "<= 4x the deadline",
        rollback <= 4.0,
    );
    report.add(
        "19. admin answers while a rule loops, max",
        format!("{max:.1} ms (p50 {p50:.1}, p99 {p99:.1}, n {})", took.len()),
        "<= 100 ms",
        max <= 100.0,
    );
}
