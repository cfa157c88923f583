//! `weir completion SHELL`: the shell completion script of every subcommand and flag,
//! generated from the same definitions clap parses with (so it never drifts).

use clap::CommandFactory as _;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut command = super::Cli::command();
    clap_complete::generate(args.shell, &mut command, "weir", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
