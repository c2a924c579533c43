//! `sluice diff`: preview a rules change against the current rows and the stored memberships
//! (reads the source and the sink directly, read-only: no running process needed).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::pg::PgConfig;
use crate::pipeline::config::Config;
use crate::pipeline::preview::{DEFAULT_EXAMPLES, DEFAULT_FAILURES, PreviewOptions, Previewer};
use crate::pipeline::preview_tally::{Example, PreviewReport};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  sluice diff --database-url postgres://sluice@db/app --module v2.wasm --rules-config rules.toml --limit 100000"
)]
pub struct DiffArgs {
    /// The candidate rules module.
    #[arg(long)]
    pub module: PathBuf,
    /// Configuration file for the candidate's init.
    #[arg(long)]
    pub rules_config: Option<PathBuf>,
    /// Source database. Env: SLUICE_DATABASE_URL.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Database holding the sidecar tables, when not the source. Env: SLUICE_SINK_URL.
    #[arg(long)]
    pub sink_url: Option<String>,
    /// Publication whose tables are previewed. Env: SLUICE_PUBLICATION.
    #[arg(long)]
    pub publication: Option<String>,
    /// The `sluice run` configuration file (soft deletes, rule limits, publication).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Only this table (schema-qualified unless public).
    #[arg(long)]
    pub table: Option<String>,
    /// At most this many rows per table, in primary-key order.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Example record ids shown per bucket and direction.
    #[arg(long, default_value_t = DEFAULT_EXAMPLES)]
    pub examples: usize,
    /// Failures listed.
    #[arg(long, default_value_t = DEFAULT_FAILURES)]
    pub failures: usize,
    /// Print the report as JSON (as `POST /rules/preview` answers).
    #[arg(long)]
    pub json: bool,
}

/// The `sluice run` settings the preview needs, flags over environment over file.
fn resolve_config(args: &DiffArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    if let Some(v) = &args.database_url {
        config.database_url = Some(v.clone());
    }
    if let Some(v) = &args.sink_url {
        config.sink_url = Some(v.clone());
    }
    if let Some(v) = &args.publication {
        config.publication = v.clone();
    }
    config.rules.module = Some(args.module.clone());
    if let Some(v) = &args.rules_config {
        config.rules.config_file = Some(v.clone());
    }
    config.validate()?;
    Ok(config)
}

pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    super::run::init_logging(super::run::LogFormat::Human, "warn");
    let config = resolve_config(&args)?;
    let source_url = config.database_url.clone().unwrap_or_default();
    let source = PgConfig::parse(&source_url).context("--database-url")?;
    let sink = match &config.sink_url {
        Some(url) => PgConfig::parse(url).context("--sink-url")?,
        None => source.clone(),
    };
    let options = PreviewOptions {
        table: args.table.clone(),
        limit: args.limit,
        examples: args.examples,
        failures: args.failures,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = rt.block_on(async {
        // The candidate is `config.rules.module`: loading "the rules" loads it.
        let (engine, module) = crate::pipeline::load_rules(&config).await?;
        let previewer = Previewer {
            engine,
            config,
            source,
            sink,
        };
        anyhow::Ok(previewer.preview(module, &options).await?)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn examples(list: &[Example]) -> String {
    list.iter()
        .map(|e| format!("{} {}", e.table, e.record_id))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report as an operator reads it.
pub fn render(r: &PreviewReport) -> String {
    let mut out = String::new();
    let short = r.version.get(..12).unwrap_or(&r.version);
    let _ = writeln!(
        out,
        "preview of rules {short} against the stored memberships (nothing was written)"
    );
    for t in &r.tables {
        let limited = match (t.limited, r.limit) {
            (true, Some(n)) => format!(" (stopped at --limit {n}: later rows not examined)"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {}: {} rows{limited}; {} would change buckets, {} unchanged, {} in no bucket, {} failed",
            t.table, t.rows, t.changed, t.unchanged, t.dropped, t.failed
        );
        for note in &t.notes {
            let _ = writeln!(out, "    not modelled: {note}");
        }
    }
    if r.buckets.is_empty() {
        let _ = writeln!(out, "\nno bucket gains or loses a row");
    } else {
        let _ = writeln!(out, "\nbuckets (rows that would enter / leave):");
    }
    for b in &r.buckets {
        let _ = writeln!(out, "  {}  +{} -{}", b.bucket, b.enter, b.leave);
        if !b.enter_examples.is_empty() {
            let _ = writeln!(out, "    enter: {}", examples(&b.enter_examples));
        }
        if !b.leave_examples.is_empty() {
            let _ = writeln!(out, "    leave: {}", examples(&b.leave_examples));
        }
    }
    if let Some(o) = &r.other_buckets {
        let _ = writeln!(
            out,
            "  ... and {} more buckets: +{} -{}",
            o.buckets, o.enter, o.leave
        );
    }
    if r.failed > 0 {
        let _ = writeln!(
            out,
            "\nthe candidate fails on {} rows ({:.1}% of those examined){}:",
            r.failed,
            r.error_rate * 100.0,
            if (r.failures.len() as u64) < r.failed {
                format!(", the first {} listed", r.failures.len())
            } else {
                String::new()
            }
        );
        for f in &r.failures {
            let key = if f.record_id.is_empty() {
                "(unknown key)"
            } else {
                &f.record_id
            };
            let _ = writeln!(out, "  {} {key}: {}", f.table, f.message);
        }
    }
    out
}
