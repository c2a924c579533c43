//! `sluice failures` (reads the sink directly: no running process needed) and
//! `sluice replay-failures` (asks a running `sluice run`, so the replay is serialised with the
//! stream).

use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::model::Lsn;
use crate::pg::PgConfig;
use crate::sink::failures::{FailureReport, report};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sluice failures --sink-url postgres://sluice@db/app --limit 20"
)]
pub struct FailuresArgs {
    /// Database holding the sidecar tables. Env: SLUICE_SINK_URL, else SLUICE_DATABASE_URL.
    #[arg(long, env = "SLUICE_SINK_URL")]
    pub sink_url: Option<String>,
    /// The source database, used when no sink URL is given (the sidecar tables are then there).
    #[arg(long, env = "SLUICE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Schema of the sidecar tables, as `sluice run` was given it. Env: SLUICE_SIDECAR_SCHEMA.
    #[arg(long, env = "SLUICE_SIDECAR_SCHEMA")]
    pub sidecar_schema: Option<String>,
    /// Only this table (schema-qualified unless public).
    #[arg(long)]
    pub table: Option<String>,
    /// How many of the latest unresolved failures to list.
    #[arg(long, default_value_t = 10)]
    pub limit: i64,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  # after rolling back the version that failed\n  sluice replay-failures --admin-addr 127.0.0.1:9187 --since 0/16B3748"
)]
pub struct ReplayFailuresArgs {
    /// Admin address of the running `sluice run` (its --admin-addr). Env: SLUICE_ADMIN_ADDR.
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:9187")]
    pub admin_addr: String,
    #[command(flatten)]
    pub token: super::control::TokenArgs,
    /// Only failures at or after this LSN.
    #[arg(long)]
    pub since: Option<Lsn>,
    /// Only this table (schema-qualified unless public).
    #[arg(long)]
    pub table: Option<String>,
}

pub fn failures(args: FailuresArgs) -> anyhow::Result<ExitCode> {
    let Some(url) = args.sink_url.as_deref().or(args.database_url.as_deref()) else {
        bail!(
            "no sink database: give --sink-url (or --database-url when the sidecar tables are in the source database)"
        );
    };
    let mut cfg = PgConfig::parse(url).context("--sink-url")?;
    if let Some(schema) = &args.sidecar_schema {
        crate::sink::search_path::pin(&mut cfg, schema);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(async {
        let client = cfg
            .connect_sql()
            .await
            .with_context(|| format!("connecting to {}", cfg.redacted()))?;
        report(&client, args.table.as_deref(), args.limit.max(0))
            .await
            .context("reading sync_rule_failures")
    })?;
    print!("{}", render(&report));
    Ok(ExitCode::SUCCESS)
}

fn lsn(l: Option<Lsn>) -> String {
    l.map_or_else(|| "-".to_owned(), |l| l.to_string())
}

/// The report as an operator reads it.
pub fn render(r: &FailureReport) -> String {
    let mut out = format!(
        "{} unresolved rule failures ({} resolved)\n",
        r.unresolved, r.resolved
    );
    if !r.groups.is_empty() {
        out.push_str("\nby table and error:\n");
        for g in &r.groups {
            out.push_str(&format!(
                "  {}  {} failures, {} rows, LSN {} .. {}, rules {}\n    {}\n",
                g.table_name,
                g.count,
                g.keys,
                lsn(g.first_lsn),
                lsn(g.last_lsn),
                g.rules_versions.join(", "),
                g.error_text
            ));
        }
    }
    if !r.latest.is_empty() {
        out.push_str("\nlatest:\n");
        for f in &r.latest {
            out.push_str(&format!(
                "  #{} {} key {} at {} (rules {}): {}\n",
                f.id,
                f.table_name,
                if f.record_id.is_empty() {
                    "(unknown)"
                } else {
                    &f.record_id
                },
                lsn(f.lsn),
                f.rules_version.as_deref().unwrap_or("-"),
                f.error_text
            ));
        }
    }
    if r.unresolved > 0 {
        out.push_str("\nonce the active rules handle these rows: sluice replay-failures\n");
    }
    out
}

pub fn replay(args: ReplayFailuresArgs) -> anyhow::Result<ExitCode> {
    let (status, answer) = super::control::post(
        &args.admin_addr,
        &args.token,
        "/failures/replay",
        serde_json::json!({
            "since": args.since.map(|l| l.to_string()),
            "table": args.table,
        }),
        None,
    )?;
    match answer["status"].as_str() {
        Some("done") => {
            println!(
                "replayed {} rule failures ({} rows, {} no longer exist): {} changelog entries written; {} left unresolved",
                answer["resolved"],
                answer["keys"],
                answer["gone"],
                answer["changelog_rows"],
                answer["unresolved"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Some("rejected") => bail!(
            "replay rejected: {}",
            answer["reason"].as_str().unwrap_or("")
        ),
        _ => bail!("unexpected answer ({status}): {answer}"),
    }
}
