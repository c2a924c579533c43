//! Integration tests of the replication client and pgoutput decoder against a real PostgreSQL.

#[path = "../common/pg.rs"]
mod pg;

mod auth;
mod corpus;
mod errors;
mod harness;
mod libpq;
mod oracle;
mod stream;
mod tail;

use std::time::Duration;

use sluice::model::Lsn;
use sluice::pg::PgConfig;
use sluice::source::{
    ReplicationConnection, ReplicationStream, SnapshotAction, SourceEvent, StartOptions,
};

/// A database with a publication `pub` (FOR ALL TABLES) after running `schema`.
pub async fn setup(prefix: &str, schema: &str) -> (pg::TestDb, PgConfig, tokio_postgres::Client) {
    let db = pg::cluster().create_db(prefix).await;
    let client = db.client().await;
    client.batch_execute(schema).await.unwrap();
    client
        .batch_execute("CREATE PUBLICATION pub FOR ALL TABLES")
        .await
        .unwrap();
    let cfg = PgConfig::parse(&db.url).unwrap();
    (db, cfg, client)
}

pub async fn create_slot(cfg: &PgConfig, slot: &str) -> Lsn {
    let mut conn = ReplicationConnection::connect(cfg).await.unwrap();
    let info = conn
        .create_slot(slot, SnapshotAction::NoExport)
        .await
        .unwrap();
    conn.close().await.unwrap();
    info.consistent_point
}

pub async fn start(cfg: &PgConfig, slot: &str, start_lsn: Lsn) -> ReplicationStream {
    let conn = ReplicationConnection::connect(cfg).await.unwrap();
    let mut opts = StartOptions::new(slot, vec!["pub".to_owned()]);
    opts.start_lsn = start_lsn;
    opts.status_interval = Duration::from_millis(200);
    conn.start_replication(opts).await.unwrap()
}

/// Events up to and including the `n`th Commit, skipping keepalives. Panics with what arrived
/// when the commits do not come within 30 s.
pub async fn until_commits(stream: &mut ReplicationStream, n: usize) -> Vec<SourceEvent> {
    let mut out = Vec::new();
    let mut commits = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while commits < n {
        let ev = match tokio::time::timeout_at(deadline, stream.recv()).await {
            Ok(ev) => ev.unwrap().expect("stream ended"),
            Err(_) => panic!("only {commits} of {n} commits within 30s; got {out:?}"),
        };
        match ev {
            SourceEvent::Keepalive { .. } => continue,
            SourceEvent::Commit { .. } => commits += 1,
            _ => {}
        }
        out.push(ev);
    }
    out
}
