//! `weir validate`: offline checks of manifests: YAML syntax, the CRD schema the API server
//! enforces, and every engine validation rule, each problem with its file, line and column.

use clap::ValueEnum;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// YAML files or directories (searched for *.yaml / *.yml, hidden directories skipped).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output format: one line per problem, or a JSON document for tools.
    #[arg(long, short, value_enum, default_value = "text")]
    output: Output,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = crate::manifest::validate_paths(&args.paths);
    match args.output {
        Output::Text => emit(&report.to_text())?,
        Output::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&report.to_json())?))?,
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
