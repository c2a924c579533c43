//! `sluice eval`: run a rules module over changes given as JSON lines,
//! without PostgreSQL.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::rules::jsonl::{ChangeReader, write_outcome};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints each change's own outcome, one JSON line per change. Relations the module declares (see `sluice check`) are applied by `sluice run`, not here: a row's buckets through its parent or its children are not shown.\n\nInput values: JSON null, booleans, integers, floats and strings are Null, Bool, Int, Float and Text; objects and arrays are Json. Other kinds are stated with a `$kind` object:\n  {\"$kind\":\"unchanged\"}                      a TOASTed column the update did not send\n  {\"$kind\":\"numeric\",\"value\":\"1.50\"}\n  {\"$kind\":\"bytes\",\"value\":\"\\\\x0aff\"}       hex, with or without the \\x prefix\n  {\"$kind\":\"date\",\"value\":\"2024-02-29\"}     also time, timestamp, timestamptz (ISO-8601 text)\n  {\"$kind\":\"text\",\"value\":\"...\"}\n  {\"$kind\":\"json\",\"value\":{...}}           any JSON, also an object with a $kind key\n\nThe module's host.log lines go to stderr (filter with SLUICE_LOG).\n\nExample:\n  sluice eval --module by_owner.wasm --input changes.jsonl\n  cat changes.jsonl | sluice eval --module by_owner.wasm --input -"
)]
pub struct EvalArgs {
    /// The rules module (a wasm32-wasip2 component).
    #[arg(long)]
    pub module: PathBuf,
    /// JSON lines, one change per line; `-` reads stdin.
    #[arg(long)]
    pub input: PathBuf,
    /// Configuration text handed to the module's init (TOML or JSON, as
    /// the module expects).
    #[arg(long)]
    pub rules_config: Option<PathBuf>,
    /// Directory of compiled modules; `off` disables it. Default:
    /// `$XDG_CACHE_HOME/sluice/modules` or `~/.cache/sluice/modules`.
    #[arg(long, env = "SLUICE_RULES_CACHE_DIR")]
    pub cache_dir: Option<String>,
    /// Changes per evaluate call.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
}

pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    super::run::init_logging(super::run::LogFormat::Human, super::check::TOOL_LOG);
    let config = super::check::read_rules_config(args.rules_config.as_deref())?;
    let engine = super::check::engine(args.cache_dir.as_deref())?;
    let module = engine.load_file(&args.module, &config)?;
    let mut instance = module.instantiate()?;

    let input_name = args.input.display().to_string();
    let input: Box<dyn BufRead> = if input_name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.input)
            .with_context(|| format!("cannot open --input {input_name}"))?;
        Box::new(BufReader::new(file))
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let batch_size = args.batch_size as usize;
    let mut reader = ChangeReader::new();
    let mut batch = Vec::with_capacity(batch_size);
    for (index, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {input_name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let change = reader
            .parse(index + 1, &line)
            .with_context(|| format!("malformed change in {input_name}"))?;
        batch.push(change);
        if batch.len() == batch_size {
            flush(&mut instance, &mut batch, &mut out)?;
        }
    }
    flush(&mut instance, &mut batch, &mut out)?;
    out.flush().context("cannot write outcomes")?;
    Ok(ExitCode::SUCCESS)
}

fn flush(
    instance: &mut crate::rules::RulesInstance,
    batch: &mut Vec<crate::model::Change>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for outcome in instance.evaluate(batch) {
        write_outcome(out, &outcome).context("cannot write outcomes")?;
    }
    batch.clear();
    Ok(())
}
