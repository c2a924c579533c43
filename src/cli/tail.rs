use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct TailArgs {}

pub fn run(_args: TailArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
