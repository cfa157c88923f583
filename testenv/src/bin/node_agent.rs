//! `weir-node-agent`: the kubelet stand-in of Weir's test environment.
//!
//! The test control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler 1.20)
//! is genuine, but there is no container runtime on the machines Weir is developed on. This
//! agent registers a Node and then does what a kubelet does for the pods bound to it, with
//! local processes instead of containers:
//!
//! * keeps the Node `Ready` (status heartbeat and a Lease in `kube-node-lease`);
//! * runs each container's `command` + `args` as a local process group (the image is ignored),
//!   with the container's environment resolved like a kubelet does (literal values, `$(VAR)`
//!   expansion, fieldRef, ConfigMap and Secret references, envFrom);
//! * reports pod and container status through the `pods/status` subresource, including the
//!   termination message, so the real Job controller counts pods as succeeded or failed;
//! * kills the process group when the pod is deleted (grace period honoured) or its
//!   `activeDeadlineSeconds` passes, and finalizes graceful deletion with a grace-0 delete;
//! * serves `/containerLogs/...` over HTTPS so that `kubectl logs` (through the apiserver) works;
//! * gives in-cluster API clients what a kubelet gives them: `KUBERNETES_SERVICE_HOST`/`PORT`
//!   naming the API server on loopback, and the service-account volume bind-mounted at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in a private mount namespace;
//! * runs a configured program for images whose entrypoint is needed (`--image-command`).
//!
//! * with `--pod-network`, gives pods that ask (annotation `testenv.weir.dev/network: pod`) a
//!   network namespace and an address of their own on a bridge (`network.rs`).
//!
//! What it deliberately does not do: other volumes, probes, restarts (`OnFailure`/`Always` are treated
//! like `Never`), resource limits, Service cluster IPs (no kube-proxy: the API server reaches
//! webhooks through their Endpoints), image pulls. Pods without their own network get IP
//! 127.0.0.1.

mod node_agent {
    pub mod container;
    pub mod logfile;
    pub mod logserver;
    pub mod network;
    pub mod node;
    pub mod pod;
    pub mod procs;
    pub mod volumes;
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::{error, info};

use node_agent::{container, logserver, network, node, pod, procs, volumes};

/// Command-line flags. Every flag can also be given through the environment variable shown.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "weir-node-agent",
    version,
    about = "Runs pods bound to one Node as local processes (Weir's test environment)"
)]
pub struct Args {
    /// Kubeconfig with credentials for the apiserver.
    #[arg(long, env = "WEIR_AGENT_KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, env = "WEIR_AGENT_NODE_NAME", default_value = "weir-node")]
    pub node_name: String,
    /// Directory for per-pod working directories and container logs.
    #[arg(long, env = "WEIR_AGENT_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Address the log server (kubelet API stand-in) listens on; also the Node's InternalIP.
    #[arg(long, env = "WEIR_AGENT_ADDRESS", default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// Port of the log server; published as `status.daemonEndpoints.kubeletEndpoint.port`.
    #[arg(long, env = "WEIR_AGENT_LOG_PORT", default_value_t = 20250)]
    pub log_port: u16,
    /// PEM certificate (chain) served by the log server.
    #[arg(long, env = "WEIR_AGENT_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of the log server certificate.
    #[arg(long, env = "WEIR_AGENT_TLS_KEY")]
    pub tls_key: PathBuf,
    /// `IMAGE=PROGRAM`: containers of IMAGE (a repository without tag, or just its last path
    /// segment such as `weir`) that have no `command` run PROGRAM as their entrypoint.
    /// Repeatable; comma-separated in the environment variable.
    #[arg(long = "image-command", env = "WEIR_AGENT_IMAGE_COMMANDS", value_delimiter = ',', value_parser = parse_image_command)]
    pub image_commands: Vec<(String, PathBuf)>,
    /// `KUBERNETES_SERVICE_HOST` given to containers; default: the kubeconfig's server host.
    #[arg(long, env = "WEIR_AGENT_SERVICE_HOST")]
    pub service_host: Option<String>,
    /// `KUBERNETES_SERVICE_PORT` given to containers; default: the kubeconfig's server port.
    #[arg(long, env = "WEIR_AGENT_SERVICE_PORT")]
    pub service_port: Option<u16>,
    /// An IPv4 CIDR: pods annotated `testenv.weir.dev/network: pod` get a network namespace
    /// and an address of this range on a bridge (see `network.rs`). Unset: every pod
    /// shares the host's network.
    #[arg(long, env = "WEIR_AGENT_POD_NETWORK", value_parser = network::parse_cidr)]
    pub pod_network: Option<(std::net::Ipv4Addr, u8)>,
    /// Name of the bridge, prefix of namespaces and interfaces (1 to 8 letters or digits);
    /// unique per environment on the machine.
    #[arg(long, env = "WEIR_AGENT_POD_NETWORK_NAME", default_value = "weirpod")]
    pub pod_network_name: String,
}

fn parse_image_command(value: &str) -> Result<(String, PathBuf), String> {
    let (image, program) = value
        .split_once('=')
        .ok_or_else(|| format!("expected IMAGE=PROGRAM, got {value:?}"))?;
    if image.is_empty() || program.is_empty() {
        return Err(format!("expected IMAGE=PROGRAM, got {value:?}"));
    }
    let program = std::path::absolute(program).map_err(|e| format!("{program}: {e}"))?;
    Ok((container::image_repository(image).to_string(), program))
}

/// The variables a kubelet sets for the `kubernetes` Service, but naming the API server the
/// agent itself talks to (on loopback) rather than the Service's cluster IP, which nothing
/// here routes.
fn service_env(args: &Args, server_host: Option<&str>, server_port: Option<u16>) -> Vec<(String, String)> {
    let host = args
        .service_host
        .clone()
        .or_else(|| server_host.map(|h| h.trim_matches(['[', ']']).to_string()));
    let port = args.service_port.or(server_port).or(Some(443));
    let (Some(host), Some(port)) = (host, port) else {
        return Vec::new();
    };
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    vec![
        ("KUBERNETES_SERVICE_HOST".into(), host),
        ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
        ("KUBERNETES_PORT".into(), format!("tcp://{authority}")),
    ]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        error!("fatal: {e:#}");
        return Err(e);
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let state_dir = std::path::absolute(&args.state_dir)?;
    std::fs::create_dir_all(state_dir.join("pods"))
        .with_context(|| format!("creating {}", state_dir.display()))?;

    // Processes left behind by an earlier instance of this agent (killed without a chance to
    // clean up) would otherwise run on unsupervised; their pods are reported failed below.
    let reaped = procs::reap_leftovers(&state_dir);
    if reaped > 0 {
        info!(count = reaped, "killed processes left behind by a previous agent");
    }

    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading kubeconfig")?;
    let service_env = service_env(&args, config.cluster_url.host(), config.cluster_url.port_u16());
    let api_port = config.cluster_url.port_u16().unwrap_or(443);
    let client = kube::Client::try_from(config).context("building client")?;
    // Like the service-account mounts: without the privileges (or iproute2), pods that ask
    // for a network of their own fail to start, saying why; the others run as before.
    let network = match args.pod_network {
        Some(cidr) => match network::Network::new(&args.pod_network_name, cidr, api_port) {
            Ok(n) => Some(Arc::new(n)),
            Err(e) => {
                tracing::warn!("pods get no network of their own: {e:#}");
                None
            }
        },
        None => None,
    };
    let service_account_mounts = match volumes::private_mounts_supported() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("pods get no service-account volume: {e}");
            false
        }
    };
    info!(
        ?service_env,
        service_account_mounts,
        image_commands = ?args.image_commands,
        "what pods get"
    );

    let ctx = Arc::new(pod::Ctx {
        client: client.clone(),
        node_name: args.node_name.clone(),
        node_ip: args.address.to_string(),
        state_dir: state_dir.clone(),
        procs: procs::ProcTable::default(),
        settings: container::Settings {
            image_commands: args.image_commands.clone(),
            service_env,
            service_account_mounts,
        },
        network,
        running_logs: Default::default(),
    });

    // Bind the log server before registering the Node, so the port the Node advertises works.
    let addr = SocketAddr::new(args.address, args.log_port);
    let tls = logserver::tls_config(&args.tls_cert, &args.tls_key)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding log server on {addr}"))?;
    info!(%addr, "log server listening");
    tokio::spawn(logserver::serve(listener, tls, ctx.clone()));

    // The apiserver may still be starting (or restarting): keep trying for a while.
    let mut attempt = 0;
    while let Err(e) = node::register(&client, &args).await {
        attempt += 1;
        if attempt >= 60 {
            return Err(e.context("registering the node"));
        }
        tracing::warn!("registering the node failed, retrying: {e:#}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    info!(node = %args.node_name, "node registered");
    tokio::spawn(node::heartbeat(client.clone(), args.clone()));

    let manager = pod::Manager::new(ctx.clone());
    tokio::select! {
        r = manager.run() => r,
        _ = shutdown_signal() => {
            // Containers run in their own process groups and would outlive us; a kubelet's
            // containers outlive it too, but here nobody could ever supervise them again.
            let n = ctx.procs.kill_all(libc::SIGKILL);
            info!(killed_groups = n, "shutting down");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
