//! `sluice run`: the pipeline, with flags over environment over config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::info;

use crate::pipeline::admin_auth::{self, AdminToken};
use crate::pipeline::config::{Config, FailurePolicy};
use crate::pipeline::{Health, admin};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sluice run --database-url postgres://sluice@db/app --module rules.wasm --publication app_pub"
)]
pub struct RunArgs {
    /// Source database URL (or key=value string). Overrides SLUICE_DATABASE_URL and the config file.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Database for the sidecar tables (default: the source database). Env: SLUICE_SINK_URL.
    #[arg(long)]
    pub sink_url: Option<String>,
    /// Schema of the sidecar tables in the sink database (default: the role's search_path).
    /// Env: SLUICE_SIDECAR_SCHEMA.
    #[arg(long)]
    pub sidecar_schema: Option<String>,
    /// The rules component (.wasm, built for wasm32-wasip2). Env: SLUICE_MODULE.
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// Publication to stream (default "sluice"). Env: SLUICE_PUBLICATION.
    #[arg(long)]
    pub publication: Option<String>,
    /// Replication slot (default "sluice"). Env: SLUICE_SLOT.
    #[arg(long)]
    pub slot: Option<String>,
    /// TOML configuration file; see the README for every key.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// File whose text is passed to the rules module's init. Env: SLUICE_RULES_CONFIG.
    #[arg(long)]
    pub rules_config: Option<PathBuf>,
    /// What to do when the rules fail on a change. Env: SLUICE_FAILURE_POLICY.
    #[arg(long, value_enum)]
    pub failure_policy: Option<FailurePolicy>,
    /// Admin HTTP address for /healthz, /readyz, /metrics, e.g. 127.0.0.1:9187. Env: SLUICE_ADMIN_ADDR.
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
    /// File holding the bearer token that POST /rules/reload, /rebucket and /tables/forget
    /// require; required when --admin-addr is not loopback. Env: SLUICE_ADMIN_TOKEN_FILE, or the
    /// token itself in SLUICE_ADMIN_TOKEN.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Longest wait between reconnect attempts, in milliseconds (default 5000). Env:
    /// SLUICE_RECONNECT_MAX_BACKOFF_MS.
    #[arg(long)]
    pub reconnect_max_backoff_ms: Option<u64>,
    /// Log format.
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Builds the effective configuration: file, then environment, then flags.
pub fn resolve_config(
    args: &RunArgs,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    // A flag replaces its environment variable outright: an invalid value there must not stop
    // an operator who corrects it on the command line.
    let flagged = flagged_env(args);
    config.apply_env(|name| {
        if flagged.contains(&name) {
            None
        } else {
            env(name)
        }
    })?;
    if let Some(v) = &args.database_url {
        config.database_url = Some(v.clone());
    }
    if let Some(v) = &args.sink_url {
        config.sink_url = Some(v.clone());
    }
    if let Some(v) = &args.sidecar_schema {
        config.sidecar_schema = Some(v.clone());
    }
    if let Some(v) = &args.module {
        config.rules.module = Some(v.clone());
    }
    if let Some(v) = &args.publication {
        config.publication = v.clone();
    }
    if let Some(v) = &args.slot {
        config.slot = v.clone();
    }
    if let Some(v) = &args.rules_config {
        config.rules.config_file = Some(v.clone());
    }
    if let Some(v) = args.failure_policy {
        config.failure_policy = v;
    }
    if let Some(v) = args.admin_addr {
        config.admin_addr = Some(v);
    }
    if let Some(v) = &args.admin_token_file {
        config.admin_token_file = Some(v.clone());
    }
    if let Some(v) = args.reconnect_max_backoff_ms {
        config.reconnect.max_backoff_ms = v;
    }
    config.validate()?;
    Ok(config)
}

/// The environment variables whose setting a flag gives.
fn flagged_env(args: &RunArgs) -> Vec<&'static str> {
    [
        (args.database_url.is_some(), "SLUICE_DATABASE_URL"),
        (args.sink_url.is_some(), "SLUICE_SINK_URL"),
        (args.sidecar_schema.is_some(), "SLUICE_SIDECAR_SCHEMA"),
        (args.module.is_some(), "SLUICE_MODULE"),
        (args.publication.is_some(), "SLUICE_PUBLICATION"),
        (args.slot.is_some(), "SLUICE_SLOT"),
        (args.rules_config.is_some(), "SLUICE_RULES_CONFIG"),
        (args.failure_policy.is_some(), "SLUICE_FAILURE_POLICY"),
        (args.admin_addr.is_some(), "SLUICE_ADMIN_ADDR"),
        (args.admin_token_file.is_some(), "SLUICE_ADMIN_TOKEN_FILE"),
        (
            args.reconnect_max_backoff_ms.is_some(),
            "SLUICE_RECONNECT_MAX_BACKOFF_MS",
        ),
    ]
    .into_iter()
    .filter_map(|(given, name)| given.then_some(name))
    .collect()
}

/// Logs to stderr, filtered by `SLUICE_LOG` or `RUST_LOG` over `default` (see
/// [`super::log_filter`]). Colours only on a terminal, and not when `NO_COLOR` is set.
pub fn init_logging(format: LogFormat, default: &str) {
    use std::io::IsTerminal as _;
    let directives = super::log_filter::directives(
        default,
        std::env::var("SLUICE_LOG").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Escape codes in a log file or a journal are noise, so colour needs a terminal; `NO_COLOR`
/// (no-color.org: set and not empty) turns it off even there.
fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Reads the admin token (file or `SLUICE_ADMIN_TOKEN`) and keeps its digest.
pub fn resolve_token(
    config: &Config,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<AdminToken>> {
    let text = admin_auth::token_text(
        config.admin_token_file.as_deref(),
        env(admin_auth::TOKEN_ENV),
    )?;
    Ok(text.as_ref().map(AdminToken::new))
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format, "info,wasmtime=warn,cranelift=warn");
    let config = resolve_config(&args, |k| std::env::var(k).ok())?;
    let token = resolve_token(&config, |k| std::env::var(k).ok())?;
    if let Some(addr) = config.admin_addr {
        // Before anything connects: an exposed listener is a configuration error.
        admin_auth::check_exposure(addr, token.as_ref())?;
    }
    // One thread for the whole data path. The heavy lifting happens in PostgreSQL's walsender
    // and sink backend, which need the cores; sluice's share (decoding, rules, encoding) fits on
    // one, and keeping the reader, the pipeline and the committer on the same thread removes a
    // cross-thread wake-up per socket read. Compiles run on the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_pipeline(config, token))?;
    Ok(ExitCode::SUCCESS)
}

async fn run_pipeline(config: Config, token: Option<AdminToken>) -> anyhow::Result<()> {
    let health = Arc::new(Health::default());
    let (handles, receivers) = crate::pipeline::controls();
    if let Some(addr) = config.admin_addr {
        let handle = admin::install_recorder()?;
        admin::serve(addr, Arc::clone(&health), handle, handles.clone(), token)?;
    }
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested: finishing the batch in flight");
        let _ = tx.send(true);
    });
    crate::pipeline::run(config, health, rx, handles, receivers).await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(extra: &[&str], toml: &std::path::Path) -> RunArgs {
        use clap::Parser as _;
        // The database and module unless `extra` gives them.
        let base = [
            ("--database-url", "postgres://h/db"),
            ("--module", "r.wasm"),
        ];
        let mut all = vec!["sluice", "--config", toml.to_str().unwrap()];
        for (flag, value) in base {
            if !extra.contains(&flag) {
                all.extend([flag, value]);
            }
        }
        all.extend(extra);
        Wrapper::try_parse_from(all).unwrap().run
    }

    #[test]
    fn reconnect_max_backoff_is_layered_flag_over_env_over_file_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("sluice.toml");
        std::fs::write(&toml, "[reconnect]\nmax_backoff_ms = 3000\n").unwrap();
        let env = |k: &str| (k == "SLUICE_RECONNECT_MAX_BACKOFF_MS").then(|| "2000".to_string());
        let cap = |a: &RunArgs, env: &dyn Fn(&str) -> Option<String>| {
            resolve_config(a, env).unwrap().reconnect.max_backoff_ms
        };
        let flag = args(&["--reconnect-max-backoff-ms", "1000"], &toml);
        let none = args(&[], &toml);
        assert_eq!(cap(&flag, &env), 1000);
        assert_eq!(cap(&none, &env), 2000);
        assert_eq!(cap(&none, &|_| None), 3000);
        let no_file = args(&[], &dir.path().join("absent.toml"));
        assert!(resolve_config(&no_file, |_| None).is_err());
        std::fs::write(&toml, "").unwrap();
        assert_eq!(cap(&none, &|_| None), 5000);
        let too_small = args(&["--reconnect-max-backoff-ms", "10"], &toml);
        assert_eq!(
            resolve_config(&too_small, |_| None)
                .unwrap_err()
                .to_string(),
            "reconnect.max_backoff_ms = 10 is out of range: it must be between 100 and 600000 milliseconds"
        );
        let bad_env = |k: &str| (k == "SLUICE_RECONNECT_MAX_BACKOFF_MS").then(|| "5s".to_string());
        assert_eq!(
            resolve_config(&none, bad_env).unwrap_err().to_string(),
            "environment variable SLUICE_RECONNECT_MAX_BACKOFF_MS=\"5s\" is invalid: invalid digit found in string: expected milliseconds"
        );
    }

    #[test]
    fn the_admin_token_file_is_layered_flag_over_env_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("sluice.toml");
        std::fs::write(&toml, "admin_token_file = \"/toml\"\n").unwrap();
        let env = |k: &str| (k == "SLUICE_ADMIN_TOKEN_FILE").then(|| "/env".to_string());
        let flag = args(&["--admin-token-file", "/flag"], &toml);
        let file = |c: Config| c.admin_token_file.unwrap();
        assert_eq!(
            file(resolve_config(&flag, env).unwrap()),
            PathBuf::from("/flag")
        );
        let none = args(&[], &toml);
        assert_eq!(
            file(resolve_config(&none, env).unwrap()),
            PathBuf::from("/env")
        );
        assert_eq!(
            file(resolve_config(&none, |_| None).unwrap()),
            PathBuf::from("/toml")
        );

        // A file and SLUICE_ADMIN_TOKEN together: refused, naming the file, not the token.
        let config = resolve_config(&none, |_| None).unwrap();
        let token = "t".repeat(20);
        let err = resolve_token(&config, |k| {
            (k == "SLUICE_ADMIN_TOKEN").then(|| token.clone())
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "both SLUICE_ADMIN_TOKEN and an admin token file (/toml) are set: give the token one way only"
        );
    }

    #[test]
    fn a_flag_overrides_an_invalid_env_var_of_the_same_setting() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("sluice.toml");
        std::fs::write(&toml, "").unwrap();
        // (variable, a value that is invalid on its own, the flag, its value, what it sets).
        // Empty URLs and paths only fail once used; the others are refused by the resolution.
        type Get = fn(&Config) -> String;
        let cases: &[(&str, &str, &str, &str, Get)] = &[
            (
                "SLUICE_DATABASE_URL",
                "",
                "--database-url",
                "postgres://f/db",
                |c| c.database_url.clone().unwrap(),
            ),
            (
                "SLUICE_SINK_URL",
                "",
                "--sink-url",
                "postgres://s/db",
                |c| c.sink_url.clone().unwrap(),
            ),
            (
                "SLUICE_SIDECAR_SCHEMA",
                "",
                "--sidecar-schema",
                "side",
                |c| c.sidecar_schema.clone().unwrap(),
            ),
            ("SLUICE_MODULE", "", "--module", "f.wasm", |c| {
                c.rules.module.clone().unwrap().display().to_string()
            }),
            ("SLUICE_PUBLICATION", "", "--publication", "pubf", |c| {
                c.publication.clone()
            }),
            ("SLUICE_SLOT", "Bad-Slot", "--slot", "slotf", |c| {
                c.slot.clone()
            }),
            (
                "SLUICE_RULES_CONFIG",
                "",
                "--rules-config",
                "/r.toml",
                |c| c.rules.config_file.clone().unwrap().display().to_string(),
            ),
            (
                "SLUICE_FAILURE_POLICY",
                "explode",
                "--failure-policy",
                "halt",
                |c| format!("{:?}", c.failure_policy).to_lowercase(),
            ),
            (
                "SLUICE_ADMIN_ADDR",
                "",
                "--admin-addr",
                "127.0.0.1:9",
                |c| c.admin_addr.unwrap().to_string(),
            ),
            (
                "SLUICE_ADMIN_TOKEN_FILE",
                "",
                "--admin-token-file",
                "/t",
                |c| c.admin_token_file.clone().unwrap().display().to_string(),
            ),
            (
                "SLUICE_RECONNECT_MAX_BACKOFF_MS",
                "soon",
                "--reconnect-max-backoff-ms",
                "2000",
                |c| c.reconnect.max_backoff_ms.to_string(),
            ),
        ];
        let refused_alone = [
            "SLUICE_SIDECAR_SCHEMA",
            "SLUICE_PUBLICATION",
            "SLUICE_SLOT",
            "SLUICE_FAILURE_POLICY",
            "SLUICE_ADMIN_ADDR",
            "SLUICE_RECONNECT_MAX_BACKOFF_MS",
        ];
        for (name, bad, flag, value, get) in cases {
            let env = |k: &str| (k == *name).then(|| bad.to_string());
            let alone = resolve_config(&args(&[], &toml), env);
            assert_eq!(
                alone.is_err(),
                refused_alone.contains(name),
                "{name}={bad:?}"
            );
            let with = args(&[flag, value], &toml);
            let config = resolve_config(&with, env)
                .unwrap_or_else(|e| panic!("{flag} {value} beside {name}={bad:?}: {e}"));
            assert_eq!(get(&config), *value, "{flag}");
        }
        // Every variable `sluice run` reads that has a flag is in the table.
        let read = std::cell::RefCell::new(Vec::new());
        Config::default()
            .apply_env(|k| {
                read.borrow_mut().push(k.to_owned());
                None
            })
            .unwrap();
        let mut with_flags: Vec<String> = read.into_inner();
        with_flags.retain(|k| k != "SLUICE_RULES_CACHE_DIR");
        let mut tested: Vec<String> = cases.iter().map(|c| c.0.to_owned()).collect();
        with_flags.sort();
        tested.sort();
        assert_eq!(with_flags, tested);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }
}
