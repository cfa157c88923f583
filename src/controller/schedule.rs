//! Schedules and the run queue, on the Kubernetes side. The Pipeline controller calls
//! [`reconcile_pipeline`] on every reconcile: it lists the pipeline's runs, deletes the
//! ones past the history limits, creates the runs of due intervals (`engine::schedule`
//! decides which) and reports active and queued runs in the Pipeline's status, then asks to
//! be woken at the next cron time. The PipelineRun controller calls [`admit`] before a run
//! takes its snapshot: a run beyond `maxActiveRuns` stays `Pending` with reason `Queued`.
//!
//! Waking queued runs needs no polling: a run finishing changes the Pipeline's status
//! (the Pipeline controller watches runs, see [`pipeline_of_run`]), and the PipelineRun
//! controller watches Pipelines and reconciles the runs first in line for the free slots
//! ([`queued_runs_to_wake`]).

use super::{Context, Error, Result, is_already_exists, is_not_found};
use crate::api::{
    ConditionStatus, Pipeline, PipelineRef, PipelineRun, PipelineRunSpec, PipelineRunStatus, PipelineStatus,
    RunPhase, Trigger, labels, set_condition,
};
use crate::engine::names;
use crate::engine::schedule::{
    FinishedRun, Interval, ParsedSchedule, QueuedRun, RunQueue, TickInput, WaitReason, plan_ticks,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most run names listed in `status.activeRuns` and `status.queuedRuns`.
pub const MAX_LISTED: usize = 20;
/// Longest a Pipeline with a schedule or queued runs waits before looking again, whatever
/// happens (a safety net under the watches).
const FALLBACK_REQUEUE: Duration = Duration::from_secs(300);
/// How often a queued run looks again by itself (it is normally woken sooner).
pub const QUEUED_REQUEUE: Duration = Duration::from_secs(60);

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

fn run_pipeline_name(run: &PipelineRun) -> Option<&str> {
    run.spec.pipeline_ref.as_ref().map(|r| r.name.as_str())
}

fn is_started(run: &PipelineRun) -> bool {
    run.status
        .as_ref()
        .is_some_and(|s| s.start_time.is_some() || s.pipeline_spec.is_some())
}

fn is_finished(run: &PipelineRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(RunPhase::is_terminal)
}

fn created(run: &PipelineRun) -> jiff::Timestamp {
    run.creation_timestamp()
        .map(|t| t.0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn queue_entry(run: &PipelineRun) -> QueuedRun {
    QueuedRun {
        name: run.name_any(),
        logical_date: run.spec.logical_date.as_ref().map(|t| t.0),
        created: created(run),
        started: is_started(run),
        finished: is_finished(run),
    }
}

/// The runs of a pipeline (by `spec.pipelineRef`), fresh from the API server.
async fn runs_of(api: &Api<PipelineRun>, pipeline: &str) -> Result<Vec<PipelineRun>> {
    let runs = api.list(&ListParams::default()).await?.items;
    Ok(runs
        .into_iter()
        .filter(|r| run_pipeline_name(r) == Some(pipeline) && r.metadata.deletion_timestamp.is_none())
        .collect())
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Decides whether `run`, not yet started, may start under its pipeline's `maxActiveRuns`.
pub async fn admit(ctx: &Context, run: &PipelineRun, max_active_runs: Option<u32>) -> Result<Admission> {
    let (Some(max), Some(pipeline)) = (max_active_runs, run_pipeline_name(run)) else {
        return Ok(Admission::Start(None));
    };
    let ns = run.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let guard = ADMISSION.lock().await;
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    let mut runs = runs_of(&api, pipeline).await?;
    let me = match runs.iter().position(|r| r.uid() == run.uid()) {
        Some(i) => i,
        None => {
            runs.push(run.clone());
            runs.len() - 1
        }
    };
    let entries: Vec<QueuedRun> = runs.iter().map(queue_entry).collect();
    let queue = RunQueue::new(&entries);
    match queue.admit(me, Some(max)) {
        Ok(()) => Ok(Admission::Start(Some(guard))),
        Err(position) => Ok(Admission::Queued(format!(
            "queued: {} of {max} allowed runs of pipeline {pipeline} are active (maxActiveRuns); this \
             run is {} in line",
            queue.active.len(),
            ordinal(position)
        ))),
    }
}

/// Keeps a run that may not start yet `Pending` with reason `Queued`, or ends it when it was
/// cancelled while waiting.
pub async fn wait_in_queue(
    ctx: &Context,
    api: &Api<PipelineRun>,
    run: &PipelineRun,
    mut status: PipelineRunStatus,
    message: String,
    now: jiff::Timestamp,
) -> Result<kube::runtime::controller::Action> {
    use kube::runtime::controller::Action;
    let generation = run.metadata.generation;
    if run.spec.cancelled {
        status.phase = Some(RunPhase::Cancelled);
        status.completion_time = Some(Time(now));
        status.observed_generation = generation;
        set_condition(
            &mut status.conditions,
            "Succeeded",
            ConditionStatus::False,
            "Cancelled",
            "cancelled while queued; no task ran",
            generation,
            now,
        );
        super::apply_status(api, &run.name_any(), &status).await?;
        ctx.event(
            &run.object_ref(&()),
            None,
            EventType::Normal,
            "RunCancelled",
            "Finish",
            "cancelled while queued; no task ran".into(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let first_time = status.phase.is_none();
    status.phase = Some(RunPhase::Pending);
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        "Succeeded",
        ConditionStatus::Unknown,
        "Queued",
        message.clone(),
        generation,
        now,
    );
    if run.status.as_ref() != Some(&status) {
        super::apply_status(api, &run.name_any(), &status).await?;
    }
    if first_time {
        ctx.event(
            &run.object_ref(&()),
            None,
            EventType::Normal,
            "RunQueued",
            "Queue",
            message,
        )
        .await;
    }
    Ok(Action::requeue(QUEUED_REQUEUE))
}

/// A new run of `pipeline`, owned by it (so its history limits apply and deleting the
/// Pipeline deletes it), labelled with its pipeline and what triggered it.
pub fn new_run(
    pipeline: &Pipeline,
    name: &str,
    trigger: Trigger,
    logical_date: jiff::Timestamp,
    interval: Option<Interval>,
) -> Result<PipelineRun> {
    let mut owner = pipeline
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    // Blocking the owner's deletion needs permission on pipelines/finalizers, which people
    // running `weir trigger` may not have; garbage collection works without it.
    owner.block_owner_deletion = None;
    let (start, end) = match interval {
        Some(i) => (i.start, i.end),
        None => (logical_date, logical_date),
    };
    Ok(PipelineRun {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: pipeline.namespace(),
            labels: Some(BTreeMap::from([
                (
                    labels::MANAGED_BY.to_string(),
                    labels::MANAGED_BY_VALUE.to_string(),
                ),
                (
                    labels::PIPELINE.to_string(),
                    names::label_value(&pipeline.name_any()),
                ),
                (labels::TRIGGER.to_string(), trigger.as_str().to_string()),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: PipelineRunSpec {
            pipeline_ref: Some(PipelineRef {
                name: pipeline.name_any(),
            }),
            logical_date: Some(Time(logical_date)),
            data_interval_start: Some(Time(start)),
            data_interval_end: Some(Time(end)),
            ..Default::default()
        },
        status: None,
    })
}

/// Creates a run unless one of that name exists. Returns whether it was created.
pub async fn create_run(api: &Api<PipelineRun>, run: &PipelineRun) -> Result<bool> {
    match api.create(&PostParams::default(), run).await {
        Ok(_) => Ok(true),
        Err(e) if is_already_exists(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn owned_by(run: &PipelineRun, pipeline: &Pipeline) -> bool {
    let uid = pipeline.uid();
    run.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

fn trigger_of(run: &PipelineRun) -> Option<&str> {
    run.labels().get(labels::TRIGGER).map(String::as_str)
}

/// The schedule, history and queue part of a Pipeline's reconcile. Fills the schedule and
/// run fields of `status`; returns when to look again.
pub async fn reconcile_pipeline(
    ctx: &Context,
    pipeline: &Pipeline,
    status: &mut PipelineStatus,
    valid: bool,
    now: jiff::Timestamp,
) -> Result<Option<Duration>> {
    let ns = pipeline
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = pipeline.name_any();
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    let mut runs = runs_of(&api, &name).await?;
    let regarding = pipeline.object_ref(&());

    // History limits: delete the owned finished runs past them.
    let spec = &pipeline.spec;
    if spec.successful_runs_history_limit.is_some() || spec.failed_runs_history_limit.is_some() {
        let finished: Vec<FinishedRun> = runs
            .iter()
            .filter(|r| is_finished(r) && owned_by(r, pipeline))
            .map(|r| {
                let s = r.status.as_ref();
                FinishedRun {
                    name: r.name_any(),
                    succeeded: s.and_then(|s| s.phase) == Some(RunPhase::Succeeded),
                    finished_at: s
                        .and_then(|s| s.completion_time.as_ref())
                        .map(|t| t.0)
                        .unwrap_or_else(|| created(r)),
                }
            })
            .collect();
        let prune = crate::engine::schedule::runs_to_prune(
            &finished,
            spec.successful_runs_history_limit,
            spec.failed_runs_history_limit,
        );
        for run_name in &prune {
            match api.delete(run_name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !prune.is_empty() {
            tracing::info!(pipeline = %name, runs = ?prune, "deleted runs past the history limits");
            runs.retain(|r| !prune.contains(&r.name_any()));
        }
    }

    // The schedule.
    let mut requeue = None;
    let schedule = spec
        .schedule
        .as_ref()
        .filter(|_| valid)
        .and_then(|s| ParsedSchedule::parse(s).ok());
    match schedule {
        None => {
            status.next_schedule_time = None;
        }
        Some(schedule) => {
            // The watch cache may not hold our own last status write yet: a stale
            // lastScheduleTime would plan intervals already handled again.
            let fresh = Api::<Pipeline>::namespaced(ctx.client.clone(), &ns)
                .get(&name)
                .await?;
            let fresh_last = fresh.status.and_then(|s| s.last_schedule_time);
            if fresh_last.as_ref().map(|t| t.0) > status.last_schedule_time.as_ref().map(|t| t.0) {
                status.last_schedule_time = fresh_last;
            }
            let scheduled_unfinished: Vec<PipelineRun> = runs
                .iter()
                .filter(|r| {
                    !is_finished(r)
                        && owned_by(r, pipeline)
                        && trigger_of(r) == Some(Trigger::Schedule.as_str())
                })
                .cloned()
                .collect();
            let plan = plan_ticks(
                &schedule,
                &TickInput {
                    created: created_of(pipeline),
                    last_schedule: status.last_schedule_time.as_ref().map(|t| t.0),
                    unfinished: scheduled_unfinished.len() as u32,
                    max_active_runs: spec.max_active_runs,
                    now,
                },
            );
            for interval in &plan.create {
                let run_name = crate::engine::schedule::run_name(&name, interval.start);
                let run = new_run(
                    pipeline,
                    &run_name,
                    Trigger::Schedule,
                    interval.start,
                    Some(*interval),
                )?;
                if create_run(&api, &run).await? {
                    ctx.event(
                        &regarding,
                        None,
                        EventType::Normal,
                        "RunScheduled",
                        "Schedule",
                        format!(
                            "created run {run_name} for the interval {} to {}",
                            interval.start, interval.end
                        ),
                    )
                    .await;
                    runs.push(run);
                }
            }
            // Replaced only once the replacement exists, and only by a newer interval.
            let newest = plan.create.last().map(|i| i.start);
            let replaced: Vec<&PipelineRun> = scheduled_unfinished
                .iter()
                .filter(|r| {
                    plan.cancel_unfinished
                        && r.spec.logical_date.as_ref().map(|t| t.0) < newest
                        && !r.spec.cancelled
                })
                .collect();
            if !replaced.is_empty() {
                for run in &replaced {
                    cancel(&api, run).await?;
                }
                let replaced: Vec<String> = replaced.iter().map(|r| r.name_any()).collect();
                ctx.event(
                    &regarding,
                    None,
                    EventType::Normal,
                    "RunsReplaced",
                    "Schedule",
                    format!("concurrencyPolicy Replace: cancelling {}", replaced.join(", ")),
                )
                .await;
            }
            for (reason, count) in &plan.skipped {
                ctx.event(
                    &regarding,
                    None,
                    EventType::Warning,
                    "IntervalsSkipped",
                    "Schedule",
                    format!(
                        "skipped {count}{} interval(s): {}",
                        if *count >= crate::engine::schedule::MAX_INTERVALS {
                            " or more"
                        } else {
                            ""
                        },
                        reason.describe()
                    ),
                )
                .await;
            }
            if let Some(wait) = plan.waiting {
                tracing::debug!(pipeline = %name, ?wait, "due intervals wait");
                if wait == WaitReason::CatchupWindow || wait == WaitReason::Forbid {
                    // Runs finishing wake the Pipeline; this is the safety net.
                    requeue = Some(FALLBACK_REQUEUE);
                }
            }
            status.last_schedule_time = plan.last_schedule.map(Time);
            status.next_schedule_time = plan.next_schedule.map(Time);
            if let Some(next) = plan.next_schedule {
                let wait = Duration::try_from(next.duration_since(now)).unwrap_or_default();
                // A little after the cron time, so the clock has surely passed it.
                let wait = (wait + Duration::from_millis(50)).min(FALLBACK_REQUEUE);
                requeue = Some(requeue.map_or(wait, |r: Duration| r.min(wait)));
            }
        }
    }

    // Active and queued runs.
    let entries: Vec<QueuedRun> = runs.iter().map(queue_entry).collect();
    let queue = RunQueue::new(&entries);
    status.active_run_count = Some(queue.active.len() as u32);
    status.active_runs = queue
        .active
        .iter()
        .take(MAX_LISTED)
        .map(|&i| entries[i].name.clone())
        .collect();
    // Without a limit nothing waits: runs not started yet are merely starting.
    let queued = if spec.max_active_runs.is_some() {
        queue.waiting.len()
    } else {
        0
    };
    status.queued_run_count = (queued > 0).then_some(queued as u32);
    status.queued_runs = queue
        .waiting
        .iter()
        .take(queued.min(MAX_LISTED))
        .map(|&i| entries[i].name.clone())
        .collect();
    if queued > 0 {
        requeue = Some(requeue.map_or(QUEUED_REQUEUE, |r| r.min(QUEUED_REQUEUE)));
    }
    Ok(requeue)
}

fn created_of(pipeline: &Pipeline) -> jiff::Timestamp {
    pipeline
        .creation_timestamp()
        .map(|t| t.0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

async fn cancel(api: &Api<PipelineRun>, run: &PipelineRun) -> Result<()> {
    if run.spec.cancelled {
        return Ok(());
    }
    let patch = serde_json::json!({ "spec": { "cancelled": true } });
    match api
        .patch(&run.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// For the Pipeline controller's watch of runs: the Pipeline a run belongs to. Runs that
/// are merely making progress are left out (their Pipeline has nothing to do about them);
/// runs that appear, wait, start or finish are not.
pub fn pipeline_of_run(run: PipelineRun) -> Option<ObjectRef<Pipeline>> {
    let running = run.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Running);
    if running && !run.spec.cancelled {
        return None;
    }
    let name = run_pipeline_name(&run)?;
    Some(ObjectRef::new(name).within(&run.namespace()?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PipelineSpec;

    fn pipeline(max: Option<u32>, active: u32, queued: &[&str]) -> Pipeline {
        let mut p = Pipeline::new(
            "etl",
            PipelineSpec {
                max_active_runs: max,
                ..Default::default()
            },
        );
        p.metadata.namespace = Some("data".into());
        p.metadata.uid = Some("uid-1".into());
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
    fn new_runs_are_owned_labelled_and_carry_their_interval() {
        let p = pipeline(None, 0, &[]);
        let start: jiff::Timestamp = "2024-03-01T00:00:00Z".parse().unwrap();
        let end: jiff::Timestamp = "2024-03-02T00:00:00Z".parse().unwrap();
        let run = new_run(
            &p,
            "etl-20240301-000000",
            Trigger::Backfill,
            start,
            Some(Interval { start, end }),
        )
        .unwrap();
        assert_eq!(run.labels()[labels::TRIGGER], "backfill");
        assert_eq!(run.labels()[labels::PIPELINE], "etl");
        let owner = &run.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Pipeline", "uid-1"));
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, None);
        assert_eq!(run.spec.data_interval_end, Some(Time(end)));
        assert_eq!(run.spec.logical_date, Some(Time(start)));
        // A manual run's interval is the moment it was triggered.
        let manual = new_run(&p, "etl-manual", Trigger::Manual, start, None).unwrap();
        assert_eq!(manual.spec.data_interval_start, manual.spec.data_interval_end);
    }

    #[test]
    fn only_runs_that_appear_wait_start_or_finish_move_their_pipeline() {
        let mut run = PipelineRun::new(
            "r",
            PipelineRunSpec {
                pipeline_ref: Some(PipelineRef { name: "etl".into() }),
                ..Default::default()
            },
        );
        run.metadata.namespace = Some("data".into());
        assert_eq!(pipeline_of_run(run.clone()).map(|r| r.name), Some("etl".into()));
        run.status = Some(PipelineRunStatus {
            phase: Some(RunPhase::Running),
            ..Default::default()
        });
        assert!(pipeline_of_run(run.clone()).is_none());
        run.spec.cancelled = true;
        assert!(pipeline_of_run(run.clone()).is_some());
        run.status.as_mut().unwrap().phase = Some(RunPhase::Succeeded);
        assert!(pipeline_of_run(run).is_some());
    }
}
