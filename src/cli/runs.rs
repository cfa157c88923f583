//! A run as the CLI shows it: the PipelineRun and its TaskRuns read together into one tree
//! of tasks, fan-out instances and attempts (`RunView`), which `weir get` prints as a tree,
//! JSON or YAML and the `--wait` of `trigger`, `rerun` and `cancel` turns into the live
//! progress lines of `weir run`. Building the view is a pure function of the objects read.

use super::cluster::{Cluster, Explain as _, PIPELINE_RUNS, TASK_RUNS};
use crate::api::{
    AppliedRerun, Attempt, NotificationRecord, PipelineRun, PipelineSpec, RunPhase, TaskPhase, TaskRun,
    TaskSpec, condition, condition_types, labels, reasons,
};
use crate::local::progress::Row;
use jiff::Timestamp;
use kube::ResourceExt as _;
use kube::api::ListParams;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A run and its TaskRuns, read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub run: PipelineRun,
    /// The pipeline the run follows ([`followed`]).
    pub spec: Option<PipelineSpec>,
    pub task_runs: Vec<TaskRun>,
}

/// Reads a run and its TaskRuns. `cached` reads from the API server's watch cache (cheap,
/// possibly a moment behind): right for polling, not for a one-time answer.
pub async fn fetch(cluster: &Cluster, name: &str, cached: bool) -> anyhow::Result<Snapshot> {
    let run =
        cluster
            .api::<PipelineRun>()
            .get(name)
            .await
            .explain(cluster, "get", PIPELINE_RUNS, Some(name))?;
    let task_runs = task_runs_of(cluster, &run, cached).await?;
    let spec = followed(cluster, &run).await;
    Ok(Snapshot { run, spec, task_runs })
}

/// The pipeline a run follows: its PipelineRevision once it started, else its inline spec.
/// `None` when there is none yet, or its revision cannot be read (the run's condition says
/// why).
pub async fn followed(cluster: &Cluster, run: &PipelineRun) -> Option<PipelineSpec> {
    crate::controller::revision::followed_spec(&cluster.client, run)
        .await
        .ok()
        .flatten()
}

/// The TaskRuns of a run, found by its UID label.
pub async fn task_runs_of(
    cluster: &Cluster,
    run: &PipelineRun,
    cached: bool,
) -> anyhow::Result<Vec<TaskRun>> {
    let Some(uid) = run.uid() else {
        return Ok(Vec::new());
    };
    let mut params = ListParams::default().labels(&format!("{}={uid}", labels::PIPELINE_RUN_UID));
    if cached {
        params = params.match_any();
    }
    Ok(cluster
        .api::<TaskRun>()
        .list(&params)
        .await
        .explain(cluster, "list", TASK_RUNS, None)?
        .items)
}

/// A run as `weir get` shows it (and prints with `-o json|yaml`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub name: String,
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// `schedule`, `manual` or `backfill`, from the run's label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The run's phase; `Queued` for a pending run waiting under `maxActiveRuns`, `New`
    /// before the operator has seen it.
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logical_date: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// `spec.cancelled` is set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// A `spec.rerun.request` the operator has not applied yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerun_requested: Option<String>,
    /// The last rerun the operator applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerun: Option<AppliedRerun>,
    /// Every task in DAG order (`finally` tasks last).
    pub tasks: Vec<TaskView>,
    /// Deadlines that passed before what they were on was done: the run's own, then its
    /// tasks'.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deadlines_missed: Vec<MissedView>,
    /// The run's notifications as the operator's notifier recorded them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationRecord>,
}

/// A deadline that passed: the run's (`task` unset) or a task's.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MissedView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    pub message: String,
}

/// What a notification record is about, from its key (`oncall/Failed/0` is about `0`, the
/// first outcome; `sla/DeadlineMissed/task/load` about `task/load`).
pub fn about(record: &NotificationRecord) -> &str {
    record.key.splitn(3, '/').nth(2).unwrap_or_default()
}

/// The deadlines a run's status says were missed.
fn missed_of(status: &crate::api::PipelineRunStatus) -> Vec<MissedView> {
    let run = condition::find(&status.conditions, condition_types::DEADLINE_MISSED)
        .filter(|c| c.status == "True")
        .map(|c| MissedView {
            task: None,
            message: c.message.clone(),
        });
    run.into_iter()
        .chain(status.missed_deadlines.iter().map(|m| MissedView {
            task: Some(m.task.clone()),
            message: m.message.clone(),
        }))
        .collect()
}

/// One task, or one instance of a fanned-out task.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// `extract`, or `process[2]` for an instance.
    pub name: String,
    pub task: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub finally: bool,
    pub phase: TaskPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Timestamp>,
    /// While it waits for its retry delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<Timestamp>,
    /// The number the last attempt of this round may have (its retry limit + 1, after the
    /// attempts of earlier rounds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Why it failed, was skipped or cancelled, or how far its instances are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Every attempt, oldest first (earlier rounds of a rerun included).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// For a fanned-out task: its instances, by index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<TaskView>,
    /// It waits for slots of its pool (its TaskRun's reason is `Queued`, `PoolNotFound` or
    /// `PoolTooSmall`; `message` says which pool and why).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub queued: bool,
    /// A sensor (`wait` task) whose attempt waits for its condition, with no pod (its
    /// TaskRun's reason is `Waiting`; the attempt's message says what for).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
    /// It runs once per `forEach` item (its instances may not exist yet).
    #[serde(skip)]
    pub fans_out: bool,
}

impl TaskView {
    /// A task (or instance `name[k]`) in `phase` that has no TaskRun to tell more: no
    /// attempts, times or message yet.
    pub fn without_task_run(name: &str, phase: TaskPhase) -> TaskView {
        TaskView {
            name: name.to_string(),
            task: name.split('[').next().unwrap_or(name).to_string(),
            instance: None,
            finally: false,
            phase,
            task_run: None,
            start_time: None,
            completion_time: None,
            next_retry_time: None,
            max_attempts: None,
            message: None,
            attempts: Vec::new(),
            instances: Vec::new(),
            queued: false,
            waiting: false,
            fans_out: false,
        }
    }

    /// Its state as a word: the phase, `Queued` for a task waiting for its pool (as
    /// `weir list` says of a queued run), or `Waiting` for a sensor that waits.
    pub fn state(&self) -> &'static str {
        if self.queued {
            crate::api::condition::reasons::QUEUED
        } else if self.waiting {
            crate::api::condition::reasons::WAITING
        } else {
            self.phase.as_str()
        }
    }

    /// A sensor's attempts have no Job (and so no pod, no log).
    pub fn uses_no_pod(&self) -> bool {
        !self.attempts.is_empty() && self.attempts.iter().all(|a| a.job_name.is_empty())
    }

    /// How long it ran: its first attempt's start to its end, or to `now`.
    pub fn duration(&self, now: Timestamp) -> Option<Duration> {
        let start = self.start_time?;
        let end = self.completion_time.unwrap_or(now);
        Duration::try_from(end.duration_since(start)).ok()
    }
}

/// The run's phase as a word: `Queued` for a pending run held back by `maxActiveRuns`.
pub fn phase_text(run: &PipelineRun) -> String {
    let status = run.status.as_ref();
    let reason = status
        .and_then(|s| condition::find(&s.conditions, condition_types::SUCCEEDED))
        .map(|c| c.reason.as_str());
    match (status.and_then(|s| s.phase), reason) {
        (Some(RunPhase::Pending), Some(reasons::QUEUED)) => reasons::QUEUED.to_string(),
        (Some(phase), _) => format!("{phase:?}"),
        (None, _) => "New".to_string(),
    }
}

/// Task names in the order `weir run` shows them: by DAG step, then as listed; `finally`
/// tasks last. A spec that does not validate keeps its listed order.
fn task_order(spec: &PipelineSpec) -> Vec<(&TaskSpec, bool)> {
    let listed: Vec<(&TaskSpec, bool)> = spec
        .tasks
        .iter()
        .map(|t| (t, false))
        .chain(spec.finally.iter().map(|t| (t, true)))
        .collect();
    let Ok(valid) = crate::engine::validate(spec) else {
        return listed;
    };
    let steps = crate::graph::steps(&valid);
    let mut order: Vec<usize> = (0..listed.len()).collect();
    order.sort_by_key(|&t| (listed[t].1, steps.get(t).copied().unwrap_or(0), t));
    order.into_iter().map(|t| listed[t]).collect()
}

fn max_attempts_of(spec: Option<&PipelineSpec>, task: Option<&TaskSpec>) -> Option<u32> {
    let retries = task
        .and_then(|t| t.retries.as_ref())
        .or_else(|| spec?.defaults.as_ref()?.retries.as_ref());
    Some(retries.map_or(1, |r| r.limit + 1))
}

/// What a TaskRun says of one task or instance.
fn from_task_run(tr: &TaskRun, name: String, finally: bool) -> TaskView {
    let status = tr.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or(TaskPhase::Pending);
    // Why it failed, or why it waits for its pool.
    let waits_for_pool = |reason: &str| {
        phase == TaskPhase::Pending
            && [reasons::QUEUED, reasons::POOL_NOT_FOUND, reasons::POOL_TOO_SMALL].contains(&reason)
    };
    let succeeded = condition::find(&status.conditions, condition_types::SUCCEEDED);
    let queued = succeeded.is_some_and(|c| waits_for_pool(&c.reason));
    let waiting = phase == TaskPhase::Running && succeeded.is_some_and(|c| c.reason == reasons::WAITING);
    let failure = succeeded
        .filter(|_| matches!(phase, TaskPhase::Failed | TaskPhase::Cancelled) || queued)
        .map(|c| c.message.clone())
        .filter(|m| !m.is_empty());
    let limit = tr.spec.retries.as_ref().map_or(0, |r| r.limit);
    TaskView {
        name,
        task: tr.spec.task_name.clone(),
        instance: tr.spec.instance,
        finally,
        phase,
        task_run: Some(tr.name_any()),
        start_time: status.start_time.map(|t| t.0),
        completion_time: status.completion_time.map(|t| t.0),
        next_retry_time: status.next_retry_time.map(|t| t.0),
        max_attempts: Some(status.round_start.unwrap_or(0) + limit + 1),
        message: failure,
        attempts: status.attempts,
        instances: Vec::new(),
        queued,
        waiting,
        fans_out: false,
    }
}

/// The tree of a run: every task of its pipeline in DAG order, from its TaskRun when it has
/// one, else from the run's status summary (pending, skipped, upstream-failed tasks); the
/// instances of fanned-out tasks under them; TaskRuns of no known task at the end.
pub fn view(snapshot: &Snapshot) -> RunView {
    let run = &snapshot.run;
    let status = run.status.clone().unwrap_or_default();
    let spec = snapshot.spec.as_ref().or(run.spec.pipeline_spec.as_ref());
    let summary: BTreeMap<&str, &crate::api::TaskSummary> =
        status.tasks.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut by_task: BTreeMap<&str, Vec<&TaskRun>> = BTreeMap::new();
    for tr in &snapshot.task_runs {
        by_task.entry(tr.spec.task_name.as_str()).or_default().push(tr);
    }
    let mut tasks = Vec::new();
    for (task, finally) in spec.map(task_order).unwrap_or_default() {
        let name = task.name.as_str();
        let own = by_task.remove(name).unwrap_or_default();
        let summary = summary.get(name).copied();
        let fans_out = task.for_each.is_some() || own.iter().any(|tr| tr.spec.instance.is_some());
        let mut node = match (fans_out, own.first()) {
            (false, Some(tr)) => from_task_run(tr, name.to_string(), finally),
            _ => TaskView {
                finally,
                max_attempts: max_attempts_of(spec, Some(task)),
                fans_out,
                ..TaskView::without_task_run(name, summary.map_or(TaskPhase::Pending, |s| s.phase))
            },
        };
        if fans_out {
            node.fans_out = true;
            let mut instances: Vec<TaskView> = own
                .iter()
                .map(|tr| {
                    let k = tr.spec.instance.unwrap_or(0);
                    from_task_run(tr, format!("{name}[{k}]"), finally)
                })
                .collect();
            instances.sort_by_key(|i| i.instance);
            node.start_time = instances.iter().filter_map(|i| i.start_time).min();
            let all_done = !instances.is_empty() && instances.iter().all(|i| i.phase.is_terminal());
            node.completion_time = all_done
                .then(|| instances.iter().filter_map(|i| i.completion_time).max())
                .flatten()
                .filter(|_| node.phase.is_terminal());
            if summary.is_none() && !instances.is_empty() {
                node.phase = derived_phase(&instances);
            }
            node.instances = instances;
        }
        if node.message.is_none() {
            node.message = summary.and_then(|s| s.message.clone());
        }
        tasks.push(node);
    }
    // TaskRuns of tasks the pipeline does not list (or of a run whose pipeline is unknown).
    for (_, rest) in by_task {
        for tr in rest {
            let label = match tr.spec.instance {
                Some(k) => format!("{}[{k}]", tr.spec.task_name),
                None => tr.spec.task_name.clone(),
            };
            tasks.push(from_task_run(tr, label, false));
        }
    }
    let succeeded = condition::find(&status.conditions, condition_types::SUCCEEDED);
    let applied = status.rerun.as_ref().map(|r| r.request.as_str());
    let deadlines_missed = missed_of(&status);
    RunView {
        name: run.name_any(),
        namespace: run.namespace().unwrap_or_default(),
        pipeline: run.spec.pipeline_ref.as_ref().map(|r| r.name.clone()),
        trigger: run.labels().get(labels::TRIGGER).cloned(),
        phase: phase_text(run),
        reason: succeeded.map(|c| c.reason.clone()).filter(|r| !r.is_empty()),
        message: succeeded.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
        logical_date: run.spec.logical_date.as_ref().map(|t| t.0),
        start_time: status.start_time.map(|t| t.0),
        completion_time: status.completion_time.map(|t| t.0),
        progress: status.progress.clone(),
        params: run.spec.params.clone(),
        cancel_requested: run.spec.cancelled,
        rerun_requested: run
            .spec
            .rerun
            .as_ref()
            .map(|r| r.request.clone())
            .filter(|r| Some(r.as_str()) != applied),
        rerun: status.rerun.clone(),
        tasks,
        deadlines_missed,
        notifications: status.notifications.clone(),
    }
}

impl RunView {
    /// A run of `tasks` in `phase` with nothing else known, for tests to fill in.
    #[cfg(test)]
    pub fn with_tasks(name: &str, phase: &str, tasks: Vec<TaskView>) -> RunView {
        RunView {
            name: name.into(),
            namespace: "n".into(),
            pipeline: None,
            trigger: None,
            phase: phase.into(),
            reason: None,
            message: None,
            logical_date: None,
            start_time: None,
            completion_time: None,
            progress: None,
            params: Default::default(),
            cancel_requested: false,
            rerun_requested: None,
            rerun: None,
            tasks,
            deadlines_missed: Vec::new(),
            notifications: Vec::new(),
        }
    }

    /// The run's phase, when the operator has given it one.
    pub fn run_phase(&self) -> Option<RunPhase> {
        match self.phase.as_str() {
            "Pending" | "Queued" => Some(RunPhase::Pending),
            "Running" => Some(RunPhase::Running),
            "Succeeded" => Some(RunPhase::Succeeded),
            "Failed" => Some(RunPhase::Failed),
            "Cancelled" => Some(RunPhase::Cancelled),
            _ => None,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.run_phase().is_some_and(RunPhase::is_terminal) && self.rerun_requested.is_none()
    }

    /// How long the run took, or has been going.
    pub fn duration(&self, now: Timestamp) -> Option<Duration> {
        let start = self.start_time?;
        let end = self.completion_time.unwrap_or(now);
        Duration::try_from(end.duration_since(start)).ok()
    }

    /// The lines of `weir run`'s progress display: one per task, or per instance of a
    /// fanned-out task once it has some.
    pub fn rows(&self, now: Timestamp) -> Vec<Row> {
        let mut rows = Vec::new();
        for task in &self.tasks {
            if task.instances.is_empty() {
                rows.push(row(task, now));
            } else {
                rows.extend(task.instances.iter().map(|i| row(i, now)));
            }
        }
        rows
    }
}

/// A fanned-out task's phase from its instances, while the run's summary has none for it.
fn derived_phase(instances: &[TaskView]) -> TaskPhase {
    if instances.iter().any(|i| !i.phase.is_terminal()) {
        TaskPhase::Running
    } else if instances.iter().any(|i| i.phase == TaskPhase::Failed) {
        TaskPhase::Failed
    } else {
        TaskPhase::Succeeded
    }
}

fn row(task: &TaskView, now: Timestamp) -> Row {
    let attempts = task.attempts.len() as u32;
    let detail = match task.phase {
        TaskPhase::Retrying => task.next_retry_time.map(|at| {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
            format!("next attempt in {}", crate::local::progress::elapsed(wait))
        }),
        TaskPhase::Succeeded | TaskPhase::Running => None,
        _ => task.message.as_deref().map(super::output::one_line),
    };
    Row {
        label: task.name.clone(),
        phase: task.phase,
        attempts,
        max_attempts: task.max_attempts.unwrap_or(1).max(attempts),
        elapsed: task.duration(now),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AttemptPhase, FailureReason, TaskRunStatus, TaskSummary};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + secs).unwrap()
    }

    fn run(yaml_tasks: serde_json::Value, summary: Vec<TaskSummary>) -> PipelineRun {
        let mut run: PipelineRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u1"},
            "spec": {"pipelineRef": {"name": "p"}},
        }))
        .unwrap();
        // What the view reads when the snapshot holds no revision's spec.
        run.spec.pipeline_spec = Some(serde_json::from_value(yaml_tasks).unwrap());
        run.status = Some(crate::api::PipelineRunStatus {
            phase: Some(RunPhase::Running),
            pipeline_revision: Some("p-0123456789".into()),
            tasks: summary,
            start_time: Some(Time(ts(0))),
            ..Default::default()
        });
        run
    }

    fn task_run(
        task: &str,
        instance: Option<u32>,
        phase: TaskPhase,
        attempts: &[(AttemptPhase, Option<i32>)],
    ) -> TaskRun {
        let mut tr = TaskRun::new(
            &format!(
                "r-{task}{}",
                instance.map(|k| format!("-{k}")).unwrap_or_default()
            ),
            crate::api::TaskRunSpec {
                task_name: task.into(),
                image: "busybox".into(),
                instance,
                retries: Some(crate::api::RetryPolicy {
                    limit: 2,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        tr.status = Some(TaskRunStatus {
            phase: Some(phase),
            start_time: Some(Time(ts(1))),
            completion_time: phase.is_terminal().then(|| Time(ts(5))),
            attempt_count: Some(attempts.len() as u32),
            attempts: attempts
                .iter()
                .enumerate()
                .map(|(i, (p, code))| Attempt {
                    number: i as u32 + 1,
                    job_name: format!("job-{i}"),
                    phase: *p,
                    exit_code: *code,
                    reason: (*p == AttemptPhase::Failed).then_some(FailureReason::Error),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
        tr
    }

    #[test]
    fn a_task_waiting_for_its_pool_shows_why_and_a_running_one_does_not() {
        let waiting = |phase, reason: &str| {
            let mut tr = task_run("load", None, phase, &[]);
            if let Some(status) = tr.status.as_mut() {
                crate::api::set_condition(
                    &mut status.conditions,
                    condition_types::SUCCEEDED,
                    crate::api::ConditionStatus::Unknown,
                    reason,
                    "waiting: pool \"gpu\" does not exist in namespace \"data\"",
                    None,
                    ts(2),
                );
            }
            from_task_run(&tr, "load".into(), false).message
        };
        assert_eq!(
            waiting(TaskPhase::Pending, reasons::POOL_NOT_FOUND).as_deref(),
            Some("waiting: pool \"gpu\" does not exist in namespace \"data\"")
        );
        assert!(waiting(TaskPhase::Pending, reasons::QUEUED).is_some());
        assert_eq!(waiting(TaskPhase::Running, reasons::RUNNING), None);
        let mut tr = task_run("load", None, TaskPhase::Pending, &[]);
        assert!(!from_task_run(&tr, "load".into(), false).queued);
        if let Some(status) = tr.status.as_mut() {
            crate::api::set_condition(
                &mut status.conditions,
                condition_types::SUCCEEDED,
                crate::api::ConditionStatus::Unknown,
                reasons::QUEUED,
                "waiting for 1 slot(s) of pool \"gpu\"",
                None,
                ts(2),
            );
        }
        assert!(from_task_run(&tr, "load".into(), false).queued);
    }

    #[test]
    fn a_waiting_sensor_says_waiting() {
        let mut tr = task_run("ready", None, TaskPhase::Running, &[]);
        if let Some(status) = tr.status.as_mut() {
            crate::api::set_condition(
                &mut status.conditions,
                condition_types::SUCCEEDED,
                crate::api::ConditionStatus::Unknown,
                reasons::WAITING,
                "attempt 1: waiting for pipeline \"load\"'s run",
                None,
                ts(2),
            );
        }
        let view = from_task_run(&tr, "ready".into(), false);
        assert!(view.waiting);
        assert_eq!(view.state(), "Waiting");
        let view = from_task_run(
            &task_run("ready", None, TaskPhase::Running, &[]),
            "ready".into(),
            false,
        );
        assert_eq!(view.state(), "Running");
    }

    #[test]
    fn tasks_come_in_dag_order_from_task_runs_or_the_summary() {
        let run = run(
            serde_json::json!({
                "tasks": [
                    {"name": "load", "image": "x", "dependsOn": ["fan"]},
                    {"name": "fan", "image": "x", "dependsOn": ["extract"], "forEach": {"items": ["a", "b"]}},
                    {"name": "extract", "image": "x"},
                ],
                "finally": [{"name": "report", "image": "x"}],
            }),
            vec![
                TaskSummary {
                    name: "load".into(),
                    phase: TaskPhase::UpstreamFailed,
                    task_run: None,
                    attempts: None,
                    message: Some("upstream task fan failed".into()),
                },
                TaskSummary {
                    name: "fan".into(),
                    phase: TaskPhase::Failed,
                    task_run: None,
                    attempts: None,
                    message: Some("1 of 2 instances failed".into()),
                },
            ],
        );
        let snapshot = Snapshot {
            run,
            spec: None,
            task_runs: vec![
                task_run(
                    "fan",
                    Some(1),
                    TaskPhase::Failed,
                    &[(AttemptPhase::Failed, Some(3))],
                ),
                task_run(
                    "extract",
                    None,
                    TaskPhase::Succeeded,
                    &[
                        (AttemptPhase::Failed, Some(1)),
                        (AttemptPhase::Succeeded, Some(0)),
                    ],
                ),
                task_run(
                    "fan",
                    Some(0),
                    TaskPhase::Succeeded,
                    &[(AttemptPhase::Succeeded, Some(0))],
                ),
            ],
        };
        let v = view(&snapshot);
        let names: Vec<&str> = v.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["extract", "fan", "load", "report"]);
        assert_eq!(v.tasks[0].attempts.len(), 2);
        assert_eq!(v.tasks[0].max_attempts, Some(3));
        let fan = &v.tasks[1];
        assert_eq!(fan.phase, TaskPhase::Failed);
        assert_eq!(fan.message.as_deref(), Some("1 of 2 instances failed"));
        let instances: Vec<&str> = fan.instances.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(instances, ["fan[0]", "fan[1]"]);
        assert_eq!(v.tasks[2].phase, TaskPhase::UpstreamFailed);
        assert_eq!(v.tasks[3].phase, TaskPhase::Pending);
        assert!(v.tasks[3].finally);
        let labels: Vec<String> = v.rows(ts(10)).into_iter().map(|r| r.label).collect();
        assert_eq!(labels, ["extract", "fan[0]", "fan[1]", "load", "report"]);
    }

    #[test]
    fn a_rerun_not_yet_applied_keeps_the_run_unfinished() {
        let mut r = run(
            serde_json::json!({"tasks": [{"name": "a", "image": "x"}]}),
            vec![],
        );
        r.status.as_mut().unwrap().phase = Some(RunPhase::Failed);
        r.spec.rerun = Some(crate::api::RerunRequest {
            request: "t1".into(),
            ..Default::default()
        });
        let v = view(&Snapshot {
            run: r,
            spec: None,
            task_runs: vec![],
        });
        assert_eq!(v.rerun_requested.as_deref(), Some("t1"));
        assert!(!v.is_finished());
    }
}
