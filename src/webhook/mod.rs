//! The validating admission webhook: the API server asks every operator replica (leader or
//! not) over HTTPS whether a Pipeline or PipelineRun may be created or updated, and the
//! answer comes from the same checks `weir validate` and the controllers make
//! ([`review`]), every problem listed with its field path. It writes nothing (the webhook
//! configuration says `sideEffects: None`), so `kubectl apply --dry-run=server` shows the
//! same answer. [`certs`] keeps its serving certificate.
//!
//! Budget: a review is answered within the webhook configuration's `timeoutSeconds` (5 s
//! by default in the chart); validation takes milliseconds even for the largest pipelines
//! (see docs/webhook.md), and the one API call, reading a run's Pipeline, is cut off
//! after [`LOOKUP_TIMEOUT`], after which the run is allowed and checked by the controller.

pub mod approval;
pub mod certs;
pub mod review;

use crate::api::{Pipeline, PipelineRun};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use certs::CertStore;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use kube::Api;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use review::{FieldProblem, Referenced};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Largest review body read. A review holds the object and, on update, its previous
/// version; the API server stores objects of at most 1.5 MiB (3 MiB per request body).
pub const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;
/// How long a review waits for the Pipeline a run names.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The path the webhook configuration calls.
pub const PATH: &str = "/validate";
/// The path the approvals' mutating webhook configuration calls (docs/approvals.md).
pub const APPROVAL_PATH: &str = "/mutate-approval";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Cert(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Cert(_) => "certificate",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone)]
struct Reviewer {
    client: kube::Client,
    /// Namespaces the operator manages; empty: all. Others are allowed untouched (on 1.20
    /// the configuration's namespaceSelector cannot name namespaces, see docs/webhook.md).
    namespaces: Arc<Vec<String>>,
    /// The key Approvals are signed with.
    approval_key: Arc<crate::controller::approval::ApprovalKey>,
}

/// The webhook's HTTP routes (plain HTTP; [`serve`] puts TLS in front).
pub fn router(
    client: kube::Client,
    namespaces: Vec<String>,
    approval_key: Arc<crate::controller::approval::ApprovalKey>,
) -> Router {
    Router::new()
        .route(PATH, post(handle))
        .route(APPROVAL_PATH, post(handle))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(Reviewer {
            client,
            namespaces: Arc::new(namespaces),
            approval_key,
        })
}

async fn handle(State(reviewer): State<Reviewer>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not an AdmissionReview: {e}\n")).into_response(),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => {
            let response = AdmissionResponse::invalid(format!("not an AdmissionReview request: {e}"));
            return json(&response.into_review());
        }
    };
    json(&decide(&reviewer, &request).await.into_review())
}

fn json(review: &AdmissionReview<DynamicObject>) -> Response {
    match serde_json::to_vec(review) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn decide(reviewer: &Reviewer, request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    let namespace = request.namespace.clone().unwrap_or_default();
    if !reviewer.namespaces.is_empty() && !reviewer.namespaces.contains(&namespace) {
        return allowed;
    }
    let kind = request.kind.kind.as_str();
    let problems = match kind {
        "Pipeline" => {
            read::<Pipeline>(request.object.as_ref(), "Pipeline").map(|p| review::pipeline_problems(&p))
        }
        "PipelineRun" => review_run(reviewer, request, &namespace).await,
        "Approval" => return review_approval(reviewer, request).await,
        _ => return allowed,
    };
    let problems = problems.unwrap_or_else(|problem| vec![problem]);
    let name = request
        .object
        .as_ref()
        .and_then(|o| o.metadata.name.clone().or(o.metadata.generate_name.clone()))
        .unwrap_or_else(|| request.name.clone());
    tracing::debug!(kind, %namespace, name, operation = ?request.operation, dry_run = request.dry_run, problems = problems.len(), "admission review");
    if problems.is_empty() {
        allowed
    } else {
        allowed.deny(review::denial(kind, &name, &problems))
    }
}

/// Signs an Approval with who made it; with no key to sign with, refuses it (an unsigned
/// Approval would decide nothing anyway).
async fn review_approval(
    reviewer: &Reviewer,
    request: &AdmissionRequest<DynamicObject>,
) -> AdmissionResponse {
    match tokio::time::timeout(LOOKUP_TIMEOUT, reviewer.approval_key.get(&reviewer.client)).await {
        Ok(Ok(key)) => approval::respond(key, request),
        Ok(Err(err)) => {
            tracing::warn!(%err, "webhook: cannot read the approval signing key");
            AdmissionResponse::from(request).deny(format!("Weir cannot sign the Approval now: {err}"))
        }
        Err(_) => AdmissionResponse::from(request)
            .deny("Weir cannot sign the Approval now: reading its key timed out"),
    }
}

async fn review_run(
    reviewer: &Reviewer,
    request: &AdmissionRequest<DynamicObject>,
    namespace: &str,
) -> std::result::Result<Vec<FieldProblem>, FieldProblem> {
    let run: PipelineRun = read(request.object.as_ref(), "PipelineRun")?;
    let old: Option<PipelineRun> = match &request.old_object {
        Some(o) => Some(read(Some(o), "PipelineRun")?),
        None => None,
    };
    let started = old.as_ref().filter(|o| review::is_started(o));
    let referenced = match (started, &run.spec.pipeline_ref, &run.spec.pipeline_spec) {
        (Some(old), _, _) => followed(&reviewer.client, old).await,
        (None, Some(r), None) => lookup(&reviewer.client, namespace, &r.name).await,
        _ => Referenced::NotNeeded,
    };
    Ok(review::pipeline_run_problems(&run, old.as_ref(), &referenced))
}

/// The revision a started run follows; unreadable, its rerun requests are left to the
/// operator to check.
async fn followed(client: &kube::Client, run: &PipelineRun) -> Referenced {
    let read = crate::controller::revision::followed_spec(client, run);
    match tokio::time::timeout(LOOKUP_TIMEOUT, read).await {
        Ok(Ok(Some(spec))) => Referenced::Found(Box::new(spec)),
        Ok(Ok(None)) => Referenced::NotNeeded,
        Ok(Err(err)) => {
            tracing::warn!(%err, run = %kube::ResourceExt::name_any(run), "webhook: cannot read the run's revision; its rerun request is left to the operator");
            Referenced::Unknown
        }
        Err(_) => Referenced::Unknown,
    }
}

async fn lookup(client: &kube::Client, namespace: &str, name: &str) -> Referenced {
    let api: Api<Pipeline> = Api::namespaced(client.clone(), namespace);
    match tokio::time::timeout(LOOKUP_TIMEOUT, api.get_opt(name)).await {
        Ok(Ok(Some(p))) => Referenced::Found(Box::new(p.spec)),
        Ok(Ok(None)) => Referenced::Missing,
        Ok(Err(err)) => {
            tracing::warn!(%err, pipeline = name, %namespace, "webhook: cannot read the Pipeline; the run is allowed");
            Referenced::Unknown
        }
        Err(_) => {
            tracing::warn!(pipeline = name, %namespace, "webhook: reading the Pipeline timed out; the run is allowed");
            Referenced::Unknown
        }
    }
}

/// The object as Weir's type; what does not fit is a problem at the object's root.
fn read<K: serde::de::DeserializeOwned>(
    object: Option<&DynamicObject>,
    kind: &str,
) -> std::result::Result<K, FieldProblem> {
    let problem = |message: String| FieldProblem {
        path: String::new(),
        message,
    };
    let object = object.ok_or_else(|| problem(format!("the review holds no {kind}")))?;
    let value = serde_json::to_value(object).map_err(|e| problem(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| problem(format!("cannot read the {kind}: {e}")))
}

/// Binds `addr` (fails at once if it cannot) and returns the bound address and the HTTPS
/// server, which runs until `shutdown`, with the certificate `store` holds.
pub async fn serve(
    addr: SocketAddr,
    store: Arc<CertStore>,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        tracing::warn!(%err, "webhook: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(err)) => return tracing::debug!(%err, "webhook: TLS handshake failed"),
                    Err(_) => return tracing::debug!("webhook: TLS handshake timed out"),
                };
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    result = connection => if let Err(err) = result {
                        tracing::debug!(%err, "webhook: connection ended with an error");
                    }
                }
            });
        }
    };
    Ok((bound, server))
}
