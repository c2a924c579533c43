//! `sluice reload`, `sluice rebucket` and `sluice forget-table`: ask a running `sluice run`
//! through its admin listener.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::pipeline::admin_auth::{self, TokenText};

/// How a control command proves it may use the admin actions.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// File holding the admin token of the running `sluice run` (its admin_token_file).
    /// Env: SLUICE_ADMIN_TOKEN_FILE, or the token itself in SLUICE_ADMIN_TOKEN.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl TokenArgs {
    fn token(&self) -> anyhow::Result<Option<TokenText>> {
        let env_token = std::env::var(admin_auth::TOKEN_ENV).ok();
        Ok(admin_auth::token_text(
            self.admin_token_file.as_deref(),
            env_token,
        )?)
    }
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sluice reload --admin-addr 127.0.0.1:9187 --module /srv/rules/v2.wasm"
)]
pub struct ReloadArgs {
    /// Admin address of the running `sluice run` (its --admin-addr). Env: SLUICE_ADMIN_ADDR.
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:9187")]
    pub admin_addr: String,
    #[command(flatten)]
    pub token: TokenArgs,
    /// Load this module instead of re-reading the current one.
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// New rules configuration file for the module's init.
    #[arg(long)]
    pub rules_config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  sluice rebucket --admin-addr 127.0.0.1:9187 --table items")]
pub struct RebucketArgs {
    /// Admin address of the running `sluice run` (its --admin-addr). Env: SLUICE_ADMIN_ADDR.
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:9187")]
    pub admin_addr: String,
    #[command(flatten)]
    pub token: TokenArgs,
    /// Only this table (schema-qualified unless public); default: every published table.
    #[arg(long)]
    pub table: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  # after `ALTER PUBLICATION sluice DROP TABLE archive;`\n  sluice forget-table --admin-addr 127.0.0.1:9187 --table archive"
)]
pub struct ForgetTableArgs {
    /// Admin address of the running `sluice run` (its --admin-addr). Env: SLUICE_ADMIN_ADDR.
    #[arg(long, env = "SLUICE_ADMIN_ADDR", default_value = "127.0.0.1:9187")]
    pub admin_addr: String,
    #[command(flatten)]
    pub token: TokenArgs,
    /// The table that left the publication (schema-qualified unless public).
    #[arg(long)]
    pub table: String,
}

/// POSTs `body` to an admin action, with the bearer token when there is one. A 401 is reported
/// here with the listener's own reason, so each command only handles its outcomes.
pub(super) fn post(
    addr: &str,
    token: &TokenArgs,
    path: &str,
    body: serde_json::Value,
    timeout: Option<Duration>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let token = token.token()?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(timeout)
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let mut request = agent.post(&url);
    if let Some(token) = &token {
        request = request.header("Authorization", &format!("Bearer {}", token.expose()));
    }
    let mut resp = request
        .send_json(&body)
        .with_context(|| format!("cannot reach the admin listener at {addr}: is `sluice run --admin-addr {addr}` running?"))?;
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp
        .body_mut()
        .read_json()
        .with_context(|| format!("unexpected answer from {url}"))?;
    if status == 401 {
        let hint = if token.is_none() {
            "; no token was given: pass --admin-token-file or set SLUICE_ADMIN_TOKEN"
        } else {
            ""
        };
        bail!(
            "the admin listener at {addr} refused the request: {}{hint}",
            body["reason"].as_str().unwrap_or("unauthorized")
        );
    }
    Ok((status, body))
}

pub fn reload(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let module = match &args.module {
        // Absolute but not canonical: a symlink (a mounted ConfigMap's `rules.wasm`) stays the
        // path that sluice watches and records, not the versioned file behind it today.
        Some(m) => {
            std::fs::metadata(m).with_context(|| format!("module {}", m.display()))?;
            Some(std::path::absolute(m).with_context(|| format!("module {}", m.display()))?)
        }
        None => None,
    };
    let rules_config = match &args.rules_config {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading rules config {}", p.display()))?,
        ),
        None => None,
    };
    let body = serde_json::json!({ "module": module, "rules_config": rules_config });
    let (status, answer) = post(
        &args.admin_addr,
        &args.token,
        "/rules/reload",
        body,
        Some(Duration::from_secs(300)),
    )?;
    match answer["status"].as_str() {
        Some("activated") => {
            println!(
                "activated {} (was {}) from LSN {}: compile {} ms, {} ms after the request",
                answer["version"].as_str().unwrap_or(""),
                answer["previous"].as_str().unwrap_or(""),
                answer["first_lsn"].as_str().unwrap_or(""),
                answer["compile_ms"],
                answer["latency_ms"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Some("unchanged") => {
            println!(
                "unchanged: {} is already active",
                answer["version"].as_str().unwrap_or("")
            );
            Ok(ExitCode::SUCCESS)
        }
        Some("rejected") => bail!(
            "reload rejected, {} keeps running: {}",
            answer["active"].as_str().unwrap_or("the active version"),
            answer["reason"].as_str().unwrap_or("")
        ),
        _ => bail!("unexpected answer ({status}): {answer}"),
    }
}

pub fn rebucket(args: RebucketArgs) -> anyhow::Result<ExitCode> {
    eprintln!("re-bucketing (progress is in sluice's log and in sluice_rebucket_progress) ...");
    let (status, answer) = post(
        &args.admin_addr,
        &args.token,
        "/rebucket",
        serde_json::json!({ "table": args.table }),
        None,
    )?;
    match answer["status"].as_str() {
        Some("done") => {
            println!(
                "re-bucketed {} rows of {}: {} membership changes written to the changelog in {:.1} s",
                answer["rows"],
                answer["tables"],
                answer["changelog_rows"],
                answer["seconds"].as_f64().unwrap_or(0.0)
            );
            Ok(ExitCode::SUCCESS)
        }
        Some("rejected") => bail!(
            "rebucket rejected: {}",
            answer["reason"].as_str().unwrap_or("")
        ),
        _ => bail!("unexpected answer ({status}): {answer}"),
    }
}

pub fn forget_table(args: ForgetTableArgs) -> anyhow::Result<ExitCode> {
    let (status, answer) = post(
        &args.admin_addr,
        &args.token,
        "/tables/forget",
        serde_json::json!({ "table": args.table }),
        None,
    )?;
    match answer["status"].as_str() {
        Some("done") => {
            println!(
                "forgot {}: {} records lost their memberships, {} deletes written to the changelog",
                answer["table"].as_str().unwrap_or(""),
                answer["records"],
                answer["changelog_rows"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Some("rejected") => bail!(
            "forget-table rejected, nothing removed: {}",
            answer["reason"].as_str().unwrap_or("")
        ),
        _ => bail!("unexpected answer ({status}): {answer}"),
    }
}
