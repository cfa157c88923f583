//! `weir graph`: draws a pipeline's DAG, as text for a terminal or as DOT or Mermaid for docs
//! and pull requests.

use clap::ValueEnum;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A YAML file holding the Pipeline (or a PipelineRun with an inline spec).
    file: PathBuf,
    /// Which Pipeline or PipelineRun of the file, when it holds several.
    #[arg(long, short)]
    pipeline: Option<String>,
    /// `text`: steps and dependencies, readable in a terminal; `dot`: Graphviz
    /// (`| dot -Tsvg > dag.svg`); `mermaid`: a flowchart GitHub renders in Markdown.
    #[arg(long, short, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Dot,
    Mermaid,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let schemas = crate::manifest::Schemas::new();
    let report = crate::manifest::check_file(&args.file, &schemas);
    if !report.ok() {
        for problem in &report.problems {
            eprintln!("{problem}");
        }
        return Ok(ExitCode::from(1));
    }
    let selected = report
        .select(args.pipeline.as_deref())
        .map_err(anyhow::Error::msg)?;
    // The file passed validation, so its pipelines do too.
    let valid = crate::engine::validate(selected.spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let name = &selected.pipeline_name;
    emit(&match args.format {
        Format::Text => crate::graph::text(name, &valid),
        Format::Dot => crate::graph::dot(name, &valid),
        Format::Mermaid => crate::graph::mermaid(name, &valid),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
