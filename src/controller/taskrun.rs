//! TaskRun: one task of a run, reconciled in named steps. `observe` reads the attempt Jobs
//! and their pods; `record_attempts` turns them into the attempts of the status; the engine's
//! `plan_task` decides what to do; `apply` starts or stops a Job; `build_status` describes
//! the outcome; `update_status` stores it and only then deletes Jobs; `publish_events` tells.
//! The steps in between the reads and the writes take values and return values: no client,
//! no clock.

use super::job::{AttemptReport, build_job, job_active, observe_attempt, pod_terminated};
use super::podless;
use super::pool::{self, Gate};
use super::{ApiResultExt, Context, Error, Result, apply_status, list_by_label, now, truncate};
use crate::api::condition::find;
use crate::api::{
    Attempt, AttemptPhase, ConditionStatus, FailureReason, PipelineRun, PodReplacements, TaskPhase, TaskRun,
    TaskRunSpec, TaskRunStatus, actions, condition_types, labels, reasons, set_condition,
};
use crate::engine::{
    AttemptAction, ObservedAttempt, TaskInput, TaskPlan, duration, outputs, plan_task, retry,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Predicate, predicates};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Longest attempt message kept in status (the rest is in the pod's logs).
const MAX_MESSAGE: usize = 1024;
/// While an attempt runs, look again this often even without events, in case one was missed.
const RESYNC: Duration = Duration::from_secs(300);

/// When a TaskRun whose first Job the run's pass was creating is looked at again, should
/// that create have failed (a created Job wakes it at once).
const FIRST_JOB_RECHECK: Duration = Duration::from_secs(1);
/// The message of an attempt stopped because its task was cancelled.
const CANCELLED_MESSAGE: &str = "stopped: the task was cancelled";
/// The message of an attempt stopped because its task's deadline passed (`onMiss: Fail`).
const DEADLINE_MESSAGE: &str = "stopped: the task's deadline passed";

/// What of a TaskRun wakes its reconcile: everything but its status, which only this
/// reconcile writes. Its own status writes would otherwise each wake it once more, for a
/// look that lists its Jobs and pods again to find nothing new (in a wide fan-out, a third
/// of the operator's requests). Its Jobs, pods, pool and approvals wake it on their own.
pub fn woken_by() -> impl Predicate<TaskRun> + Send + 'static {
    let deleting = |tr: &TaskRun| Some(u64::from(tr.metadata.deletion_timestamp.is_some()));
    predicates::generation
        .combine(predicates::labels)
        .combine(predicates::annotations)
        .combine(deleting)
}

/// One look at a TaskRun: reads in `observe`, writes in `apply`, `update_status` and
/// `publish_events`, and everything decided in between from plain values.
pub async fn reconcile(tr: Arc<TaskRun>, ctx: Arc<Context>) -> Result<Action> {
    if tr.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = tr.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    if tr.status.is_none() && ctx.fresh.first_jobs.is_expected(&ns, &tr.name_any()) {
        // The run's pass is creating the first Job: its watch event wakes this TaskRun; the
        // requeue is for a create that failed.
        return Ok(Action::requeue(FIRST_JOB_RECHECK));
    }
    let old = tr.status.clone().unwrap_or_default();
    let now = now();

    let (jobs, pods) = observe(&ctx, &ns, &tr).await?;
    let round = take_rerun(&tr.spec, &old);
    let omitted = old.attempts_omitted.unwrap_or(0);
    let mut recorded = record_attempts(&old.attempts, omitted, &jobs, &pods, &tr.spec, now);
    let evaluated = podless::evaluate(&ctx, &ns, &tr, &mut recorded.attempts, now).await?;
    recorded.outputs = recorded.outputs.or(evaluated.outputs);
    let plan = plan(&tr.spec, &recorded.attempts, round.round_start.unwrap_or(0), now);
    let gate = gate(&ctx, &ns, &tr, &plan, now).await?;
    let plan = hold_back(plan, &gate);
    let (mut recorded, started) = apply(&ctx, &ns, &tr, plan.action, recorded, now).await?;
    let started = started.or_else(|| first_seen(&old.attempts, &recorded.attempts));
    podless::announce(&ctx, &ns, &tr, &mut recorded.attempts, started, now).await?;
    let status = build_status(&tr, &round, recorded.attempts, recorded.outputs, &plan, now);
    let mut status = waiting_status(status, &gate, tr.metadata.generation, now);
    let waits_for_approval = tr.spec.approval.is_some() && evaluated.look_again.is_some();
    super::approval::record(
        &mut status,
        waits_for_approval,
        evaluated.approval,
        evaluated.ignored_approvals,
    );
    let status = super::asset::record_produced(&ctx, &ns, &tr, status).await?;
    let written = update_status(&ctx, &ns, &tr, &old, &status, &recorded.to_delete).await?;
    if nothing_left(&status, &recorded.to_delete) {
        let api = Api::<TaskRun>::namespaced(ctx.client.clone(), &ns);
        super::finished::mark(&api, written.as_ref().unwrap_or(&tr)).await?;
    }
    publish_events(&tr, &ctx, &old, &status, &plan, started).await;
    if let Some(event) = wait_event(&tr.spec.task_name, &old, &gate) {
        publish(&tr, &ctx, &status, event).await;
    }
    for (type_, reason, text) in super::approval::news(&tr.spec.task_name, &old, &status) {
        let event = TaskEvent {
            type_,
            reason,
            action: actions::DECIDE,
            text,
            attempt: None,
        };
        publish(&tr, &ctx, &status, event).await;
    }
    Ok(match gate {
        Gate::Go => next_reconcile(
            &plan,
            &status,
            look_again(&tr, started, evaluated.look_again),
            now,
        ),
        Gate::Wait { .. } => Action::requeue(pool::QUEUED_REQUEUE),
    })
}

/// Before an attempt's Job is created: the slots of the task's pool, if it has one.
async fn gate(ctx: &Context, ns: &str, tr: &TaskRun, plan: &TaskPlan, now: jiff::Timestamp) -> Result<Gate> {
    match plan.action {
        AttemptAction::Create(number) if tr.spec.uses_pod() => pool::acquire(ctx, ns, tr, number, now).await,
        _ => Ok(Gate::Go),
    }
}

/// A task that may not start its attempt yet stays `Pending`, with nothing to do.
fn hold_back(plan: TaskPlan, gate: &Gate) -> TaskPlan {
    match gate {
        Gate::Go => plan,
        Gate::Wait { .. } => TaskPlan {
            phase: TaskPhase::Pending,
            action: AttemptAction::None,
            next_retry_at: None,
            ..plan
        },
    }
}

/// The status of a task waiting for its pool: `Succeeded` `Unknown` with the reason and the
/// message of the wait, naming the pool.
fn waiting_status(
    mut status: TaskRunStatus,
    gate: &Gate,
    generation: Option<i64>,
    now: jiff::Timestamp,
) -> TaskRunStatus {
    if let Gate::Wait { reason, message } = gate {
        set_condition(
            &mut status.conditions,
            condition_types::SUCCEEDED,
            ConditionStatus::Unknown,
            reason,
            message.clone(),
            generation,
            now,
        );
    }
    status
}

/// The Event of a task that begins to wait for its pool, or waits for another reason now.
fn wait_event(task: &str, old: &TaskRunStatus, gate: &Gate) -> Option<TaskEvent> {
    let Gate::Wait { reason, message } = gate else {
        return None;
    };
    let before = find(&old.conditions, condition_types::SUCCEEDED).map(|c| c.reason.as_str());
    if before == Some(*reason) {
        return None;
    }
    let (type_, event_reason) = match *reason {
        reasons::QUEUED => (EventType::Normal, reasons::TASK_QUEUED),
        other => (EventType::Warning, other),
    };
    Some(TaskEvent {
        type_,
        reason: event_reason,
        action: actions::QUEUE,
        text: format!("task {task}: {message}"),
        attempt: None,
    })
}

/// Reads: the Jobs and pods of every attempt, from the API server's watch cache but never
/// older than the newest Job and pod this operator has seen or written (see
/// [`super::fresh`]; never an older view: they decide whether a Job is created). None for a
/// task that uses no pod.
async fn observe(ctx: &Context, ns: &str, tr: &TaskRun) -> Result<(Vec<Job>, Vec<Pod>)> {
    if !tr.spec.uses_pod() {
        return Ok((Vec::new(), Vec::new()));
    }
    let uid = tr.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let selector = format!("{}={uid}", labels::TASK_RUN_UID);
    let job_api = Api::<Job>::namespaced(ctx.client.clone(), ns);
    let pod_api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    // Both at once: one round trip instead of two on every look. The pods may then be read
    // a moment before the Jobs: a Job seen finished with its pod not yet seen terminated
    // (where the exit code and outputs are) has its pods read again.
    let (mut jobs, mut pods) = futures::try_join!(
        ctx.fresh.jobs.list(&job_api, &selector),
        ctx.fresh.pods.list(&pod_api, &selector)
    )?;
    if pods_behind(&jobs, &pods) {
        // From etcd: the watch cache's pods may not have caught up with the Job's end.
        pods = list_by_label(&pod_api, &selector).await?;
    }
    // A Job deleted between the two lists shows as a live Job whose pod the garbage collector
    // is deleting. Read such Jobs again: one that is gone (or going) by now was deleted, and
    // its attempt is Lost, not a pod deleted under a running Job. The Job first listed is
    // kept otherwise, so that the pods are never older than the Jobs they are read with.
    for name in jobs_to_recheck(&jobs, &pods) {
        let fresh = job_api.get_opt(&name).await?;
        if fresh.is_none_or(|j| j.metadata.deletion_timestamp.is_some()) {
            jobs.retain(|j| j.name_any() != name);
        }
    }
    Ok((jobs, pods))
}

/// Whether a finished Job's newest pod was read before it terminated (the pods were read
/// a moment before the Jobs).
fn pods_behind(jobs: &[Job], pods: &[Pod]) -> bool {
    jobs.iter().filter(|j| !job_active(j)).any(|job| {
        attempt_number(job)
            .and_then(|n| attempt_pods(pods, n).last().copied())
            .is_some_and(|pod| !pod_terminated(pod))
    })
}

/// Active Jobs, not being deleted, with a pod being deleted.
fn jobs_to_recheck(jobs: &[Job], pods: &[Pod]) -> Vec<String> {
    let deleting_under = |job: &Job| {
        pods.iter().any(|p| {
            p.metadata.deletion_timestamp.is_some()
                && p.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == job.metadata.uid.as_ref())
        })
    };
    jobs.iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none() && job_active(j) && deleting_under(j))
        .map(|j| j.name_any())
        .collect()
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
    omitted: u32,
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
        if number <= omitted {
            // Of an attempt left out of the status long ago (see `cap_history`).
            continue;
        }
        live_jobs.insert(number);
        let known = out.attempts.get(&number);
        if let Some(recorded) = known
            && recorded.phase != AttemptPhase::Running
        {
            // The result is recorded; make sure nothing of a finished attempt keeps running
            // (for example after a crash between recording a cancel and deleting the Job).
            if job_active(job) {
                out.to_delete.push(job.name_any());
            }
            continue;
        }
        let known_pod = known.and_then(|a| a.pod_name.as_deref());
        let report = observe_attempt(job, &attempt_pods(pods, number), known_pod, now);
        if report.delete_job {
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
            if spec.stop_requested() {
                cancel(attempt, spec, now);
            } else if spec.uses_pod() {
                lose(attempt, now);
            }
        }
    }
    out
}

fn attempt_number(job: &Job) -> Option<u32> {
    job.labels().get(labels::ATTEMPT)?.parse().ok()
}

/// The pods of an attempt, oldest first; of two made in the same second, one being deleted
/// comes first (a Job's replacement follows the pod it replaces).
fn attempt_pods(pods: &[Pod], number: u32) -> Vec<&Pod> {
    let mut of_attempt: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.labels().get(labels::ATTEMPT) == Some(&number.to_string()))
        .collect();
    of_attempt.sort_by_key(|p| {
        (
            p.creation_timestamp().map(|t| t.0),
            p.metadata.deletion_timestamp.is_none(),
            p.name_any(),
        )
    });
    of_attempt
}

/// Marks an attempt whose Job vanished (or began to be deleted) before it finished, deleted
/// by anyone but Weir: a disruption.
fn lose(attempt: &mut Attempt, now: jiff::Timestamp) {
    attempt.phase = AttemptPhase::Failed;
    attempt.completion_time = Some(Time(now));
    attempt.reason = Some(FailureReason::Lost);
    attempt.message = Some(format!("Job {} was deleted before it finished", attempt.job_name));
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
        pod_name: report.pod_name,
        pod_replacements: report.replacements.map(|r| PodReplacements {
            message: r.message.map(|m| truncate(&m, MAX_MESSAGE)),
            ..r
        }),
    }
}

/// Marks an attempt as stopped by the task's cancellation (or its deadline, `onMiss: Fail`).
fn cancel(attempt: &mut Attempt, spec: &TaskRunSpec, now: jiff::Timestamp) {
    attempt.phase = AttemptPhase::Failed;
    attempt.completion_time = Some(Time(now));
    if spec.deadline_fails() {
        attempt.reason = Some(FailureReason::DeadlineExceeded);
        attempt.message = Some(DEADLINE_MESSAGE.into());
    } else {
        attempt.reason = Some(FailureReason::Cancelled);
        attempt.message = Some(CANCELLED_MESSAGE.into());
    }
}

/// The status to build on: as it was, or, when the run asked the task to run again (a
/// rerun request not taken in yet), a new round: the attempts so far stay in the history
/// but no longer count, the outputs and the finish are forgotten.
fn take_rerun(spec: &TaskRunSpec, old: &TaskRunStatus) -> TaskRunStatus {
    let mut status = old.clone();
    if let Some(request) = &spec.rerun
        && old.rerun.as_ref() != Some(request)
    {
        status.rerun = Some(request.clone());
        status.round_start = Some(old.attempts.iter().map(|a| a.number).max().unwrap_or(0));
        status.outputs.clear();
        status.completion_time = None;
        status.next_retry_time = None;
        status.phase = Some(TaskPhase::Pending);
    }
    status
}

/// Asks the engine what to do next, given the attempts of the current round. For the
/// engine a round is a task starting over: its attempts are numbered from 1 there (so the
/// retry budget is fresh) and on from the earlier ones here.
fn plan(
    spec: &TaskRunSpec,
    attempts: &BTreeMap<u32, Attempt>,
    round_start: u32,
    now: jiff::Timestamp,
) -> TaskPlan {
    let observed: Vec<ObservedAttempt> = attempts
        .values()
        .filter(|a| a.number > round_start)
        .map(|a| ObservedAttempt {
            number: a.number - round_start,
            phase: a.phase,
            reason: a.reason,
            exit_code: a.exit_code,
            finished_at: a.completion_time.as_ref().map(|t| t.0),
        })
        .collect();
    let mut plan = plan_task(&TaskInput {
        retries: spec.retries.as_ref(),
        attempts: &observed,
        cancel_requested: spec.stop_requested(),
        now,
    });
    if spec.deadline_fails() && plan.phase == TaskPhase::Cancelled {
        // Stopped by its deadline: a failure (downstream trigger rules see one), not a
        // cancellation.
        plan.phase = TaskPhase::Failed;
    }
    plan.action = match plan.action {
        AttemptAction::Create(n) => AttemptAction::Create(n + round_start),
        AttemptAction::Stop(n) => AttemptAction::Stop(n + round_start),
        AttemptAction::None => AttemptAction::None,
    };
    plan
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
        AttemptAction::Create(number) if !tr.spec.uses_pod() => {
            // Evaluated by the operator itself from the next look on: no Job.
            recorded
                .attempts
                .entry(number)
                .or_insert_with(|| started_attempt(number, String::new(), now));
            started = Some(number);
        }
        AttemptAction::Create(number) => {
            let job = build_job(tr, number, &ctx.task_defaults).ok_or(Error::MissingField("metadata.uid"))?;
            let created = Api::<Job>::namespaced(ctx.client.clone(), ns)
                .create(&PostParams::default(), &job)
                .await
                // Made by an earlier reconcile (or an earlier operator): never a second Job.
                .ignore_already_exists()?;
            if let Some(created) = &created {
                ctx.fresh.jobs.saw_object(created);
                started = Some(number);
                ctx.metrics.job_created(number, tr.creation_timestamp().as_ref());
            }
            let job_name = job.metadata.name.unwrap_or_default();
            recorded
                .attempts
                .entry(number)
                .or_insert_with(|| started_attempt(number, job_name, now));
        }
        AttemptAction::Stop(number) => recorded = record_stop(recorded, number, &tr.spec, now),
        AttemptAction::None => {}
    }
    Ok((recorded, started))
}

/// The newest attempt seen for the first time though this reconcile did not create its Job:
/// one whose Job the run made with the TaskRun (see `pipelinerun::first_job`), or made by a
/// reconcile that stopped before it could record it. Its start is news all the same.
fn first_seen(old: &[Attempt], now: &BTreeMap<u32, Attempt>) -> Option<u32> {
    now.keys()
        .rev()
        .find(|n| !old.iter().any(|a| a.number == **n))
        .copied()
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
fn record_stop(mut recorded: Recorded, number: u32, spec: &TaskRunSpec, now: jiff::Timestamp) -> Recorded {
    if let Some(attempt) = recorded.attempts.get_mut(&number) {
        if !attempt.job_name.is_empty() {
            recorded.to_delete.push(attempt.job_name.clone());
        }
        cancel(attempt, spec, now);
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
    // When the task ended: its last attempt's end (the Job's completion, not the moment this
    // look saw it, which may come later; a run starts successors on the Job's end).
    status.completion_time = if phase.is_terminal() {
        old.completion_time
            .clone()
            .or_else(|| attempts.last().and_then(|a| a.completion_time.clone()))
            .or(Some(Time(now)))
    } else {
        None
    };
    status.next_retry_time = plan.next_retry_at.map(Time);
    let (attempts, omitted) = cap_history(attempts, old.round_start.unwrap_or(0));
    if omitted > 0 {
        status.attempts_omitted = Some(old.attempts_omitted.unwrap_or(0) + omitted);
    }
    status.attempt_count = Some(count(&attempts));
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
    super::deadline::task_conditions(&tr.spec, &mut status, tr.metadata.generation, now);
    status
}

/// Attempts of earlier rounds kept in the status, the newest; older ones are counted.
const KEPT_EARLIER_ATTEMPTS: usize = 10;

/// Leaves out the oldest attempts of rounds before `round_start` past the newest
/// [`KEPT_EARLIER_ATTEMPTS`] of them: they no longer count for anything but the record, and
/// a task run again many times would otherwise grow without end. Returns how many went.
fn cap_history(mut attempts: Vec<Attempt>, round_start: u32) -> (Vec<Attempt>, u32) {
    let earlier = attempts.iter().filter(|a| a.number <= round_start).count();
    let drop = earlier.saturating_sub(KEPT_EARLIER_ATTEMPTS);
    attempts.drain(..drop);
    (attempts, drop as u32)
}

/// How many attempts the task has made: the number of the newest (attempts are numbered
/// from 1 on, also across reruns and past those left out of the status).
fn count(attempts: &[Attempt]) -> u32 {
    attempts.last().map_or(0, |a| a.number)
}

/// Status, reason and message of the `Succeeded` condition.
fn succeeded_condition(attempts: &[Attempt], plan: &TaskPlan) -> (ConditionStatus, &'static str, String) {
    let last = attempts.last();
    let detail = last.and_then(|a| a.message.clone()).unwrap_or_default();
    match plan.phase {
        TaskPhase::Succeeded => (
            ConditionStatus::True,
            reasons::SUCCEEDED,
            format!("succeeded on attempt {}", count(attempts)),
        ),
        TaskPhase::Cancelled => (
            ConditionStatus::False,
            reasons::CANCELLED,
            "the task was cancelled".into(),
        ),
        TaskPhase::Failed => {
            let reason = last.and_then(|a| a.reason).unwrap_or(FailureReason::Unknown);
            let over_budget = match plan.disruption {
                Some(d) if !d.spared() => format!(
                    "disrupted {} times, more than retries.disruptions allows ({}): ",
                    d.count, d.budget
                ),
                _ => String::new(),
            };
            (
                ConditionStatus::False,
                reason.as_str(),
                format!(
                    "failed after {} attempt(s): {over_budget}{detail}",
                    count(attempts)
                ),
            )
        }
        TaskPhase::Retrying => {
            let at = plan.next_retry_at.map(|t| t.to_string()).unwrap_or_default();
            let n = count(attempts);
            let message = match (plan.disruption, last.and_then(|a| a.reason)) {
                (Some(d), Some(reason)) if d.spared() => format!(
                    "attempt {n} was disrupted ({}: {detail}); next attempt at {at}, disruption {} of the {} retries.disruptions allows",
                    reason.as_str(),
                    d.count,
                    d.budget
                ),
                _ => format!("attempt {n} failed ({detail}); next attempt at {at}"),
            };
            (ConditionStatus::Unknown, reasons::RETRYING, message)
        }
        _ => match last.filter(|a| a.job_name.is_empty() && a.phase == AttemptPhase::Running) {
            // A task without a pod says what it waits for.
            Some(waiting) => (ConditionStatus::Unknown, reasons::WAITING, detail_of(waiting)),
            None => (
                ConditionStatus::Unknown,
                reasons::RUNNING,
                format!("attempt {} running", count(attempts).max(1)),
            ),
        },
    }
}

/// `attempt 2: waiting for ...`, of an attempt that waits without a pod.
fn detail_of(attempt: &Attempt) -> String {
    let what = attempt.message.as_deref().unwrap_or("waiting");
    format!("attempt {}: {what}", attempt.number)
}

/// Writes the status if it changed, then deletes the Jobs given up on.
async fn update_status(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    old: &TaskRunStatus,
    status: &TaskRunStatus,
    to_delete: &[String],
) -> Result<Option<TaskRun>> {
    let mut written = None;
    if status != old {
        let task_runs = Api::<TaskRun>::namespaced(ctx.client.clone(), ns);
        written = Some(apply_status(&task_runs, &tr.name_any(), status).await?);
    }
    // Delete after the status holds the outcome, so a crash in between still ends right.
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), ns);
    for job in to_delete {
        let deleted = jobs
            .delete(job, &DeleteParams::background())
            .await
            .ignore_not_found()?;
        if let Some(deleted) = deleted.and_then(|d| d.left()) {
            ctx.fresh.jobs.saw_object(&deleted);
        }
    }
    Ok(written)
}

/// Whether the TaskRun ended (as this look wrote it, or found it) with no Job left to
/// delete: the operator is done with it, and marks it finished (see [`super::finished`]),
/// in the same look (its status write does not wake it again: see [`woken_by`]).
fn nothing_left(status: &TaskRunStatus, to_delete: &[String]) -> bool {
    status.phase.is_some_and(TaskPhase::is_terminal) && to_delete.is_empty()
}

/// When a task without a pod looks at what it waits for: at once after this look started
/// its attempt (the attempt's status write does not wake it: see [`woken_by`]), else when
/// its wait says.
fn look_again(tr: &TaskRun, started: Option<u32>, wait_says: Option<Duration>) -> Option<Duration> {
    match started {
        Some(_) if !tr.spec.uses_pod() => Some(Duration::ZERO),
        _ => wait_says,
    }
}

/// When to look again: when the retry delay is over; for a finished task only on a change;
/// for a task that waits without a pod, when its wait says; otherwise after [`RESYNC`].
fn next_reconcile(
    plan: &TaskPlan,
    status: &TaskRunStatus,
    look_again: Option<Duration>,
    now: jiff::Timestamp,
) -> Action {
    match (plan.next_retry_at, status.phase) {
        (Some(at), _) => {
            let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
            Action::requeue(wait + Duration::from_millis(50))
        }
        (None, Some(phase)) if phase.is_terminal() => Action::await_change(),
        _ => Action::requeue(look_again.map_or(RESYNC, |d| d.min(RESYNC))),
    }
}

/// Task events: Warnings on the owning PipelineRun, the rest on the TaskRun (see
/// [`publish`]); a TaskRun made by hand gets them all itself.
async fn publish_events(
    tr: &TaskRun,
    ctx: &Context,
    old: &TaskRunStatus,
    new: &TaskRunStatus,
    plan: &TaskPlan,
    started: Option<u32>,
) {
    for note in task_events(tr, old, new, plan, started, now()) {
        publish(tr, ctx, new, note).await;
    }
    for attempt in newly_finished(old, new) {
        if let Some(reason) = attempt.reason.filter(|r| retry::is_disruption(*r)) {
            ctx.metrics.attempt_disrupted(reason);
        }
    }
    for _ in 0..newly_retried(old, new) {
        ctx.metrics.task_retried();
    }
    if old.phase != new.phase {
        ctx.metrics.task_phase_changed(new.phase);
    }
}

/// Publishes one Event about a task. A Warning (a failure, a retry, a disruption) goes to
/// the owning PipelineRun (what people `kubectl describe`) with the TaskRun as the related
/// object; routine news (started, succeeded, queued, cancelled) goes to the TaskRun alone,
/// so that a run of thousands of tasks does not pile thousands of Events on one object.
async fn publish(tr: &TaskRun, ctx: &Context, new: &TaskRunStatus, note: TaskEvent) {
    let own_ref = tr.object_ref(&());
    let (regarding, related) = match owner_run(tr).filter(|_| on_run(&note)) {
        Some(run) => (run, Some(own_ref)),
        None => (own_ref, None),
    };
    // An attempt's Job is the related object of the news about it: Events of different
    // attempts stay apart instead of being folded into one series.
    let about = note
        .attempt
        .and_then(|n| new.attempts.iter().find(|a| a.number == n))
        .filter(|a| !a.job_name.is_empty());
    let related = about.map(|a| job_ref(tr, a)).or(related);
    ctx.event(
        &regarding,
        related,
        note.type_,
        note.reason,
        note.action,
        note.text,
    )
    .await;
}

/// Whether an Event about a task also concerns its run: Warnings do.
fn on_run(note: &TaskEvent) -> bool {
    note.type_ == EventType::Warning
}

/// One Event about a task.
#[derive(Clone, Debug, PartialEq)]
struct TaskEvent {
    type_: EventType,
    reason: &'static str,
    action: &'static str,
    text: String,
    /// The attempt it is about, if any.
    attempt: Option<u32>,
}

/// The news of one reconcile: an attempt started, attempts disrupted or whose pod was
/// replaced, and the task's new phase.
fn task_events(
    tr: &TaskRun,
    old: &TaskRunStatus,
    new: &TaskRunStatus,
    plan: &TaskPlan,
    started: Option<u32>,
    now: jiff::Timestamp,
) -> Vec<TaskEvent> {
    let task = &tr.spec.task_name;
    let mut events = Vec::new();
    if let Some(n) = started {
        let job = new.attempts.iter().find(|a| a.number == n);
        let job = job.map(|a| a.job_name.clone()).unwrap_or_default();
        let how = match job.as_str() {
            "" => "started: the operator waits for its condition, with no pod".to_string(),
            job => format!("started as Job {job}"),
        };
        events.push(TaskEvent {
            type_: EventType::Normal,
            reason: reasons::TASK_STARTED,
            action: actions::START,
            text: format!("task {task}: {} {how}", attempt_of_most(tr, new, n)),
            attempt: Some(n),
        });
    }
    for attempt in newly_finished(old, new) {
        events.extend(attempt_event(task, attempt, new, plan, now));
    }
    let disruption_retried = plan.disruption.is_some_and(|d| d.spared());
    let told = new.phase == Some(TaskPhase::Retrying) && disruption_retried;
    if old.phase != new.phase
        && !told
        && let Some((type_, reason, text)) = phase_event(task, new, now)
    {
        let attempt = (new.phase == Some(TaskPhase::Retrying))
            .then(|| new.attempts.last().map(|a| a.number))
            .flatten();
        events.push(TaskEvent {
            type_,
            reason,
            action: actions::RECONCILE,
            text,
            attempt,
        });
    }
    events
}

/// `attempt 2 of 4`: of the most attempts the task makes without more disruptions.
fn attempt_of_most(tr: &TaskRun, status: &TaskRunStatus, n: u32) -> String {
    let retries = tr.spec.retries.as_ref();
    let limit = retries.map_or(0, |r| r.limit) + 1;
    let budget = retry::disruption_budget(retries);
    let failed = status.attempts.iter().filter(|a| a.phase == AttemptPhase::Failed);
    // The first disruptions, up to the budget, added attempts; later ones spent retries.
    let spared = retry::tally(failed.map(|a| a.reason), budget)
        .disruptions
        .min(budget);
    match spared {
        0 => format!("attempt {n} of {limit}"),
        k => format!("attempt {n} of {} ({k} of them after a disruption)", limit + k),
    }
}

/// Failed attempts, finished since the status before, of a task that goes on: each is
/// retried. Counted from the attempts rather than from a change to `Retrying`, which a
/// reconcile that sees the failure only after the retry delay never shows (the next attempt
/// starts in the same pass: `Running` to `Running`).
fn newly_retried(old: &TaskRunStatus, new: &TaskRunStatus) -> usize {
    if new.phase.is_some_and(|p| p.is_terminal()) {
        return 0;
    }
    newly_finished(old, new)
        .filter(|a| a.phase == AttemptPhase::Failed)
        .count()
}

/// Attempts that finished since the status before.
fn newly_finished<'a>(old: &'a TaskRunStatus, new: &'a TaskRunStatus) -> impl Iterator<Item = &'a Attempt> {
    new.attempts.iter().filter(move |a| {
        a.phase != AttemptPhase::Running
            && old
                .attempts
                .iter()
                .find(|o| o.number == a.number)
                .is_none_or(|o| o.phase == AttemptPhase::Running)
    })
}

/// The Event for a finished attempt that was disrupted, or whose pod its Job replaced.
fn attempt_event(
    task: &str,
    attempt: &Attempt,
    new: &TaskRunStatus,
    plan: &TaskPlan,
    now: jiff::Timestamp,
) -> Option<TaskEvent> {
    let n = attempt.number;
    let event = |reason, text| TaskEvent {
        type_: EventType::Warning,
        reason,
        action: actions::RECONCILE,
        text,
        attempt: Some(n),
    };
    let reason = attempt.reason.filter(|r| retry::is_disruption(*r));
    let Some(reason) = reason else {
        let replaced = attempt.pod_replacements.as_ref()?;
        let detail = replaced.message.clone().unwrap_or_default();
        return Some(event(
            reasons::TASK_POD_REPLACED,
            format!("task {task}: attempt {n}: {detail}"),
        ));
    };
    let detail = attempt.message.clone().unwrap_or_default();
    let what = format!(
        "task {task}: attempt {n} was disrupted ({}: {detail})",
        reason.as_str()
    );
    let is_last = new.attempts.last().is_some_and(|a| a.number == n);
    let next = match plan.disruption.filter(|_| is_last) {
        Some(d) if d.spared() => {
            let when = match new.next_retry_time.as_ref() {
                Some(at) => format!("starts in {} at {}", wait_until(at.0, now), at.0),
                None => "starts now".to_string(),
            };
            format!(
                "; attempt {} {when}, disruption {} of the {} retries.disruptions allows, without spending retries.limit",
                n + 1,
                d.count,
                d.budget
            )
        }
        Some(d) => format!(
            "; disruption {} is past the {} retries.disruptions allows: it counts as an ordinary failure",
            d.count, d.budget
        ),
        None => String::new(),
    };
    Some(event(reasons::TASK_DISRUPTED, what + &next))
}

fn wait_until(at: jiff::Timestamp, now: jiff::Timestamp) -> String {
    Duration::try_from(at.duration_since(now))
        .map(duration::format)
        .unwrap_or_default()
}

/// The Event for a task that reached `new.phase`; none for phases that are not news.
fn phase_event(
    task: &str,
    new: &TaskRunStatus,
    now: jiff::Timestamp,
) -> Option<(EventType, &'static str, String)> {
    let attempts = count(&new.attempts);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RetryPolicy;
    use crate::controller::job::CONTAINER;
    use AttemptPhase::{Failed, Running, Succeeded};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};

    #[test]
    fn only_an_ended_task_with_no_job_to_delete_is_left_alone() {
        let ended = TaskRunStatus {
            phase: Some(TaskPhase::Succeeded),
            ..Default::default()
        };
        assert!(nothing_left(&ended, &[]));
        assert!(!nothing_left(&ended, &["t-1".into()]), "a Job to delete");
        let running = TaskRunStatus {
            phase: Some(TaskPhase::Running),
            ..Default::default()
        };
        assert!(!nothing_left(&running, &[]));
        assert!(!nothing_left(&Default::default(), &[]));
    }

    #[test]
    fn a_wait_task_looks_at_its_wait_right_after_starting_its_attempt() {
        let pod_task = task_run();
        let mut wait_task = task_run();
        wait_task.spec.wait = Some(Default::default());
        assert!(!wait_task.spec.uses_pod());
        let later = Some(Duration::from_secs(30));
        assert_eq!(look_again(&wait_task, Some(2), later), Some(Duration::ZERO));
        assert_eq!(look_again(&wait_task, None, later), later, "as its wait says");
        assert_eq!(look_again(&pod_task, Some(2), later), later, "its Job wakes it");
    }

    #[test]
    fn only_what_is_not_status_wakes_a_task_run() {
        let tr = task_run();
        let mut written = tr.clone();
        written.metadata.resource_version = Some("2".into());
        written.status = Some(TaskRunStatus {
            phase: Some(TaskPhase::Running),
            ..Default::default()
        });
        assert_eq!(
            woken_by().hash_property(&tr),
            woken_by().hash_property(&written),
            "its own status write"
        );
        let mut cancelled = tr.clone();
        cancelled.metadata.generation = Some(cancelled.metadata.generation.unwrap_or(1) + 1);
        assert_ne!(
            woken_by().hash_property(&tr),
            woken_by().hash_property(&cancelled),
            "a change of spec"
        );
        let mut marked = tr.clone();
        marked
            .labels_mut()
            .insert("weir.dev/finished".into(), "false".into());
        assert_ne!(
            woken_by().hash_property(&tr),
            woken_by().hash_property(&marked),
            "a label"
        );
        let mut asked = tr.clone();
        asked
            .annotations_mut()
            .insert("weir.dev/rerun".into(), "x".into());
        assert_ne!(
            woken_by().hash_property(&tr),
            woken_by().hash_property(&asked),
            "an annotation"
        );
        let mut deleting = tr.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(1).unwrap()));
        assert_ne!(
            woken_by().hash_property(&tr),
            woken_by().hash_property(&deleting),
            "a deletion"
        );
    }

    /// The reconcile's clock in every test.
    const NOW: i64 = 10_000;
    /// When every finished test Job finished.
    const FINISHED: i64 = 9_000;

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    fn job_name(attempt: u32) -> String {
        format!("etl-extract-{attempt}")
    }

    fn attempt_labels(attempt: u32) -> Option<BTreeMap<String, String>> {
        Some(BTreeMap::from([(labels::ATTEMPT.into(), attempt.to_string())]))
    }

    #[derive(Clone, Copy)]
    enum JobIs {
        Active,
        Complete,
        Failed,
    }

    /// The Job of `attempt`, created at `100 * attempt` seconds.
    fn mk_job(attempt: u32, state: JobIs) -> Job {
        let condition = |type_: &str| JobCondition {
            type_: type_.into(),
            status: "True".into(),
            reason: Some("BackoffLimitExceeded".into()),
            last_transition_time: Some(Time(ts(FINISHED))),
            ..Default::default()
        };
        let conditions = match state {
            JobIs::Active => None,
            JobIs::Complete => Some(vec![condition("Complete")]),
            JobIs::Failed => Some(vec![condition("Failed")]),
        };
        Job {
            metadata: ObjectMeta {
                name: Some(job_name(attempt)),
                labels: attempt_labels(attempt),
                creation_timestamp: Some(Time(ts(100 * i64::from(attempt)))),
                ..Default::default()
            },
            spec: None,
            status: Some(JobStatus {
                conditions,
                ..Default::default()
            }),
        }
    }

    /// A Job whose deletion has begun.
    fn deleting(mut job: Job) -> Job {
        job.metadata.deletion_timestamp = Some(Time(ts(NOW - 1)));
        job
    }

    fn pod_name(attempt: u32, created: i64) -> String {
        format!("{}-{created}", job_name(attempt))
    }

    /// A pod someone asked to delete at `asked` seconds (the grace period runs for 30).
    fn pod_deleted_at(mut pod: Pod, asked: i64) -> Pod {
        pod.metadata.deletion_timestamp = Some(Time(ts(asked + 30)));
        pod.metadata.deletion_grace_period_seconds = Some(30);
        pod
    }

    /// An attempt running in the pod created at `created`, as a previous reconcile saw it.
    fn running_in(number: u32, created: i64) -> Attempt {
        Attempt {
            pod_name: Some(pod_name(number, created)),
            ..mk_attempt(number, Running, None)
        }
    }

    #[derive(Clone, Copy)]
    enum PodIs {
        /// The container waits with this reason.
        Waiting(&'static str),
        /// The container runs.
        Running,
        /// The container exited with this code and termination message at [`FINISHED`].
        Exited(i32, &'static str),
    }

    /// The pod of `attempt` created at `created` seconds, named after both.
    fn mk_pod(attempt: u32, created: i64, state: PodIs) -> Pod {
        let state = match state {
            PodIs::Waiting(reason) => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: Some("nope".into()),
                }),
                ..Default::default()
            },
            PodIs::Running => ContainerState {
                running: Some(Default::default()),
                ..Default::default()
            },
            PodIs::Exited(exit_code, message) => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code,
                    message: Some(message.into()),
                    finished_at: Some(Time(ts(FINISHED))),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(pod_name(attempt, created)),
                labels: attempt_labels(attempt),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    image: "etl:1".into(),
                    state: Some(state),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    /// An attempt as a previous reconcile recorded it.
    fn mk_attempt(number: u32, phase: AttemptPhase, reason: Option<FailureReason>) -> Attempt {
        Attempt {
            number,
            job_name: job_name(number),
            phase,
            start_time: Some(Time(ts(100 * i64::from(number)))),
            completion_time: (phase != Running).then(|| Time(ts(FINISHED))),
            exit_code: None,
            reason,
            message: reason.map(|r| format!("earlier: {}", r.as_str())),
            pod_name: None,
            pod_replacements: None,
        }
    }

    fn spec(cancelled: bool, declared: &[&str]) -> TaskRunSpec {
        TaskRunSpec {
            task_name: "extract".into(),
            image: "etl:1".into(),
            outputs: declared.iter().map(|d| d.to_string()).collect(),
            cancelled,
            ..Default::default()
        }
    }

    #[derive(Default)]
    struct RecordCase {
        name: &'static str,
        previous: Vec<Attempt>,
        jobs: Vec<Job>,
        pods: Vec<Pod>,
        cancelled: bool,
        declared: &'static [&'static str],
        /// Phase and reason of every attempt afterwards, oldest first.
        want: &'static [(u32, AttemptPhase, Option<FailureReason>)],
        /// `None`: the last attempt has no message; `Some(text)`: its message contains `text`.
        message: Option<&'static str>,
        to_delete: &'static [u32],
        outputs: Option<&'static [(&'static str, &'static str)]>,
    }

    fn check(cases: Vec<RecordCase>) {
        for case in cases {
            let name = case.name;
            let spec = spec(case.cancelled, case.declared);
            let got = record_attempts(&case.previous, 0, &case.jobs, &case.pods, &spec, ts(NOW));
            let phases: Vec<_> = got
                .attempts
                .values()
                .map(|a| (a.number, a.phase, a.reason))
                .collect();
            assert_eq!(phases, case.want, "{name}");
            let message = got.attempts.values().last().and_then(|a| a.message.as_deref());
            match case.message {
                None => assert_eq!(message, None, "{name}"),
                Some(text) => assert!(
                    message.is_some_and(|m| m.contains(text)),
                    "{name}: {message:?} should contain {text:?}"
                ),
            }
            let to_delete: Vec<String> = case.to_delete.iter().map(|n| job_name(*n)).collect();
            assert_eq!(got.to_delete, to_delete, "{name}");
            let outputs = case
                .outputs
                .map(|o| o.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
            assert_eq!(got.outputs, outputs, "{name}");
        }
    }

    #[test]
    fn jobs_that_are_gone_or_going_end_their_attempt() {
        use FailureReason::{Cancelled, Lost};
        check(vec![
            RecordCase {
                name: "an active Job is a running attempt",
                jobs: vec![mk_job(1, JobIs::Active)],
                want: &[(1, Running, None)],
                ..Default::default()
            },
            RecordCase {
                name: "a Job that vanished while its attempt ran is lost",
                previous: vec![mk_attempt(1, Running, None)],
                want: &[(1, Failed, Some(Lost))],
                message: Some("Job etl-extract-1 was deleted before it finished"),
                ..Default::default()
            },
            RecordCase {
                name: "a Job that vanished from a cancelled task is cancelled, not lost",
                previous: vec![mk_attempt(1, Running, None)],
                cancelled: true,
                want: &[(1, Failed, Some(Cancelled))],
                message: Some(CANCELLED_MESSAGE),
                ..Default::default()
            },
            RecordCase {
                name: "a Job being deleted is ignored, even one that completed",
                previous: vec![mk_attempt(1, Running, None)],
                jobs: vec![deleting(mk_job(1, JobIs::Complete))],
                pods: vec![mk_pod(1, 100, PodIs::Exited(0, "rows=1"))],
                want: &[(1, Failed, Some(Lost))],
                message: Some("was deleted before it finished"),
                ..Default::default()
            },
            RecordCase {
                name: "a Job without an attempt label is not an attempt",
                jobs: vec![Job {
                    metadata: ObjectMeta {
                        name: Some("stray".into()),
                        ..Default::default()
                    },
                    ..mk_job(1, JobIs::Active)
                }],
                want: &[],
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn pods_deleted_under_an_attempt_end_it_as_a_disruption() {
        use FailureReason::{Error, PodDeleted};
        check(vec![
            RecordCase {
                name: "a pod deleted while it runs: the attempt ends and its Job is stopped",
                previous: vec![running_in(1, 100)],
                jobs: vec![mk_job(1, JobIs::Active)],
                pods: vec![pod_deleted_at(mk_pod(1, 100, PodIs::Running), NOW - 5)],
                want: &[(1, Failed, Some(PodDeleted))],
                message: Some("pod etl-extract-1-100 was deleted while it ran"),
                to_delete: &[1],
                ..Default::default()
            },
            RecordCase {
                name: "the Job replaced the deleted pod (Kubernetes 1.20): both are named",
                previous: vec![running_in(1, 100)],
                jobs: vec![mk_job(1, JobIs::Active)],
                pods: vec![mk_pod(1, 150, PodIs::Running)],
                want: &[(1, Failed, Some(PodDeleted))],
                message: Some(
                    "pod etl-extract-1-100 was deleted while it ran; its Job replaced it with pod etl-extract-1-150",
                ),
                to_delete: &[1],
                ..Default::default()
            },
            RecordCase {
                name: "the Job counted the killed pod as failed",
                previous: vec![running_in(1, 100)],
                jobs: vec![mk_job(1, JobIs::Failed)],
                pods: vec![pod_deleted_at(
                    mk_pod(1, 100, PodIs::Exited(143, "")),
                    FINISHED - 1,
                )],
                want: &[(1, Failed, Some(PodDeleted))],
                message: Some("pod etl-extract-1-100 was deleted while it ran"),
                ..Default::default()
            },
            RecordCase {
                name: "a pod deleted after it failed by itself is an ordinary failure",
                previous: vec![running_in(1, 100)],
                jobs: vec![mk_job(1, JobIs::Failed)],
                pods: vec![pod_deleted_at(
                    mk_pod(1, 100, PodIs::Exited(1, "bad")),
                    FINISHED + 1,
                )],
                want: &[(1, Failed, Some(Error))],
                message: Some("exit code 1: bad"),
                ..Default::default()
            },
            RecordCase {
                name: "a disrupted attempt whose Job still runs a replacement has its Job deleted",
                previous: vec![mk_attempt(1, Failed, Some(PodDeleted))],
                jobs: vec![mk_job(1, JobIs::Active)],
                pods: vec![mk_pod(1, 150, PodIs::Running)],
                want: &[(1, Failed, Some(PodDeleted))],
                message: Some("earlier: PodDeleted"),
                to_delete: &[1],
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn an_attempt_seen_first_is_news_once() {
        let attempts = |numbers: &[u32]| -> BTreeMap<u32, Attempt> {
            numbers
                .iter()
                .map(|&n| (n, mk_attempt(n, Running, None)))
                .collect()
        };
        let recorded = |numbers: &[u32]| -> Vec<Attempt> { attempts(numbers).into_values().collect() };
        assert_eq!(first_seen(&[], &attempts(&[1])), Some(1));
        assert_eq!(first_seen(&recorded(&[1]), &attempts(&[1])), None);
        assert_eq!(first_seen(&recorded(&[1]), &attempts(&[1, 2])), Some(2));
        assert_eq!(first_seen(&[], &attempts(&[])), None);
    }

    #[test]
    fn pods_read_before_their_job_finished_are_read_again() {
        let done = mk_job(1, JobIs::Complete);
        let running = mk_job(2, JobIs::Active);
        // The pod of a complete Job still seen running: read before the Job.
        assert!(pods_behind(
            std::slice::from_ref(&done),
            &[mk_pod(1, 100, PodIs::Running)]
        ));
        // Seen terminated, or not seen at all (gone): nothing more to read.
        assert!(!pods_behind(
            std::slice::from_ref(&done),
            &[mk_pod(1, 100, PodIs::Exited(0, "{}"))]
        ));
        assert!(!pods_behind(&[done], &[]));
        // A running Job's running pod is as it should be.
        assert!(!pods_behind(&[running], &[mk_pod(2, 200, PodIs::Running)]));
        // A failed Job whose newest pod waits (the pod of another attempt does not count).
        let failed = mk_job(3, JobIs::Failed);
        assert!(pods_behind(
            std::slice::from_ref(&failed),
            &[mk_pod(3, 300, PodIs::Waiting("ContainerCreating"))]
        ));
        assert!(!pods_behind(&[failed], &[mk_pod(2, 200, PodIs::Running)]));
    }

    #[test]
    fn only_active_jobs_whose_pod_is_being_deleted_are_read_again() {
        let owned = |mut pod: Pod, job: &Job| {
            pod.metadata.owner_references = Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    uid: job.metadata.uid.clone().unwrap(),
                    ..Default::default()
                },
            ]);
            pod
        };
        let with_uid = |mut job: Job, uid: &str| {
            job.metadata.uid = Some(uid.into());
            job
        };
        let active = with_uid(mk_job(1, JobIs::Active), "uid-1");
        let failed = with_uid(mk_job(2, JobIs::Failed), "uid-2");
        let going = with_uid(deleting(mk_job(3, JobIs::Active)), "uid-3");
        let quiet = with_uid(mk_job(4, JobIs::Active), "uid-4");
        let pods = [
            owned(pod_deleted_at(mk_pod(1, 100, PodIs::Running), NOW - 1), &active),
            owned(pod_deleted_at(mk_pod(2, 200, PodIs::Running), NOW - 1), &failed),
            owned(pod_deleted_at(mk_pod(3, 300, PodIs::Running), NOW - 1), &going),
            owned(mk_pod(4, 400, PodIs::Running), &quiet),
        ];
        let jobs = [active, failed, going, quiet];
        assert_eq!(jobs_to_recheck(&jobs, &pods), [job_name(1)]);
    }

    #[test]
    fn an_attempt_records_its_pod_and_the_pods_replaced() {
        let got = record_attempts(
            &[mk_attempt(1, Running, None)],
            0,
            &[mk_job(1, JobIs::Active)],
            &[mk_pod(1, 100, PodIs::Running)],
            &spec(false, &[]),
            ts(NOW),
        );
        let attempt = &got.attempts[&1];
        assert_eq!(attempt.pod_name.as_deref(), Some("etl-extract-1-100"));
        assert_eq!(attempt.pod_replacements, None);

        // The replacement ran to the end before Weir looked: the attempt stands, and says so.
        let got = record_attempts(
            &[running_in(1, 100)],
            0,
            &[mk_job(1, JobIs::Complete)],
            &[mk_pod(1, 150, PodIs::Exited(0, "rows=1"))],
            &spec(false, &["rows"]),
            ts(NOW),
        );
        let attempt = &got.attempts[&1];
        assert_eq!((attempt.phase, attempt.reason), (Succeeded, None));
        assert_eq!(attempt.pod_name.as_deref(), Some("etl-extract-1-150"));
        let replaced = attempt.pod_replacements.clone().unwrap();
        assert_eq!((replaced.count, replaced.reason), (1, FailureReason::PodDeleted));
        assert!(
            replaced
                .message
                .unwrap()
                .contains("replaced it with pod etl-extract-1-150"),
            "{attempt:?}"
        );
        assert!(got.to_delete.is_empty());
    }

    #[test]
    fn stuck_pods_fail_their_attempt_and_lose_their_job() {
        use FailureReason::{ConfigError, ImagePullError};
        check(vec![
            RecordCase {
                name: "an image that cannot be pulled",
                jobs: vec![mk_job(1, JobIs::Active)],
                pods: vec![mk_pod(1, 100, PodIs::Waiting("ImagePullBackOff"))],
                want: &[(1, Failed, Some(ImagePullError))],
                message: Some("image \"etl:1\" cannot be pulled: nope"),
                to_delete: &[1],
                ..Default::default()
            },
            RecordCase {
                name: "a container that cannot be created",
                jobs: vec![mk_job(1, JobIs::Active)],
                pods: vec![mk_pod(1, 100, PodIs::Waiting("CreateContainerConfigError"))],
                want: &[(1, Failed, Some(ConfigError))],
                message: Some("container cannot be created: nope"),
                to_delete: &[1],
                ..Default::default()
            },
            RecordCase {
                name: "a container still being created is running, not stuck",
                jobs: vec![mk_job(1, JobIs::Active)],
                pods: vec![mk_pod(1, 100, PodIs::Waiting("ContainerCreating"))],
                want: &[(1, Running, None)],
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn finished_jobs_give_outputs_or_a_reason() {
        use FailureReason::{Error, OutputError};
        check(vec![
            RecordCase {
                name: "success without a declared output is an output error",
                jobs: vec![mk_job(1, JobIs::Complete)],
                pods: vec![mk_pod(1, 100, PodIs::Exited(0, r#"{"other": 1}"#))],
                declared: &["rows"],
                want: &[(1, Failed, Some(OutputError))],
                message: Some("declared output(s) rows missing"),
                ..Default::default()
            },
            RecordCase {
                name: "success hands on the parsed outputs and keeps no message",
                jobs: vec![mk_job(1, JobIs::Complete)],
                pods: vec![mk_pod(1, 100, PodIs::Exited(0, "rows=42\nfile = s3://x"))],
                declared: &["rows"],
                want: &[(1, Succeeded, None)],
                outputs: Some(&[("file", "s3://x"), ("rows", "42")]),
                ..Default::default()
            },
            RecordCase {
                name: "a failed Job's pod says why",
                jobs: vec![mk_job(1, JobIs::Failed)],
                pods: vec![mk_pod(1, 100, PodIs::Exited(3, "bad row\n"))],
                want: &[(1, Failed, Some(Error))],
                message: Some("exit code 3: bad row"),
                ..Default::default()
            },
            RecordCase {
                name: "the newest pod of an attempt is the one read",
                jobs: vec![mk_job(1, JobIs::Failed)],
                pods: vec![
                    mk_pod(1, 150, PodIs::Exited(2, "newer")),
                    mk_pod(1, 100, PodIs::Exited(1, "older")),
                ],
                want: &[(1, Failed, Some(Error))],
                message: Some("exit code 2: newer"),
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn recorded_results_stand_and_their_jobs_are_stopped() {
        use FailureReason::{Cancelled, Error, OOMKilled};
        check(vec![
            RecordCase {
                name: "an attempt recorded as finished whose Job still runs has its Job deleted",
                previous: vec![mk_attempt(1, Failed, Some(Cancelled))],
                jobs: vec![mk_job(1, JobIs::Active)],
                want: &[(1, Failed, Some(Cancelled))],
                message: Some("earlier: Cancelled"),
                to_delete: &[1],
                ..Default::default()
            },
            RecordCase {
                name: "an attempt recorded as finished is never read again",
                previous: vec![mk_attempt(1, Failed, Some(OOMKilled))],
                jobs: vec![mk_job(1, JobIs::Complete)],
                pods: vec![mk_pod(1, 100, PodIs::Exited(0, "rows=1"))],
                declared: &["rows"],
                want: &[(1, Failed, Some(OOMKilled))],
                message: Some("earlier: OOMKilled"),
                ..Default::default()
            },
            RecordCase {
                name: "a retry runs beside the recorded failure",
                previous: vec![mk_attempt(1, Failed, Some(Error)), mk_attempt(2, Running, None)],
                jobs: vec![mk_job(1, JobIs::Failed), mk_job(2, JobIs::Active)],
                want: &[(1, Failed, Some(Error)), (2, Running, None)],
                ..Default::default()
            },
        ]);
    }

    #[test]
    fn attempt_times_come_from_the_job_or_else_the_clock() {
        let got = record_attempts(
            &[mk_attempt(2, Running, None)],
            0,
            &[mk_job(1, JobIs::Complete), mk_job(3, JobIs::Active)],
            &[mk_pod(1, 100, PodIs::Exited(0, ""))],
            &spec(false, &[]),
            ts(NOW),
        );
        let times = |n: u32| {
            let a = &got.attempts[&n];
            (
                a.start_time.as_ref().map(|t| t.0),
                a.completion_time.as_ref().map(|t| t.0),
            )
        };
        assert_eq!(times(1), (Some(ts(100)), Some(ts(FINISHED))), "finished Job");
        assert_eq!(times(2), (Some(ts(200)), Some(ts(NOW))), "lost Job");
        assert_eq!(times(3), (Some(ts(300)), None), "running Job");
        assert_eq!(got.attempts[&1].exit_code, Some(0));
    }

    #[test]
    fn long_failure_messages_are_cut() {
        let long: &'static str = "x".repeat(5 * MAX_MESSAGE).leak();
        let got = record_attempts(
            &[],
            0,
            &[mk_job(1, JobIs::Failed)],
            &[mk_pod(1, 100, PodIs::Exited(1, long))],
            &spec(false, &[]),
            ts(NOW),
        );
        let message = got.attempts[&1].message.as_deref().unwrap();
        assert!(message.len() <= MAX_MESSAGE, "{} bytes", message.len());
        assert!(message.starts_with("exit code 1: xxx") && message.ends_with("..."));
    }

    #[test]
    fn a_stop_cancels_the_attempt_and_deletes_its_job() {
        let recorded = Recorded {
            attempts: BTreeMap::from([
                (1, mk_attempt(1, Failed, Some(FailureReason::Error))),
                (2, mk_attempt(2, Running, None)),
            ]),
            ..Default::default()
        };
        let got = record_stop(recorded.clone(), 2, &spec(true, &[]), ts(NOW));
        let stopped = &got.attempts[&2];
        assert_eq!(
            (stopped.phase, stopped.reason, stopped.message.as_deref()),
            (Failed, Some(FailureReason::Cancelled), Some(CANCELLED_MESSAGE))
        );
        // Stopped by the task's deadline (`onMiss: Fail`): a failure of its own kind.
        let mut late = spec(false, &[]);
        late.deadline_missed = Some(crate::api::DeadlineMiss {
            message: "late".into(),
            fail: true,
        });
        let by_deadline = record_stop(recorded.clone(), 2, &late, ts(NOW));
        assert_eq!(
            by_deadline.attempts[&2].reason,
            Some(FailureReason::DeadlineExceeded)
        );
        let plan = plan(&late, &by_deadline.attempts, 0, ts(NOW));
        assert_eq!(plan.phase, TaskPhase::Failed, "no retry after a deadline stop");
        assert_eq!(stopped.completion_time, Some(Time(ts(NOW))));
        assert_eq!(got.attempts[&1], recorded.attempts[&1], "other attempts stay");
        assert_eq!(got.to_delete, vec![job_name(2)]);
        assert_eq!(
            record_stop(recorded.clone(), 7, &spec(true, &[]), ts(NOW)),
            recorded,
            "no such attempt"
        );
    }

    #[test]
    fn a_lost_job_is_retried_as_a_disruption_without_spending_retries() {
        let mut with_retries = spec(false, &[]);
        with_retries.retries = Some(RetryPolicy {
            limit: 2,
            delay: Some("30s".into()),
            ..Default::default()
        });
        for spec in [spec(false, &[]), with_retries] {
            let recorded = record_attempts(&[mk_attempt(1, Running, None)], 0, &[], &[], &spec, ts(NOW));
            let plan = plan(&spec, &recorded.attempts, 0, ts(NOW));
            assert_eq!(plan.phase, TaskPhase::Retrying);
            assert_eq!(plan.next_retry_at, Some(ts(NOW + 5)), "the disruption delay");
            let later = super::plan(&spec, &recorded.attempts, 0, ts(NOW + 5));
            assert_eq!(later.action, AttemptAction::Create(2));
        }
    }

    fn task_run() -> TaskRun {
        let mut tr = TaskRun::new("etl-extract", spec(false, &[]));
        tr.metadata.namespace = Some("data".into());
        tr.metadata.generation = Some(3);
        tr
    }

    fn task_plan(phase: TaskPhase, next_retry_at: Option<i64>) -> TaskPlan {
        TaskPlan {
            phase,
            action: AttemptAction::None,
            next_retry_at: next_retry_at.map(ts),
            retrying: next_retry_at.is_some(),
            disruption: None,
        }
    }

    #[test]
    fn a_task_waiting_for_its_pool_stays_pending_and_says_why_once() {
        let queued = Gate::Wait {
            reason: reasons::QUEUED,
            message: "waiting for 1 slot(s) of pool \"gpu\": 2 of 2 occupied; 1st in line".into(),
        };
        let due = TaskPlan {
            action: AttemptAction::Create(2),
            ..task_plan(TaskPhase::Running, None)
        };
        let held = hold_back(due, &queued);
        assert_eq!(
            (held.phase, held.action),
            (TaskPhase::Pending, AttemptAction::None)
        );
        assert_eq!(hold_back(due, &Gate::Go), due);

        let status = waiting_status(TaskRunStatus::default(), &queued, Some(3), ts(NOW));
        let c = find(&status.conditions, condition_types::SUCCEEDED).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.observed_generation),
            ("Unknown", reasons::QUEUED, Some(3))
        );
        assert!(c.message.contains("pool \"gpu\""), "{}", c.message);

        let first = wait_event("extract", &TaskRunStatus::default(), &queued).unwrap();
        assert_eq!(
            (first.type_, first.reason),
            (EventType::Normal, reasons::TASK_QUEUED)
        );
        assert_eq!(
            first.text,
            "task extract: waiting for 1 slot(s) of pool \"gpu\": 2 of 2 occupied; 1st in line"
        );
        assert_eq!(wait_event("extract", &status, &queued), None, "told once");
        let gone = Gate::Wait {
            reason: reasons::POOL_NOT_FOUND,
            message: "waiting: pool \"gpu\" does not exist".into(),
        };
        let warning = wait_event("extract", &status, &gone).unwrap();
        assert_eq!(
            (warning.type_, warning.reason),
            (EventType::Warning, reasons::POOL_NOT_FOUND)
        );
        assert_eq!(wait_event("extract", &status, &Gate::Go), None);
    }

    fn by_number(attempts: Vec<Attempt>) -> BTreeMap<u32, Attempt> {
        attempts.into_iter().map(|a| (a.number, a)).collect()
    }

    /// Builds the status of `attempts` under a plan for `phase` and checks its `Succeeded`
    /// condition and the fields that go with the phase.
    #[track_caller]
    fn check_condition(
        phase: TaskPhase,
        retry_at: Option<i64>,
        attempts: Vec<Attempt>,
        want: (ConditionStatus, &str, &str),
    ) {
        let count = attempts.len() as u32;
        // A task ends when its last attempt ended (the look that sees it may come later).
        let last_end = attempts.last().and_then(|a| a.completion_time.clone());
        let plan = task_plan(phase, retry_at);
        let old = TaskRunStatus::default();
        let status = build_status(&task_run(), &old, by_number(attempts), None, &plan, ts(NOW));
        let cond = find(&status.conditions, condition_types::SUCCEEDED).unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str(), cond.message.as_str()),
            (want.0.as_str(), want.1, want.2),
        );
        assert_eq!(cond.observed_generation, Some(3));
        assert_eq!(status.phase, Some(phase));
        assert_eq!(status.attempt_count, Some(count));
        assert_eq!(status.next_retry_time, retry_at.map(|t| Time(ts(t))));
        let finished = phase.is_terminal().then(|| last_end.unwrap_or(Time(ts(NOW))));
        assert_eq!(status.completion_time, finished);
    }

    #[test]
    fn the_succeeded_condition_follows_the_phase() {
        use ConditionStatus::{False, True, Unknown};
        use FailureReason::{Error, OOMKilled};
        let failed = |n, reason| mk_attempt(n, Failed, reason);
        check_condition(
            TaskPhase::Running,
            None,
            vec![],
            (Unknown, reasons::RUNNING, "attempt 1 running"),
        );
        check_condition(
            TaskPhase::Running,
            None,
            vec![failed(1, Some(Error)), mk_attempt(2, Running, None)],
            (Unknown, reasons::RUNNING, "attempt 2 running"),
        );
        check_condition(
            TaskPhase::Retrying,
            Some(NOW + 90),
            vec![failed(1, Some(Error))],
            (
                Unknown,
                reasons::RETRYING,
                "attempt 1 failed (earlier: Error); next attempt at 1970-01-01T02:48:10Z",
            ),
        );
        check_condition(
            TaskPhase::Succeeded,
            None,
            vec![failed(1, Some(Error)), mk_attempt(2, Succeeded, None)],
            (True, reasons::SUCCEEDED, "succeeded on attempt 2"),
        );
        check_condition(
            TaskPhase::Failed,
            None,
            vec![failed(1, Some(Error)), failed(2, Some(OOMKilled))],
            (
                False,
                "OOMKilled",
                "failed after 2 attempt(s): earlier: OOMKilled",
            ),
        );
        check_condition(
            TaskPhase::Failed,
            None,
            vec![failed(1, None)],
            (False, "Unknown", "failed after 1 attempt(s): "),
        );
        check_condition(
            TaskPhase::Cancelled,
            None,
            vec![failed(1, Some(FailureReason::Cancelled))],
            (False, reasons::CANCELLED, "the task was cancelled"),
        );
    }

    fn disrupted_plan(phase: TaskPhase, next_retry_at: Option<i64>, count: u32, budget: u32) -> TaskPlan {
        TaskPlan {
            disruption: Some(crate::engine::Disruption { count, budget }),
            ..task_plan(phase, next_retry_at)
        }
    }

    #[test]
    fn the_succeeded_condition_names_disruptions_and_their_budget() {
        use FailureReason::Lost;
        let lost = |n| mk_attempt(n, Failed, Some(Lost));
        let (status, reason, message) = succeeded_condition(
            &[lost(1)],
            &disrupted_plan(TaskPhase::Retrying, Some(NOW + 5), 1, 3),
        );
        assert_eq!((status, reason), (ConditionStatus::Unknown, reasons::RETRYING));
        assert_eq!(
            message,
            "attempt 1 was disrupted (Lost: earlier: Lost); next attempt at 1970-01-01T02:46:45Z, disruption 1 of the 3 retries.disruptions allows"
        );
        let (status, reason, message) = succeeded_condition(
            &[lost(1), lost(2)],
            &disrupted_plan(TaskPhase::Failed, None, 2, 1),
        );
        assert_eq!((status, reason), (ConditionStatus::False, "Lost"));
        assert_eq!(
            message,
            "failed after 2 attempt(s): disrupted 2 times, more than retries.disruptions allows (1): earlier: Lost"
        );
    }

    #[test]
    fn disruptions_and_replaced_pods_become_events() {
        use FailureReason::{Lost, PodDeleted};
        let status = |phase, attempts: Vec<Attempt>, retry_at: Option<i64>| TaskRunStatus {
            phase: Some(phase),
            next_retry_time: retry_at.map(|t| Time(ts(t))),
            attempts,
            ..Default::default()
        };
        let texts = |old: &TaskRunStatus, new: &TaskRunStatus, plan: &TaskPlan, started| {
            task_events(&task_run(), old, new, plan, started, ts(NOW))
                .into_iter()
                .map(|e| (e.reason, e.attempt, e.text))
                .collect::<Vec<_>>()
        };
        let running = status(TaskPhase::Running, vec![mk_attempt(1, Running, None)], None);

        // A disruption within the budget: one Event says what happened and what comes next.
        let lost = status(
            TaskPhase::Retrying,
            vec![mk_attempt(1, Failed, Some(Lost))],
            Some(NOW + 5),
        );
        let plan = disrupted_plan(TaskPhase::Retrying, Some(NOW + 5), 1, 3);
        assert_eq!(
            texts(&running, &lost, &plan, None),
            [(
                reasons::TASK_DISRUPTED,
                Some(1),
                "task extract: attempt 1 was disrupted (Lost: earlier: Lost); attempt 2 starts in 5s at 1970-01-01T02:46:45Z, disruption 1 of the 3 retries.disruptions allows, without spending retries.limit".to_string()
            )]
        );
        // Its next attempt counts the disruption among the attempts allowed.
        let next = status(
            TaskPhase::Running,
            vec![mk_attempt(1, Failed, Some(Lost)), mk_attempt(2, Running, None)],
            None,
        );
        let events = texts(&lost, &next, &task_plan(TaskPhase::Running, None), Some(2));
        assert_eq!(
            events,
            [(
                reasons::TASK_STARTED,
                Some(2),
                "task extract: attempt 2 of 2 (1 of them after a disruption) started as Job etl-extract-2"
                    .to_string()
            )]
        );
        // Past the budget: the disruption, then the failure.
        let failed = status(
            TaskPhase::Failed,
            vec![mk_attempt(1, Failed, Some(PodDeleted))],
            None,
        );
        let plan = disrupted_plan(TaskPhase::Failed, None, 1, 0);
        let events = texts(&running, &failed, &plan, None);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].0, reasons::TASK_DISRUPTED);
        assert!(
            events[0].2.ends_with(
                "disruption 1 is past the 0 retries.disruptions allows: it counts as an ordinary failure"
            ),
            "{events:?}"
        );
        assert_eq!(events[1].0, reasons::TASK_FAILED);

        // A succeeded attempt whose pod was replaced before Weir could stop it.
        let mut done = mk_attempt(1, Succeeded, None);
        done.pod_replacements = Some(PodReplacements {
            count: 1,
            reason: PodDeleted,
            message: Some("pod a was deleted while it ran; its Job replaced it with pod b".into()),
        });
        let succeeded = status(TaskPhase::Succeeded, vec![done], None);
        let events = texts(&running, &succeeded, &task_plan(TaskPhase::Succeeded, None), None);
        assert_eq!(
            events[0],
            (
                reasons::TASK_POD_REPLACED,
                Some(1),
                "task extract: attempt 1: pod a was deleted while it ran; its Job replaced it with pod b"
                    .to_string()
            )
        );
        assert_eq!(events[1].0, reasons::TASK_SUCCEEDED);
        assert_eq!(
            texts(
                &succeeded,
                &succeeded,
                &task_plan(TaskPhase::Succeeded, None),
                None
            ),
            [],
            "told once"
        );
    }

    #[test]
    fn times_once_set_are_kept() {
        let old = TaskRunStatus {
            start_time: Some(Time(ts(50))),
            completion_time: Some(Time(ts(FINISHED))),
            ..Default::default()
        };
        let attempts = || by_number(vec![mk_attempt(1, Failed, Some(FailureReason::Error))]);
        let failed = task_plan(TaskPhase::Failed, None);
        let status = build_status(&task_run(), &old, attempts(), None, &failed, ts(NOW));
        assert_eq!(status.start_time, Some(Time(ts(50))));
        assert_eq!(
            status.completion_time,
            Some(Time(ts(FINISHED))),
            "not moved to now"
        );

        let fresh = TaskRunStatus::default();
        let status = build_status(&task_run(), &fresh, attempts(), None, &failed, ts(NOW));
        assert_eq!(
            status.start_time,
            Some(Time(ts(100))),
            "the first attempt's start"
        );

        let retrying = task_plan(TaskPhase::Retrying, Some(NOW + 30));
        let status = build_status(&task_run(), &old, attempts(), None, &retrying, ts(NOW));
        assert_eq!(status.completion_time, None, "not finished while retrying");
    }

    #[test]
    fn outputs_are_kept_only_on_success() {
        let outputs = || Some(BTreeMap::from([("rows".to_string(), "42".to_string())]));
        let attempts = || by_number(vec![mk_attempt(1, Succeeded, None)]);
        let old = TaskRunStatus::default();
        let succeeded = task_plan(TaskPhase::Succeeded, None);
        let status = build_status(&task_run(), &old, attempts(), outputs(), &succeeded, ts(NOW));
        assert_eq!(Some(status.outputs), outputs());

        let cancelled = task_plan(TaskPhase::Cancelled, None);
        let status = build_status(&task_run(), &old, attempts(), outputs(), &cancelled, ts(NOW));
        assert!(status.outputs.is_empty());
    }

    #[test]
    fn an_unchanged_task_run_gets_an_equal_status() {
        // `update_status` writes only when the status differs: a second pass over the same
        // Jobs must not produce a different one.
        let tr = task_run();
        let jobs = [mk_job(1, JobIs::Failed)];
        let pods = [mk_pod(1, 100, PodIs::Exited(1, "boom"))];
        let pass = |old: &TaskRunStatus, now: i64| {
            let recorded = record_attempts(&old.attempts, 0, &jobs, &pods, &tr.spec, ts(now));
            let plan = plan(&tr.spec, &recorded.attempts, 0, ts(now));
            build_status(&tr, old, recorded.attempts, recorded.outputs, &plan, ts(now))
        };
        let first = pass(&TaskRunStatus::default(), NOW);
        assert_eq!(first.phase, Some(TaskPhase::Failed));
        assert_eq!(pass(&first, NOW + 60), first);
    }

    #[test]
    fn the_next_look_depends_on_the_phase() {
        let status = |phase| TaskRunStatus {
            phase: Some(phase),
            ..Default::default()
        };
        let retrying = task_plan(TaskPhase::Retrying, Some(NOW + 30));
        assert_eq!(
            next_reconcile(&retrying, &status(TaskPhase::Retrying), None, ts(NOW)),
            Action::requeue(Duration::from_millis(30_050))
        );
        let overdue = task_plan(TaskPhase::Retrying, Some(NOW - 5));
        assert_eq!(
            next_reconcile(&overdue, &status(TaskPhase::Retrying), None, ts(NOW)),
            Action::requeue(Duration::from_millis(50))
        );
        let done = task_plan(TaskPhase::Succeeded, None);
        assert_eq!(
            next_reconcile(&done, &status(TaskPhase::Succeeded), None, ts(NOW)),
            Action::await_change()
        );
        let running = task_plan(TaskPhase::Running, None);
        assert_eq!(
            next_reconcile(&running, &status(TaskPhase::Running), None, ts(NOW)),
            Action::requeue(RESYNC)
        );
        // A task that waits without a pod looks again when its wait says.
        assert_eq!(
            next_reconcile(
                &running,
                &status(TaskPhase::Running),
                Some(Duration::from_secs(5)),
                ts(NOW)
            ),
            Action::requeue(Duration::from_secs(5))
        );
    }

    #[test]
    fn phase_changes_become_events() {
        let status = |phase, attempts: Vec<Attempt>| TaskRunStatus {
            phase: Some(phase),
            next_retry_time: (phase == TaskPhase::Retrying).then(|| Time(ts(NOW + 90))),
            attempts,
            ..Default::default()
        };
        let failed = || vec![mk_attempt(1, Failed, Some(FailureReason::Error))];
        let cases = [
            (
                status(TaskPhase::Retrying, failed()),
                Some((
                    EventType::Warning,
                    reasons::TASK_RETRYING,
                    "task extract: attempt 1 failed (earlier: Error); retrying in 1m30s at 1970-01-01T02:48:10Z",
                )),
            ),
            (
                status(TaskPhase::Failed, failed()),
                Some((
                    EventType::Warning,
                    reasons::TASK_FAILED,
                    "task extract failed after 1 attempt(s): earlier: Error",
                )),
            ),
            (
                status(TaskPhase::Succeeded, vec![mk_attempt(1, Succeeded, None)]),
                Some((
                    EventType::Normal,
                    reasons::TASK_SUCCEEDED,
                    "task extract succeeded on attempt 1",
                )),
            ),
            (
                status(TaskPhase::Cancelled, vec![]),
                Some((
                    EventType::Normal,
                    reasons::TASK_CANCELLED,
                    "task extract was cancelled",
                )),
            ),
            (status(TaskPhase::Running, vec![]), None),
            (TaskRunStatus::default(), None),
        ];
        for (new, want) in cases {
            let got = phase_event("extract", &new, ts(NOW));
            let got = got.as_ref().map(|(t, r, n)| (*t, *r, n.as_str()));
            assert_eq!(got, want, "{:?}", new.phase);
        }
    }

    #[test]
    fn a_failure_seen_after_its_retry_delay_still_counts_as_retried() {
        let status = |phase, attempts: Vec<Attempt>| TaskRunStatus {
            phase: Some(phase),
            attempts,
            ..Default::default()
        };
        let before = status(TaskPhase::Running, vec![mk_attempt(1, Running, None)]);
        let failed = || mk_attempt(1, Failed, Some(FailureReason::Error));
        // Seen in time: Running -> Retrying.
        let retrying = status(TaskPhase::Retrying, vec![failed()]);
        assert_eq!(newly_retried(&before, &retrying), 1);
        // Seen after the delay: attempt 2 starts in the same pass, Running -> Running.
        let next = status(TaskPhase::Running, vec![failed(), mk_attempt(2, Running, None)]);
        assert_eq!(newly_retried(&before, &next), 1);
        // Counted once: the next reconcile sees nothing new.
        assert_eq!(newly_retried(&next, &next), 0);
        // The last attempt failing ends the task: not a retry.
        let ended = status(TaskPhase::Failed, vec![failed()]);
        assert_eq!(newly_retried(&before, &ended), 0);
    }

    #[test]
    fn task_events_point_at_the_run_and_the_attempt_job() {
        let mut tr = task_run();
        assert_eq!(owner_run(&tr), None, "a TaskRun made by hand");
        tr.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "weir.dev/v1alpha1".into(),
                kind: "PipelineRun".into(),
                name: "etl".into(),
                uid: "run-uid".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        let run = owner_run(&tr).unwrap();
        assert_eq!(
            (run.kind.as_deref(), run.name.as_deref(), run.namespace.as_deref()),
            (Some("PipelineRun"), Some("etl"), Some("data"))
        );
        let job = job_ref(&tr, &mk_attempt(2, Running, None));
        assert_eq!(
            (
                job.api_version.as_deref(),
                job.kind.as_deref(),
                job.name.as_deref()
            ),
            (Some("batch/v1"), Some("Job"), Some("etl-extract-2"))
        );
    }

    #[test]
    fn failure_message_is_read_from_a_false_condition_only() {
        let with = |status: &str| {
            let mut tr = task_run();
            tr.status = Some(TaskRunStatus {
                conditions: vec![Condition {
                    type_: condition_types::SUCCEEDED.into(),
                    status: status.into(),
                    reason: "Error".into(),
                    message: "failed after 1 attempt(s): boom".into(),
                    last_transition_time: Time(ts(NOW)),
                    observed_generation: None,
                }],
                ..Default::default()
            });
            tr
        };
        assert_eq!(
            failure_message(&with("False")).as_deref(),
            Some("failed after 1 attempt(s): boom")
        );
        assert_eq!(failure_message(&with("Unknown")), None);
        assert_eq!(failure_message(&task_run()), None);
    }

    /// A rerun request the status has not taken in starts a new round: the earlier attempts
    /// stay, the next one is numbered on from them with a fresh retry budget, and the old
    /// outputs and finish no longer count.
    #[test]
    fn the_history_of_earlier_rounds_is_capped_and_counted() {
        let attempts: Vec<Attempt> = (1..=30)
            .map(|n| mk_attempt(n, AttemptPhase::Failed, Some(FailureReason::Error)))
            .collect();
        // 25 attempts before the current round: the oldest 15 go, the newest 10 stay.
        let (kept, dropped) = cap_history(attempts.clone(), 25);
        assert_eq!(dropped, 15);
        assert_eq!(kept.first().map(|a| a.number), Some(16));
        assert_eq!((kept.len(), count(&kept)), (15, 30));
        // The current round is never cut, however long.
        let (kept, dropped) = cap_history(attempts, 0);
        assert_eq!((kept.len(), dropped), (30, 0));
        // The Job of an attempt left out is not taken for a new attempt.
        let previous: Vec<Attempt> = (16..=17)
            .map(|n| mk_attempt(n, AttemptPhase::Failed, Some(FailureReason::Error)))
            .collect();
        let recorded = record_attempts(
            &previous,
            15,
            &[mk_job(3, JobIs::Failed), mk_job(17, JobIs::Failed)],
            &[],
            &spec(false, &[]),
            ts(NOW),
        );
        assert_eq!(
            recorded.attempts.keys().copied().collect::<Vec<_>>(),
            vec![16, 17]
        );
    }

    #[test]
    fn a_rerun_request_starts_a_new_round_numbered_on() {
        let mut spec = spec(false, &[]);
        spec.retries = Some(crate::api::RetryPolicy {
            limit: 1,
            ..Default::default()
        });
        let old = TaskRunStatus {
            phase: Some(TaskPhase::Failed),
            completion_time: Some(Time(ts(FINISHED))),
            outputs: BTreeMap::from([("rows".into(), "1".into())]),
            attempts: vec![
                mk_attempt(1, AttemptPhase::Failed, Some(FailureReason::Error)),
                mk_attempt(2, AttemptPhase::Failed, Some(FailureReason::Error)),
            ],
            ..Default::default()
        };
        // No request: the budget (1 retry) is spent, the task stays failed.
        let same = take_rerun(&spec, &old);
        assert_eq!(same, old);
        let attempts: BTreeMap<u32, Attempt> = old.attempts.iter().map(|a| (a.number, a.clone())).collect();
        assert_eq!(plan(&spec, &attempts, 0, ts(NOW)).action, AttemptAction::None);

        spec.rerun = Some("r1".into());
        let round = take_rerun(&spec, &old);
        assert_eq!(round.rerun.as_deref(), Some("r1"));
        assert_eq!(round.round_start, Some(2));
        assert!(round.outputs.is_empty() && round.completion_time.is_none());
        assert_eq!(round.attempts.len(), 2, "the history stays");
        let first = plan(&spec, &attempts, 2, ts(NOW));
        assert_eq!(first.action, AttemptAction::Create(3));
        // Attempt 3 fails: one retry left in this round, as 4.
        let mut attempts = attempts;
        attempts.insert(3, mk_attempt(3, AttemptPhase::Failed, Some(FailureReason::Error)));
        let retry = plan(&spec, &attempts, 2, ts(FINISHED + 3600));
        assert_eq!(retry.action, AttemptAction::Create(4));
        // Taken in: the same request does not start another round.
        let again = take_rerun(&spec, &round);
        assert_eq!(again, round);
    }
}
