//! Issue 14's cascade cost: an owner change of an order with 1,000 details (Northwind rules), from
//! the commit to its LSN being confirmed. The reference is the same order's status change in the
//! same run, which moves nothing: the difference is the cascade (reading the 1,000 links and
//! states, and writing 2,000 changelog rows and the edge moves).

use std::time::{Duration, Instant};

use crate::support::{Report, Sluice, lsn_number, query};
use crate::{pg, wasm};

const DETAILS: u64 = 1_000;

pub fn run(report: &mut Report) {
    println!("\n== cascade: an owner change of an order with {DETAILS} details ==");
    let cluster = pg::cluster();
    let db = cluster.create_db_blocking("bench_cascade");
    cluster.psql(
        &db.name,
        &format!(
            "CREATE TABLE orders (id uuid PRIMARY KEY, user_id uuid NOT NULL, status text NOT NULL DEFAULT 'pending',
               deleted_at timestamptz);
             CREATE TABLE order_details (id uuid PRIMARY KEY, order_id uuid NOT NULL REFERENCES orders(id),
               quantity integer NOT NULL DEFAULT 1, deleted_at timestamptz);
             CREATE PUBLICATION bench_pub FOR TABLE orders, order_details;
             INSERT INTO orders (id, user_id) VALUES ('00000000-0000-4000-8000-000000000001', '00000000-0000-4000-8000-000000000901');
             INSERT INTO order_details (id, order_id)
               SELECT ('00000000-0000-4000-8000-' || lpad(g::text, 12, '0'))::uuid, '00000000-0000-4000-8000-000000000001'
               FROM generate_series(1000, {}) g;",
            999 + DETAILS
        ),
    );
    let mut s = Sluice::start(
        &db.url,
        &wasm::module("northwind"),
        "bench_cascade",
        &[],
        &[],
    );
    s.wait_streaming(Duration::from_secs(120));

    let timed = |s: &mut Sluice, sql: &str| -> f64 {
        let started = Instant::now();
        cluster.psql(&db.name, sql);
        // Just below the insert position after the commit: reached once the commit is confirmed.
        let lsn = query(cluster, &db.name, "SELECT pg_current_wal_insert_lsn()");
        let lsn = lsn_number(cluster, &db.name, &lsn) - 1;
        s.wait_confirmed(lsn, Duration::from_secs(60));
        started.elapsed().as_secs_f64()
    };
    let mut reference = Vec::new();
    let mut cascade = Vec::new();
    for round in 0..5 {
        reference.push(timed(
            &mut s,
            &format!("UPDATE orders SET status = 's{round}'"),
        ));
        cascade.push(timed(
            &mut s,
            &format!(
                "UPDATE orders SET user_id = '00000000-0000-4000-8000-00000000090{}'",
                round % 2
            ),
        ));
    }
    let moved: i64 = query(
        cluster,
        &db.name,
        "SELECT count(*) FROM sync_changelog WHERE table_name = 'order_details'",
    )
    .parse()
    .unwrap_or(0);
    s.stop();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, c) = (median(&mut reference), median(&mut cascade));
    println!(
        "   status change (no cascade): {:.1} ms; owner change moving {DETAILS} details: {:.1} ms (medians of 5); order_details changelog rows: {moved}",
        r * 1000.0,
        c * 1000.0
    );
    report.add(
        "cascade: owner change of an order with 1,000 details",
        format!(
            "{:.1} ms ({:.1}x a change that moves nothing)",
            c * 1000.0,
            c / r
        ),
        "documented (issue 14)",
        true,
    );
}
