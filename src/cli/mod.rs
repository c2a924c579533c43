//! What the user types: argument parsing and subcommand dispatch.

use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
