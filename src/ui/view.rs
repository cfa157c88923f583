//! What the pages and the JSON API show, shaped from the objects read: pure functions, no
//! I/O and no clock (the time is a parameter), so they are tested without a cluster.

use crate::api::{
    Pipeline, PipelineRun, Schedule, TaskCounts, TaskPhase, condition, condition_types, labels,
};
use crate::cli::runs::{self, RunView, TaskView};
use crate::engine::schedule::CronSchedule;
use jiff::Timestamp;
use kube::ResourceExt as _;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A Pipeline as the pipelines page and `GET .../pipelines` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSummary {
    pub namespace: String,
    pub name: String,
    /// The `Ready` condition: `None` before the operator looked at it.
    pub ready: Option<bool>,
    /// Why it is not ready: the validation problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleView>,
    pub active_runs: Vec<String>,
    pub queued_runs: Vec<String>,
    /// The most recent runs, newest first.
    pub last_runs: Vec<RunSummary>,
    pub params: Vec<ParamView>,
}

/// A schedule in words, with its next run time in the schedule's time zone.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    pub cron: String,
    pub timezone: String,
    pub words: String,
    pub suspended: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<Timestamp>,
    /// The next run time in the schedule's time zone: `2026-03-01 02:00 CET`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_local: Option<String>,
    /// Why the schedule cannot run (a bad cron or time zone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A declared parameter, with its default as the trigger form shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParamView {
    pub name: String,
    /// `String` or `List`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub required: bool,
}

/// A run in one line.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Pending, Queued, Running, Succeeded, Failed, Cancelled, or New.
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logical_date: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<TaskCounts>,
}

pub fn summarize_run(run: &PipelineRun, now: Timestamp) -> RunSummary {
    let status = run.status.as_ref();
    let start = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    let end = status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0);
    RunSummary {
        name: run.name_any(),
        pipeline: run.spec.pipeline_ref.as_ref().map(|r| r.name.clone()),
        phase: runs::phase_text(run),
        trigger: run.labels().get(labels::TRIGGER).cloned(),
        logical_date: run.spec.logical_date.as_ref().map(|t| t.0),
        start_time: start,
        completion_time: end,
        duration_seconds: start.map(|s| (end.unwrap_or(now).as_second() - s.as_second()).max(0)),
        progress: status.and_then(|s| s.progress.clone()),
        counts: status.and_then(|s| s.counts.clone()),
    }
}

/// The pipeline a run belongs to: its `pipelineRef`.
pub fn pipeline_of(run: &PipelineRun) -> Option<&str> {
    run.spec.pipeline_ref.as_ref().map(|r| r.name.as_str())
}

/// Runs newest first: by logical date, else creation time, then name.
pub fn newest_first(runs: &mut [PipelineRun]) {
    let key = |r: &PipelineRun| {
        let when = r.spec.logical_date.as_ref().map(|t| t.0).or(r
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0));
        (when, r.name_any())
    };
    runs.sort_by_key(|r| std::cmp::Reverse(key(r)));
}

/// `runs` are this pipeline's, newest first; `keep` of them go in the strip.
pub fn summarize_pipeline(
    pipeline: &Pipeline,
    runs: &[&PipelineRun],
    keep: usize,
    now: Timestamp,
) -> PipelineSummary {
    let status = pipeline.status.clone().unwrap_or_default();
    let ready = condition::find(&status.conditions, condition_types::READY);
    let problem = ready
        .filter(|c| c.status != "True")
        .map(|c| c.message.clone())
        .filter(|m| !m.is_empty());
    PipelineSummary {
        namespace: pipeline.namespace().unwrap_or_default(),
        name: pipeline.name_any(),
        ready: ready.map(|c| c.status == "True"),
        problem,
        schedule: pipeline.spec.schedule.as_ref().map(|s| {
            let next = status.next_schedule_time.as_ref().map(|t| t.0);
            schedule_view(s, next, now)
        }),
        active_runs: status.active_runs.clone(),
        queued_runs: status.queued_runs.clone(),
        last_runs: runs.iter().take(keep).map(|r| summarize_run(r, now)).collect(),
        params: pipeline
            .spec
            .params
            .iter()
            .map(|p| ParamView {
                name: p.name.clone(),
                type_: format!("{:?}", p.type_),
                default: p.default.as_ref().map(default_text),
                description: p.description.clone(),
                required: p.default.is_none(),
            })
            .collect(),
    }
}

/// The schedule in words and its next run time in its own time zone: the operator's
/// `status.nextScheduleTime` when it has one, else the schedule's next time after `now`.
pub fn schedule_view(schedule: &Schedule, next: Option<Timestamp>, now: Timestamp) -> ScheduleView {
    let timezone = schedule.timezone.clone().unwrap_or_else(|| "UTC".to_string());
    let mut view = ScheduleView {
        cron: schedule.cron.clone(),
        timezone: timezone.clone(),
        words: super::words::cron_in_words(&schedule.cron),
        suspended: schedule.suspend,
        next_run_time: None,
        next_run_local: None,
        problem: None,
    };
    match CronSchedule::parse(&schedule.cron, schedule.timezone.as_deref()) {
        Ok(cron) => {
            if !schedule.suspend {
                let next = next.filter(|t| *t > now).or_else(|| cron.next_after(now));
                view.next_run_time = next;
                view.next_run_local = next.map(|t| {
                    t.to_zoned(cron.timezone().clone())
                        .strftime("%Y-%m-%d %H:%M %Z")
                        .to_string()
                });
            }
        }
        Err(problems) => {
            let text: Vec<String> = problems
                .iter()
                .map(|(f, m)| format!("schedule.{f}: {m}"))
                .collect();
            view.problem = Some(text.join("; "));
        }
    }
    view
}

/// A parameter's default as a form field holds it: a string as it is, a list as `a,b`
/// (as JSON when an item holds a comma).
pub fn default_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let texts: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            match texts {
                Some(t) if t.iter().all(|s| !s.contains(',')) => t.join(","),
                _ => value.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// The params of a submitted trigger form: fields `param.<name>`. An empty field is not
/// given (the default applies, or the check says the parameter is required).
pub fn form_params(fields: &[(String, String)]) -> BTreeMap<String, String> {
    fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("param.")?, v)))
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// How the instances of a fanned-out task stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCounts {
    pub total: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub running: u32,
    pub pending: u32,
    /// Skipped, upstream-failed or cancelled.
    pub other: u32,
}

pub fn instance_counts(task: &TaskView) -> InstanceCounts {
    let mut c = InstanceCounts {
        total: task.instances.len() as u32,
        ..Default::default()
    };
    for i in &task.instances {
        match i.phase {
            TaskPhase::Succeeded => c.succeeded += 1,
            TaskPhase::Failed => c.failed += 1,
            TaskPhase::Running | TaskPhase::Retrying => c.running += 1,
            TaskPhase::Pending => c.pending += 1,
            TaskPhase::Skipped | TaskPhase::UpstreamFailed | TaskPhase::Cancelled => c.other += 1,
        }
    }
    c
}

/// `3/5 succeeded, 1 failed, 1 running`.
pub fn counts_text(c: &InstanceCounts) -> String {
    let mut text = format!("{}/{} succeeded", c.succeeded, c.total);
    for (n, word) in [
        (c.failed, "failed"),
        (c.running, "running"),
        (c.pending, "pending"),
        (c.other, "not run"),
    ] {
        if n > 0 {
            text.push_str(&format!(", {n} {word}"));
        }
    }
    text
}

/// One cell of the grid: a task's state in one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GridCell {
    pub phase: TaskPhase,
    /// For a fanned-out task: how its instances stand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstanceCounts>,
    /// Attempts made (the last instance's for a fan-out).
    pub attempts: usize,
}

/// Recent runs (columns) against tasks (rows).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Grid {
    pub runs: Vec<RunSummary>,
    pub rows: Vec<GridRow>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GridRow {
    pub task: String,
    pub finally: bool,
    /// One per run, in the order of `runs`; `None` where the run has no such task.
    pub cells: Vec<Option<GridCell>>,
}

/// The grid of `views` (newest first): rows in the DAG order of the newest run that has
/// each task.
pub fn grid(runs: &[(RunSummary, RunView)]) -> Grid {
    let mut order: Vec<(String, bool)> = Vec::new();
    for (_, view) in runs {
        for t in &view.tasks {
            if !order.iter().any(|(n, _)| n == &t.name) {
                order.push((t.name.clone(), t.finally));
            }
        }
    }
    // finally tasks last, keeping the order found otherwise.
    order.sort_by_key(|(_, finally)| *finally);
    let rows = order
        .into_iter()
        .map(|(task, finally)| GridRow {
            cells: runs
                .iter()
                .map(|(_, view)| view.tasks.iter().find(|t| t.name == task).map(cell))
                .collect(),
            task,
            finally,
        })
        .collect();
    Grid {
        runs: runs.iter().map(|(s, _)| s.clone()).collect(),
        rows,
    }
}

fn cell(task: &TaskView) -> GridCell {
    GridCell {
        phase: task.phase,
        instances: task.fans_out.then(|| instance_counts(task)),
        attempts: task.attempts.len(),
    }
}

/// The run's state as the live updates send it: the run's phase and each task's (and
/// instance's) phase by name, and the fan-out counts.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LiveState {
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    pub tasks: BTreeMap<String, String>,
    pub counts: BTreeMap<String, String>,
}

pub fn live_state(view: &RunView) -> LiveState {
    let mut tasks = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for t in &view.tasks {
        tasks.insert(t.name.clone(), t.state().to_string());
        if t.fans_out {
            counts.insert(t.name.clone(), counts_text(&instance_counts(t)));
        }
        for i in &t.instances {
            tasks.insert(i.name.clone(), i.state().to_string());
        }
    }
    LiveState {
        phase: view.phase.clone(),
        progress: view.progress.clone(),
        tasks,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, phase: TaskPhase) -> TaskView {
        TaskView::without_task_run(name, phase)
    }

    fn fan_out(name: &str, phases: &[TaskPhase]) -> TaskView {
        let mut t = task(name, TaskPhase::Running);
        t.fans_out = true;
        t.instances = phases
            .iter()
            .enumerate()
            .map(|(k, p)| task(&format!("{name}[{k}]"), *p))
            .collect();
        t
    }

    #[test]
    fn fan_out_cells_count_their_instances() {
        use TaskPhase::*;
        let t = fan_out(
            "shard",
            &[Succeeded, Failed, Running, Succeeded, Pending, UpstreamFailed],
        );
        let c = instance_counts(&t);
        assert_eq!(
            c,
            InstanceCounts {
                total: 6,
                succeeded: 2,
                failed: 1,
                running: 1,
                pending: 1,
                other: 1
            }
        );
        assert_eq!(
            counts_text(&c),
            "2/6 succeeded, 1 failed, 1 running, 1 pending, 1 not run"
        );
        assert_eq!(
            counts_text(&instance_counts(&fan_out("x", &[Succeeded]))),
            "1/1 succeeded"
        );
    }

    #[test]
    fn trigger_form_fields_become_params_and_empty_ones_are_not_given() {
        let fields = vec![
            ("csrf".to_string(), "t".to_string()),
            ("param.region".to_string(), "eu".to_string()),
            ("param.parts".to_string(), "a,b".to_string()),
            ("param.blank".to_string(), String::new()),
            ("name".to_string(), "x".to_string()),
        ];
        let p = form_params(&fields);
        assert_eq!(p.len(), 2);
        assert_eq!(p["region"], "eu");
        assert_eq!(p["parts"], "a,b");
    }

    #[test]
    fn defaults_read_back_as_form_values() {
        assert_eq!(default_text(&serde_json::json!("eu")), "eu");
        assert_eq!(default_text(&serde_json::json!(["a", "b"])), "a,b");
        assert_eq!(default_text(&serde_json::json!(["a,1", "b"])), r#"["a,1","b"]"#);
    }

    #[test]
    fn the_next_run_is_shown_in_the_schedules_time_zone() {
        let schedule: Schedule = serde_json::from_value(serde_json::json!({
            "cron": "0 2 * * *", "timezone": "Europe/Berlin"
        }))
        .unwrap();
        let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        let v = schedule_view(&schedule, None, now);
        assert_eq!(v.words, "every day at 02:00");
        assert_eq!(v.next_run_time, Some("2026-03-02T01:00:00Z".parse().unwrap()));
        assert_eq!(v.next_run_local.as_deref(), Some("2026-03-02 02:00 CET"));
        let mut suspended = schedule.clone();
        suspended.suspend = true;
        assert_eq!(schedule_view(&suspended, None, now).next_run_time, None);
        let bad: Schedule =
            serde_json::from_value(serde_json::json!({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}))
                .unwrap();
        assert!(
            schedule_view(&bad, None, now)
                .problem
                .unwrap()
                .contains("Mars/Olympus")
        );
    }

    #[test]
    fn grid_rows_follow_the_newest_run_and_put_finally_last() {
        use TaskPhase::*;
        let view = |tasks: Vec<TaskView>| RunView::with_tasks("r", "Failed", tasks);
        let mut report = task("report", Succeeded);
        report.finally = true;
        let summary = |n: &str| RunSummary {
            name: n.into(),
            pipeline: None,
            phase: "Failed".into(),
            trigger: None,
            logical_date: None,
            start_time: None,
            completion_time: None,
            duration_seconds: None,
            progress: None,
            counts: None,
        };
        let newest = view(vec![
            task("a", Succeeded),
            fan_out("b", &[Failed, Succeeded]),
            report,
        ]);
        let older = view(vec![task("a", Failed), task("old", Skipped)]);
        let g = grid(&[(summary("r2"), newest), (summary("r1"), older)]);
        let names: Vec<&str> = g.rows.iter().map(|r| r.task.as_str()).collect();
        assert_eq!(names, ["a", "b", "old", "report"]);
        assert_eq!(g.rows[0].cells[1].as_ref().unwrap().phase, Failed);
        assert!(g.rows[1].cells[1].is_none());
        assert_eq!(g.rows[1].cells[0].as_ref().unwrap().instances.unwrap().failed, 1);
    }
}
