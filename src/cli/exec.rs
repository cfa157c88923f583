//! `weir exec` and `weir exec-install`: what runs inside a task's pod when the task moves
//! artifacts (see `artifacts::exec` and docs/artifacts.md). Not meant to be typed by people.

use crate::artifacts::exec;
use anyhow::Context as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The command and its arguments, after `--`.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct InstallArgs {
    /// Where to copy this executable (a volume shared with the task's container).
    dest: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = std::env::var(exec::PLAN_ENV).with_context(|| format!("{} is not set", exec::PLAN_ENV))?;
    let plan: exec::Plan =
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid plan", exec::PLAN_ENV))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let code = runtime.block_on(exec::run(&plan, &args.command));
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub fn install(args: InstallArgs) -> anyhow::Result<ExitCode> {
    exec::install(&args.dest).map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}
