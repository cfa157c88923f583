//! The HTML pages, rendered on the server from the same functions the JSON API uses.
//!
//! Stable hooks for browser tests (ids, `data-testid`), by page:
//! - every page: `#nav-home`, `#main`; errors `#error` with `[data-testid=error-message]`
//!   and, when Kubernetes refused, `[data-testid=kubernetes-message]`.
//! - pipelines (`/`): filter form `#filter-namespace`, `#filter-label`, `#filter-search`,
//!   `#filter-apply`; table `#pipelines`, one row `[data-testid=pipeline-<name>]` with
//!   `[data-testid=ready-<name>]`, `[data-testid=schedule-<name>]` and the strip
//!   `[data-testid=strip-<name>]` of links `[data-testid=square-<run>]`; `#next-page`.
//! - grid (`/ns/<ns>/pipelines/<p>`): `#action-trigger`, `#action-backfill`,
//!   `#action-suspend` / `#action-resume`; table `#grid`, cells
//!   `[data-testid=cell-<run>-<task>]` (links to the task instance); `#runs`, `#next-page`.
//! - run (`/ns/<ns>/runs/<r>`): `[data-testid=run-phase]`, `[data-testid=run-progress]`,
//!   `#action-cancel`, `#action-rerun`, `#link-graph`, `#tasks` with one state
//!   `[data-testid=task-state-<task>]` per task or instance (`data-task-state` names it,
//!   for live updates), `#gantt`, `#conditions`, `#params`, `#events`.
//! - graph (`/ns/<ns>/runs/<r>/graph`): `#graph` holding the SVG (`g.node[data-task]`).
//! - task instance (`/ns/<ns>/runs/<r>/tasks/<t>[?instance=k]`): `#attempts`,
//!   `[data-testid=attempt-<n>]`, `#outputs`, `#spec`, `#env`, logs
//!   `[data-testid=log-<n>]` and notes `[data-testid=log-note-<n>]`, `#action-rerun-task`.
//! - forms: trigger `#trigger-form`, fields `#param-<name>`, `#trigger-name`,
//!   `#trigger-submit`; rerun `#rerun-form`, `#rerun-task-<task>`, `#rerun-downstream`,
//!   `#rerun-failed-only`, `#rerun-submit`; backfill `#backfill-from`, `#backfill-to`,
//!   `#backfill-submit`; confirmations `#confirm` (the POST button) and `#cancel-confirm`
//!   (back); login `#login-token`, `#login-submit`; `#logout`.
//!
//! Every action is a POST from a form that is itself the confirmation step (a page that
//! says what will happen, with a button to do it), carries the CSRF token, and is shown
//! disabled when a SelfSubjectAccessReview says Kubernetes would refuse it.

use super::api::{self, ListQuery};
use super::auth::{self, AuthMode, User};
use super::error::UiError;
use super::html::{self, Frame, badge, enc, esc};
use super::view::{self, RunSummary};
use super::{Ui, data};
use crate::api::{PipelineSpec, TaskPhase, TriggerRule};
use crate::cli::cluster::{PIPELINE_RUNS, PIPELINES};
use crate::cli::rerun::Rerun;
use crate::cli::runs::{RunView, TaskView};
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use serde::Deserialize;
use std::fmt::Write as _;

pub fn routes() -> Router<Ui> {
    Router::new()
        .route("/", get(pipelines_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/ns/{ns}/pipelines/{name}", get(grid_page))
        .route(
            "/ns/{ns}/pipelines/{name}/trigger",
            get(trigger_page).post(trigger_submit),
        )
        .route(
            "/ns/{ns}/pipelines/{name}/backfill",
            get(backfill_page).post(backfill_submit),
        )
        .route(
            "/ns/{ns}/pipelines/{name}/suspend",
            get(suspend_page).post(suspend_submit),
        )
        .route(
            "/ns/{ns}/pipelines/{name}/resume",
            get(resume_page).post(resume_submit),
        )
        .route("/ns/{ns}/runs/{run}", get(run_page))
        .route("/ns/{ns}/runs/{run}/graph", get(graph_page))
        .route("/ns/{ns}/runs/{run}/tasks/{task}", get(task_page))
        .route("/ns/{ns}/runs/{run}/cancel", get(cancel_page).post(cancel_submit))
        .route("/ns/{ns}/runs/{run}/rerun", get(rerun_page).post(rerun_submit))
        .route(
            "/ns/{ns}/runs/{run}/approve/{task}",
            get(approve_page).post(approve_submit),
        )
        .route(
            "/ns/{ns}/runs/{run}/reject/{task}",
            get(reject_page).post(reject_submit),
        )
}

/// A page, or the error page.
pub struct PageError(UiError);

impl From<UiError> for PageError {
    fn from(e: UiError) -> PageError {
        PageError(e)
    }
}

impl From<anyhow::Error> for PageError {
    fn from(e: anyhow::Error) -> PageError {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        html::error_page(&self.0)
    }
}

type PageResult = Result<Response, PageError>;

fn frame<'a>(user: &'a User, title: &'a str, ns: &'a str) -> Frame<'a> {
    Frame {
        title,
        namespace: ns,
        csrf: &user.csrf,
        token_mode: user.mode == AuthMode::Token,
        main_attrs: String::new(),
        scripts: &[],
    }
}

fn run_href(ns: &str, run: &str) -> String {
    format!("/ns/{}/runs/{}", enc(ns), enc(run))
}

fn pipeline_href(ns: &str, pipeline: &str) -> String {
    format!("/ns/{}/pipelines/{}", enc(ns), enc(pipeline))
}

fn task_href(ns: &str, run: &str, task: &TaskView) -> String {
    let mut href = format!("{}/tasks/{}", run_href(ns, run), enc(&task.task));
    if let Some(k) = task.instance {
        let _ = write!(href, "?instance={k}");
    }
    href
}

/// A button that POSTs, or shows why it is disabled.
fn action_link(id: &str, href: &str, label: &str, allowed: bool) -> String {
    if allowed {
        format!(
            r#"<a class="button" id="{id}" href="{}">{}</a>"#,
            esc(href),
            esc(label)
        )
    } else {
        format!(
            r#"<button type="button" class="button" id="{id}" disabled title="Kubernetes does not allow you this">{}</button>"#,
            esc(label)
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PipelinesQuery {
    namespace: Option<String>,
    label: Option<String>,
    q: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
}

async fn pipelines_page(user: User, State(ui): State<Ui>, Query(q): Query<PipelinesQuery>) -> PageResult {
    let ns = q
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| ui.default_namespace().to_string());
    let list = ListQuery {
        label_selector: q.label.clone(),
        continue_token: q.continue_token.clone(),
        ..Default::default()
    };
    let page = api::pipeline_summaries(&user, &ns, &list).await?;
    let search = q.q.clone().unwrap_or_default();
    let mut body = format!(
        r#"<form method="get" action="/" class="filters" role="search">
<label>Namespace <input id="filter-namespace" name="namespace" value="{}"></label>
<label>Label selector <input id="filter-label" name="label" value="{}" placeholder="team=data"></label>
<label>Search <input id="filter-search" name="q" value="{}" placeholder="name contains"></label>
<button type="submit" id="filter-apply">Apply</button>
</form>
<div id="pipelines-region" data-live-region>
<table id="pipelines"><thead><tr><th scope="col">Pipeline</th><th scope="col">Ready</th><th scope="col">Schedule</th><th scope="col">Active runs</th><th scope="col">Last runs (newest first)</th></tr></thead><tbody>
"#,
        esc(&ns),
        esc(q.label.as_deref().unwrap_or_default()),
        esc(&search)
    );
    let shown: Vec<_> = page
        .items
        .iter()
        .filter(|p| p.name.contains(search.as_str()))
        .collect();
    for p in &shown {
        body.push_str(&pipeline_row(&ns, p));
    }
    if shown.is_empty() {
        body.push_str(r#"<tr><td colspan="5">No pipelines here.</td></tr>"#);
    }
    body.push_str("</tbody></table></div>");
    if let Some(next) = &page.continue_token {
        let _ = write!(
            body,
            r#"<p><a id="next-page" href="/?namespace={}&amp;label={}&amp;q={}&amp;continue={}">Next page</a></p>"#,
            enc(&ns),
            enc(q.label.as_deref().unwrap_or_default()),
            enc(&search),
            enc(next)
        );
    }
    let mut f = frame(&user, "Pipelines", &ns);
    f.main_attrs = format!(r#" data-live-refresh="/api/v1/namespaces/{}/watch""#, enc(&ns));
    Ok(html::page(&f, &body).into_response())
}

fn pipeline_row(ns: &str, p: &view::PipelineSummary) -> String {
    let name = &p.name;
    let ready = match p.ready {
        Some(true) => badge("Ready", Some(&format!("ready-{name}"))),
        Some(false) => format!(
            r#"{}<div class="problem">{}</div>"#,
            badge("NotReady", Some(&format!("ready-{name}"))),
            esc(p.problem.as_deref().unwrap_or_default())
        ),
        None => badge("Unknown", Some(&format!("ready-{name}"))),
    };
    let schedule = match &p.schedule {
        None => "manual only".to_string(),
        Some(s) => {
            let mut text = esc(&s.words);
            if s.timezone != "UTC" {
                let _ = write!(text, " ({})", esc(&s.timezone));
            }
            if s.suspended {
                text.push_str(r#" <strong class="suspended">⏸ suspended</strong>"#);
            } else if let Some(next) = &s.next_run_local {
                let _ = write!(text, "<br><small>next: {}</small>", esc(next));
            }
            if let Some(problem) = &s.problem {
                let _ = write!(text, r#"<div class="problem">{}</div>"#, esc(problem));
            }
            text
        }
    };
    let active: Vec<String> = p
        .active_runs
        .iter()
        .map(|r| format!(r#"<a href="{}">{}</a>"#, run_href(ns, r), esc(r)))
        .collect();
    let active = if active.is_empty() {
        "0".to_string()
    } else {
        format!("{}: {}", active.len(), active.join(", "))
    };
    let strip: String = p.last_runs.iter().map(|r| square(ns, r)).collect();
    format!(
        r#"<tr data-testid="pipeline-{n}"><th scope="row"><a href="{href}">{name}</a></th><td>{ready}</td><td data-testid="schedule-{n}">{schedule}</td><td>{active}</td><td><span class="strip" data-testid="strip-{n}">{strip}</span></td></tr>
"#,
        n = esc(name),
        href = pipeline_href(ns, name),
        name = esc(name),
    )
}

/// A run as a square of the strip: colour, shape and (hidden, for screen readers and
/// tooltips) its name and phase.
fn square(ns: &str, r: &RunSummary) -> String {
    format!(
        r#"<a class="square state-{c}" data-state="{p}" data-testid="square-{n}" href="{href}" title="{n}: {p}"><span aria-hidden="true">{shape}</span><span class="sr-only">{n}: {p}</span></a>"#,
        c = esc(&r.phase.to_ascii_lowercase()),
        p = esc(&r.phase),
        n = esc(&r.name),
        href = run_href(ns, &r.name),
        shape = html::shape(&r.phase),
    )
}

async fn grid_page(
    user: User,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> PageResult {
    let cluster = user.cluster(&ns);
    let pipeline = data::pipeline(&cluster, &name).await?;
    let (grid, views) = api::grid_of(&user, &ns, &name).await?;
    let summary = view::summarize_pipeline(&pipeline, &[], 0, Timestamp::now());
    let (can_create, can_patch) = (
        user.can(&ns, "create", PIPELINE_RUNS).await,
        user.can(&ns, "patch", PIPELINES).await,
    );
    let mut body = String::from(r#"<p class="actions">"#);
    body.push_str(&action_link(
        "action-trigger",
        &format!("{}/trigger", pipeline_href(&ns, &name)),
        "Trigger run…",
        can_create,
    ));
    if let Some(s) = &summary.schedule {
        body.push_str(&action_link(
            "action-backfill",
            &format!("{}/backfill", pipeline_href(&ns, &name)),
            "Backfill…",
            can_create,
        ));
        let (id, verb, label) = if s.suspended {
            ("action-resume", "resume", "Resume schedule…")
        } else {
            ("action-suspend", "suspend", "Suspend schedule…")
        };
        body.push_str(&action_link(
            id,
            &format!("{}/{verb}", pipeline_href(&ns, &name)),
            label,
            can_patch,
        ));
        let _ = write!(body, r#" <span>{}</span>"#, esc(&s.words));
    }
    body.push_str("</p>");
    if let Some(problem) = &summary.problem {
        let _ = write!(
            body,
            r#"<div class="problem" role="alert">Not ready: {}</div>"#,
            esc(problem)
        );
    }
    let _ = write!(
        body,
        r#"<div id="grid-region" data-live-region>{}</div><div id="runs-region" data-live-region>{}</div>"#,
        grid_table(&ns, &grid, &views),
        runs_table(&user, &ns, &name, &q).await?
    );
    let title = format!("Pipeline {name}");
    let mut f = frame(&user, &title, &ns);
    f.main_attrs = format!(r#" data-live-refresh="{}/watch""#, api_pipeline_path(&ns, &name));
    Ok(html::page(&f, &body).into_response())
}

/// Runs as columns (oldest left, newest right, as Airflow's grid), tasks as rows; a bar of
/// each run's duration on top.
fn grid_table(ns: &str, grid: &view::Grid, views: &[RunView]) -> String {
    if grid.runs.is_empty() {
        return "<p>No runs yet.</p>".to_string();
    }
    let longest = grid
        .runs
        .iter()
        .filter_map(|r| r.duration_seconds)
        .max()
        .unwrap_or(1)
        .max(1);
    let order: Vec<usize> = (0..grid.runs.len()).rev().collect();
    let mut out = String::from(r#"<table id="grid" class="grid"><thead><tr><th scope="col">Task</th>"#);
    for &i in &order {
        let r = &grid.runs[i];
        let height = r.duration_seconds.map_or(0, |d| 2 + d * 38 / longest);
        let duration = r.duration_seconds.map(html::seconds).unwrap_or_default();
        let _ = write!(
            out,
            r#"<th scope="col"><a href="{href}" title="{n}: {p}, {duration}"><svg class="bar state-{c}" width="14" height="40" aria-hidden="true"><rect x="1" y="{y}" width="12" height="{height}"></rect></svg><span class="sr-only">{n}: {p}, {duration}</span></a></th>"#,
            href = run_href(ns, &r.name),
            n = esc(&r.name),
            p = esc(&r.phase),
            c = esc(&r.phase.to_ascii_lowercase()),
            y = 40 - height,
        );
    }
    out.push_str("</tr></thead><tbody>");
    for row in &grid.rows {
        let class = if row.finally { r#" class="finally""# } else { "" };
        let _ = write!(out, r#"<tr{class}><th scope="row">{}</th>"#, esc(&row.task));
        for &i in &order {
            out.push_str(&grid_cell(
                ns,
                &grid.runs[i].name,
                &row.task,
                row.cells[i].as_ref(),
                &views[i],
            ));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

fn grid_cell(ns: &str, run: &str, task: &str, cell: Option<&view::GridCell>, run_view: &RunView) -> String {
    let Some(cell) = cell else {
        return r#"<td class="empty"></td>"#.to_string();
    };
    let phase = cell.phase.as_str();
    let counts = cell.instances.map(|c| view::counts_text(&c));
    let label = match &counts {
        Some(c) => format!("{task}: {phase} ({c})"),
        None => format!("{task}: {phase}"),
    };
    let visible = match cell.instances {
        Some(c) => format!("{}/{}", c.succeeded, c.total),
        None => html::shape(phase).to_string(),
    };
    let href = api::find_task(run_view, task, None)
        .map(|t| task_href(ns, run, t))
        .unwrap_or_default();
    format!(
        r#"<td><a class="cell state-{c}" data-state="{phase}" data-testid="cell-{r}-{t}" href="{href}" title="{l}"><span aria-hidden="true">{visible}</span><span class="sr-only">{l}</span></a></td>"#,
        c = phase.to_ascii_lowercase(),
        r = esc(run),
        t = esc(task),
        href = esc(&href),
        l = esc(&label),
    )
}

async fn runs_table(user: &User, ns: &str, pipeline: &str, q: &ListQuery) -> Result<String, PageError> {
    let page = data::runs(
        &user.cluster(ns),
        Some(pipeline),
        None,
        q.limit.unwrap_or(data::PAGE_SIZE),
        q.continue_token.as_deref(),
    )
    .await?;
    let now = Timestamp::now();
    let mut out = String::from(
        r#"<h2>Runs</h2><table id="runs"><thead><tr><th scope="col">Run</th><th scope="col">State</th><th scope="col">Trigger</th><th scope="col">Logical date</th><th scope="col">Duration</th><th scope="col">Progress</th></tr></thead><tbody>"#,
    );
    for run in &page.items {
        let r = view::summarize_run(run, now);
        let _ = write!(
            out,
            r#"<tr><th scope="row"><a href="{}">{}</a></th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            run_href(ns, &r.name),
            esc(&r.name),
            badge(&r.phase, None),
            esc(r.trigger.as_deref().unwrap_or_default()),
            html::time(r.logical_date),
            r.duration_seconds.map(html::seconds).unwrap_or_default(),
            esc(r.progress.as_deref().unwrap_or_default()),
        );
    }
    out.push_str("</tbody></table>");
    if let Some(next) = &page.continue_token {
        let _ = write!(
            out,
            r#"<p><a id="next-page" href="{}?continue={}">Next page</a></p>"#,
            pipeline_href(ns, pipeline),
            enc(next)
        );
    }
    Ok(out)
}

async fn run_page(user: User, Path((ns, run)): Path<(String, String)>) -> PageResult {
    let cluster = user.cluster(&ns);
    let snapshot = data::snapshot(&cluster, &run).await?;
    let run_view = crate::cli::runs::view(&snapshot);
    let can_patch = user.can(&ns, "patch", PIPELINE_RUNS).await;
    let now = Timestamp::now();
    let mut body = run_header(&ns, &run_view, &snapshot.run);
    body.push_str(r#"<p class="actions">"#);
    if !run_view.is_finished() && !run_view.cancel_requested {
        body.push_str(&action_link(
            "action-cancel",
            &format!("{}/cancel", run_href(&ns, &run)),
            "Cancel run…",
            can_patch,
        ));
    }
    body.push_str(&action_link(
        "action-rerun",
        &format!("{}/rerun", run_href(&ns, &run)),
        "Rerun…",
        can_patch,
    ));
    body.push_str(&approval_links(&user, &ns, &run, &snapshot.task_runs).await);
    let _ = write!(
        body,
        r#" <a id="link-graph" href="{}/graph">Graph</a></p>"#,
        run_href(&ns, &run)
    );
    body.push_str(&tasks_table(&ns, &run_view, now));
    body.push_str(&gantt(&run_view, now));
    body.push_str(&conditions_table(&snapshot.run));
    body.push_str(&alerts_section(&run_view));
    body.push_str(&params_table(&run_view));
    body.push_str(&events_table(&data::events(&cluster, "PipelineRun", &run).await));
    let mut f = frame(&user, &run, &ns);
    f.main_attrs = live_attr(&ns, &run);
    Ok(html::page(&f, &body).into_response())
}

fn api_pipeline_path(ns: &str, pipeline: &str) -> String {
    format!("/api/v1/namespaces/{}/pipelines/{}", enc(ns), enc(pipeline))
}

fn live_attr(ns: &str, run: &str) -> String {
    format!(
        r#" data-live="/api/v1/namespaces/{}/pipelineruns/{}/watch""#,
        enc(ns),
        enc(run)
    )
}

fn run_header(ns: &str, v: &RunView, run: &crate::api::PipelineRun) -> String {
    let mut out = format!(
        r#"<dl class="facts"><dt>State</dt><dd>{}</dd>"#,
        badge(&v.phase, Some("run-phase"))
    );
    if let Some(p) = &v.pipeline {
        let _ = write!(
            out,
            r#"<dt>Pipeline</dt><dd><a href="{}">{}</a></dd>"#,
            pipeline_href(ns, p),
            esc(p)
        );
    }
    let interval = match (&run.spec.data_interval_start, &run.spec.data_interval_end) {
        (Some(a), Some(b)) => format!("{} – {}", html::time(Some(a.0)), html::time(Some(b.0))),
        _ => "–".to_string(),
    };
    let _ = write!(
        out,
        r#"<dt>Progress</dt><dd data-testid="run-progress">{}</dd><dt>Reason</dt><dd>{}</dd><dt>Trigger</dt><dd>{}</dd><dt>Logical date</dt><dd>{}</dd><dt>Data interval</dt><dd>{interval}</dd><dt>Started</dt><dd>{}</dd><dt>Finished</dt><dd>{}</dd></dl>"#,
        esc(v.progress.as_deref().unwrap_or("–")),
        esc(&[v.reason.as_deref(), v.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ")),
        esc(v.trigger.as_deref().unwrap_or("–")),
        html::time(v.logical_date),
        html::time(v.start_time),
        html::time(v.completion_time),
    );
    if v.cancel_requested {
        out.push_str(r#"<p class="note" role="status">Cancel requested.</p>"#);
    }
    if let Some(r) = &v.rerun_requested {
        let _ = write!(
            out,
            r#"<p class="note" role="status">Rerun {} requested, not applied yet.</p>"#,
            esc(r)
        );
    }
    out
}

fn task_row(ns: &str, run: &str, t: &TaskView, now: Timestamp, depth: usize) -> String {
    let name_cell = format!(r#"<a href="{}">{}</a>"#, task_href(ns, run, t), esc(&t.name));
    let detail = if t.fans_out {
        format!(
            r#"<span data-task-counts="{}">{}</span>"#,
            esc(&t.name),
            esc(&view::counts_text(&view::instance_counts(t)))
        )
    } else {
        esc(t.message.as_deref().unwrap_or_default())
    };
    format!(
        r#"<tr class="depth-{depth}{f}"><th scope="row">{name_cell}</th><td><span data-task-state="{n}">{state}</span></td><td>{attempts}</td><td>{duration}</td><td>{detail}</td></tr>"#,
        f = if t.finally { " finally" } else { "" },
        n = esc(&t.name),
        state = badge(t.state(), Some(&format!("task-state-{}", t.name))),
        attempts = t.attempts.len(),
        duration = t
            .duration(now)
            .map(|d| html::seconds(d.as_secs() as i64))
            .unwrap_or_default(),
    )
}

fn tasks_table(ns: &str, v: &RunView, now: Timestamp) -> String {
    let mut out = String::from(
        r#"<h2>Tasks</h2><table id="tasks"><thead><tr><th scope="col">Task</th><th scope="col">State</th><th scope="col">Attempts</th><th scope="col">Duration</th><th scope="col">Details</th></tr></thead><tbody>"#,
    );
    for t in &v.tasks {
        out.push_str(&task_row(ns, &v.name, t, now, 0));
        for i in &t.instances {
            out.push_str(&task_row(ns, &v.name, i, now, 1));
        }
    }
    out.push_str("</tbody></table>");
    out
}

/// Every attempt as a bar from its start to its end (or now), on one time axis from the
/// run's start: an SVG, no script.
fn gantt(v: &RunView, now: Timestamp) -> String {
    let mut bars = Vec::new();
    for t in &v.tasks {
        let own = if t.instances.is_empty() {
            std::slice::from_ref(t)
        } else {
            &t.instances[..]
        };
        for task in own {
            for a in &task.attempts {
                let Some(start) = a.start_time.as_ref().map(|t| t.0) else {
                    continue;
                };
                let end = a.completion_time.as_ref().map_or(now, |t| t.0);
                bars.push((
                    format!("{} #{}", task.name, a.number),
                    start,
                    end,
                    format!("{:?}", a.phase),
                ));
            }
        }
    }
    if bars.is_empty() {
        return String::new();
    }
    let t0 = bars.iter().map(|b| b.1).min().unwrap_or(now);
    let t1 = bars.iter().map(|b| b.2).max().unwrap_or(now);
    let span = (t1.as_millisecond() - t0.as_millisecond()).max(1) as f64;
    let (label_w, width, row) = (200.0, 600.0, 20);
    let mut svg = String::new();
    for (i, (label, start, end, phase)) in bars.iter().enumerate() {
        let x = label_w + width * (start.as_millisecond() - t0.as_millisecond()) as f64 / span;
        let w = (width * (end.as_millisecond() - start.as_millisecond()) as f64 / span).max(2.0);
        let y = i * row;
        let secs = (end.as_second() - start.as_second()).max(0);
        let _ = write!(
            svg,
            r#"<g class="state-{c}"><text x="0" y="{ty}">{l}</text><rect x="{x:.1}" y="{y}" width="{w:.1}" height="14"><title>{l}: {p}, {d}</title></rect><text x="{tx:.1}" y="{ty}" class="detail">{p} {d}</text></g>"#,
            c = phase.to_ascii_lowercase(),
            l = esc(label),
            p = esc(phase),
            d = html::seconds(secs),
            ty = y + 12,
            // Always right of the bar, in the margin kept for it: over the bar it would be
            // drawn in the bar's own colour.
            tx = x + w + 4.0,
        );
    }
    format!(
        r#"<h2>Timeline</h2><svg id="gantt" class="gantt" width="{}" height="{}" role="img" aria-label="timeline of task attempts">{svg}</svg>"#,
        label_w + width + DETAIL_MARGIN,
        bars.len() * row + 4
    )
}

/// Room right of the time axis for a bar's "Succeeded 59m 59s" at 12 px.
const DETAIL_MARGIN: f64 = 160.0;

fn conditions_table(run: &crate::api::PipelineRun) -> String {
    let conditions = run
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut out = String::from(
        r#"<h2>Conditions</h2><table id="conditions"><thead><tr><th scope="col">Type</th><th scope="col">Status</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Since</th></tr></thead><tbody>"#,
    );
    for c in &conditions {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.type_),
            esc(&c.status),
            esc(&c.reason),
            esc(&c.message),
            html::time(Some(c.last_transition_time.0)),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The deadlines the run missed and its notifications, as the notifier recorded them;
/// nothing when there are none.
fn alerts_section(v: &RunView) -> String {
    let mut out = String::new();
    if !v.deadlines_missed.is_empty() {
        out.push_str(
            r#"<h2>Deadlines missed</h2><table id="deadlines"><thead><tr><th scope="col">Of</th><th scope="col">Message</th></tr></thead><tbody>"#,
        );
        for m in &v.deadlines_missed {
            let of = m
                .task
                .as_deref()
                .map_or("the run".to_string(), |t| format!("task {t}"));
            let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", esc(&of), esc(&m.message));
        }
        out.push_str("</tbody></table>");
    }
    if !v.notifications.is_empty() {
        out.push_str(
            r#"<h2>Notifications</h2><table id="notifications"><thead><tr><th scope="col">Notification</th><th scope="col">Event</th><th scope="col">About</th><th scope="col">State</th><th scope="col">Tries</th><th scope="col">Last try</th><th scope="col">Last error</th></tr></thead><tbody>"#,
        );
        for r in &v.notifications {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.notification),
                esc(r.event.as_str()),
                esc(crate::cli::runs::about(r)),
                esc(&format!("{:?}", r.state)),
                r.attempts,
                html::time(r.last_attempt_time.as_ref().map(|t| t.0)),
                esc(r.message.as_deref().unwrap_or_default()),
            );
        }
        out.push_str("</tbody></table>");
    }
    out
}

fn params_table(v: &RunView) -> String {
    let mut out = String::from(r#"<h2>Params</h2><table id="params"><tbody>"#);
    for (k, value) in &v.params {
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td><code>{}</code></td></tr>",
            esc(k),
            esc(&view::default_text(value))
        );
    }
    if v.params.is_empty() {
        out.push_str("<tr><td>none given (the pipeline's defaults apply)</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

fn events_table(events: &[k8s_openapi::api::core::v1::Event]) -> String {
    let mut out = String::from(
        r#"<h2>Events</h2><table id="events"><thead><tr><th scope="col">Time</th><th scope="col">Type</th><th scope="col">Reason</th><th scope="col">Message</th></tr></thead><tbody>"#,
    );
    for e in events {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html::time(data::event_time(e)),
            esc(e.type_.as_deref().unwrap_or_default()),
            esc(e.reason.as_deref().unwrap_or_default()),
            esc(e.message.as_deref().unwrap_or_default()),
        );
    }
    out.push_str("</tbody></table>");
    out
}

async fn graph_page(user: User, Path((ns, run)): Path<(String, String)>) -> PageResult {
    let snapshot = data::snapshot(&user.cluster(&ns), &run).await?;
    let run_view = crate::cli::runs::view(&snapshot);
    let spec = snapshot
        .spec
        .clone()
        .or(snapshot.run.spec.pipeline_spec.clone())
        .unwrap_or_default();
    let (nodes, edges) = graph_of(&ns, &run_view, &spec);
    let svg = super::graph::render_svg(&nodes, &edges);
    let body = format!(
        r#"<p><a href="{}">Back to the run</a></p><div id="graph" class="graph-box">{svg}</div>"#,
        run_href(&ns, &run)
    );
    let mut f = frame(&user, &run, &ns);
    f.main_attrs = live_attr(&ns, &run);
    f.scripts = &["/static/graph.js"];
    Ok(html::page(&f, &body).into_response())
}

/// The nodes and edges of a run's graph: its pipeline's tasks with their states, trigger
/// rules, `when` conditions and fan-out counts; `finally` tasks apart.
pub fn graph_of(
    ns: &str,
    v: &RunView,
    spec: &PipelineSpec,
) -> (Vec<super::graph::GraphNode>, Vec<super::graph::GraphEdge>) {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for (task, finally) in spec
        .tasks
        .iter()
        .map(|t| (t, false))
        .chain(spec.finally.iter().map(|t| (t, true)))
    {
        let state = api::find_task(v, &task.name, None);
        let mut details = Vec::new();
        if let Some(rule) = task.trigger_rule.filter(|r| *r != TriggerRule::AllSucceeded) {
            details.push(format!("trigger: {}", rule_text(rule)));
        }
        for w in &task.when {
            details.push(format!(
                "when: {} {:?} [{}]",
                w.input,
                w.operator,
                w.values.join(", ")
            ));
        }
        if let Some(t) = state.filter(|t| t.fans_out) {
            details.push(view::counts_text(&view::instance_counts(t)));
        }
        nodes.push(super::graph::GraphNode {
            id: task.name.clone(),
            label: task.name.clone(),
            state: state
                .map_or(TaskPhase::Pending.as_str(), |t| t.state())
                .to_string(),
            details,
            finally,
            href: state.map(|t| task_href(ns, &v.name, t)),
        });
        for up in &task.depends_on {
            edges.push(super::graph::GraphEdge {
                from: up.clone(),
                to: task.name.clone(),
            });
        }
    }
    (nodes, edges)
}

fn rule_text(rule: TriggerRule) -> &'static str {
    match rule {
        TriggerRule::AllSucceeded => "allSucceeded",
        TriggerRule::AllDone => "allDone",
        TriggerRule::AllFailed => "allFailed",
        TriggerRule::OneSucceeded => "oneSucceeded",
        TriggerRule::OneFailed => "oneFailed",
        TriggerRule::NoneFailed => "noneFailed",
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InstanceQuery {
    instance: Option<u32>,
}

async fn task_page(
    user: User,
    Path((ns, run, task)): Path<(String, String, String)>,
    Query(q): Query<InstanceQuery>,
) -> PageResult {
    let cluster = user.cluster(&ns);
    let snapshot = data::snapshot(&cluster, &run).await?;
    let run_view = crate::cli::runs::view(&snapshot);
    let Some(t) = api::find_task(&run_view, &task, q.instance) else {
        return Err(UiError::new(StatusCode::NOT_FOUND, api::no_task(&run_view, &task, q.instance)).into());
    };
    let task_run = t.task_run.as_ref().and_then(|n| {
        snapshot
            .task_runs
            .iter()
            .find(|tr| tr.metadata.name.as_ref() == Some(n))
    });
    let can_patch = user.can(&ns, "patch", PIPELINE_RUNS).await;
    let mut body = format!(
        r#"<p><a href="{}">Run {}</a> · state {} · {}</p>"#,
        run_href(&ns, &run),
        esc(&run),
        badge(t.state(), Some(&format!("task-state-{}", t.name))),
        action_link(
            "action-rerun-task",
            &format!("{}/rerun?task={}", run_href(&ns, &run), enc(&t.task)),
            "Rerun this task…",
            can_patch
        )
    );
    if let Some(m) = &t.message {
        let _ = write!(body, r#"<p class="problem">{}</p>"#, esc(m));
    }
    body.push_str(&attempts_table(t));
    if let Some(tr) = task_run {
        body.push_str(&outputs_table(tr));
        body.push_str(&spec_section(tr));
    }
    body.push_str(&logs_section(&cluster, &ns, &run, t).await);
    let mut f = frame(&user, &t.name, &ns);
    f.main_attrs = live_attr(&ns, &run);
    Ok(html::page(&f, &body).into_response())
}

fn attempts_table(t: &TaskView) -> String {
    let mut out = String::from(
        r#"<h2>Attempts</h2><table id="attempts"><thead><tr><th scope="col">#</th><th scope="col">State</th><th scope="col">Start</th><th scope="col">End</th><th scope="col">Exit code</th><th scope="col">Reason</th><th scope="col">Message</th><th scope="col">Pod</th></tr></thead><tbody>"#,
    );
    for a in &t.attempts {
        let _ = write!(
            out,
            r#"<tr data-testid="attempt-{n}"><td>{n}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            badge(&format!("{:?}", a.phase), None),
            html::time(a.start_time.as_ref().map(|t| t.0)),
            html::time(a.completion_time.as_ref().map(|t| t.0)),
            a.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            esc(a.reason.map(|r| r.as_str()).unwrap_or_default()),
            esc(a.message.as_deref().unwrap_or_default()),
            match (a.pod_name.as_deref(), a.job_name.is_empty()) {
                (_, true) => "no pod (sensor)".to_string(),
                (pod, false) => esc(pod.unwrap_or_default()),
            },
            n = a.number,
        );
    }
    if t.attempts.is_empty() {
        out.push_str(r#"<tr><td colspan="8">No attempt yet.</td></tr>"#);
    }
    out.push_str("</tbody></table>");
    out
}

fn outputs_table(tr: &crate::api::TaskRun) -> String {
    let outputs = tr.status.as_ref().map(|s| s.outputs.clone()).unwrap_or_default();
    if outputs.is_empty() {
        return String::new();
    }
    let mut out = String::from(r#"<h2>Outputs</h2><table id="outputs"><tbody>"#);
    for (k, v) in &outputs {
        // A value moved to the artifact store shows as what it is, not as its reference.
        let moved = k
            .strip_prefix(crate::engine::outputs::LARGE_PREFIX)
            .zip(serde_json::from_str::<crate::api::ArtifactRef>(v).ok());
        let _ = match moved {
            Some((name, r)) => write!(
                out,
                r#"<tr><th scope="row">{}</th><td>{} bytes, in the artifact store as <code>{}</code></td></tr>"#,
                esc(name),
                r.size,
                esc(&r.key)
            ),
            None => write!(
                out,
                r#"<tr><th scope="row">{}</th><td><code>{}</code></td></tr>"#,
                esc(k),
                esc(v)
            ),
        };
    }
    out.push_str("</tbody></table>");
    out
}

/// The resolved spec: image, command, args, env. A value from a Secret is shown as the
/// reference it is, never read.
fn spec_section(tr: &crate::api::TaskRun) -> String {
    let s = &tr.spec;
    let mut out = format!(
        r#"<h2>Resolved spec</h2><dl id="spec" class="facts"><dt>Image</dt><dd><code>{}</code></dd><dt>Command</dt><dd><code>{}</code></dd><dt>Args</dt><dd><code>{}</code></dd></dl>"#,
        esc(&s.image),
        esc(&s.command.join(" ")),
        esc(&s.args.join(" ")),
    );
    out.push_str(r#"<table id="env"><thead><tr><th scope="col">Env</th><th scope="col">Value</th></tr></thead><tbody>"#);
    for e in &s.env {
        let _ = write!(
            out,
            r#"<tr><th scope="row">{}</th><td>{}</td></tr>"#,
            esc(&e.name),
            env_value(e)
        );
    }
    out.push_str("</tbody></table>");
    out
}

pub fn env_value(e: &k8s_openapi::api::core::v1::EnvVar) -> String {
    if let Some(v) = &e.value {
        return format!("<code>{}</code>", esc(v));
    }
    let Some(from) = &e.value_from else {
        return String::new();
    };
    if let Some(s) = &from.secret_key_ref {
        return format!(
            "from Secret <code>{}</code>, key <code>{}</code> (value not shown)",
            esc(&s.name),
            esc(&s.key)
        );
    }
    if let Some(c) = &from.config_map_key_ref {
        return format!(
            "from ConfigMap <code>{}</code>, key <code>{}</code>",
            esc(&c.name),
            esc(&c.key)
        );
    }
    if let Some(f) = &from.field_ref {
        return format!("from field <code>{}</code>", esc(&f.field_path));
    }
    if let Some(r) = &from.resource_field_ref {
        return format!("from resource <code>{}</code>", esc(&r.resource));
    }
    String::new()
}

async fn logs_section(cluster: &crate::cli::cluster::Cluster, ns: &str, run: &str, t: &TaskView) -> String {
    let mut out = String::from("<h2>Logs</h2>");
    if t.attempts.is_empty() {
        out.push_str("<p>No attempt has started yet.</p>");
    }
    if t.uses_no_pod() {
        out.push_str(r#"<p class="note" data-testid="sensor-note">A sensor: the operator evaluates it itself, with no pod and no log. Each attempt's message says what it waits for.</p>"#);
        return out;
    }
    for a in t.attempts.iter().rev() {
        let cancelled = a.reason == Some(crate::api::FailureReason::Cancelled);
        let mut url = format!(
            "/api/v1/namespaces/{}/pipelineruns/{}/tasks/{}/logs?attempt={}",
            enc(ns),
            enc(run),
            enc(&t.task),
            a.number
        );
        if let Some(k) = t.instance {
            let _ = write!(url, "&instance={k}");
        }
        let (log, note) = match data::attempt_log(cluster, a, cancelled).await {
            Ok(l) => (l.log.unwrap_or_default(), l.note),
            Err(e) => (String::new(), Some(format!("{e:#}"))),
        };
        let follow = a.completion_time.is_none();
        let _ = write!(
            out,
            r#"<section id="log-{n}"><h3>Attempt {n}</h3><p class="note" data-testid="log-note-{n}">{note}</p><pre class="log" tabindex="0" data-testid="log-{n}" data-log-url="{url}" data-follow="{follow}">{log}</pre></section>"#,
            n = a.number,
            note = esc(note.as_deref().unwrap_or_default()),
            url = esc(&url),
            log = esc(&log),
        );
    }
    out
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConfirmQuery {
    task: Option<String>,
}

fn confirm_form(action: &str, csrf: &str, what: &str, button: &str, back: &str, extra: &str) -> String {
    format!(
        r#"<form method="post" action="{a}" id="confirm-form"><p>{what}</p>{extra}{c}<button type="submit" id="confirm">{b}</button> <a href="{back}" id="cancel-confirm">Back</a></form>"#,
        a = esc(action),
        c = html::csrf_field(csrf),
        b = esc(button),
        back = esc(back),
    )
}

/// After an action: back to where it shows, with its message.
fn done(href: &str) -> Response {
    Redirect::to(href).into_response()
}

async fn cancel_page(user: User, Path((ns, run)): Path<(String, String)>) -> PageResult {
    let href = run_href(&ns, &run);
    let body = confirm_form(
        &format!("{href}/cancel"),
        &user.csrf,
        &format!(
            "Cancel run {run}? Running tasks are stopped and pending ones will not start; finally tasks still run."
        ),
        "Cancel the run",
        &href,
        "",
    );
    Ok(html::page(&frame(&user, &format!("Cancel {run}"), &ns), &body).into_response())
}

async fn cancel_submit(user: User, Path((ns, run)): Path<(String, String)>) -> PageResult {
    api::cancel(&user, &ns, &run).await?;
    Ok(done(&run_href(&ns, &run)))
}

/// Approve and Reject buttons for each approval task that waits for a decision, enabled
/// when Kubernetes lets the user create Approvals.
async fn approval_links(user: &User, ns: &str, run: &str, task_runs: &[crate::api::TaskRun]) -> String {
    let waiting: Vec<&str> = task_runs
        .iter()
        .filter(|tr| tr.spec.approval.is_some())
        .filter(|tr| {
            let status = tr.status.as_ref();
            status.and_then(|s| s.phase) == Some(TaskPhase::Running)
                && status.is_some_and(|s| s.approval.is_none())
        })
        .map(|tr| tr.spec.task_name.as_str())
        .collect();
    if waiting.is_empty() {
        return String::new();
    }
    let allowed = user.can(ns, "create", crate::cli::approve::APPROVALS).await;
    let mut out = String::new();
    for task in waiting {
        for (verb, label) in [("approve", "Approve"), ("reject", "Reject")] {
            out.push(' ');
            out.push_str(&action_link(
                &format!("action-{verb}-{task}"),
                &format!("{}/{verb}/{}", run_href(ns, run), enc(task)),
                &format!("{label} {task}…"),
                allowed,
            ));
        }
    }
    out
}

async fn approve_page(user: User, Path((ns, run, task)): Path<(String, String, String)>) -> PageResult {
    decision_page(&user, &ns, &run, &task, crate::api::Decision::Approve)
}

async fn reject_page(user: User, Path((ns, run, task)): Path<(String, String, String)>) -> PageResult {
    decision_page(&user, &ns, &run, &task, crate::api::Decision::Reject)
}

fn decision_page(user: &User, ns: &str, run: &str, task: &str, decision: crate::api::Decision) -> PageResult {
    let href = run_href(ns, run);
    let (verb, what) = match decision {
        crate::api::Decision::Approve => ("approve", "the run goes on"),
        crate::api::Decision::Reject => ("reject", "the task fails with reason Rejected"),
    };
    let body = confirm_form(
        &format!("{href}/{verb}/{}", enc(task)),
        &user.csrf,
        &format!(
            "{} task {task} of run {run} as yourself? Then {what}.",
            capitalized(verb)
        ),
        &format!("{} {task}", capitalized(verb)),
        &href,
        r#"<p><label>Comment <input type="text" name="comment" id="approval-comment" maxlength="1024"></label></p>"#,
    );
    Ok(html::page(&frame(user, &format!("{} {task}", capitalized(verb)), ns), &body).into_response())
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

async fn approve_submit(
    user: User,
    Path((ns, run, task)): Path<(String, String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    decision_submit(&user, &ns, &run, &task, crate::api::Decision::Approve, &fields).await
}

async fn reject_submit(
    user: User,
    Path((ns, run, task)): Path<(String, String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    decision_submit(&user, &ns, &run, &task, crate::api::Decision::Reject, &fields).await
}

/// Creates the Approval as the person using the UI (their credentials: the webhook records
/// them as the decider).
async fn decision_submit(
    user: &User,
    ns: &str,
    run: &str,
    task: &str,
    decision: crate::api::Decision,
    fields: &[(String, String)],
) -> PageResult {
    let comment = fields
        .iter()
        .find(|(k, _)| k == "comment")
        .map(|(_, v)| v.clone());
    crate::cli::approve::decide(&user.cluster(ns), run, task, decision, comment).await?;
    Ok(done(&run_href(ns, run)))
}

async fn rerun_page(
    user: User,
    Path((ns, run)): Path<(String, String)>,
    Query(q): Query<ConfirmQuery>,
) -> PageResult {
    let snapshot = data::snapshot(&user.cluster(&ns), &run).await?;
    let run_view = crate::cli::runs::view(&snapshot);
    let mut boxes = String::from(
        "<fieldset><legend>Tasks to run again (none ticked: every task that failed, was upstream-failed or was cancelled)</legend>",
    );
    for t in run_view.tasks.iter().filter(|t| !t.finally) {
        let checked = if q.task.as_deref() == Some(t.name.as_str()) {
            " checked"
        } else {
            ""
        };
        let _ = write!(
            boxes,
            r#"<label><input type="checkbox" name="task" value="{n}" id="rerun-task-{n}"{checked}> {n} {}</label><br>"#,
            badge(t.state(), None),
            n = esc(&t.name),
        );
    }
    boxes.push_str(r#"</fieldset><label><input type="checkbox" name="downstream" value="true" id="rerun-downstream"> and every task downstream of them</label><br><label><input type="checkbox" name="failedInstancesOnly" value="true" id="rerun-failed-only"> of fanned-out tasks, only the instances that did not succeed</label><br>"#);
    let href = run_href(&ns, &run);
    let mut body = confirm_form(
        &format!("{href}/rerun"),
        &user.csrf,
        &format!(
            "Run part of {run} again (Airflow's clear): the operator resets the chosen tasks and runs them."
        ),
        "Rerun",
        &href,
        &boxes,
    );
    body = body
        .replace(r#"id="confirm-form""#, r#"id="rerun-form""#)
        .replace(r#"id="confirm""#, r#"id="rerun-submit""#);
    Ok(html::page(&frame(&user, &format!("Rerun {run}"), &ns), &body).into_response())
}

async fn rerun_submit(
    user: User,
    Path((ns, run)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let what = Rerun {
        tasks: fields
            .iter()
            .filter(|(k, _)| k == "task")
            .map(|(_, v)| v.clone())
            .collect(),
        downstream: fields.iter().any(|(k, v)| k == "downstream" && v == "true"),
        failed_instances_only: fields
            .iter()
            .any(|(k, v)| k == "failedInstancesOnly" && v == "true"),
    };
    api::rerun(&user, &ns, &run, &what).await?;
    Ok(done(&run_href(&ns, &run)))
}

async fn suspend_page(user: User, Path((ns, name)): Path<(String, String)>) -> PageResult {
    confirm_schedule(&user, &ns, &name, true)
}

async fn resume_page(user: User, Path((ns, name)): Path<(String, String)>) -> PageResult {
    confirm_schedule(&user, &ns, &name, false)
}

fn confirm_schedule(user: &User, ns: &str, name: &str, suspend: bool) -> PageResult {
    let href = pipeline_href(ns, name);
    let (verb, what) = if suspend {
        (
            "suspend",
            format!(
                "Suspend the schedule of {name}? No new scheduled runs start; runs already created go on."
            ),
        )
    } else {
        (
            "resume",
            format!("Resume the schedule of {name}? Scheduled runs start again."),
        )
    };
    let body = confirm_form(
        &format!("{href}/{verb}"),
        &user.csrf,
        &format!(
            "{what} If a GitOps tool manages this Pipeline, make the change in Git too, or its next sync sets it back."
        ),
        if suspend { "Suspend" } else { "Resume" },
        &href,
        "",
    );
    Ok(html::page(&frame(user, &format!("{verb} {name}"), ns), &body).into_response())
}

async fn suspend_submit(user: User, Path((ns, name)): Path<(String, String)>) -> PageResult {
    api::suspend(&user, &ns, &name, true).await?;
    Ok(done(&pipeline_href(&ns, &name)))
}

async fn resume_submit(user: User, Path((ns, name)): Path<(String, String)>) -> PageResult {
    api::suspend(&user, &ns, &name, false).await?;
    Ok(done(&pipeline_href(&ns, &name)))
}

async fn trigger_page(user: User, Path((ns, name)): Path<(String, String)>) -> PageResult {
    let pipeline = data::pipeline(&user.cluster(&ns), &name).await?;
    let summary = view::summarize_pipeline(&pipeline, &[], 0, Timestamp::now());
    let values = summary
        .params
        .iter()
        .map(|p| (p.name.clone(), p.default.clone().unwrap_or_default()))
        .collect();
    Ok(trigger_form(&user, &ns, &summary, &values, "", None))
}

fn trigger_form(
    user: &User,
    ns: &str,
    p: &view::PipelineSummary,
    values: &std::collections::BTreeMap<String, String>,
    run_name: &str,
    error: Option<&UiError>,
) -> Response {
    let status = error.map_or(StatusCode::OK, |e| e.status);
    let mut body = String::new();
    if let Some(e) = error {
        let _ = write!(
            body,
            r#"<div class="error" role="alert" id="error"><p data-testid="error-message">{}</p>{}</div>"#,
            esc(&e.error),
            html::list(&e.problems, "problems")
        );
    }
    let _ = write!(
        body,
        r#"<form method="post" action="{}/trigger" id="trigger-form">{}"#,
        pipeline_href(ns, &p.name),
        html::csrf_field(&user.csrf)
    );
    for param in &p.params {
        let hint = match (param.type_.as_str(), param.required) {
            ("List", true) => "list, required: a,b,c or JSON",
            ("List", false) => "list: a,b,c or JSON",
            (_, true) => "required",
            _ => "",
        };
        let _ = write!(
            body,
            r#"<p><label for="param-{n}">{n}</label> <input id="param-{n}" name="param.{n}" value="{v}"{req}> <small>{hint}{desc}</small></p>"#,
            n = esc(&param.name),
            v = esc(values.get(&param.name).map(String::as_str).unwrap_or_default()),
            req = if param.required { " required" } else { "" },
            desc = param
                .description
                .as_deref()
                .map(|d| format!(" {}", esc(d)))
                .unwrap_or_default(),
        );
    }
    if p.params.is_empty() {
        body.push_str("<p>This pipeline declares no params.</p>");
    }
    let _ = write!(
        body,
        r#"<p><label for="trigger-name">Run name (optional)</label> <input id="trigger-name" name="name" value="{}"></p><p>A run of {} starts now, with these params. <button type="submit" id="trigger-submit">Trigger run</button> <a href="{}">Back</a></p></form>"#,
        esc(run_name),
        esc(&p.name),
        pipeline_href(ns, &p.name)
    );
    (
        status,
        html::page(&frame(user, &format!("Trigger {}", p.name), ns), &body),
    )
        .into_response()
}

async fn trigger_submit(
    user: User,
    Path((ns, name)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let params = view::form_params(&fields);
    let run_name = fields
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.trim().to_string());
    let request = api::TriggerRequest {
        name: run_name.clone(),
        params: params.clone(),
    };
    match api::trigger(&user, &ns, &name, request).await {
        Ok(run) => Ok(done(&run_href(&ns, &run))),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY || e.status == StatusCode::CONFLICT => {
            // Shown again with what was typed, and every problem.
            let pipeline = data::pipeline(&user.cluster(&ns), &name).await?;
            let summary = view::summarize_pipeline(&pipeline, &[], 0, Timestamp::now());
            let values = fields
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("param.")?.to_string(), v.clone())))
                .collect();
            let run_name = run_name.unwrap_or_default();
            Ok(trigger_form(&user, &ns, &summary, &values, &run_name, Some(&e)))
        }
        Err(e) => Err(e.into()),
    }
}

async fn backfill_page(user: User, Path((ns, name)): Path<(String, String)>) -> PageResult {
    let href = pipeline_href(&ns, &name);
    let fields = r#"<p><label for="backfill-from">First logical date</label> <input id="backfill-from" name="from" placeholder="2026-03-01" required> <label for="backfill-to">Last (included)</label> <input id="backfill-to" name="to" placeholder="2026-03-07" required></p><p><small>A date alone is midnight (from) or the whole day (to) in the schedule's time zone; RFC 3339 times work too.</small></p>"#;
    let body = confirm_form(
        &format!("{href}/backfill"),
        &user.csrf,
        &format!("Create a run of {name} for every schedule interval in the range (intervals that have a run already are skipped)."),
        "Backfill",
        &href,
        fields,
    )
    .replace(r#"id="confirm""#, r#"id="backfill-submit""#);
    Ok(html::page(&frame(&user, &format!("Backfill {name}"), &ns), &body).into_response())
}

async fn backfill_submit(
    user: User,
    Path((ns, name)): Path<(String, String)>,
    Form(request): Form<api::BackfillRequest>,
) -> PageResult {
    let runs = api::backfill(&user, &ns, &name, &request).await?;
    let mut body = format!(
        r#"<p id="backfill-result">{} interval(s): {} run(s) created, {} already existed.</p><ul>"#,
        runs.len(),
        runs.iter().filter(|r| r.created).count(),
        runs.iter().filter(|r| !r.created).count()
    );
    for r in &runs {
        let _ = write!(
            body,
            r#"<li><a href="{}">{}</a> {}</li>"#,
            run_href(&ns, &r.name),
            esc(&r.name),
            if r.created { "created" } else { "existed" }
        );
    }
    let _ = write!(
        body,
        r#"</ul><p><a href="{}">Back to {}</a></p>"#,
        pipeline_href(&ns, &name),
        esc(&name)
    );
    Ok(html::page(&frame(&user, &format!("Backfill {name}"), &ns), &body).into_response())
}

async fn login_page(State(ui): State<Ui>) -> Response {
    if ui.mode() != AuthMode::Token {
        return Redirect::to("/").into_response();
    }
    login_form(None, StatusCode::OK)
}

fn login_form(error: Option<&UiError>, status: StatusCode) -> Response {
    let error = error
        .map(|e| {
            format!(
                r#"<div class="error" role="alert" id="error"><p data-testid="error-message">{}</p></div>"#,
                esc(&e.error)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"{error}<form method="post" action="/login" id="login-form"><p><label for="login-token">Your Kubernetes bearer token</label><br><textarea id="login-token" name="token" rows="4" cols="80" required autocomplete="off"></textarea></p><p><small>Every request is then made with this token: Kubernetes decides what you may see and do. It is kept in a cookie that scripts cannot read (HttpOnly, SameSite=Strict) until you log out.</small></p><p><button type="submit" id="login-submit">Log in</button></p></form>"#
    );
    let f = Frame {
        title: "Log in",
        namespace: "",
        csrf: "",
        token_mode: false,
        main_attrs: String::new(),
        scripts: &[],
    };
    (status, html::page(&f, &body)).into_response()
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(ui): State<Ui>, headers: HeaderMap, Form(form): Form<Login>) -> Response {
    if ui.mode() != AuthMode::Token {
        return Redirect::to("/").into_response();
    }
    let token = form.token.trim();
    if !auth::valid_token(token) {
        return login_form(
            Some(&UiError::bad_request(
                "that is not a bearer token (it has characters a token never has)",
            )),
            StatusCode::BAD_REQUEST,
        );
    }
    if let Err(e) = auth::token_works(&ui, token).await {
        return login_form(Some(&e), e.status);
    }
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p == "https");
    (
        [(header::SET_COOKIE, auth::login_cookie(token, secure))],
        Redirect::to("/"),
    )
        .into_response()
}

async fn logout() -> Response {
    (
        [(header::SET_COOKIE, auth::logout_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_nodes_carry_rules_conditions_fan_out_and_finally() {
        let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
            "tasks": [
                {"name": "extract", "image": "x"},
                {"name": "shard", "image": "x", "dependsOn": ["extract"], "forEach": {"items": ["a", "b"]}},
                {"name": "load", "image": "x", "dependsOn": ["shard"], "triggerRule": "AllDone",
                 "when": [{"input": "{{ params.env }}", "operator": "In", "values": ["prod", "staging"]}]},
            ],
            "finally": [{"name": "report", "image": "x"}],
        }))
        .unwrap();
        let mut shard = view_task("shard", TaskPhase::Running);
        shard.fans_out = true;
        shard.instances = vec![
            view_task("shard[0]", TaskPhase::Succeeded),
            view_task("shard[1]", TaskPhase::Failed),
        ];
        shard.instances[1].instance = Some(1);
        let run = run_view(vec![view_task("extract", TaskPhase::Succeeded), shard]);
        let (nodes, edges) = graph_of("n", &run, &spec);
        let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["extract", "shard", "load", "report"]);
        assert_eq!(nodes[0].state, "Succeeded");
        assert_eq!(nodes[0].href.as_deref(), Some("/ns/n/runs/r1/tasks/extract"));
        assert_eq!(nodes[1].details, ["1/2 succeeded, 1 failed"]);
        assert_eq!(nodes[2].state, "Pending", "a task without a TaskRun yet");
        assert_eq!(
            nodes[2].details,
            ["trigger: allDone", "when: {{ params.env }} In [prod, staging]"]
        );
        assert!(nodes[2].href.is_none());
        assert!(nodes[3].finally && !nodes[2].finally);
        let pairs: Vec<(&str, &str)> = edges.iter().map(|e| (e.from.as_str(), e.to.as_str())).collect();
        assert_eq!(pairs, [("extract", "shard"), ("shard", "load")]);
    }

    #[test]
    fn gantt_details_stay_right_of_their_bars() {
        // The longest bar ends at the end of the axis: its words must not be drawn over it
        // (in its own colour) but in the margin after it.
        let attempt = |from: i64, to: i64, phase: &str| -> crate::api::Attempt {
            serde_json::from_value(serde_json::json!({
                "number": 1, "jobName": "j", "phase": phase,
                "startTime": Timestamp::from_second(from).unwrap().to_string(),
                "completionTime": Timestamp::from_second(to).unwrap().to_string(),
            }))
            .unwrap()
        };
        let mut long = view_task("long", TaskPhase::Failed);
        long.attempts = vec![attempt(0, 100, "Failed")];
        let mut short = view_task("short", TaskPhase::Succeeded);
        short.attempts = vec![attempt(0, 1, "Succeeded")];
        let svg = gantt(&run_view(vec![long, short]), Timestamp::from_second(200).unwrap());
        let number = |s: &str, attr: &str| -> f64 {
            let at = s.find(&format!(" {attr}=\"")).unwrap() + attr.len() + 3;
            s[at..].split('"').next().unwrap().parse().unwrap()
        };
        let width = number(&svg, "width");
        for bar in svg.split("<g ").skip(1) {
            let rect = &bar[bar.find("<rect").unwrap()..];
            let end = number(rect, "x") + number(rect, "width");
            let detail = &bar[bar.find(r#"class="detail""#).unwrap() - 30..];
            let tx = number(detail, "x");
            assert!(tx > end, "detail at {tx} over its bar ending at {end}: {bar}");
            assert!(tx + 110.0 <= width, "detail at {tx} cut off at {width}");
        }
    }

    #[test]
    fn secret_env_values_are_references_never_values() {
        let env: k8s_openapi::api::core::v1::EnvVar = serde_json::from_value(serde_json::json!({
            "name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}
        }))
        .unwrap();
        assert_eq!(
            env_value(&env),
            "from Secret <code>db</code>, key <code>password</code> (value not shown)"
        );
        let plain: k8s_openapi::api::core::v1::EnvVar =
            serde_json::from_value(serde_json::json!({"name": "A", "value": "<b>"})).unwrap();
        assert_eq!(env_value(&plain), "<code>&lt;b&gt;</code>");
    }

    #[test]
    fn the_run_page_lists_missed_deadlines_and_notifications_escaped() {
        use crate::api::{DeliveryState, NotificationRecord, NotifyEvent};
        let mut v = run_view(vec![view_task("load", TaskPhase::Running)]);
        assert_eq!(alerts_section(&v), "", "nothing to show, no heading");
        v.deadlines_missed = vec![crate::cli::runs::MissedView {
            task: Some("load".into()),
            message: "task \"load\" was not done by <then>".into(),
        }];
        v.notifications = vec![NotificationRecord {
            key: "oncall/Failed/0".into(),
            notification: "oncall".into(),
            event: NotifyEvent::Failed,
            state: DeliveryState::Failed,
            attempts: 6,
            last_attempt_time: None,
            next_attempt_time: None,
            message: Some("http://h answered 404 Not Found: <html>".into()),
        }];
        let html = alerts_section(&v);
        assert!(html.contains(r#"<table id="deadlines">"#), "{html}");
        assert!(html.contains("<td>task load</td>"), "{html}");
        assert!(
            html.contains("&lt;then&gt;") && !html.contains("<then>"),
            "{html}"
        );
        assert!(
            html.contains("<td>oncall</td><td>Failed</td><td>0</td><td>Failed</td><td>6</td>"),
            "{html}"
        );
        assert!(html.contains("&lt;html&gt;"), "{html}");
    }

    fn run_view(tasks: Vec<TaskView>) -> RunView {
        RunView::with_tasks("r1", "Running", tasks)
    }

    fn view_task(name: &str, phase: TaskPhase) -> TaskView {
        TaskView {
            task_run: Some(format!("r1-{name}")),
            ..TaskView::without_task_run(name, phase)
        }
    }
}
