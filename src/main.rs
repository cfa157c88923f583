//! The `weir` command: the operator and the tools around it.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Kubernetes-native data pipelines: DAGs of tasks run as Jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: watch Pipelines, PipelineRuns and TaskRuns and run their tasks as Jobs.
    Operator {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "WEIR_NAMESPACE")]
        namespace: Option<String>,
        /// Log format.
        #[arg(long, env = "WEIR_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
        /// Log filter, for example `info` or `weir=debug,kube=info`.
        #[arg(long, env = "WEIR_LOG", default_value = "info")]
        log_level: String,
    },
    /// Print the CustomResourceDefinitions (or write one file each into a directory).
    Crd {
        /// Write `<crd name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Check Pipeline and PipelineRun manifests offline; exit 1 if any has a problem.
    Validate {
        /// YAML files or directories (searched for *.yaml / *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Operator {
            namespace,
            log_format,
            log_level,
        } => {
            init_logging(log_format, &log_level);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to Kubernetes")?;
                let scope =
                    namespace.map_or(weir::controller::Scope::All, weir::controller::Scope::Namespace);
                weir::controller::run(client, scope).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd { output_dir } => {
            let crds = weir::crd::all();
            match output_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)?;
                    for crd in &crds {
                        let path = dir.join(weir::crd::file_name(crd));
                        std::fs::write(&path, weir::crd::to_yaml(crd)?)
                            .with_context(|| format!("writing {}", path.display()))?;
                    }
                }
                None => {
                    for crd in &crds {
                        print!("---\n{}", weir::crd::to_yaml(crd)?);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { paths } => {
            let report = weir::manifest::validate_paths(&paths);
            for line in &report.lines {
                println!("{line}");
            }
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
