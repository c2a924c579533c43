//! `sluice check`: validate a rules module and print its version, the world it was built for
//! and the relations it declares.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::rules::{RuleLimits, RulesEngine};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints `ok <module> sha256:<version>`, then `world sluice:rules@<0.2.0 or 0.1.0>`, then one `relation <name>` line per relation the module's init declares (`order_details(order_id)->orders` inherits, `list_members(list_id)=>lists` shares).\n\nExample:\n  sluice check --module target/wasm32-wasip2/release/by_owner.wasm --rules-config rules.toml"
)]
pub struct CheckArgs {
    /// The rules module (a wasm32-wasip2 component).
    #[arg(long)]
    pub module: PathBuf,
    /// Configuration text handed to the module's init (TOML or JSON, as
    /// the module expects).
    #[arg(long)]
    pub rules_config: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let config = read_rules_config(args.rules_config.as_deref())?;
    let engine = RulesEngine::new(RuleLimits::default())?;
    let module = engine.load_file(&args.module, &config)?;
    println!("ok {} sha256:{}", args.module.display(), module.version());
    println!("world sluice:rules@{}", module.world_version());
    for relation in module.relations() {
        println!("relation {}", relation.name());
    }
    Ok(ExitCode::SUCCESS)
}

/// The `--rules-config` file's text, or empty when none is given.
pub(super) fn read_rules_config(path: Option<&Path>) -> anyhow::Result<String> {
    match path {
        None => Ok(String::new()),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --rules-config {}", path.display())),
    }
}
