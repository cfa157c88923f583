//! Admission under `maxActiveRuns`, on the run's side. The PipelineRun controller calls
//! [`admit`] before a run takes its snapshot; a run beyond the limit stays `Pending` with
//! reason `Queued` ([`wait_in_queue`]). Which runs go first is decided once, by
//! `engine::schedule::RunQueue`.
//!
//! Waking queued runs needs no polling: a run finishing changes its Pipeline's status (the
//! Pipeline controller watches runs, see `super::pipeline::pipeline_of_run`), and the
//! PipelineRun controller watches Pipelines and reconciles the runs first in line for the
//! free slots ([`queued_runs_to_wake`]).

use super::{Context, Error, Result};
use crate::api::condition_types::SUCCEEDED;
use crate::api::{
    ConditionStatus, Pipeline, PipelineRun, PipelineRunStatus, RunPhase, actions, reasons, set_condition,
};
use crate::engine::quote::ordinal;
use crate::engine::schedule::{QueuedRun, RunQueue};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::time::Duration;

/// How often a queued run looks again by itself (it is normally woken sooner).
pub const QUEUED_REQUEUE: Duration = Duration::from_secs(60);
/// The message of a run cancelled before it could start.
const CANCELLED_WHILE_QUEUED: &str = "cancelled while queued; no task ran";

/// Admissions are decided one at a time (list the pipeline's runs, decide, write the
/// snapshot), so two runs reconciled at once cannot both take the last slot. One operator
/// process is active at a time (leader election), so a lock in the process is enough.
static ADMISSION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the admission lock until the admitted run has written its snapshot.
pub type AdmissionGuard = tokio::sync::MutexGuard<'static, ()>;

/// Whether a run may start.
pub enum Admission {
    /// Start now; keep the guard until the snapshot is written.
    Start(Option<AdmissionGuard>),
    /// Wait for a free slot; the message says where the run is in line.
    Queued(String),
}

/// Decides whether `run`, not yet started, may start under its pipeline's `maxActiveRuns`.
pub async fn admit(ctx: &Context, run: &PipelineRun, max_active_runs: Option<u32>) -> Result<Admission> {
    let (Some(max), Some(pipeline)) = (max_active_runs, pipeline_name(run)) else {
        return Ok(Admission::Start(None));
    };
    let ns = run.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let guard = ADMISSION.lock().await;
    let runs = runs_of(&Api::namespaced(ctx.client.clone(), &ns), pipeline).await?;
    Ok(match place_in_line(runs, run, pipeline, max) {
        Ok(()) => Admission::Start(Some(guard)),
        Err(message) => Admission::Queued(message),
    })
}

/// Whether `run` may start now among the `runs` of its pipeline (it may be missing from
/// them); otherwise a message saying where it is in line.
fn place_in_line(
    mut runs: Vec<PipelineRun>,
    run: &PipelineRun,
    pipeline: &str,
    max: u32,
) -> Result<(), String> {
    let me = match runs.iter().position(|r| r.uid() == run.uid()) {
        Some(i) => i,
        None => {
            runs.push(run.clone());
            runs.len() - 1
        }
    };
    let entries: Vec<QueuedRun> = runs.iter().map(queue_entry).collect();
    let queue = RunQueue::new(&entries);
    queue.admit(me, Some(max)).map_err(|position| {
        format!(
            "queued: {} of {max} allowed runs of pipeline {pipeline} are active (maxActiveRuns); this \
             run is {} in line",
            queue.active.len(),
            ordinal(position)
        )
    })
}

/// Keeps a run that may not start yet `Pending` with reason `Queued`, or ends it when it was
/// cancelled while waiting.
pub async fn wait_in_queue(
    ctx: &Context,
    api: &Api<PipelineRun>,
    run: &PipelineRun,
    status: PipelineRunStatus,
    message: String,
    now: jiff::Timestamp,
) -> Result<Action> {
    let generation = run.metadata.generation;
    if run.spec.cancelled {
        let status = cancelled_while_queued(status, generation, now);
        super::pipelinerun::apply_run_status(api, &run.name_any(), &status).await?;
        let note = CANCELLED_WHILE_QUEUED.to_string();
        ctx.event(
            &run.object_ref(&()),
            None,
            EventType::Normal,
            reasons::RUN_CANCELLED,
            actions::FINISH,
            note,
        )
        .await;
        return Ok(Action::await_change());
    }
    let first_time = status.phase.is_none();
    let status = queued(status, &message, generation, now);
    if run.status.as_ref() != Some(&status) {
        super::pipelinerun::apply_run_status(api, &run.name_any(), &status).await?;
    }
    if first_time {
        ctx.event(
            &run.object_ref(&()),
            None,
            EventType::Normal,
            reasons::RUN_QUEUED,
            actions::QUEUE,
            message,
        )
        .await;
    }
    Ok(Action::requeue(QUEUED_REQUEUE))
}

/// The status of a run waiting for a slot: `Pending`, `Succeeded` `Unknown` with reason
/// `Queued` and `message`.
fn queued(
    mut status: PipelineRunStatus,
    message: &str,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> PipelineRunStatus {
    status.phase = Some(RunPhase::Pending);
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        SUCCEEDED,
        ConditionStatus::Unknown,
        reasons::QUEUED,
        message,
        generation,
        now,
    );
    status
}

/// The final status of a run cancelled before it left the queue.
fn cancelled_while_queued(
    mut status: PipelineRunStatus,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> PipelineRunStatus {
    status.phase = Some(RunPhase::Cancelled);
    status.completion_time = Some(Time(now));
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        SUCCEEDED,
        ConditionStatus::False,
        reasons::CANCELLED,
        CANCELLED_WHILE_QUEUED,
        generation,
        now,
    );
    status
}

/// For the PipelineRun controller's watch of Pipelines: the queued runs that may take the
/// slots free under `maxActiveRuns`, as the Pipeline's status lists them.
pub fn queued_runs_to_wake(pipeline: Pipeline) -> Vec<ObjectRef<PipelineRun>> {
    let Some(status) = pipeline.status.as_ref() else {
        return Vec::new();
    };
    let Some(ns) = pipeline.namespace() else {
        return Vec::new();
    };
    let free = match pipeline.spec.max_active_runs {
        Some(max) => (max as usize).saturating_sub(status.active_run_count.unwrap_or(0) as usize),
        None => usize::MAX,
    };
    status
        .queued_runs
        .iter()
        .take(free)
        .map(|name| ObjectRef::new(name).within(&ns))
        .collect()
}

/// The runs of a pipeline (by `spec.pipelineRef`), fresh from the API server, leaving out
/// the ones being deleted.
pub(super) async fn runs_of(api: &Api<PipelineRun>, pipeline: &str) -> Result<Vec<PipelineRun>> {
    let runs = api.list(&ListParams::default()).await?.items;
    Ok(runs
        .into_iter()
        .filter(|r| pipeline_name(r) == Some(pipeline) && r.metadata.deletion_timestamp.is_none())
        .collect())
}

/// A run as the queue under `maxActiveRuns` sees it.
pub(super) fn queue_entry(run: &PipelineRun) -> QueuedRun {
    QueuedRun {
        name: run.name_any(),
        logical_date: run.spec.logical_date.as_ref().map(|t| t.0),
        created: created(run),
        started: is_started(run),
        finished: is_finished(run),
    }
}

/// The run reached a final phase.
pub(super) fn is_finished(run: &PipelineRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(RunPhase::is_terminal)
}

/// When the run was created (the epoch when unknown).
pub(super) fn created(run: &PipelineRun) -> jiff::Timestamp {
    run.creation_timestamp()
        .map(|t| t.0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn pipeline_name(run: &PipelineRun) -> Option<&str> {
    run.spec.pipeline_ref.as_ref().map(|r| r.name.as_str())
}

fn is_started(run: &PipelineRun) -> bool {
    run.status
        .as_ref()
        .is_some_and(|s| s.start_time.is_some() || s.pipeline_revision.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PipelineStatus;
    use crate::api::RunPhase::{Pending, Running, Succeeded};
    use crate::controller::fixture::{RunBuilder, mk_pipeline, mk_run, ts};

    fn pipeline(max: Option<u32>, active: u32, queued: &[&str]) -> Pipeline {
        let mut p = mk_pipeline();
        p.spec.max_active_runs = max;
        p.status = Some(PipelineStatus {
            active_run_count: Some(active),
            queued_runs: queued.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        p
    }

    #[test]
    fn free_slots_wake_the_runs_first_in_line() {
        let names =
            |refs: Vec<ObjectRef<PipelineRun>>| -> Vec<String> { refs.into_iter().map(|r| r.name).collect() };
        assert_eq!(
            names(queued_runs_to_wake(pipeline(Some(3), 1, &["a", "b", "c"]))),
            ["a", "b"]
        );
        assert!(queued_runs_to_wake(pipeline(Some(1), 1, &["a"])).is_empty());
        // The limit was removed: everyone listed may go.
        assert_eq!(
            names(queued_runs_to_wake(pipeline(None, 5, &["a", "b"]))),
            ["a", "b"]
        );
    }

    #[test]
    fn runs_start_oldest_logical_date_first_while_slots_are_free() {
        let active = mk_run("etl-active", Running, "2024-03-01T00:00:00Z");
        let done = mk_run("etl-done", Succeeded, "2024-03-01T00:30:00Z");
        let older = mk_run("etl-older", Pending, "2024-03-01T01:00:00Z");
        let newer = mk_run("etl-newer", Pending, "2024-03-01T02:00:00Z");
        let newest = mk_run("etl-newest", Pending, "2024-03-01T03:00:00Z");
        let all = || {
            vec![
                active.clone(),
                done.clone(),
                newest.clone(),
                newer.clone(),
                older.clone(),
            ]
        };
        // (the run, maxActiveRuns, the answer)
        let cases: [(&PipelineRun, u32, Result<(), &str>); 6] = [
            (&older, 2, Ok(())),
            (&newer, 2, Err("1st")),
            (&newest, 2, Err("2nd")),
            (&newer, 3, Ok(())),
            (&older, 1, Err("1st")),
            // Started already: nothing to wait for, whatever the limit.
            (&active, 1, Ok(())),
        ];
        for (run, max, expected) in cases {
            let answer = place_in_line(all(), run, "etl", max);
            match (expected, answer) {
                (Ok(()), Ok(())) => {}
                (Err(place), Err(message)) => assert_eq!(
                    message,
                    format!(
                        "queued: 1 of {max} allowed runs of pipeline etl are active (maxActiveRuns); \
                         this run is {place} in line"
                    ),
                    "{} under {max}",
                    run.name_any()
                ),
                (expected, answer) => panic!("{} under {max}: {answer:?}, not {expected:?}", run.name_any()),
            }
        }
    }

    #[test]
    fn a_run_the_list_does_not_hold_yet_queues_by_its_own_logical_date() {
        let active = mk_run("etl-active", Running, "2024-03-01T00:00:00Z");
        let waiting = mk_run("etl-waiting", Pending, "2024-03-01T02:00:00Z");
        let missing = mk_run("etl-new", Pending, "2024-03-01T01:00:00Z");
        let message = place_in_line(vec![active, waiting], &missing, "etl", 1).unwrap_err();
        assert!(message.ends_with("this run is 1st in line"), "{message}");
        // Without a logical date, its creation time stands in: earlier than the waiting run's
        // logical date, so it goes first although its own logical date would be later.
        let mut undated = mk_run("etl-undated", Pending, "2024-03-01T03:00:00Z");
        undated.spec.logical_date = None;
        let undated = undated.created_at("2024-03-01T00:30:00Z");
        let active = mk_run("etl-active", Running, "2024-03-01T00:00:00Z");
        let waiting = mk_run("etl-waiting", Pending, "2024-03-01T02:00:00Z");
        assert_eq!(place_in_line(vec![active, waiting], &undated, "etl", 2), Ok(()));
    }

    #[test]
    fn ordinals_read_as_english() {
        let cases = [
            (1, "1st"),
            (2, "2nd"),
            (3, "3rd"),
            (4, "4th"),
            (11, "11th"),
            (12, "12th"),
            (13, "13th"),
            (21, "21st"),
            (22, "22nd"),
            (101, "101st"),
            (111, "111th"),
        ];
        for (n, expected) in cases {
            assert_eq!(ordinal(n), expected);
        }
    }

    #[test]
    fn a_queued_run_is_pending_with_reason_queued_and_rewritten_only_when_its_place_changes() {
        let first = queued(
            PipelineRunStatus::default(),
            "1st in line",
            Some(2),
            ts("2024-03-01T00:00:00Z"),
        );
        assert_eq!(first.phase, Some(RunPhase::Pending));
        assert_eq!(first.observed_generation, Some(2));
        let condition = &first.conditions[0];
        assert_eq!(
            (
                condition.type_.as_str(),
                condition.status.as_str(),
                condition.reason.as_str()
            ),
            (SUCCEEDED, "Unknown", reasons::QUEUED)
        );
        assert_eq!(condition.message, "1st in line");
        // The same place later: nothing to write.
        let again = queued(first.clone(), "1st in line", Some(2), ts("2024-03-01T00:05:00Z"));
        assert_eq!(again, first);
        let moved = queued(first.clone(), "2nd in line", Some(2), ts("2024-03-01T00:05:00Z"));
        assert_ne!(moved, first);
        assert_eq!(
            moved.conditions[0].last_transition_time,
            condition.last_transition_time
        );
    }

    #[test]
    fn a_run_cancelled_in_the_queue_ends_cancelled_at_once() {
        let now = ts("2024-03-01T00:10:00Z");
        let waiting = queued(
            PipelineRunStatus::default(),
            "1st in line",
            Some(1),
            ts("2024-03-01T00:00:00Z"),
        );
        let ended = cancelled_while_queued(waiting, Some(2), now);
        assert_eq!(ended.phase, Some(RunPhase::Cancelled));
        assert_eq!(ended.completion_time, Some(Time(now)));
        assert_eq!(ended.observed_generation, Some(2));
        assert_eq!(ended.conditions.len(), 1);
        let condition = &ended.conditions[0];
        assert_eq!(
            (
                condition.status.as_str(),
                condition.reason.as_str(),
                condition.message.as_str()
            ),
            ("False", reasons::CANCELLED, CANCELLED_WHILE_QUEUED)
        );
        assert_eq!(condition.last_transition_time, Time(now));
    }
}
