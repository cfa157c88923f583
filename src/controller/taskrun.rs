//! TaskRun: one task of a run, reconciled in named steps. `observe` reads the attempt Jobs
//! and their pods; `record_attempts` turns them into the attempts of the status; the engine's
//! `plan_task` decides what to do; `apply` starts or stops a Job; `build_status` describes
//! the outcome; `update_status` stores it and only then deletes Jobs; `publish_events` tells.
//! The steps in between the reads and the writes take values and return values: no client,
//! no clock.

use super::job::{AttemptReport, build_job, observe_attempt};
use super::{ApiResultExt, Context, Error, Result, apply_status, list_by_label, now, truncate};
use crate::api::condition::find;
use crate::api::{
    Attempt, AttemptPhase, ConditionStatus, FailureReason, PipelineRun, TaskPhase, TaskRun, TaskRunSpec,
    TaskRunStatus, actions, condition_types, labels, reasons, set_condition,
};
use crate::engine::{AttemptAction, ObservedAttempt, TaskInput, TaskPlan, duration, outputs, plan_task};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Longest attempt message kept in status (the rest is in the pod's logs).
const MAX_MESSAGE: usize = 1024;
/// While an attempt runs, look again this often even without events, in case one was missed.
const RESYNC: Duration = Duration::from_secs(300);
/// The message of an attempt stopped because its task was cancelled.
const CANCELLED_MESSAGE: &str = "stopped: the task was cancelled";

/// One look at a TaskRun: reads in `observe`, writes in `apply`, `update_status` and
/// `publish_events`, and everything decided in between from plain values.
pub async fn reconcile(tr: Arc<TaskRun>, ctx: Arc<Context>) -> Result<Action> {
    if tr.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = tr.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let old = tr.status.clone().unwrap_or_default();
    let now = now();

    let (jobs, pods) = observe(&ctx, &ns, &tr).await?;
    let recorded = record_attempts(&old.attempts, &jobs, &pods, &tr.spec, now);
    let plan = plan(&tr.spec, &recorded.attempts, now);
    let (recorded, started) = apply(&ctx, &ns, &tr, plan.action, recorded, now).await?;
    let status = build_status(&tr, &old, recorded.attempts, recorded.outputs, &plan, now);
    update_status(&ctx, &ns, &tr, &old, &status, &recorded.to_delete).await?;
    publish_events(&tr, &ctx, &old, &status, started).await;
    Ok(next_reconcile(&plan, &status, now))
}

/// Reads: the Jobs and pods of every attempt, fresh from the API server (never a possibly
/// stale cache: they decide whether a Job is created).
async fn observe(ctx: &Context, ns: &str, tr: &TaskRun) -> Result<(Vec<Job>, Vec<Pod>)> {
    let uid = tr.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let selector = format!("{}={uid}", labels::TASK_RUN_UID);
    let jobs = list_by_label(&Api::<Job>::namespaced(ctx.client.clone(), ns), &selector).await?;
    let pods = list_by_label(&Api::<Pod>::namespaced(ctx.client.clone(), ns), &selector).await?;
    Ok((jobs, pods))
}

/// What `record_attempts` makes of the observed Jobs and pods.
#[derive(Clone, Debug, Default, PartialEq)]
struct Recorded {
    /// Every attempt by number, oldest first.
    attempts: BTreeMap<u32, Attempt>,
    /// Jobs to delete, once the status holds why.
    to_delete: Vec<String>,
    /// The outputs of the attempt that succeeded (all declared ones present).
    outputs: Option<BTreeMap<String, String>>,
}

/// The attempts as they stand now, from those recorded before and what the Jobs and pods say.
/// An attempt is recorded once it finishes and never re-read: its Job may be gone by then.
fn record_attempts(
    previous: &[Attempt],
    jobs: &[Job],
    pods: &[Pod],
    spec: &TaskRunSpec,
    now: jiff::Timestamp,
) -> Recorded {
    let mut out = Recorded {
        attempts: previous.iter().map(|a| (a.number, a.clone())).collect(),
        ..Default::default()
    };
    let mut live_jobs: HashSet<u32> = HashSet::new();
    // A Job being deleted counts as gone: its attempt can no longer finish.
    for job in jobs.iter().filter(|j| j.metadata.deletion_timestamp.is_none()) {
        let Some(number) = attempt_number(job) else {
            continue;
        };
        live_jobs.insert(number);
        let report = observe_attempt(job, latest_pod(pods, number));
        if let Some(recorded) = out.attempts.get(&number)
            && recorded.phase != AttemptPhase::Running
        {
            // The result is recorded; make sure nothing of a failed attempt keeps running
            // (for example after a crash between recording a cancel and deleting the Job).
            if report.phase == AttemptPhase::Running {
                out.to_delete.push(job.name_any());
            }
            continue;
        }
        if report.stuck {
            out.to_delete.push(job.name_any());
        }
        let (report, parsed) = check_outputs(report, &spec.outputs);
        if parsed.is_some() {
            out.outputs = parsed;
        }
        out.attempts.insert(number, attempt_of(number, job, report, now));
    }
    for attempt in out.attempts.values_mut() {
        if attempt.phase == AttemptPhase::Running && !live_jobs.contains(&attempt.number) {
            if spec.cancelled {
                cancel(attempt, now);
            } else {
                attempt.phase = AttemptPhase::Failed;
                attempt.completion_time = Some(Time(now));
                attempt.reason = Some(FailureReason::Lost);
                attempt.message = Some(format!("Job {} was deleted before it finished", attempt.job_name));
            }
        }
    }
    out
}

fn attempt_number(job: &Job) -> Option<u32> {
    job.labels().get(labels::ATTEMPT)?.parse().ok()
}

/// The newest pod of an attempt: an evicted pod may be followed by a replacement.
fn latest_pod(pods: &[Pod], number: u32) -> Option<&Pod> {
    pods.iter()
        .filter(|p| p.labels().get(labels::ATTEMPT) == Some(&number.to_string()))
        .max_by_key(|p| p.creation_timestamp().map(|t| t.0))
}

/// On success the termination message is the task's outputs, not a message: parsed, and the
/// attempt failed with `OutputError` when a declared output is missing.
fn check_outputs(
    mut report: AttemptReport,
    declared: &[String],
) -> (AttemptReport, Option<BTreeMap<String, String>>) {
    if report.phase != AttemptPhase::Succeeded {
        return (report, None);
    }
    match outputs::parse(report.message.as_deref().unwrap_or(""), declared) {
        Ok(parsed) => {
            report.message = None;
            (report, Some(parsed))
        }
        Err(problem) => {
            report.phase = AttemptPhase::Failed;
            report.reason = Some(FailureReason::OutputError);
            report.message = Some(problem);
            (report, None)
        }
    }
}

/// The record of attempt `number` from its Job and what `observe_attempt` read.
fn attempt_of(number: u32, job: &Job, report: AttemptReport, now: jiff::Timestamp) -> Attempt {
    Attempt {
        number,
        job_name: job.name_any(),
        phase: report.phase,
        start_time: job.creation_timestamp(),
        completion_time: report
            .finished_at
            .or((report.phase != AttemptPhase::Running).then_some(now))
            .map(Time),
        exit_code: report.exit_code,
        reason: report.reason,
        message: report.message.map(|m| truncate(&m, MAX_MESSAGE)),
    }
}

/// Marks an attempt as stopped by the task's cancellation.
fn cancel(attempt: &mut Attempt, now: jiff::Timestamp) {
    attempt.phase = AttemptPhase::Failed;
    attempt.completion_time = Some(Time(now));
    attempt.reason = Some(FailureReason::Cancelled);
    attempt.message = Some(CANCELLED_MESSAGE.into());
}

/// Asks the engine what to do next, given the attempts so far.
fn plan(spec: &TaskRunSpec, attempts: &BTreeMap<u32, Attempt>, now: jiff::Timestamp) -> TaskPlan {
    let observed: Vec<ObservedAttempt> = attempts
        .values()
        .map(|a| ObservedAttempt {
            number: a.number,
            phase: a.phase,
            reason: a.reason,
            exit_code: a.exit_code,
            finished_at: a.completion_time.as_ref().map(|t| t.0),
        })
        .collect();
    plan_task(&TaskInput {
        retries: spec.retries.as_ref(),
        attempts: &observed,
        cancel_requested: spec.cancelled,
        now,
    })
}

/// Writes: creates the Job of a new attempt, or records a Stop (its Job is deleted by
/// `update_status`). Returns the attempts with the action recorded, and the attempt this
/// reconcile started, if any.
async fn apply(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    action: AttemptAction,
    mut recorded: Recorded,
    now: jiff::Timestamp,
) -> Result<(Recorded, Option<u32>)> {
    let mut started = None;
    match action {
        AttemptAction::Create(number) => {
            let job = build_job(tr, number, &ctx.task_defaults).ok_or(Error::MissingField("metadata.uid"))?;
            let created = Api::<Job>::namespaced(ctx.client.clone(), ns)
                .create(&PostParams::default(), &job)
                .await
                // Made by an earlier reconcile (or an earlier operator): never a second Job.
                .ignore_already_exists()?;
            if created.is_some() {
                started = Some(number);
                ctx.metrics.job_created(number, tr.creation_timestamp().as_ref());
            }
            let job_name = job.metadata.name.unwrap_or_default();
            recorded
                .attempts
                .entry(number)
                .or_insert_with(|| started_attempt(number, job_name, now));
        }
        AttemptAction::Stop(number) => recorded = record_stop(recorded, number, now),
        AttemptAction::None => {}
    }
    Ok((recorded, started))
}

/// The record of an attempt whose Job was just created.
fn started_attempt(number: u32, job_name: String, now: jiff::Timestamp) -> Attempt {
    Attempt {
        number,
        job_name,
        phase: AttemptPhase::Running,
        start_time: Some(Time(now)),
        ..Default::default()
    }
}

/// Records attempt `number` as cancelled and its Job as one to delete.
fn record_stop(mut recorded: Recorded, number: u32, now: jiff::Timestamp) -> Recorded {
    if let Some(attempt) = recorded.attempts.get_mut(&number) {
        recorded.to_delete.push(attempt.job_name.clone());
        cancel(attempt, now);
    }
    recorded
}

/// The status that describes `attempts` and `plan`. `outputs` are kept only once the task
/// succeeded.
fn build_status(
    tr: &TaskRun,
    old: &TaskRunStatus,
    attempts: BTreeMap<u32, Attempt>,
    outputs: Option<BTreeMap<String, String>>,
    plan: &TaskPlan,
    now: jiff::Timestamp,
) -> TaskRunStatus {
    let attempts: Vec<Attempt> = attempts.into_values().collect();
    let mut status = old.clone();
    let phase = plan.phase;
    status.observed_generation = tr.metadata.generation;
    status.phase = Some(phase);
    status.start_time = old
        .start_time
        .clone()
        .or_else(|| attempts.first().and_then(|a| a.start_time.clone()));
    status.completion_time = if phase.is_terminal() {
        old.completion_time.clone().or(Some(Time(now)))
    } else {
        None
    };
    status.next_retry_time = plan.next_retry_at.map(Time);
    status.attempt_count = Some(attempts.len() as u32);
    let (cond, reason, message) = succeeded_condition(&attempts, plan);
    set_condition(
        &mut status.conditions,
        condition_types::SUCCEEDED,
        cond,
        reason,
        message,
        tr.metadata.generation,
        now,
    );
    status.attempts = attempts;
    if phase == TaskPhase::Succeeded
        && let Some(outputs) = outputs
    {
        status.outputs = outputs;
    }
    status
}

/// Status, reason and message of the `Succeeded` condition.
fn succeeded_condition(attempts: &[Attempt], plan: &TaskPlan) -> (ConditionStatus, &'static str, String) {
    let last = attempts.last();
    let detail = last.and_then(|a| a.message.clone()).unwrap_or_default();
    match plan.phase {
        TaskPhase::Succeeded => (
            ConditionStatus::True,
            reasons::SUCCEEDED,
            format!("succeeded on attempt {}", attempts.len()),
        ),
        TaskPhase::Cancelled => (
            ConditionStatus::False,
            reasons::CANCELLED,
            "the task was cancelled".into(),
        ),
        TaskPhase::Failed => {
            let reason = last.and_then(|a| a.reason).unwrap_or(FailureReason::Unknown);
            (
                ConditionStatus::False,
                reason.as_str(),
                format!("failed after {} attempt(s): {detail}", attempts.len()),
            )
        }
        TaskPhase::Retrying => {
            let at = plan.next_retry_at.map(|t| t.to_string()).unwrap_or_default();
            (
                ConditionStatus::Unknown,
                reasons::RETRYING,
                format!(
                    "attempt {} failed ({detail}); next attempt at {at}",
                    attempts.len()
                ),
            )
        }
        _ => (
            ConditionStatus::Unknown,
            reasons::RUNNING,
            format!("attempt {} running", attempts.len().max(1)),
        ),
    }
}

/// Writes the status if it changed, then deletes the Jobs given up on.
async fn update_status(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    old: &TaskRunStatus,
    status: &TaskRunStatus,
    to_delete: &[String],
) -> Result<()> {
    if status != old {
        let task_runs = Api::<TaskRun>::namespaced(ctx.client.clone(), ns);
        apply_status(&task_runs, &tr.name_any(), status).await?;
    }
    // Delete after the status holds the outcome, so a crash in between still ends right.
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns);
    for job in to_delete {
        jobs.delete(job, &DeleteParams::background())
            .await
            .ignore_not_found()?;
    }
    Ok(())
}

/// When to look again: when the retry delay is over; for a finished task only on a change;
/// otherwise after [`RESYNC`].
fn next_reconcile(plan: &TaskPlan, status: &TaskRunStatus, now: jiff::Timestamp) -> Action {
    match (plan.next_retry_at, status.phase) {
        (Some(at), _) => {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
            Action::requeue(wait + Duration::from_millis(50))
        }
        (None, Some(phase)) if phase.is_terminal() => Action::await_change(),
        _ => Action::requeue(RESYNC),
    }
}

/// Task events go to the owning PipelineRun (what people `kubectl describe`), with the
/// TaskRun as the related object; a TaskRun made by hand gets them itself.
async fn publish_events(
    tr: &TaskRun,
    ctx: &Context,
    old: &TaskRunStatus,
    new: &TaskRunStatus,
    started: Option<u32>,
) {
    let own_ref = tr.object_ref(&());
    let (regarding, related) = match owner_run(tr) {
        Some(run) => (run, Some(own_ref)),
        None => (own_ref, None),
    };
    let attempt = |number: u32| new.attempts.iter().find(|a| a.number == number);
    if let Some(n) = started {
        let job = attempt(n).map(|a| a.job_name.clone()).unwrap_or_default();
        let task = &tr.spec.task_name;
        let limit = tr.spec.retries.as_ref().map_or(0, |r| r.limit) + 1;
        // The attempt's Job is the related object: Events of different attempts stay apart
        // instead of being folded into one series.
        ctx.event(
            &regarding,
            attempt(n).map(|a| job_ref(tr, a)).or(related.clone()),
            EventType::Normal,
            reasons::TASK_STARTED,
            actions::START,
            format!("task {task}: attempt {n} of {limit} started as Job {job}"),
        )
        .await;
    }
    if old.phase == new.phase {
        return;
    }
    let Some((type_, reason, note)) = phase_event(&tr.spec.task_name, new, now()) else {
        return;
    };
    let related = if new.phase == Some(TaskPhase::Retrying) {
        new.attempts.last().map(|a| job_ref(tr, a)).or(related)
    } else {
        related
    };
    ctx.event(&regarding, related, type_, reason, actions::RECONCILE, note)
        .await;
    ctx.metrics.task_phase_changed(new.phase);
}

/// The Event for a task that reached `new.phase`; none for phases that are not news.
fn phase_event(
    task: &str,
    new: &TaskRunStatus,
    now: jiff::Timestamp,
) -> Option<(EventType, &'static str, String)> {
    let attempts = new.attempts.len();
    let detail = new
        .attempts
        .last()
        .and_then(|a| a.message.clone())
        .unwrap_or_default();
    Some(match new.phase? {
        TaskPhase::Succeeded => (
            EventType::Normal,
            reasons::TASK_SUCCEEDED,
            format!("task {task} succeeded on attempt {attempts}"),
        ),
        TaskPhase::Failed => (
            EventType::Warning,
            reasons::TASK_FAILED,
            format!("task {task} failed after {attempts} attempt(s): {detail}"),
        ),
        TaskPhase::Retrying => {
            let at = new.next_retry_time.as_ref().map(|t| t.0);
            let wait = at
                .and_then(|t| Duration::try_from(t.duration_since(now)).ok())
                .map(duration::format)
                .unwrap_or_default();
            let at = at.map(|t| t.to_string()).unwrap_or_default();
            (
                EventType::Warning,
                reasons::TASK_RETRYING,
                format!("task {task}: attempt {attempts} failed ({detail}); retrying in {wait} at {at}"),
            )
        }
        TaskPhase::Cancelled => (
            EventType::Normal,
            reasons::TASK_CANCELLED,
            format!("task {task} was cancelled"),
        ),
        _ => return None,
    })
}

fn job_ref(tr: &TaskRun, attempt: &Attempt) -> ObjectReference {
    ObjectReference {
        api_version: Some(Job::api_version(&()).into_owned()),
        kind: Some(Job::kind(&()).into_owned()),
        name: Some(attempt.job_name.clone()),
        namespace: tr.namespace(),
        ..Default::default()
    }
}

fn owner_run(tr: &TaskRun) -> Option<ObjectReference> {
    let owner = tr
        .owner_references()
        .iter()
        .find(|o| o.kind == PipelineRun::kind(&()) && o.controller == Some(true))?;
    Some(ObjectReference {
        api_version: Some(owner.api_version.clone()),
        kind: Some(owner.kind.clone()),
        name: Some(owner.name.clone()),
        namespace: tr.namespace(),
        uid: Some(owner.uid.clone()),
        ..Default::default()
    })
}

/// The `Succeeded` condition's message of a TaskRun, for run summaries.
pub fn failure_message(tr: &TaskRun) -> Option<String> {
    let status = tr.status.as_ref()?;
    find(&status.conditions, condition_types::SUCCEEDED)
        .filter(|c| c.status == ConditionStatus::False.as_str())
        .map(|c| c.message.clone())
}
