//! What the user types: argument parsing and subcommand dispatch.
//!
//! Each subcommand lives in its own file with a clap `Args` struct and a
//! `run` function. Errors are reported here, once, as one line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod control;
pub mod demo;
mod diff;
mod eval;
mod failures;
mod log_filter;
pub mod run;
mod status;
mod tail;

/// Version string: the crate version and the WIT world it speaks.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (wit world sluice:rules/rules@0.2.0; modules of @0.1.0 load unchanged)"
);

#[derive(Debug, Parser)]
#[command(name = "sluice", version = LONG_VERSION, about = "PostgreSQL change capture with WebAssembly bucket rules", propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a rules module, run its init and print its version hash.
    Check(check::CheckArgs),
    /// Evaluate a rules module on changes given as JSON lines.
    Eval(eval::EvalArgs),
    /// Preview a rules change: which rows would enter and leave each bucket, and which the candidate fails on (read-only).
    Diff(diff::DiffArgs),
    /// A one-command tour on a throwaway PostgreSQL.
    Demo(demo::DemoArgs),
    /// Run the pipeline: snapshot, then stream changes through the rules into the changelog.
    Run(run::RunArgs),
    /// Ask a running `sluice run` to validate and activate a rules module.
    Reload(control::ReloadArgs),
    /// Ask a running `sluice run` to re-evaluate existing rows with the active rules.
    Rebucket(control::RebucketArgs),
    /// Ask a running `sluice run` to remove the memberships of a table that left the publication.
    ForgetTable(control::ForgetTableArgs),
    /// Summarise and list the changes the rules failed on (reads the sink; no running process needed).
    Failures(failures::FailuresArgs),
    /// Ask a running `sluice run` to re-evaluate the rows of unresolved rule failures with the active rules.
    ReplayFailures(failures::ReplayFailuresArgs),
    /// Print decoded changes from a live database as JSON lines.
    Tail(tail::TailArgs),
    /// Print where the pipeline stands: slot, retained WAL, stored LSN, lag, rules version, snapshot (reads the databases; no running process needed).
    Status(status::StatusArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Diff(args) => diff::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Run(args) => run::run(args),
        Command::Reload(args) => control::reload(args),
        Command::Rebucket(args) => control::rebucket(args),
        Command::ForgetTable(args) => control::forget_table(args),
        Command::Failures(args) => failures::failures(args),
        Command::ReplayFailures(args) => failures::replay(args),
        Command::Tail(args) => tail::run(args),
        Command::Status(args) => status::status(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line: what failed and, through the context chain, why.
            eprintln!("error: {}", crate::error_text::chain(err.chain()));
            ExitCode::FAILURE
        }
    }
}
