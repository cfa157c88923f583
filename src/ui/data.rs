//! Reads from Kubernetes, as the person asking, each bounded: lists are paginated with the
//! API server's `limit`/`continue`, run histories are cut at [`RUNS_LIMIT`], logs at
//! [`LOG_TAIL_LINES`] lines and [`LOG_LIMIT_BYTES`] bytes, events at [`EVENTS_LIMIT`].

use crate::api::{Pipeline, PipelineRun, labels};
use crate::cli::cluster::{Cluster, Explain as _, PIPELINE_RUNS, PIPELINES, POD_LOGS};
use crate::cli::runs::{self, Snapshot};
use crate::engine::names;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, LogParams};
use serde::Serialize;

/// Items per page of a list.
pub const PAGE_SIZE: u32 = 50;
/// Most runs read to find a pipeline's recent ones (the history limits usually keep far
/// fewer).
pub const RUNS_LIMIT: u32 = 500;
/// Most events shown for a run.
pub const EVENTS_LIMIT: u32 = 100;
pub const LOG_TAIL_LINES: i64 = 2000;
pub const LOG_LIMIT_BYTES: i64 = 512 * 1024;

/// One page of a list, and the token of the next.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

fn list_params(selector: Option<&str>, limit: u32, continue_token: Option<&str>) -> ListParams {
    let mut params = ListParams::default().limit(limit.clamp(1, RUNS_LIMIT));
    if let Some(s) = selector.filter(|s| !s.is_empty()) {
        params = params.labels(s);
    }
    if let Some(c) = continue_token.filter(|c| !c.is_empty()) {
        params = params.continue_token(c);
    }
    params
}

pub async fn pipelines(
    cluster: &Cluster,
    selector: Option<&str>,
    limit: u32,
    continue_token: Option<&str>,
) -> anyhow::Result<Page<Pipeline>> {
    let list = cluster
        .api::<Pipeline>()
        .list(&list_params(selector, limit, continue_token))
        .await
        .explain(cluster, "list", PIPELINES, None)?;
    Ok(Page {
        continue_token: list.metadata.continue_.filter(|c| !c.is_empty()),
        items: list.items,
    })
}

/// The label selector of one pipeline's runs (and any more the person gave).
pub fn runs_selector(pipeline: Option<&str>, selector: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(p) = pipeline {
        parts.push(format!("{}={}", labels::PIPELINE, names::label_value(p)));
    }
    if let Some(s) = selector.filter(|s| !s.is_empty()) {
        parts.push(s.to_string());
    }
    parts.join(",")
}

pub async fn runs(
    cluster: &Cluster,
    pipeline: Option<&str>,
    selector: Option<&str>,
    limit: u32,
    continue_token: Option<&str>,
) -> anyhow::Result<Page<PipelineRun>> {
    let selector = runs_selector(pipeline, selector);
    let list = cluster
        .api::<PipelineRun>()
        .list(&list_params(Some(&selector), limit, continue_token))
        .await
        .explain(cluster, "list", PIPELINE_RUNS, None)?;
    let mut items = list.items;
    if let Some(p) = pipeline {
        // The label holds a shortened name for long ones: keep the pipeline's own.
        items.retain(|r| super::view::pipeline_of(r) == Some(p));
    }
    super::view::newest_first(&mut items);
    Ok(Page {
        continue_token: list.metadata.continue_.filter(|c| !c.is_empty()),
        items,
    })
}

/// Up to [`RUNS_LIMIT`] runs (of one pipeline, or of the namespace), newest first.
pub async fn recent_runs(cluster: &Cluster, pipeline: Option<&str>) -> anyhow::Result<Vec<PipelineRun>> {
    Ok(runs(cluster, pipeline, None, RUNS_LIMIT, None).await?.items)
}

pub async fn pipeline(cluster: &Cluster, name: &str) -> anyhow::Result<Pipeline> {
    crate::cli::backfill::get_pipeline(cluster, name).await
}

/// A run and its TaskRuns (from the API server's watch cache: cheap, perhaps a moment
/// behind, which the live updates make up for).
pub async fn snapshot(cluster: &Cluster, run: &str) -> anyhow::Result<Snapshot> {
    runs::fetch(cluster, run, true).await
}

/// The newest events about one object.
pub async fn events(cluster: &Cluster, kind: &str, name: &str) -> Vec<Event> {
    let params = ListParams::default()
        .fields(&format!("involvedObject.kind={kind},involvedObject.name={name}"))
        .limit(EVENTS_LIMIT);
    let mut items = cluster
        .api::<Event>()
        .list(&params)
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    items.sort_by_key(|e| std::cmp::Reverse(event_time(e)));
    items
}

pub fn event_time(e: &Event) -> Option<jiff::Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// An attempt's log, or why there is none.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptLog {
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The log (its last [`LOG_TAIL_LINES`] lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Why there is no log: the pod is gone, or has not started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The attempt is over: its log will not grow.
    pub finished: bool,
}

/// The last `n` lines of `text`, as the pod log's `tailLines` gives them.
fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(n)..].join("\n");
    if text.ends_with('\n') && !tail.is_empty() {
        tail.push('\n');
    }
    tail
}

/// The log of one attempt's pod; once the pod is gone, the log kept in the artifact store,
/// or a note saying why there is none.
pub async fn attempt_log(
    cluster: &Cluster,
    attempt: &crate::api::Attempt,
    cancelled: bool,
) -> anyhow::Result<AttemptLog> {
    let finished = attempt.completion_time.is_some();
    let mut out = AttemptLog {
        attempt: attempt.number,
        pod: attempt.pod_name.clone(),
        log: None,
        note: None,
        finished,
    };
    let Some(pod) = &attempt.pod_name else {
        out.note = Some(if finished {
            crate::cli::logs::gone_note(attempt.number, cancelled)
        } else {
            format!("attempt {} has no pod yet", attempt.number)
        });
        return Ok(out);
    };
    let params = LogParams {
        container: Some(crate::controller::job::CONTAINER.to_string()),
        tail_lines: Some(LOG_TAIL_LINES),
        limit_bytes: Some(LOG_LIMIT_BYTES),
        ..Default::default()
    };
    match cluster.api::<Pod>().logs(pod, &params).await {
        Ok(text) => out.log = Some(text),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            // The pod is gone: the log the attempt left in the artifact store, if any.
            match crate::artifacts::stored_log(&cluster.client, &cluster.namespace, &attempt.job_name).await {
                Ok(Some(text)) => {
                    out.log = Some(tail_lines(&text, LOG_TAIL_LINES as usize));
                    out.note = Some(format!(
                        "attempt {}: its pod is gone; this is the log kept in the artifact store",
                        attempt.number
                    ));
                }
                Ok(None) => out.note = Some(crate::cli::logs::gone_note(attempt.number, cancelled)),
                Err(e) => {
                    out.note = Some(format!(
                        "{}; the stored log could not be read: {e}",
                        crate::cli::logs::gone_note(attempt.number, cancelled)
                    ));
                }
            }
        }
        // A container that has not started yet (ContainerCreating, image pull).
        Err(kube::Error::Api(s)) if s.code == 400 => out.note = Some(s.message),
        Err(e) => return Err(e).explain(cluster, "get", POD_LOGS, Some(pod)),
    }
    Ok(out)
}
