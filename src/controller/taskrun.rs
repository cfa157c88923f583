//! TaskRun: one task of a run. Observes its attempt Jobs (and their pods), asks
//! `engine::plan_task` what to do, creates or stops Jobs, records every attempt.

use super::job::{build_job, observe_attempt};
use super::{
    Context, Error, Result, apply_status, error_backoff, is_already_exists, is_not_found, list_by_label, now,
    truncate,
};
use crate::api::condition::find;
use crate::api::{
    Attempt, AttemptPhase, ConditionStatus, FailureReason, PipelineRun, TaskPhase, TaskRun, TaskRunStatus,
    labels, set_condition,
};
use crate::engine::{AttemptAction, ObservedAttempt, TaskInput, duration, outputs, plan_task};
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

pub async fn reconcile(tr: Arc<TaskRun>, ctx: Arc<Context>) -> Result<Action> {
    if tr.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = tr.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let uid = tr.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let name = tr.name_any();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let old = tr.status.clone().unwrap_or_default();
    let now = now();

    let selector = format!("{}={uid}", labels::TASK_RUN_UID);
    let jobs = list_by_label(&jobs_api, &selector).await?;
    let pods = list_by_label(&pods_api, &selector).await?;

    let mut attempts: BTreeMap<u32, Attempt> = old.attempts.iter().map(|a| (a.number, a.clone())).collect();
    let mut to_delete: Vec<String> = Vec::new();
    let mut live_jobs: HashSet<u32> = HashSet::new();
    let mut new_outputs: Option<BTreeMap<String, String>> = None;
    for job in &jobs {
        let Some(number) = job
            .labels()
            .get(labels::ATTEMPT)
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if job.metadata.deletion_timestamp.is_some() {
            continue;
        }
        live_jobs.insert(number);
        let pod = pods
            .iter()
            .filter(|p| p.labels().get(labels::ATTEMPT) == Some(&number.to_string()))
            .max_by_key(|p| p.creation_timestamp().map(|t| t.0));
        let mut report = observe_attempt(job, pod);
        if let Some(recorded) = attempts.get(&number)
            && recorded.phase != AttemptPhase::Running
        {
            // The result is recorded; make sure nothing of a failed attempt keeps running
            // (for example after a crash between recording a cancel and deleting the Job).
            if report.phase == AttemptPhase::Running {
                to_delete.push(job.name_any());
            }
            continue;
        }
        if report.stuck {
            to_delete.push(job.name_any());
        }
        if report.phase == AttemptPhase::Succeeded {
            // On success the termination message is the task's outputs, not a message.
            match outputs::parse(report.message.as_deref().unwrap_or(""), &tr.spec.outputs) {
                Ok(parsed) => new_outputs = Some(parsed),
                Err(problem) => {
                    report.phase = AttemptPhase::Failed;
                    report.reason = Some(FailureReason::OutputError);
                    report.message = Some(problem);
                }
            }
            if report.phase == AttemptPhase::Succeeded {
                report.message = None;
            }
        }
        attempts.insert(
            number,
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
            },
        );
    }
    for attempt in attempts.values_mut() {
        if attempt.phase == AttemptPhase::Running && !live_jobs.contains(&attempt.number) {
            attempt.phase = AttemptPhase::Failed;
            attempt.completion_time = Some(Time(now));
            if tr.spec.cancelled {
                attempt.reason = Some(FailureReason::Cancelled);
                attempt.message = Some("stopped: the task was cancelled".into());
            } else {
                attempt.reason = Some(FailureReason::Lost);
                attempt.message = Some(format!("Job {} was deleted before it finished", attempt.job_name));
            }
        }
    }

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
    let plan = plan_task(&TaskInput {
        retries: tr.spec.retries.as_ref(),
        attempts: &observed,
        cancel_requested: tr.spec.cancelled,
        now,
    });

    let mut started = None;
    match plan.action {
        AttemptAction::Create(number) => {
            let job =
                build_job(&tr, number, &ctx.task_defaults).ok_or(Error::MissingField("metadata.uid"))?;
            let job_name = job.metadata.name.clone().unwrap_or_default();
            match jobs_api.create(&PostParams::default(), &job).await {
                Ok(_) => {
                    started = Some(number);
                    ctx.metrics.job_created(number, tr.creation_timestamp().as_ref());
                }
                // Made by an earlier reconcile (or an earlier operator): never a second Job.
                Err(e) if is_already_exists(&e) => {}
                Err(e) => return Err(e.into()),
            }
            attempts.entry(number).or_insert(Attempt {
                number,
                job_name,
                phase: AttemptPhase::Running,
                start_time: Some(Time(now)),
                ..Default::default()
            });
        }
        AttemptAction::Stop(number) => {
            if let Some(attempt) = attempts.get_mut(&number) {
                to_delete.push(attempt.job_name.clone());
                attempt.phase = AttemptPhase::Failed;
                attempt.reason = Some(FailureReason::Cancelled);
                attempt.message = Some("stopped: the task was cancelled".into());
                attempt.completion_time = Some(Time(now));
            }
        }
        AttemptAction::None => {}
    }

    let mut status = build_status(&tr, &old, attempts.into_values().collect(), &plan, now);
    if status.phase == Some(TaskPhase::Succeeded)
        && let Some(outputs) = new_outputs
    {
        status.outputs = outputs;
    }
    if status != old {
        apply_status(
            &Api::<TaskRun>::namespaced(ctx.client.clone(), &ns),
            &name,
            &status,
        )
        .await?;
    }
    // Delete after the status holds the outcome, so a crash in between still ends right.
    for job in to_delete {
        match jobs_api.delete(&job, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    publish_events(&tr, &ctx, &old, &status, started).await;

    Ok(match (plan.next_retry_at, status.phase) {
        (Some(at), _) => {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
            Action::requeue(wait + Duration::from_millis(50))
        }
        (None, Some(phase)) if phase.is_terminal() => Action::await_change(),
        _ => Action::requeue(RESYNC),
    })
}

fn build_status(
    tr: &TaskRun,
    old: &TaskRunStatus,
    attempts: Vec<Attempt>,
    plan: &crate::engine::TaskPlan,
    now: jiff::Timestamp,
) -> TaskRunStatus {
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
    let last = attempts.last();
    let (cond, reason, message) = match phase {
        TaskPhase::Succeeded => (
            ConditionStatus::True,
            "Succeeded".to_string(),
            format!("succeeded on attempt {}", attempts.len()),
        ),
        TaskPhase::Cancelled => (
            ConditionStatus::False,
            "Cancelled".into(),
            "the task was cancelled".into(),
        ),
        TaskPhase::Failed => {
            let reason = last.and_then(|a| a.reason).unwrap_or(FailureReason::Unknown);
            let detail = last.and_then(|a| a.message.clone()).unwrap_or_default();
            (
                ConditionStatus::False,
                reason.as_str().to_string(),
                format!("failed after {} attempt(s): {detail}", attempts.len()),
            )
        }
        TaskPhase::Retrying => {
            let detail = last.and_then(|a| a.message.clone()).unwrap_or_default();
            let at = plan.next_retry_at.map(|t| t.to_string()).unwrap_or_default();
            (
                ConditionStatus::Unknown,
                "Retrying".into(),
                format!(
                    "attempt {} failed ({detail}); next attempt at {at}",
                    attempts.len()
                ),
            )
        }
        _ => (
            ConditionStatus::Unknown,
            "Running".into(),
            format!("attempt {} running", attempts.len().max(1)),
        ),
    };
    set_condition(
        &mut status.conditions,
        "Succeeded",
        cond,
        &reason,
        message,
        tr.metadata.generation,
        now,
    );
    status.attempts = attempts;
    status
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
    let job_ref = |number: u32| {
        let name = new.attempts.iter().find(|a| a.number == number)?.job_name.clone();
        Some(ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: Some(name),
            namespace: tr.namespace(),
            ..Default::default()
        })
    };
    let task = &tr.spec.task_name;
    let limit = tr.spec.retries.as_ref().map_or(0, |r| r.limit) + 1;
    if let Some(n) = started {
        let job = new
            .attempts
            .iter()
            .find(|a| a.number == n)
            .map(|a| a.job_name.clone())
            .unwrap_or_default();
        // The attempt's Job is the related object: Events of different attempts stay apart
        // instead of being folded into one series.
        ctx.event(
            &regarding,
            job_ref(n).or(related.clone()),
            EventType::Normal,
            "TaskStarted",
            "Start",
            format!("task {task}: attempt {n} of {limit} started as Job {job}"),
        )
        .await;
    }
    if old.phase == new.phase {
        return;
    }
    let last = new.attempts.last();
    let detail = last.and_then(|a| a.message.clone()).unwrap_or_default();
    let last_job = last.and_then(|a| job_ref(a.number));
    let (type_, reason, note) = match new.phase {
        Some(TaskPhase::Succeeded) => (
            EventType::Normal,
            "TaskSucceeded",
            format!("task {task} succeeded on attempt {}", new.attempts.len()),
        ),
        Some(TaskPhase::Failed) => (
            EventType::Warning,
            "TaskFailed",
            format!(
                "task {task} failed after {} attempt(s): {detail}",
                new.attempts.len()
            ),
        ),
        Some(TaskPhase::Retrying) => {
            let at = new
                .next_retry_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            let wait = new
                .next_retry_time
                .as_ref()
                .and_then(|t| Duration::try_from(t.0.duration_since(now())).ok())
                .map(duration::format)
                .unwrap_or_default();
            (
                EventType::Warning,
                "TaskRetrying",
                format!(
                    "task {task}: attempt {} failed ({detail}); retrying in {wait} at {at}",
                    new.attempts.len()
                ),
            )
        }
        Some(TaskPhase::Cancelled) => (
            EventType::Normal,
            "TaskCancelled",
            format!("task {task} was cancelled"),
        ),
        _ => return,
    };
    let related = if new.phase == Some(TaskPhase::Retrying) {
        last_job.or(related)
    } else {
        related
    };
    ctx.event(&regarding, related, type_, reason, "Reconcile", note)
        .await;
    ctx.metrics.task_phase_changed(new.phase);
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
    find(&status.conditions, "Succeeded")
        .filter(|c| c.status == "False")
        .map(|c| c.message.clone())
}
