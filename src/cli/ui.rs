//! `weir ui`: serves the web UI and its JSON API (see `docs/ui.md`). By default on
//! 127.0.0.1 with the kubeconfig's identity, like `kubectl proxy`; in a cluster (the Helm
//! chart's `ui.enabled`) with `--in-cluster --auth token|readonly`.

use super::cluster::{ClusterArgs, load_config};
use crate::ui::{AuthMode, Settings, Ui};
use anyhow::{Context as _, bail};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Address to listen on. Only a loopback address in `--auth local` mode: whoever
    /// reaches the port acts with your credentials.
    #[arg(long, default_value = "127.0.0.1")]
    address: IpAddr,
    /// Who the requests to Kubernetes are made as: `local` (the kubeconfig's identity),
    /// `token` (each person's own bearer token, from an authenticating proxy's
    /// `Authorization` header or the login page), `readonly` (the UI's own identity; every
    /// action refused).
    #[arg(long, value_enum, default_value = "local")]
    auth: AuthMode,
    /// Use the pod's service account and cluster (in a Deployment), not a kubeconfig.
    #[arg(long)]
    in_cluster: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    if args.auth == AuthMode::Local && !args.address.is_loopback() {
        bail!(
            "--address {}: in --auth local mode the UI acts with your kubeconfig's credentials for whoever reaches it, so it listens on loopback only (use --auth token or readonly to serve others)",
            args.address
        );
    }
    if args.auth == AuthMode::Local && args.in_cluster {
        bail!(
            "--in-cluster needs --auth token or --auth readonly: in local mode every visitor would act as the pod's service account"
        );
    }
    let (config, context) = if args.in_cluster {
        let config = kube::Config::incluster().context("loading the pod's service account")?;
        (config, None)
    } else {
        load_config(&args.cluster).await?
    };
    let namespace = args
        .cluster
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let ui = Ui::new(Settings {
        mode: args.auth,
        config,
        namespace,
        context,
    })?;
    let addr = SocketAddr::new(args.address, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let host = if bound.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        bound.ip().to_string()
    };
    println!(
        "Weir UI ({} mode) at http://{host}:{}/",
        mode_word(args.auth),
        bound.port()
    );
    crate::ui::serve(listener, ui, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

fn mode_word(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::Local => "local",
        AuthMode::Token => "token",
        AuthMode::Readonly => "readonly",
    }
}
