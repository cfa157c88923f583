//! `weir operator`: the controller process.

use crate::controller::{self, Context};
use crate::http::{self, Health, Phase};
use crate::leader::{self, Elector, LeaseConfig};
use crate::metrics::Metrics;
use crate::telemetry::{self, LogFormat};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    /// Watch only these namespaces (comma-separated; default: all namespaces).
    #[arg(long, env = "WEIR_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Watch only this namespace (the same as `--namespaces` with one entry).
    #[arg(long, env = "WEIR_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the HTTP port serving /livez, /readyz and /metrics (port 0: any free port).
    #[arg(long, env = "WEIR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Run the controllers only while holding a Lease, so several replicas can run at once.
    /// (The variable takes true/false, 1/0, yes/no or on/off.)
    #[arg(long, env = "WEIR_LEADER_ELECT", value_parser = clap::builder::BoolishValueParser::new())]
    leader_elect: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "WEIR_LEASE_NAME", default_value = "weir-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace when run in a pod).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Log format.
    #[arg(long, env = "WEIR_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Log filter, for example `info` or `weir=debug,kube=info`.
    #[arg(long, env = "WEIR_LOG", default_value = "info")]
    log_level: String,
    /// Defaults for every task pod, as the JSON of a Pipeline's `podTemplate`
    /// (serviceAccountName, imagePullSecrets, securityContext, nodeSelector, tolerations,
    /// priorityClassName, labels, annotations); a pipeline's own settings win.
    #[arg(long, env = "WEIR_TASK_POD_DEFAULTS")]
    task_pod_defaults: Option<String>,
    /// Default `securityContext` of every task container, as JSON; a task's own wins.
    #[arg(long, env = "WEIR_TASK_CONTAINER_SECURITY_CONTEXT")]
    task_container_security_context: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log_format, &args.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(operate(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn operate(args: Args) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    let metrics = Arc::new(Metrics::new());
    let health = Health::default();

    let stop_http = CancellationToken::new();
    let (addr, server) = http::serve(
        args.http_addr,
        health.clone(),
        metrics.clone(),
        stop_http.clone().cancelled_owned(),
    )
    .await
    .with_context(|| format!("listening on {}", args.http_addr))?;
    tracing::info!(%addr, "serving /livez, /readyz and /metrics");
    let server = tokio::spawn(server);

    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let task_defaults = controller::job::TaskPodDefaults {
        pod: match args.task_pod_defaults.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(json) => serde_json::from_str(json).context("--task-pod-defaults (WEIR_TASK_POD_DEFAULTS) is not a valid podTemplate")?,
            None => Default::default(),
        },
        container_security_context: match args.task_container_security_context.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(json) => Some(serde_json::from_str(json).context(
                "--task-container-security-context (WEIR_TASK_CONTAINER_SECURITY_CONTEXT) is not a valid securityContext",
            )?),
            None => None,
        },
    };
    let ctx = Arc::new(
        Context::new(client.clone())
            .with_metrics(metrics.clone())
            .with_task_defaults(task_defaults),
    );
    let mut namespaces = args.namespaces.clone();
    namespaces.extend(args.namespace.clone());
    namespaces.retain(|n| !n.is_empty());
    namespaces.sort();
    namespaces.dedup();
    let scopes = controller::scopes(&namespaces);

    let result = if args.leader_elect {
        let config = LeaseConfig::new(
            &args.lease_name,
            &args.lease_namespace,
            leader::default_identity(),
        );
        tracing::info!(
            identity = config.identity,
            lease = format!("{}/{}", config.namespace, config.name),
            "leader election on"
        );
        let (shutdown, health_c) = (shutdown.clone(), health.clone());
        leader::run_elected(
            Elector::new(client, config),
            shutdown.clone(),
            health.clone(),
            metrics.clone(),
            move || controller::run(ctx.clone(), scopes.clone(), shutdown.clone(), health_c.clone()),
        )
        .await
    } else {
        metrics.set_leader(true);
        health.set(Phase::Syncing);
        controller::run(ctx, scopes, shutdown.clone(), health.clone()).await
    };
    health.set(Phase::Stopping);
    stop_http.cancel();
    let _ = server.await;
    result
}

/// SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once.
async fn on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::warn!(%err, "cannot listen for SIGTERM");
            return;
        }
    };
    let mut signalled = false;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        if signalled {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        }
        signalled = true;
        tracing::info!("shutting down: finishing reconciles in flight (signal again to exit at once)");
        shutdown.cancel();
    }
}
