//! The JSON API under `/api/v1` (documented in `docs/ui.md`): what the pages show, as
//! data, and the actions, for the pages' script and for other systems. Every request is
//! made as the person asking; every action is a POST that needs the CSRF token (header
//! `X-Weir-CSRF`, from `GET /api/v1/session`).
//!
//! The actions live here as functions the HTML pages call too: one code path per action,
//! each built on the CLI's own (`cli::trigger::create_run`, `cli::cancel::request_cancel`,
//! `cli::rerun::request_rerun`, `cli::suspend::set_suspended`, `cli::backfill`).

use super::Ui;
use super::auth::User;
use super::data::{self, PAGE_SIZE, Page};
use super::error::UiError;
use super::view::{self, Grid, PipelineSummary, RunSummary};
use crate::cli::cancel::Cancel;
use crate::cli::rerun::Rerun;
use crate::cli::runs::{RunView, TaskView};
use crate::cli::trigger::TriggerError;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub fn routes() -> Router<Ui> {
    Router::new()
        .route("/session", get(session))
        .route("/namespaces/{ns}/pipelines", get(list_pipelines))
        .route("/namespaces/{ns}/watch", get(super::live::watch_namespace))
        .route(
            "/namespaces/{ns}/pipelines/{name}/watch",
            get(super::live::watch_pipeline),
        )
        .route("/namespaces/{ns}/pipelines/{name}", get(get_pipeline))
        .route("/namespaces/{ns}/pipelines/{name}/grid", get(get_grid))
        .route("/namespaces/{ns}/pipelines/{name}/runs", post(post_trigger))
        .route("/namespaces/{ns}/pipelines/{name}/backfill", post(post_backfill))
        .route("/namespaces/{ns}/pipelines/{name}/suspend", post(post_suspend))
        .route("/namespaces/{ns}/pipelines/{name}/resume", post(post_resume))
        .route("/namespaces/{ns}/pipelineruns", get(list_runs))
        .route("/namespaces/{ns}/pipelineruns/{run}", get(get_run))
        .route(
            "/namespaces/{ns}/pipelineruns/{run}/watch",
            get(super::live::watch_run),
        )
        .route(
            "/namespaces/{ns}/pipelineruns/{run}/tasks/{task}/logs",
            get(get_logs),
        )
        .route("/namespaces/{ns}/pipelineruns/{run}/cancel", post(post_cancel))
        .route("/namespaces/{ns}/pipelineruns/{run}/rerun", post(post_rerun))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    mode: super::AuthMode,
    namespace: String,
    csrf_token: String,
    may_act: bool,
}

async fn session(user: User, State(ui): State<Ui>) -> Json<Session> {
    Json(Session {
        mode: user.mode,
        namespace: ui.default_namespace().to_string(),
        csrf_token: user.csrf.clone(),
        may_act: user.may_act,
    })
}

/// Query of a list: a label selector, a page size and the token of the page.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct ListQuery {
    pub label_selector: Option<String>,
    pub limit: Option<u32>,
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    /// Runs of this pipeline only.
    pub pipeline: Option<String>,
}

/// How many runs of each pipeline the pipelines list shows.
pub const STRIP_RUNS: usize = 10;

/// A page of pipelines with their recent runs (one list of the namespace's runs).
pub async fn pipeline_summaries(
    user: &User,
    ns: &str,
    q: &ListQuery,
) -> Result<Page<PipelineSummary>, UiError> {
    let cluster = user.cluster(ns);
    let page = data::pipelines(
        &cluster,
        q.label_selector.as_deref(),
        q.limit.unwrap_or(PAGE_SIZE),
        q.continue_token.as_deref(),
    )
    .await?;
    let runs = data::recent_runs(&cluster, None).await?;
    let now = jiff::Timestamp::now();
    let items = page
        .items
        .iter()
        .map(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            let own: Vec<_> = runs
                .iter()
                .filter(|r| view::pipeline_of(r) == Some(name))
                .collect();
            view::summarize_pipeline(p, &own, STRIP_RUNS, now)
        })
        .collect();
    Ok(Page {
        items,
        continue_token: page.continue_token,
    })
}

async fn list_pipelines(
    user: User,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<PipelineSummary>>, UiError> {
    Ok(Json(pipeline_summaries(&user, &ns, &q).await?))
}

async fn get_pipeline(
    user: User,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<PipelineSummary>, UiError> {
    let cluster = user.cluster(&ns);
    let pipeline = data::pipeline(&cluster, &name).await?;
    let runs = data::recent_runs(&cluster, Some(&name)).await?;
    let own: Vec<_> = runs.iter().collect();
    Ok(Json(view::summarize_pipeline(
        &pipeline,
        &own,
        STRIP_RUNS,
        jiff::Timestamp::now(),
    )))
}

/// How many runs the grid shows.
pub const GRID_RUNS: usize = 20;

/// The grid of a pipeline's recent runs, newest first, with each run's tree.
pub async fn grid_of(user: &User, ns: &str, pipeline: &str) -> Result<(Grid, Vec<RunView>), UiError> {
    let cluster = user.cluster(ns);
    let mut runs = data::recent_runs(&cluster, Some(pipeline)).await?;
    runs.truncate(GRID_RUNS);
    let snapshots = futures::future::join_all(runs.iter().map(|run| async {
        let task_runs = crate::cli::runs::task_runs_of(&cluster, run, true).await?;
        anyhow::Ok(crate::cli::runs::Snapshot {
            run: run.clone(),
            spec: crate::cli::runs::followed(&cluster, run).await,
            task_runs,
        })
    }))
    .await;
    let now = jiff::Timestamp::now();
    let mut columns = Vec::new();
    for snapshot in snapshots {
        let snapshot = snapshot?;
        columns.push((
            view::summarize_run(&snapshot.run, now),
            crate::cli::runs::view(&snapshot),
        ));
    }
    let grid = view::grid(&columns);
    Ok((grid, columns.into_iter().map(|(_, v)| v).collect()))
}

async fn get_grid(user: User, Path((ns, name)): Path<(String, String)>) -> Result<Json<Grid>, UiError> {
    Ok(Json(grid_of(&user, &ns, &name).await?.0))
}

async fn list_runs(
    user: User,
    Path(ns): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<RunSummary>>, UiError> {
    let page = data::runs(
        &user.cluster(&ns),
        q.pipeline.as_deref(),
        q.label_selector.as_deref(),
        q.limit.unwrap_or(PAGE_SIZE),
        q.continue_token.as_deref(),
    )
    .await?;
    let now = jiff::Timestamp::now();
    Ok(Json(Page {
        items: page.items.iter().map(|r| view::summarize_run(r, now)).collect(),
        continue_token: page.continue_token,
    }))
}

async fn get_run(user: User, Path((ns, run)): Path<(String, String)>) -> Result<Json<RunView>, UiError> {
    let snapshot = data::snapshot(&user.cluster(&ns), &run).await?;
    Ok(Json(crate::cli::runs::view(&snapshot)))
}

/// A task of a run by name, or one instance of it.
pub fn find_task<'a>(view: &'a RunView, task: &str, instance: Option<u32>) -> Option<&'a TaskView> {
    let found = view.tasks.iter().find(|t| t.name == task)?;
    match instance {
        None => Some(found),
        Some(k) => found.instances.iter().find(|i| i.instance == Some(k)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LogQuery {
    instance: Option<u32>,
    /// One attempt; default: every attempt.
    attempt: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Logs {
    task: String,
    phase: crate::api::TaskPhase,
    attempts: Vec<data::AttemptLog>,
}

async fn get_logs(
    user: User,
    Path((ns, run, task)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Logs>, UiError> {
    let cluster = user.cluster(&ns);
    let snapshot = data::snapshot(&cluster, &run).await?;
    let view = crate::cli::runs::view(&snapshot);
    let Some(found) = find_task(&view, &task, q.instance) else {
        return Err(UiError::new(
            StatusCode::NOT_FOUND,
            no_task(&view, &task, q.instance),
        ));
    };
    let mut attempts = Vec::new();
    for attempt in found
        .attempts
        .iter()
        .filter(|a| q.attempt.is_none_or(|n| n == a.number))
    {
        let cancelled = attempt.reason == Some(crate::api::FailureReason::Cancelled);
        attempts.push(data::attempt_log(&cluster, attempt, cancelled).await?);
    }
    Ok(Json(Logs {
        task: found.name.clone(),
        phase: found.phase,
        attempts,
    }))
}

pub fn no_task(view: &RunView, task: &str, instance: Option<u32>) -> String {
    let known: Vec<&str> = view.tasks.iter().map(|t| t.name.as_str()).collect();
    match instance {
        Some(k) => format!("pipelinerun {} has no instance {k} of task {task}", view.name),
        None => format!(
            "pipelinerun {} has no task {task}; its tasks: {}",
            view.name,
            known.join(", ")
        ),
    }
}

/// A request to trigger a run.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct TriggerRequest {
    /// The run's name (default `<pipeline>-manual-<yyyymmdd>-<hhmmss>`).
    pub name: Option<String>,
    /// Params by name, as text (a list as `a,b` or JSON); the pipeline's defaults fill
    /// the rest.
    pub params: BTreeMap<String, String>,
}

/// Creates a manual run, as `weir trigger` does; its name.
pub async fn trigger(
    user: &User,
    ns: &str,
    pipeline: &str,
    request: TriggerRequest,
) -> Result<String, UiError> {
    let cluster = user.cluster(ns);
    let found = data::pipeline(&cluster, pipeline).await?;
    let name = request
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| crate::engine::schedule::manual_run_name(pipeline, jiff::Timestamp::now()));
    match crate::cli::trigger::create_run(&cluster, &found, &name, &request.params, None, true).await {
        Ok(()) => Ok(name),
        Err(TriggerError::BadParams(problems)) => Err(UiError::invalid(
            format!(
                "the params do not fit pipeline {pipeline}: {}",
                problems.join("; ")
            ),
            problems,
        )),
        Err(e @ TriggerError::Exists(_)) => Err(UiError::new(StatusCode::CONFLICT, e.to_string())),
        Err(TriggerError::Other(e)) => Err(e.into()),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    name: String,
    namespace: String,
}

async fn post_trigger(
    user: User,
    Path((ns, pipeline)): Path<(String, String)>,
    Json(request): Json<TriggerRequest>,
) -> Result<Response, UiError> {
    let name = trigger(&user, &ns, &pipeline, request).await?;
    Ok((StatusCode::CREATED, Json(Created { name, namespace: ns })).into_response())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    /// What happened, in a sentence.
    message: String,
    /// Whether anything was written.
    changed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<String>,
}

pub async fn cancel(user: &User, ns: &str, run: &str) -> Result<(bool, String), UiError> {
    let outcome = crate::cli::cancel::request_cancel(&user.cluster(ns), run).await?;
    Ok(match outcome {
        Cancel::AlreadyFinished(phase) => (
            false,
            format!("pipelinerun {run} already finished ({phase}): nothing to cancel"),
        ),
        Cancel::AlreadyRequested => (false, format!("pipelinerun {run} is already being cancelled")),
        Cancel::Requested => (
            true,
            format!("pipelinerun {run} cancelled: running tasks are stopped, finally tasks still run"),
        ),
    })
}

async fn post_cancel(user: User, Path((ns, run)): Path<(String, String)>) -> Result<Json<Outcome>, UiError> {
    let (changed, message) = cancel(&user, &ns, &run).await?;
    Ok(Json(Outcome {
        message,
        changed,
        request: None,
    }))
}

pub async fn rerun(user: &User, ns: &str, run: &str, what: &Rerun) -> Result<(String, String), UiError> {
    let (request, _) = crate::cli::rerun::request_rerun(&user.cluster(ns), run, what).await?;
    let text = crate::cli::rerun::describe(&what.tasks, what.downstream, what.failed_instances_only);
    Ok((
        request.clone(),
        format!("pipelinerun {run}: rerun requested (request {request}): {text}"),
    ))
}

async fn post_rerun(
    user: User,
    Path((ns, run)): Path<(String, String)>,
    Json(what): Json<Rerun>,
) -> Result<Json<Outcome>, UiError> {
    let (request, message) = rerun(&user, &ns, &run, &what).await?;
    Ok(Json(Outcome {
        message,
        changed: true,
        request: Some(request),
    }))
}

pub async fn suspend(user: &User, ns: &str, pipeline: &str, on: bool) -> Result<(bool, String), UiError> {
    let outcome = crate::cli::suspend::set_suspended(&user.cluster(ns), pipeline, on).await?;
    let word = if on { "suspended" } else { "resumed" };
    let mut message = if outcome.changed {
        format!("pipeline {pipeline}: schedule {word} ({})", outcome.cron)
    } else {
        format!("pipeline {pipeline}: schedule already {word}")
    };
    if let Some(tool) = outcome.gitops {
        message.push_str(&format!(
            ". {tool} manages this Pipeline: if its manifest in Git sets spec.schedule.suspend, the next sync sets it back"
        ));
    }
    Ok((outcome.changed, message))
}

async fn post_suspend(
    user: User,
    Path((ns, pipeline)): Path<(String, String)>,
) -> Result<Json<Outcome>, UiError> {
    let (changed, message) = suspend(&user, &ns, &pipeline, true).await?;
    Ok(Json(Outcome {
        message,
        changed,
        request: None,
    }))
}

async fn post_resume(
    user: User,
    Path((ns, pipeline)): Path<(String, String)>,
) -> Result<Json<Outcome>, UiError> {
    let (changed, message) = suspend(&user, &ns, &pipeline, false).await?;
    Ok(Json(Outcome {
        message,
        changed,
        request: None,
    }))
}

/// A backfill: the logical dates from `from` to `to`, as `weir backfill --from --to` takes
/// them.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct BackfillRequest {
    pub from: String,
    pub to: String,
}

/// One interval of a backfill.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct BackfillRun {
    pub name: String,
    pub logical_date: jiff::Timestamp,
    /// False: a run of that interval existed already.
    pub created: bool,
}

pub async fn backfill(
    user: &User,
    ns: &str,
    pipeline: &str,
    request: &BackfillRequest,
) -> Result<Vec<BackfillRun>, UiError> {
    let cluster = user.cluster(ns);
    let found = data::pipeline(&cluster, pipeline).await?;
    let (intervals, _) =
        crate::cli::backfill::intervals_between(&found, (&request.from, "from"), (&request.to, "to"))
            .map_err(|e| UiError::invalid(format!("{e:#}"), vec![format!("{e:#}")]))?;
    let mut out = Vec::with_capacity(intervals.len());
    for interval in &intervals {
        let name = crate::engine::schedule::run_name(pipeline, interval.start);
        let created = crate::cli::backfill::create_interval_run(&cluster, &found, &name, interval).await?;
        out.push(BackfillRun {
            name,
            logical_date: interval.start,
            created,
        });
    }
    Ok(out)
}

#[derive(Serialize)]
struct Backfilled {
    runs: Vec<BackfillRun>,
}

async fn post_backfill(
    user: User,
    Path((ns, pipeline)): Path<(String, String)>,
    Json(request): Json<BackfillRequest>,
) -> Result<Json<Backfilled>, UiError> {
    Ok(Json(Backfilled {
        runs: backfill(&user, &ns, &pipeline, &request).await?,
    }))
}
