//! `sluice status`: where a pipeline stands, read from the slot (source) and the sidecar tables
//! (sink), with no running process needed. One `key: value` line per field, stable for scripts.

use std::process::ExitCode;

use anyhow::{Context, bail};
use tokio_postgres::Client;

use crate::model::Lsn;
use crate::pg::PgConfig;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sluice status --database-url postgres://sluice@db/app --slot sluice"
)]
pub struct StatusArgs {
    /// The source database (the slot is there). Env: SLUICE_DATABASE_URL.
    #[arg(long, env = "SLUICE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Database holding the sidecar tables, when not the source. Env: SLUICE_SINK_URL.
    #[arg(long, env = "SLUICE_SINK_URL", hide_env_values = true)]
    pub sink_url: Option<String>,
    /// Schema of the sidecar tables, as `sluice run` was given it. Env: SLUICE_SIDECAR_SCHEMA.
    #[arg(long, env = "SLUICE_SIDECAR_SCHEMA")]
    pub sidecar_schema: Option<String>,
    /// Replication slot. Env: SLUICE_SLOT.
    #[arg(long, env = "SLUICE_SLOT", default_value = "sluice")]
    pub slot: String,
}

/// The slot as the source server reports it.
#[derive(Debug, Default)]
struct SlotRow {
    active_pid: Option<i32>,
    wal_status: Option<String>,
    confirmed_flush_lsn: Option<String>,
    restart_lsn: Option<String>,
    retained_bytes: Option<i64>,
    safe_wal_size: Option<i64>,
    behind_bytes: Option<i64>,
    flush_lag_seconds: Option<f64>,
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let Some(source_url) = args.database_url.as_deref() else {
        bail!("no source database: give --database-url (or SLUICE_DATABASE_URL)");
    };
    let source = PgConfig::parse(source_url).context("--database-url")?;
    let mut sink = match args.sink_url.as_deref() {
        Some(url) => PgConfig::parse(url).context("--sink-url")?,
        None => source.clone(),
    };
    if let Some(schema) = &args.sidecar_schema {
        crate::sink::search_path::pin(&mut sink, schema);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let text = rt.block_on(async {
        let source_client = source
            .connect_sql()
            .await
            .with_context(|| format!("connecting to {}", source.redacted()))?;
        let sink_client = sink
            .connect_sql()
            .await
            .with_context(|| format!("connecting to {}", sink.redacted()))?;
        let mut out = slot_lines(&source_client, &args.slot).await?;
        out.push_str(&sink_lines(&sink_client, &args.slot).await?);
        anyhow::Ok(out)
    })?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

async fn read_slot(client: &Client, slot: &str) -> anyhow::Result<Option<SlotRow>> {
    let row = client
        .query_opt(
            "SELECT s.active_pid, s.wal_status::text, s.confirmed_flush_lsn::text, \
                    s.restart_lsn::text, (pg_current_wal_lsn() - s.restart_lsn)::int8, \
                    s.safe_wal_size::int8, (pg_current_wal_lsn() - s.confirmed_flush_lsn)::int8, \
                    (SELECT extract(epoch FROM r.flush_lag)::float8 FROM pg_stat_replication r \
                      WHERE r.pid = s.active_pid) \
             FROM pg_replication_slots s WHERE s.slot_name = $1",
            &[&slot],
        )
        .await
        .context("reading pg_replication_slots")?;
    Ok(row.map(|r| SlotRow {
        active_pid: r.get(0),
        wal_status: r.get(1),
        confirmed_flush_lsn: r.get(2),
        restart_lsn: r.get(3),
        retained_bytes: r.get(4),
        safe_wal_size: r.get(5),
        behind_bytes: r.get(6),
        flush_lag_seconds: r.get(7),
    }))
}

async fn slot_lines(client: &Client, slot: &str) -> anyhow::Result<String> {
    let keep: String = client
        .query_one("SELECT current_setting('max_slot_wal_keep_size')", &[])
        .await
        .context("reading max_slot_wal_keep_size")?
        .get(0);
    let Some(s) = read_slot(client, slot).await? else {
        return Ok(format!(
            "slot: {slot}\nslot_state: missing (created at the first start; after a lost slot, see the README's re-snapshot)\nmax_slot_wal_keep_size: {keep}\n"
        ));
    };
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let state = match s.active_pid {
        Some(pid) => format!("active (pid {pid})"),
        None => "inactive (no sluice streaming from it)".to_owned(),
    };
    let lag_seconds = match (s.active_pid, s.flush_lag_seconds) {
        (None, _) => "unknown (no process streaming)".to_owned(),
        (Some(_), None) => "0 (caught up)".to_owned(),
        (Some(_), Some(l)) => format!("{l:.1}"),
    };
    Ok(format!(
        "slot: {slot}\n\
         slot_state: {state}\n\
         wal_status: {}\n\
         confirmed_flush_lsn: {}\n\
         restart_lsn: {}\n\
         retained_wal_bytes: {}\n\
         safe_wal_size_bytes: {}\n\
         max_slot_wal_keep_size: {keep}\n\
         lag_bytes: {}\n\
         lag_seconds: {lag_seconds}\n",
        dash(s.wal_status),
        dash(s.confirmed_flush_lsn),
        dash(s.restart_lsn),
        s.retained_bytes.map_or("-".to_owned(), |b| b.to_string()),
        s.safe_wal_size
            .map_or("unlimited".to_owned(), |b| b.to_string()),
        s.behind_bytes.map_or("-".to_owned(), |b| b.to_string()),
    ))
}

async fn sink_lines(client: &Client, slot: &str) -> anyhow::Result<String> {
    let created: bool = client
        .query_one("SELECT to_regclass('sync_wal_position') IS NOT NULL", &[])
        .await
        .context("looking for the sidecar tables")?
        .get(0);
    if !created {
        return Ok(
            "stored_lsn: - (no sidecar tables: sluice has not started against this sink)
"
            .to_owned(),
        );
    }
    let stored = client
        .query_opt(
            "SELECT confirmed_lsn, updated_at::text, extract(epoch FROM now() - updated_at)::float8 \
             FROM sync_wal_position WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .context("reading sync_wal_position")?;
    let mut out = match stored {
        Some(r) => {
            let lsn = Lsn(r.get::<_, i64>(0) as u64);
            let at: String = r.get(1);
            let ago: f64 = r.get(2);
            format!("stored_lsn: {lsn}\nstored_at: {at} ({ago:.0} s ago)\n")
        }
        None => {
            "stored_lsn: - (nothing stored yet: the initial snapshot has not finished)\n".to_owned()
        }
    };
    let version = client
        .query_opt(
            "SELECT version, first_lsn, coalesce(module_path, '-'), activated_at::text \
             FROM sluice_rule_versions WHERE slot_name = $1 \
             ORDER BY first_lsn DESC, activated_at DESC LIMIT 1",
            &[&slot],
        )
        .await
        .context("reading sluice_rule_versions")?;
    out.push_str(&match version {
        Some(r) => format!(
            "rules_version: {} (from {}, {}, activated {})\n",
            r.get::<_, String>(0),
            Lsn(r.get::<_, i64>(1) as u64),
            r.get::<_, String>(2),
            r.get::<_, String>(3)
        ),
        None => "rules_version: -\n".to_owned(),
    });
    out.push_str(&progress_line(client, slot, "snapshot", "sluice_snapshot_progress").await?);
    out.push_str(&progress_line(client, slot, "rebucket", "sluice_rebucket_progress").await?);
    Ok(out)
}

/// `snapshot: complete (2 tables, 10 rows)`, `... in progress (1/2 tables done, 5 rows; reading
/// items)`, or `none`.
async fn progress_line(
    client: &Client,
    slot: &str,
    key: &str,
    table: &str,
) -> anyhow::Result<String> {
    let rows = client
        .query(
            &format!(
                "SELECT table_name, rows_done, done FROM {table} WHERE slot_name = $1 ORDER BY table_name"
            ),
            &[&slot],
        )
        .await
        .with_context(|| format!("reading {table}"))?;
    if rows.is_empty() {
        return Ok(format!("{key}: none\n"));
    }
    let done = rows.iter().filter(|r| r.get::<_, bool>(2)).count();
    let total_rows: i64 = rows.iter().map(|r| r.get::<_, i64>(1)).sum();
    let open: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(2))
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok(if open.is_empty() {
        format!("{key}: complete ({done} tables, {total_rows} rows)\n")
    } else {
        format!(
            "{key}: in progress ({done}/{} tables done, {total_rows} rows; not done: {})\n",
            rows.len(),
            open.join(", ")
        )
    })
}
