//! `weir operator`: the controller process.

use anyhow::Context as _;
use clap::ValueEnum;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WEIR_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "WEIR_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Log filter, for example `info` or `weir=debug,kube=info`.
    #[arg(long, env = "WEIR_LOG", default_value = "info")]
    log_level: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format, &args.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.context("connecting to Kubernetes")?;
        let scope = args
            .namespace
            .map_or(crate::controller::Scope::All, crate::controller::Scope::Namespace);
        crate::controller::run(client, scope).await
    })?;
    Ok(ExitCode::SUCCESS)
}
