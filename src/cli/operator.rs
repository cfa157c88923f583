//! `weir operator`: the controller process.

use crate::controller::{self, Context};
use crate::http::{self, Health, Phase};
use crate::leader::{self, Elector, LeaseConfig};
use crate::metrics::Metrics;
use crate::shard::{Shard, ShardChoice};
use crate::telemetry::{self, LogFormat};
use crate::webhook;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
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
    /// How many shards share the namespaces (docs/sharding.md): a namespace belongs to shard
    /// FNV-1a(namespace name) mod N, and each shard elects its own leader on the Lease
    /// `<lease-name>-shard-<I>` (with one shard, the Lease keeps its name).
    #[arg(long, env = "WEIR_SHARDS", default_value_t = 1)]
    shards: u32,
    /// This process's shard, from 0 to `--shards` - 1; or `pod-ordinal`: the ordinal that
    /// ends `POD_NAME` (a StatefulSet pod's name, `weir-operator-5`) modulo `--shards`.
    #[arg(long, env = "WEIR_SHARD")]
    shard: Option<String>,
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
    /// Serve the HTTP trigger endpoint (runs and asset events started from outside, see
    /// docs/triggers.md) on this address, for example `0.0.0.0:8082`. Unset: not served.
    #[arg(long, env = "WEIR_TRIGGER_ADDR")]
    trigger_addr: Option<SocketAddr>,
    /// Notifications sent for every run, as the JSON of a Pipeline's `notifications` list;
    /// their Secrets are read in the operator's namespace (`--lease-namespace`).
    #[arg(long, env = "WEIR_NOTIFICATIONS")]
    notifications: Option<String>,
    /// Address of the Weir UI (`https://weir.example.com`): notifications link to the run
    /// there. Unset: no link.
    #[arg(long, env = "WEIR_UI_URL")]
    ui_url: Option<String>,
    #[command(flatten)]
    webhook: WebhookArgs,
    #[command(flatten)]
    artifacts: ArtifactArgs,
}

/// The installation's artifact store (docs/artifacts.md); a pipeline's
/// `spec.artifactStore` wins.
#[derive(clap::Args)]
struct ArtifactArgs {
    /// Kind of store: S3 (and S3-compatible services), GCS or Azure.
    #[arg(long = "artifact-provider", env = "WEIR_ARTIFACT_PROVIDER", value_parser = parse_provider)]
    provider: Option<crate::api::StoreProvider>,
    /// Bucket (S3, GCS) or container (Azure) of artifacts and kept logs. Unset: no
    /// installation store (pipelines may name their own).
    #[arg(long = "artifact-bucket", env = "WEIR_ARTIFACT_BUCKET")]
    bucket: Option<String>,
    /// Storage account (Azure).
    #[arg(long = "artifact-account", env = "WEIR_ARTIFACT_ACCOUNT")]
    account: Option<String>,
    /// Key prefix of every object.
    #[arg(long = "artifact-prefix", env = "WEIR_ARTIFACT_PREFIX")]
    prefix: Option<String>,
    /// URL of the service when it is not the provider's own: an S3-compatible service
    /// (MinIO, Ceph, ...), a GCS emulator, an Azure blob endpoint (Azurite, ...).
    #[arg(long = "artifact-endpoint", env = "WEIR_ARTIFACT_ENDPOINT")]
    endpoint: Option<String>,
    /// Region of the bucket (default us-east-1).
    #[arg(long = "artifact-region", env = "WEIR_ARTIFACT_REGION")]
    region: Option<String>,
    /// Secret, in each run's namespace, with the store's credentials, given to task pods by
    /// reference: for S3 keys accessKeyId and secretAccessKey (and optionally
    /// sessionToken), for GCS serviceAccountKey, for Azure accountKey.
    #[arg(
        long = "artifact-credentials-secret",
        env = "WEIR_ARTIFACT_CREDENTIALS_SECRET"
    )]
    credentials_secret: Option<String>,
    /// Keep the log of every task that has a command (each then runs under `weir exec`),
    /// not only of tasks with artifacts.
    #[arg(long = "artifact-keep-logs", env = "WEIR_ARTIFACT_KEEP_LOGS", value_parser = clap::builder::BoolishValueParser::new())]
    keep_logs: bool,
    /// Leave a run's objects in the store when the run is deleted (retention is then up to
    /// the bucket's lifecycle rules). By default they are deleted with the run.
    #[arg(long = "artifact-keep-after-run", env = "WEIR_ARTIFACT_KEEP_AFTER_RUN", value_parser = clap::builder::BoolishValueParser::new())]
    keep_after_run: bool,
    /// How long deleting a run waits for its objects to be deleted from the store before it
    /// lets the run go anyway, with a Warning Event (`ArtifactsKept`).
    #[arg(long = "artifact-delete-timeout", env = "WEIR_ARTIFACT_DELETE_TIMEOUT", default_value = "5m", value_parser = crate::engine::duration::parse)]
    delete_timeout: std::time::Duration,
    /// Image whose `weir` executable the init container of a task with artifacts copies into
    /// the pod (default: Weir's image of this version).
    #[arg(long = "exec-image", env = "WEIR_EXEC_IMAGE")]
    exec_image: Option<String>,
}

impl ArtifactArgs {
    fn settings(&self) -> controller::artifacts::ArtifactSettings {
        let set = |o: &Option<String>| o.clone().filter(|s| !s.trim().is_empty());
        controller::artifacts::ArtifactSettings {
            store: set(&self.bucket).map(|bucket| crate::api::ArtifactStoreSpec {
                provider: self.provider,
                account: set(&self.account),
                bucket,
                prefix: set(&self.prefix),
                endpoint: set(&self.endpoint),
                region: set(&self.region),
                credentials_secret: set(&self.credentials_secret),
            }),
            exec_image: set(&self.exec_image),
            keep_logs: self.keep_logs,
            keep_after_run: self.keep_after_run,
            delete_timeout: Some(self.delete_timeout),
        }
    }
}

fn parse_provider(text: &str) -> Result<crate::api::StoreProvider, String> {
    use crate::api::StoreProvider;
    match text.to_ascii_lowercase().as_str() {
        "s3" => Ok(StoreProvider::S3),
        "gcs" => Ok(StoreProvider::GCS),
        "azure" => Ok(StoreProvider::Azure),
        _ => Err(format!("{text:?} is not a store provider: S3, GCS or Azure")),
    }
}

/// The validating admission webhook (docs/webhook.md).
#[derive(clap::Args)]
struct WebhookArgs {
    /// Serve the validating admission webhook over HTTPS at this address, on every replica
    /// (leader or not). Unset: no webhook.
    #[arg(long = "webhook-addr", env = "WEIR_WEBHOOK_ADDR")]
    addr: Option<SocketAddr>,
    /// The Secret (in the operator's namespace, `POD_NAMESPACE`) holding the webhook's
    /// certificate.
    #[arg(
        long = "webhook-secret",
        env = "WEIR_WEBHOOK_SECRET",
        default_value = "weir-webhook-tls"
    )]
    secret: String,
    /// `self`: the operator issues the certificate, rotates it and keeps the webhook
    /// configuration's caBundle current; `external`: it serves what another issuer
    /// (cert-manager) writes to the Secret.
    #[arg(long = "webhook-certs", env = "WEIR_WEBHOOK_CERTS", default_value = "self")]
    certs: CertMode,
    /// Names the certificate is valid for (comma-separated): the webhook Service's
    /// `SERVICE.NAMESPACE.svc`, or IP addresses.
    #[arg(long = "webhook-hosts", env = "WEIR_WEBHOOK_HOSTS", value_delimiter = ',')]
    hosts: Vec<String>,
    /// The ValidatingWebhookConfiguration whose caBundle the operator keeps current
    /// (self-issued certificates only).
    #[arg(long = "webhook-configuration", env = "WEIR_WEBHOOK_CONFIGURATION")]
    configuration: Option<String>,
    /// The MutatingWebhookConfiguration of approvals (it records who decided, see
    /// docs/approvals.md) whose caBundle the operator keeps current (self-issued
    /// certificates only).
    #[arg(
        long = "approval-webhook-configuration",
        env = "WEIR_APPROVAL_WEBHOOK_CONFIGURATION"
    )]
    approval_configuration: Option<String>,
    /// The Secret (in the operator's namespace) holding the key Approvals are signed with;
    /// made with a random key on first use. Only the operator should be able to read it.
    #[arg(
        long = "approval-key-secret",
        env = "WEIR_APPROVAL_KEY_SECRET",
        default_value = "weir-approval-key"
    )]
    approval_key_secret: String,
    /// How long a serving certificate is valid; it is renewed two thirds in.
    #[arg(long = "webhook-cert-validity", env = "WEIR_WEBHOOK_CERT_VALIDITY", default_value = "2160h", value_parser = parse_duration)]
    validity: Duration,
    /// How long the webhook's CA is valid; it is renewed two thirds in.
    #[arg(long = "webhook-ca-validity", env = "WEIR_WEBHOOK_CA_VALIDITY", default_value = "87600h", value_parser = parse_duration)]
    ca_validity: Duration,
    /// How often each replica reads the certificate's Secret (and so how soon it serves a
    /// renewed one).
    #[arg(long = "webhook-cert-check", env = "WEIR_WEBHOOK_CERT_CHECK", default_value = "10s", value_parser = parse_duration)]
    check_every: Duration,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CertMode {
    #[value(name = "self")]
    SelfIssued,
    External,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::engine::duration::parse(text)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    telemetry::init(args.log_format, &args.log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(operate(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn operate(args: Args) -> anyhow::Result<()> {
    let shard = shard(&args)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    let metrics = Arc::new(Metrics::new());
    metrics.set_shard(shard.index(), shard.count());
    if !shard.is_whole() {
        tracing::info!(
            shard = shard.index(),
            shards = shard.count(),
            "sharded: this process runs the namespaces whose FNV-1a hash mod {} is {}",
            shard.count(),
            shard.index()
        );
    }
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
        artifacts: args.artifacts.settings(),
    };
    let ctx = Arc::new(
        Context::new(client.clone())
            .with_metrics(metrics.clone())
            .with_task_defaults(task_defaults)
            .with_notifier(notifier(&args)?)
            .with_approval_key(approval_key(&args))
            .with_shard(shard),
    );
    let mut namespaces = args.namespaces.clone();
    namespaces.extend(args.namespace.clone());
    namespaces.retain(|n| !n.is_empty());
    namespaces.sort();
    namespaces.dedup();
    let scopes = controller::scopes(&namespaces, shard);
    let webhook = start_webhook(&args, &client, &namespaces, &stop_http).await?;
    let triggers = start_triggers(&args, &client, &namespaces, &stop_http).await?;

    let result = if args.leader_elect {
        let config = LeaseConfig::new(
            shard.lease_name(&args.lease_name),
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
    if let Some(webhook) = webhook {
        let _ = webhook.await;
    }
    if let Some(triggers) = triggers {
        let _ = triggers.await;
    }
    result
}

/// The shard `--shards`, `--shard` and `POD_NAME` make (the whole operator by default).
fn shard(args: &Args) -> anyhow::Result<Shard> {
    let choice = args.shard.as_deref().filter(|s| !s.trim().is_empty());
    let choice = choice.map(str::parse::<ShardChoice>).transpose()?;
    let pod_name = std::env::var("POD_NAME").ok();
    Ok(Shard::from_flags(args.shards, choice, pod_name.as_deref())?)
}

/// The notifier's settings: the installation's default notifications, checked as a
/// pipeline's are, and the UI's address.
fn notifier(args: &Args) -> anyhow::Result<controller::notify::Notifier> {
    let defaults: Vec<crate::api::Notification> =
        match args.notifications.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(json) => serde_json::from_str(json)
                .context("--notifications (WEIR_NOTIFICATIONS) is not a valid list of notifications")?,
            None => Vec::new(),
        };
    let problems = crate::engine::notify::check(&defaults, &[], "notifications");
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        anyhow::bail!("--notifications (WEIR_NOTIFICATIONS): {}", list.join("; "));
    }
    if let Some(url) = &args.ui_url {
        crate::engine::notify::check_url(url).map_err(|e| anyhow::anyhow!("--ui-url (WEIR_UI_URL): {e}"))?;
    }
    Ok(controller::notify::Notifier::new(
        defaults,
        args.ui_url.clone(),
        args.lease_namespace.clone(),
    ))
}

/// Where the approval signing key lives: `--approval-key-secret` in the operator's namespace.
fn approval_key(args: &Args) -> controller::approval::ApprovalKey {
    controller::approval::ApprovalKey::new(
        args.lease_namespace.clone(),
        args.webhook.approval_key_secret.clone(),
    )
}

/// The HTTP trigger endpoint, when `--trigger-addr` is given. Every replica serves it (a call
/// only writes to the API server, so a standby answers as well as the leader).
async fn start_triggers(
    args: &Args,
    client: &kube::Client,
    namespaces: &[String],
    stop: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>> {
    let Some(addr) = args.trigger_addr else {
        return Ok(None);
    };
    let router = crate::http_trigger::router(client.clone(), namespaces.to_vec());
    let (bound, server) = crate::http_trigger::serve(addr, router, stop.clone().cancelled_owned())
        .await
        .with_context(|| format!("listening on {addr} (--trigger-addr)"))?;
    tracing::info!(addr = %bound, "serving the HTTP trigger endpoint");
    Ok(Some(tokio::spawn(server)))
}

/// Starts the webhook's certificate upkeep and HTTPS server when `--webhook-addr` is set.
async fn start_webhook(
    args: &Args,
    client: &kube::Client,
    namespaces: &[String],
    stop: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = args.webhook.addr else {
        return Ok(None);
    };
    let w = &args.webhook;
    if w.hosts.is_empty() && matches!(w.certs, CertMode::SelfIssued) {
        anyhow::bail!(
            "--webhook-hosts (WEIR_WEBHOOK_HOSTS) is required with --webhook-addr: the names the API server calls the webhook by, such as weir-webhook.weir-system.svc"
        );
    }
    let settings = webhook::certs::CertSettings {
        namespace: args.lease_namespace.clone(),
        secret: w.secret.clone(),
        manage: matches!(w.certs, CertMode::SelfIssued),
        hosts: w.hosts.clone(),
        configuration: w.configuration.clone(),
        mutating_configuration: w.approval_configuration.clone(),
        validity: w.validity,
        ca_validity: w.ca_validity,
        check_every: w.check_every,
    };
    let store = Arc::new(webhook::certs::CertStore::default());
    tokio::spawn(webhook::certs::maintain(
        client.clone(),
        settings,
        store.clone(),
        stop.clone(),
    ));
    let key = Arc::new(approval_key(args));
    let router = webhook::router(client.clone(), namespaces.to_vec(), key);
    let (bound, server) = webhook::serve(addr, store, router, stop.clone())
        .await
        .with_context(|| format!("listening on {addr} (--webhook-addr)"))?;
    tracing::info!(addr = %bound, path = webhook::PATH, "serving the admission webhook");
    Ok(Some(tokio::spawn(server)))
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
