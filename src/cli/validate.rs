//! `weir validate`: offline checks of manifests.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// YAML files or directories (searched for *.yaml / *.yml).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = crate::manifest::validate_paths(&args.paths);
    for line in &report.lines {
        println!("{line}");
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
