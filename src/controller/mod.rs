//! The Kubernetes side of Weir: one module per resource. Each reconcile observes (fresh
//! lists from the API server, never a possibly stale cache, for anything that decides what
//! to create), asks `engine::plan_*`, applies the result, then writes status with
//! server-side apply under one field manager.

pub mod job;
pub mod pipeline;
pub mod pipelinerun;
pub mod taskrun;

use crate::api::{PipelineRun, TaskRun};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// The one field manager every status write uses.
pub const FIELD_MANAGER: &str = "weir-operator";
/// Name of the operator in Events.
pub const REPORTER: &str = "weir-operator";
/// Annotation on Jobs and pods naming their TaskRun in full (label values are capped at 63
/// characters, object names are not).
pub const TASK_RUN_ANNOTATION: &str = "weir.dev/taskrun";

/// Errors of the controller layer. Each has a short, static category for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 429 => "throttled",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Serialization(_) => "serialization",
            Error::MissingField(_) => "invalid-object",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
}

impl Context {
    pub fn new(client: Client) -> Self {
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
        }
    }

    /// Publishes an Event; a failure to publish is logged, never fatal.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(&one_line(&note), 1000)),
            action: action.into(),
            secondary: related,
        };
        if let Err(err) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%err, reason, "could not publish event");
        }
    }
}

/// Joins the lines of a (possibly multi-line) message with "; " so Events read on one line.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Writes `status` with server-side apply. The whole status is always sent: fields this
/// manager owns and leaves out are removed.
pub async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Whether an API error is "already exists" (409 from a create).
pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// Requeue after an error, with jitter so many failing objects do not retry in lockstep;
/// longer when the API server asks us to slow down.
pub fn error_backoff(err: &Error, name: &str) -> Action {
    let base = match err.category() {
        "throttled" => 10_000,
        "conflict" => 500,
        _ => 3_000,
    };
    // Cheap deterministic jitter from the name and the clock's sub-second part.
    let seed = name.bytes().fold(now().subsec_nanosecond() as u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(b as u64)
    });
    Action::requeue(Duration::from_millis(base + seed % (base / 2).max(1)))
}

/// Which namespaces the operator watches.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    #[default]
    All,
    Namespace(String),
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match self {
            Scope::All => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

fn managed_selector() -> String {
    format!(
        "{}={}",
        crate::api::labels::MANAGED_BY,
        crate::api::labels::MANAGED_BY_VALUE
    )
}

/// Runs the three controllers until SIGTERM/SIGINT.
pub async fn run(client: Client, scope: Scope) -> anyhow::Result<()> {
    let ctx = Arc::new(Context::new(client.clone()));
    let managed = watcher::Config::default().labels(&managed_selector());

    let pipelines = Controller::new(
        scope.api::<crate::api::Pipeline>(&client),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(pipeline::reconcile, pipeline::error_policy, ctx.clone())
    .for_each(|r| async move { log_result("Pipeline", r) });

    let runs = Controller::new(scope.api::<PipelineRun>(&client), watcher::Config::default())
        .owns(scope.api::<TaskRun>(&client), watcher::Config::default())
        .shutdown_on_signal()
        .run(pipelinerun::reconcile, pipelinerun::error_policy, ctx.clone())
        .for_each(|r| async move { log_result("PipelineRun", r) });

    let task_runs = Controller::new(scope.api::<TaskRun>(&client), watcher::Config::default())
        .owns(scope.api::<Job>(&client), managed.clone())
        .watches(scope.api::<Pod>(&client), managed, |pod: Pod| {
            let name = pod.annotations().get(TASK_RUN_ANNOTATION)?.clone();
            Some(kube::runtime::reflector::ObjectRef::new(&name).within(&pod.namespace()?))
        })
        .shutdown_on_signal()
        .run(taskrun::reconcile, taskrun::error_policy, ctx.clone())
        .for_each(|r| async move { log_result("TaskRun", r) });

    tracing::info!(?scope, "weir operator started");
    tokio::join!(pipelines, runs, task_runs);
    tracing::info!("weir operator stopped");
    Ok(())
}

fn log_result<T: Debug, E: std::fmt::Display>(kind: &str, result: std::result::Result<T, E>) {
    match result {
        Ok(obj) => tracing::debug!(kind, ?obj, "reconciled"),
        Err(err) => tracing::debug!(kind, %err, "reconcile failed"),
    }
}

/// Lists objects of a kind by label selector straight from the API server.
pub async fn list_by_label<K>(api: &Api<K>, selector: &str) -> Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(api.list(&ListParams::default().labels(selector)).await?.items)
}
