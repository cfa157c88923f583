//! Logging: human-readable text or one JSON object per line, on stderr. Reconciles run in a
//! `reconcile` span carrying `namespace`, `run` and `task` (as far as they apply), so every
//! line logged while working on an object says which one.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2025-01-01T00:00:00Z  INFO reconcile{controller=taskrun namespace=etl run=daily task=load}: message`
    #[default]
    Text,
    /// One JSON object per line; the reconcile span's fields are under `span`.
    Json,
}

/// Installs the global subscriber. `filter` uses `RUST_LOG` syntax (`info`,
/// `weir=debug,kube=info`); an invalid filter falls back to `info` with a warning.
pub fn init(format: LogFormat, filter: &str) {
    let (filter, invalid) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    if installed.is_ok()
        && let Some(err) = invalid
    {
        tracing::warn!(%err, "invalid log filter; using info");
    }
}
