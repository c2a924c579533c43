//! `sluice check`: validate a rules module and print its version, the world it was built for
//! and the relations it declares.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::rules::{CodeSource, ModuleCache, RuleLimits, RulesEngine, RulesModule};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints `ok <module> sha256:<version>`, then `world sluice:rules@<0.2.0 or 0.1.0>`, then one `relation <name>` line per relation the module's init declares (`order_details(order_id)->orders` inherits, `list_members(list_id)=>lists` shares). On stderr: `code compiled in <ms> ms (<cache dir>)`, `code cached in <ms> ms (<cache dir>)` (loaded from the compiled-module cache) or `code compiled in <ms> ms (not cached)`, and the module's host.log lines (filter with SLUICE_LOG).\n\nExample:\n  sluice check --module target/wasm32-wasip2/release/by_owner.wasm --rules-config rules.toml"
)]
pub struct CheckArgs {
    /// The rules module (a wasm32-wasip2 component).
    #[arg(long)]
    pub module: PathBuf,
    /// Configuration text handed to the module's init (TOML or JSON, as
    /// the module expects).
    #[arg(long)]
    pub rules_config: Option<PathBuf>,
    /// Directory of compiled modules; `off` disables it. Default:
    /// `$XDG_CACHE_HOME/sluice/modules` or `~/.cache/sluice/modules`.
    #[arg(long, env = "SLUICE_RULES_CACHE_DIR")]
    pub cache_dir: Option<String>,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    super::run::init_logging(super::run::LogFormat::Human, TOOL_LOG);
    let config = read_rules_config(args.rules_config.as_deref())?;
    let engine = engine(args.cache_dir.as_deref())?;
    let module = engine.load_file(&args.module, &config)?;
    report_code(&engine, &module);
    println!("ok {} sha256:{}", args.module.display(), module.version());
    println!("world sluice:rules@{}", module.world_version());
    for relation in module.relations() {
        println!("relation {}", relation.name());
    }
    Ok(ExitCode::SUCCESS)
}

/// Default log filter of `check` and `eval`: the module's own `host.log` lines, every level, and
/// sluice's warnings (such as an unusable cache directory).
pub(super) const TOOL_LOG: &str = "warn,sluice::rules::guest=debug,wasmtime=warn,cranelift=warn";

/// The engine of `check` and `eval`, with the cache `--cache-dir` asks for.
pub(super) fn engine(cache_dir: Option<&str>) -> anyhow::Result<RulesEngine> {
    let cache = ModuleCache::from_setting(cache_dir, |k| std::env::var(k).ok());
    Ok(RulesEngine::with_cache(RuleLimits::default(), cache)?)
}

/// Says on stderr whether the module was compiled or taken from the cache, and how long that
/// took: `code cached in 4 ms (<dir>)`, `code compiled in 812 ms (<dir>)`, `code compiled in
/// 812 ms (not cached)`.
pub(super) fn report_code(engine: &RulesEngine, module: &RulesModule) {
    let code = module.code_load();
    let (verb, place) = match (code.source, engine.cache()) {
        (CodeSource::Cached, Some(cache)) => ("cached", format!(" ({})", cache.dir().display())),
        (CodeSource::Compiled, Some(cache)) => {
            ("compiled", format!(" ({})", cache.dir().display()))
        }
        _ => ("compiled", " (not cached)".to_owned()),
    };
    eprintln!("code {verb} in {} ms{place}", code.elapsed.as_millis());
}

/// The `--rules-config` file's text, or empty when none is given.
pub(super) fn read_rules_config(path: Option<&Path>) -> anyhow::Result<String> {
    match path {
        None => Ok(String::new()),
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --rules-config {}", path.display())),
    }
}
