//! A run's deadline, on the operator's side: when it is due (the run's own `deadline`, else
//! its pipeline's), the `DeadlineMissed` condition set once when it passes (it is the record
//! that the miss was said, and the notifier's cue), and what `onMiss: Fail` does to the
//! run's timeout. The arithmetic is [`crate::engine::deadline`]'s.
//!
//! Tasks' own deadlines ([`tasks`]): a miss is recorded in the run's
//! `status.missedDeadlines` (the record that it was said, and the notifier's cue) and handed
//! to the task's TaskRun in `spec.deadlineMissed`, from which the TaskRun's own reconcile
//! sets its `DeadlineMissed` condition and, with `onMiss: Fail`, stops the task
//! ([`task_conditions`]). A task not started yet gets it in the spec it is created with.

use super::{ApiResultExt, Context, Result};
use crate::api::{
    ConditionStatus, Deadline, DeadlineMiss, MissedDeadline, OnMiss, PipelineRun, PipelineRunStatus,
    PipelineSpec, TaskPhase, TaskRun, TaskRunSpec, TaskRunStatus, actions, condition_types, reasons,
    set_condition,
};
use crate::engine::ValidPipeline;
use crate::engine::deadline::{self as rules, RunTimes, TaskClock};
use crate::engine::step::RunStep;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::time::Duration;

/// A run's deadline and when it is due.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    pub at: Timestamp,
    pub deadline: Deadline,
}

/// The moments a deadline of the run (or of one of its tasks) can count from.
fn run_times(run: &PipelineRun, started_at: Timestamp) -> RunTimes {
    RunTimes {
        logical_date: run.spec.logical_date.as_ref().map(|t| t.0),
        data_interval_end: run.spec.data_interval_end.as_ref().map(|t| t.0),
        started: Some(started_at),
        created: run.metadata.creation_timestamp.as_ref().map(|t| t.0),
        task_started: None,
    }
}

/// The run's deadline, if it has one and the moment it counts from is known.
pub fn of(run: &PipelineRun, spec: &PipelineSpec, started_at: Timestamp) -> Option<Due> {
    let deadline = run.spec.deadline.as_ref().or(spec.deadline.as_ref())?;
    if deadline.from == Some(crate::api::DeadlineFrom::TaskStart) {
        // Only a run's own override can get here (a pipeline's is validated).
        tracing::warn!("the run's deadline counts from TaskStart, which only a task's can; it is ignored");
        return None;
    }
    let times = run_times(run, started_at);
    match rules::due_at(deadline, &times) {
        Ok(at) => at.map(|at| Due {
            at,
            deadline: deadline.clone(),
        }),
        Err(err) => {
            // Only a run's own override can get here (a pipeline's is validated): the
            // schema's pattern lets through what the parser refuses, a number too large.
            tracing::warn!(%err, "the run's deadline is ignored");
            None
        }
    }
}

/// The run's timeout with `onMiss: Fail`: the run stops at its deadline.
pub fn timeout(due: Option<&Due>, started_at: Timestamp, timeout: Option<Duration>) -> Option<Duration> {
    match due {
        Some(d) if d.deadline.on_miss == Some(OnMiss::Fail) => {
            Some(rules::timeout_with(d.at, started_at, timeout))
        }
        _ => timeout,
    }
}

/// Sets `DeadlineMissed` when the deadline has passed and it is not set yet; returns the
/// Event's note when it was set now.
pub fn mark(
    due: Option<&Due>,
    status: &mut PipelineRunStatus,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<String> {
    let due = due?;
    let already = status
        .conditions
        .iter()
        .any(|c| c.type_ == condition_types::DEADLINE_MISSED && c.status == "True");
    if already || !rules::missed(due.at, now) {
        return None;
    }
    let then = match due.deadline.on_miss.unwrap_or_default() {
        OnMiss::Continue => "it goes on",
        OnMiss::Fail => "it is stopped",
    };
    let message = format!(
        "the run was not done by {} ({}); {then}",
        due.at,
        rules::describe(&due.deadline)
    );
    set_condition(
        &mut status.conditions,
        condition_types::DEADLINE_MISSED,
        ConditionStatus::True,
        reasons::DEADLINE_MISSED,
        message.clone(),
        generation,
        now,
    );
    Some(message)
}

/// Looks again at the deadline, not later.
pub fn shorten(requeue_after: &mut Option<Duration>, due: Option<&Due>, now: Timestamp) {
    let Some(due) = due.filter(|d| !rules::missed(d.at, now)) else {
        return;
    };
    let wait = rules::wait_until(due.at, now);
    *requeue_after = Some(requeue_after.map_or(wait, |w| w.min(wait)));
}

/// Tasks' deadlines: records the misses of now in `status.missedDeadlines`, puts every
/// recorded miss in the spec of the task's TaskRuns about to be created, and looks again
/// at the next deadline. Returns the misses of now, for their Events.
pub fn tasks(
    run: &PipelineRun,
    valid: &ValidPipeline,
    started_at: Timestamp,
    task_runs: &[TaskRun],
    step: &mut RunStep,
    status: &mut PipelineRunStatus,
    now: Timestamp,
) -> Vec<MissedDeadline> {
    let clocks: Vec<TaskClock<'_>> = (0..valid.len())
        .filter_map(|i| {
            let task = valid.task(i);
            Some(TaskClock {
                task: &task.name,
                deadline: task.deadline.as_ref()?,
                started: task_started(task_runs, &task.name),
                done: step.states.get(i).copied().is_some_and(TaskPhase::is_terminal),
            })
        })
        .collect();
    if clocks.is_empty() {
        return Vec::new();
    }
    let times = run_times(run, started_at);
    let misses = rules::task_misses(&clocks, &times, &status.missed_deadlines, now);
    status.missed_deadlines.extend(misses.new.iter().cloned());
    if let Some(at) = misses.next {
        let wait = rules::wait_until(at, now);
        step.requeue_after = Some(step.requeue_after.map_or(wait, |w| w.min(wait)));
    }
    // A task run again by a rerun request (a person's decision) runs without its miss.
    for start in step.start.iter_mut().filter(|s| s.resume.is_none()) {
        start.spec.deadline_missed = miss_of(&status.missed_deadlines, valid.name(start.task));
    }
    misses.new
}

/// When the task's first TaskRun (of its instances) started.
fn task_started(task_runs: &[TaskRun], task: &str) -> Option<Timestamp> {
    task_runs
        .iter()
        .filter(|tr| tr.spec.task_name == task)
        .filter_map(|tr| tr.status.as_ref()?.start_time.as_ref().map(|t| t.0))
        .min()
}

fn miss_of(missed: &[MissedDeadline], task: &str) -> Option<DeadlineMiss> {
    missed.iter().find(|m| m.task == task).map(|m| DeadlineMiss {
        message: m.message.clone(),
        fail: m.failed,
    })
}

/// Hands each recorded miss to the task's TaskRuns that do not have it yet, are not done
/// and were not run again by a rerun request. Done on every reconcile, so a crash between this and the status write loses
/// nothing: the record is written after, and written again if it was not.
pub async fn tell_task_runs(
    ctx: &Context,
    run: &PipelineRun,
    task_runs: &[TaskRun],
    status: &PipelineRunStatus,
) -> Result<()> {
    if status.missed_deadlines.is_empty() {
        return Ok(());
    }
    let ns = run.namespace().unwrap_or_default();
    let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &ns);
    for tr in task_runs {
        let Some(miss) = miss_of(&status.missed_deadlines, &tr.spec.task_name) else {
            continue;
        };
        let done = tr
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(TaskPhase::is_terminal);
        if done || tr.spec.deadline_missed.is_some() || tr.spec.rerun.is_some() {
            continue;
        }
        let patch = serde_json::json!({ "spec": { "deadlineMissed": miss } });
        let written = api
            .patch(&tr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .ignore_not_found()?;
        ctx.children.wrote_opt(run, written.as_ref());
    }
    Ok(())
}

/// Says each miss of now: an Event on the run and the metric.
pub async fn publish_task_misses(ctx: &Context, run: &PipelineRun, misses: Vec<MissedDeadline>) {
    for miss in misses {
        ctx.event(
            &run.object_ref(&()),
            None,
            EventType::Warning,
            reasons::DEADLINE_MISSED,
            actions::RECONCILE,
            miss.message,
        )
        .await;
        ctx.metrics.task_deadline_missed();
    }
}

/// The TaskRun's side: condition `DeadlineMissed` once its run said the deadline passed,
/// and with `onMiss: Fail` a `Succeeded` condition that says why the task failed.
pub fn task_conditions(
    spec: &TaskRunSpec,
    status: &mut TaskRunStatus,
    generation: Option<i64>,
    now: Timestamp,
) {
    let Some(miss) = &spec.deadline_missed else {
        return;
    };
    set_condition(
        &mut status.conditions,
        condition_types::DEADLINE_MISSED,
        ConditionStatus::True,
        reasons::DEADLINE_MISSED,
        miss.message.clone(),
        generation,
        now,
    );
    if spec.deadline_fails() && status.phase == Some(TaskPhase::Failed) {
        set_condition(
            &mut status.conditions,
            condition_types::SUCCEEDED,
            ConditionStatus::False,
            reasons::DEADLINE_EXCEEDED,
            miss.message.clone(),
            generation,
            now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PipelineRunSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn run_with(deadline: Option<Deadline>) -> PipelineRun {
        let mut run = PipelineRun::new(
            "r",
            PipelineRunSpec {
                deadline,
                ..Default::default()
            },
        );
        run.metadata.creation_timestamp = Some(Time(t("2026-01-01T00:00:00Z")));
        run
    }

    fn pipeline_deadline(within: &str, on_miss: Option<OnMiss>) -> PipelineSpec {
        PipelineSpec {
            deadline: Some(Deadline {
                within: within.into(),
                from: None,
                on_miss,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_run_takes_its_own_deadline_over_its_pipelines() {
        let start = t("2026-01-01T00:00:01Z");
        let due = of(&run_with(None), &pipeline_deadline("1h", None), start).unwrap();
        assert_eq!(due.at, t("2026-01-01T01:00:00Z"));
        let own = Deadline {
            within: "5m".into(),
            ..Default::default()
        };
        let due = of(&run_with(Some(own)), &pipeline_deadline("1h", None), start).unwrap();
        assert_eq!(due.at, t("2026-01-01T00:05:00Z"));
        assert_eq!(of(&run_with(None), &PipelineSpec::default(), start), None);
    }

    #[test]
    fn a_miss_is_marked_once_and_requeues_stop_at_the_deadline() {
        let start = t("2026-01-01T00:00:00Z");
        let due = of(&run_with(None), &pipeline_deadline("1h", None), start);
        let mut status = PipelineRunStatus::default();
        assert_eq!(
            mark(due.as_ref(), &mut status, None, t("2026-01-01T00:59:00Z")),
            None
        );
        let mut requeue = Some(Duration::from_secs(300));
        shorten(&mut requeue, due.as_ref(), t("2026-01-01T00:59:00Z"));
        assert_eq!(requeue, Some(Duration::from_secs(60)));
        let note = mark(due.as_ref(), &mut status, None, t("2026-01-01T01:00:00Z")).unwrap();
        assert!(
            note.contains("1h after its scheduled time") && note.ends_with("it goes on"),
            "{note}"
        );
        assert_eq!(status.conditions[0].reason, "DeadlineMissed");
        assert_eq!(
            mark(due.as_ref(), &mut status, None, t("2026-01-01T01:00:05Z")),
            None
        );
        let mut requeue = None;
        shorten(&mut requeue, due.as_ref(), t("2026-01-01T01:00:05Z"));
        assert_eq!(requeue, None);
    }

    #[test]
    fn on_miss_fail_stops_the_run_at_its_deadline() {
        let start = t("2026-01-01T00:10:00Z");
        let fail = of(
            &run_with(None),
            &pipeline_deadline("1h", Some(OnMiss::Fail)),
            start,
        );
        assert_eq!(
            timeout(fail.as_ref(), start, None),
            Some(Duration::from_secs(3000))
        );
        let go_on = of(&run_with(None), &pipeline_deadline("1h", None), start);
        assert_eq!(
            timeout(go_on.as_ref(), start, Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
    }
}
