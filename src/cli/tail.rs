//! `sluice tail`: print decoded changes from a live database as JSON lines, so a user can see
//! exactly what the rules will receive.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value as Json, json};

use crate::model::{Change, Lsn};
use crate::pg::PgConfig;
use crate::source::{ReplicationConnection, SnapshotAction, SourceEvent, StartOptions};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Without --slot, tail reads from a temporary slot that the server drops when tail exits.\n\nExample:\n  sluice tail --database-url postgres://sluice@db/app --publication app_pub\n  sluice tail --database-url postgres://sluice@db/app --publication app_pub --slot peek --create-slot --no-confirm"
)]
pub struct TailArgs {
    /// PostgreSQL connection string (URL or key=value); the role needs REPLICATION.
    #[arg(long, env = "SLUICE_DATABASE_URL")]
    pub database_url: String,
    /// Publication(s) to stream; repeat the flag for several.
    #[arg(long, required = true)]
    pub publication: Vec<String>,
    /// A persistent logical replication slot (pgoutput) to read from. Without it, tail creates
    /// a temporary slot, which the server drops when tail exits, and reads what happens from now.
    #[arg(long)]
    pub slot: Option<String>,
    /// Create the --slot first (fails if it already exists). It outlives tail and keeps WAL
    /// until it is dropped.
    #[arg(long, requires = "slot")]
    pub create_slot: bool,
    /// Do not confirm printed transactions, so the slot keeps them (peek mode).
    #[arg(long)]
    pub no_confirm: bool,
    /// Resume from this LSN instead of the slot's confirmed position.
    #[arg(long)]
    pub start_lsn: Option<Lsn>,
}

pub fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let cfg = PgConfig::parse(&args.database_url).context("--database-url")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(tail(args, cfg))?;
    Ok(ExitCode::SUCCESS)
}

async fn tail(args: TailArgs, cfg: PgConfig) -> anyhow::Result<()> {
    let mut conn = ReplicationConnection::connect(&cfg)
        .await
        .with_context(|| format!("connecting to {}", cfg.redacted()))?;
    let mut start_lsn = args.start_lsn.unwrap_or(Lsn::ZERO);
    let created = match &args.slot {
        Some(slot) if args.create_slot => {
            let created = conn.create_slot(slot, SnapshotAction::NoExport).await?;
            eprintln!(
                "created slot {} at {}; it keeps WAL until dropped: SELECT pg_drop_replication_slot('{}')",
                created.slot_name, created.consistent_point, created.slot_name
            );
            Some(created)
        }
        Some(_) => None,
        None => {
            let name = format!("sluice_tail_{}", std::process::id());
            let created = conn.create_temporary_slot(&name).await?;
            eprintln!(
                "created temporary slot {} at {} (dropped when tail exits; --slot NAME reads a persistent one)",
                created.slot_name, created.consistent_point
            );
            Some(created)
        }
    };
    if let (Some(created), None) = (&created, args.start_lsn) {
        start_lsn = created.consistent_point;
    }
    let slot = created.map_or_else(|| args.slot.clone().unwrap_or_default(), |c| c.slot_name);
    let mut opts = StartOptions::new(slot, args.publication.clone());
    opts.start_lsn = start_lsn;
    let mut stream = conn.start_replication(opts).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let event = tokio::select! {
            ev = stream.recv() => ev?,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(event) = event else { break };
        let line = match &event {
            SourceEvent::Change(c) => change_json(c),
            SourceEvent::Begin { final_lsn, xid, .. } => {
                json!({"kind": "begin", "xid": xid, "lsn": final_lsn.to_string()})
            }
            SourceEvent::Commit { end_lsn, .. } => {
                json!({"kind": "commit", "end_lsn": end_lsn.to_string()})
            }
            SourceEvent::Truncate {
                tables,
                cascade,
                restart_identity,
                lsn,
            } => json!({
                "kind": "truncate",
                "tables": tables.iter().map(|t| t.qualified_name()).collect::<Vec<_>>(),
                "cascade": cascade,
                "restart_identity": restart_identity,
                "lsn": lsn.to_string(),
            }),
            SourceEvent::Message {
                transactional,
                prefix,
                content,
                lsn,
            } => json!({
                "kind": "message",
                "transactional": transactional,
                "prefix": prefix,
                "content": String::from_utf8_lossy(content),
                "lsn": lsn.to_string(),
            }),
            SourceEvent::Relation(_) | SourceEvent::Keepalive { .. } => continue,
        };
        writeln!(out, "{line}").context("writing to stdout")?;
        if let SourceEvent::Commit { end_lsn, .. } = event {
            out.flush().context("writing to stdout")?;
            if !args.no_confirm {
                stream.confirm(end_lsn);
            }
        }
    }
    out.flush().context("writing to stdout")?;
    stream.close().await?;
    Ok(())
}

fn change_json(c: &Change) -> Json {
    let mut json = crate::pipeline::payload::change_json(c);
    if let Json::Object(map) = &mut json {
        map.insert("kind".to_owned(), json!("change"));
    }
    json
}
