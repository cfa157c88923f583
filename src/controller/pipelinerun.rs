//! PipelineRun: pins the pipeline when the run starts, then drives its tasks. Every
//! reconcile is the same five steps:
//!
//! 1. [`pin`]: the pipeline this run follows (the snapshot once taken, never the live
//!    Pipeline), checked, with the run's params, context and timeout. A run beyond its
//!    pipeline's `maxActiveRuns` waits here, before its snapshot ([`super::admission`]).
//! 2. [`observe`]: the run's TaskRuns, from the watch cache or fresh (see `children`).
//! 3. [`plan`] (pure): the engine's [`step_run`], the same step `weir run` takes.
//! 4. [`apply`]: create and cancel TaskRuns, publish what changed.
//! 5. [`update_status`]: the status [`build_status`] (pure) makes, written when it changed.

use super::{ApiResultExt, Context, Error, Result, list_by_label, now, rerun};
use crate::api::{
    ConditionStatus, Pipeline, PipelineRun, PipelineRunStatus, PipelineSpec, RefusedTaskRun, RunPhase,
    TaskPhase, TaskRun, TaskRunSpec, actions, annotations, condition_types, labels, reasons, set_condition,
};
use crate::engine::resolve::{RunContext, RunIdentity};
use crate::engine::step::{self, Child, RunStep, Start, StepInput, step_run};
use crate::engine::{
    RunOutcome, RunSource, StopReason, ValidPipeline, ValidationErrors, duration, names, run_source,
    run_timeout, validate,
};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Most entries of `status.tasks`; the rest are counted in `tasksOmitted`.
pub const MAX_SUMMARY: usize = step::MAX_SUMMARY;
/// Most refused TaskRuns recorded in a run's status; beyond, creating is tried again with
/// backoff.
const MAX_REFUSED: usize = 100;
/// How long a run waits for its Pipeline to appear (GitOps tools may apply a run first).
const PIPELINE_GRACE: Duration = Duration::from_secs(30);
/// How many TaskRuns (each with its first Job) one reconcile creates at once. Writes in
/// flight together share the API server's and etcd's work (etcd commits them in one disk
/// sync): in the 120-task fan-out, 32 at once made Jobs faster than 16 did.
const STARTS_AT_ONCE: usize = 32;
/// While a run goes on without a deadline, look again this often even without events.
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(run: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    let finished = is_finished(run.status.as_ref()) && !rerun::wanted(&run);
    if run.metadata.deletion_timestamp.is_some() {
        ctx.children.forget(&run.uid().unwrap_or_default());
        return super::artifacts::on_delete(&ctx, &run).await;
    }
    if finished {
        if let Some(uid) = run.uid() {
            ctx.children.forget(&uid);
        }
        return Ok(Action::await_change());
    }
    if own_writes::behind(&run) {
        // The cache has not caught up with this operator's last write: its watch event
        // wakes the run again; this look would decide from an older status.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let now = now();
    let mut pinned = match pin(&ctx, &run, now).await? {
        Pin::Ready(pinned) => pinned,
        Pin::Wait(action) => return Ok(action),
    };
    super::artifacts::keep_finalizer(&ctx, &run, pinned.valid.spec.artifact_store.as_ref()).await?;
    let mut task_runs = observe(&ctx, &run).await?;
    take_rerun(&ctx, &run, &mut pinned, &mut task_runs, now).await?;
    if let Err(e) = super::large::fill(&ctx, &namespace(&run)?, &mut task_runs).await {
        let note = format!("{e}; trying again");
        ctx.event(
            &run.object_ref(&()),
            None,
            EventType::Warning,
            reasons::OUTPUT_UNAVAILABLE,
            actions::RECONCILE,
            note,
        )
        .await;
        return Err(e);
    }
    let due = super::deadline::of(&run, &pinned.valid.spec, pinned.started_at);
    pinned.timeout = super::deadline::timeout(due.as_ref(), pinned.started_at, pinned.timeout);
    let missed = super::deadline::mark(due.as_ref(), &mut pinned.status, run.metadata.generation, now);
    let (children, mut step) = plan_ahead(&ctx, &run, &pinned, &task_runs, now);
    super::deadline::shorten(&mut step.requeue_after, due.as_ref(), now);
    let (valid, status) = (&pinned.valid, &mut pinned.status);
    let task_misses =
        super::deadline::tasks(&run, valid, pinned.started_at, &task_runs, &mut step, status, now);
    apply(&ctx, &run, &mut pinned, &task_runs, &step).await?;
    super::deadline::tell_task_runs(&ctx, &run, &task_runs, &pinned.status).await?;
    let action = update_status(&ctx, &run, &pinned, &children, &step, now).await?;
    super::deadline::publish_task_misses(&ctx, &run, task_misses).await;
    if let Some(note) = missed {
        let regarding = run.object_ref(&());
        ctx.event(
            &regarding,
            None,
            EventType::Warning,
            reasons::DEADLINE_MISSED,
            actions::RECONCILE,
            note,
        )
        .await;
        ctx.metrics.deadline_missed();
    }
    Ok(action)
}

fn is_finished(status: Option<&PipelineRunStatus>) -> bool {
    status.and_then(|s| s.phase).is_some_and(RunPhase::is_terminal)
}

/// A run's pipeline, pinned when the run started, and what the run needs to go on.
struct Pinned {
    valid: ValidPipeline,
    context: RunContext,
    timeout: Option<Duration>,
    started_at: Timestamp,
    /// The status as read, snapshot included.
    status: PipelineRunStatus,
}

enum Pin {
    Ready(Box<Pinned>),
    /// Not started, and not starting now (queued, waiting for its Pipeline, or failed).
    Wait(Action),
}

/// Why a run cannot start: a condition reason and a message.
#[derive(Debug, PartialEq)]
struct Refusal {
    reason: &'static str,
    message: String,
}

/// Step 1: the pipeline the run follows. The first time, takes the snapshot (after
/// admission under `maxActiveRuns`) and writes it with the start time before anything else.
async fn pin(ctx: &Context, run: &PipelineRun, now: Timestamp) -> Result<Pin> {
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace(run)?);
    let mut status = run.status.clone().unwrap_or_default();
    if status.pipeline_revision.is_none() {
        // The cache may lag behind our own snapshot write: ask the API server.
        let fresh = api.get_status(&run.name_any()).await?;
        if let Some(fresh) = fresh.status.filter(|s| s.pipeline_revision.is_some()) {
            if is_finished(Some(&fresh)) {
                return Ok(Pin::Wait(Action::await_change()));
            }
            status = fresh;
        }
    }
    if let Some(name) = status.pipeline_revision.clone() {
        let spec = match followed(ctx, run, &name).await? {
            Ok(spec) => spec,
            Err(refusal) => return fail(ctx, run, status, refusal, now).await,
        };
        return match check(run, &spec) {
            Ok((valid, mut context, timeout)) => {
                let started_at = status.start_time.as_ref().map_or(now, |t| t.0);
                context.started = Some(started_at);
                Ok(Pin::Ready(Box::new(Pinned {
                    valid,
                    context,
                    timeout,
                    started_at,
                    status,
                })))
            }
            Err(refusal) => fail(ctx, run, status, refusal, now).await,
        };
    }
    start(ctx, run, status, now).await
}

/// The spec of the revision `name` a started run follows. A revision that is gone is made
/// again when the run's source still has the same spec (its garbage collection may race
/// with a new run adopting it); otherwise the run cannot go on.
async fn followed(
    ctx: &Context,
    run: &PipelineRun,
    name: &str,
) -> Result<std::result::Result<Arc<PipelineSpec>, Refusal>> {
    use super::revision::{Read, ensure, read_cached};
    let message = match read_cached(ctx, &namespace(run)?, name).await? {
        Read::Spec(spec) => return Ok(Ok(spec)),
        Read::Altered(message) => message,
        Read::Missing(message) => match find_pipeline(ctx, run).await? {
            Found::Spec(spec)
                if crate::engine::revision::name(
                    run.spec.pipeline_ref.as_ref().map(|r| r.name.as_str()),
                    &crate::engine::revision::hash(&spec),
                ) == name =>
            {
                ensure(ctx, run, &spec).await?;
                return Ok(Ok(Arc::new(*spec)));
            }
            _ => message,
        },
    };
    Ok(Err(Refusal {
        reason: reasons::REVISION_UNAVAILABLE,
        message,
    }))
}

/// A run without a snapshot: find its pipeline, wait for a slot, check it, start it.
async fn start(
    ctx: &Context,
    run: &PipelineRun,
    mut status: PipelineRunStatus,
    now: Timestamp,
) -> Result<Pin> {
    let spec = match find_pipeline(ctx, run).await? {
        Found::Spec(spec) => spec,
        Found::Missing(pipeline) => return wait_for_pipeline(ctx, run, status, &pipeline, now).await,
        Found::Bad(refusal) => return fail(ctx, run, status, refusal, now).await,
    };
    let guard = match super::admission::admit(ctx, run, spec.max_active_runs).await? {
        super::admission::Admission::Start(guard) => guard,
        super::admission::Admission::Queued(message) => {
            let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace(run)?);
            let action = super::admission::wait_in_queue(ctx, &api, run, status, message, now).await?;
            return Ok(Pin::Wait(action));
        }
    };
    let (valid, mut context, timeout) = match check(run, &spec) {
        Ok(checked) => checked,
        Err(refusal) => return fail(ctx, run, status, refusal, now).await,
    };
    status.pipeline_revision = Some(super::revision::ensure(ctx, run, &spec).await?);
    status.start_time = Some(Time(now));
    context.started = Some(now);
    status.phase = Some(RunPhase::Pending);
    set_condition(
        &mut status.conditions,
        condition_types::SUCCEEDED,
        ConditionStatus::Unknown,
        reasons::STARTED,
        "the run started",
        run.metadata.generation,
        now,
    );
    // Persist the snapshot and start time before anything is created.
    apply_run_status(&runs_api(ctx, run)?, &run.name_any(), &status).await?;
    drop(guard);
    let of = run
        .spec
        .pipeline_ref
        .as_ref()
        .map(|r| format!(" of pipeline {}", r.name))
        .unwrap_or_default();
    let note = format!("run started: {} task(s){of}", valid.len());
    ctx.event(
        &run.object_ref(&()),
        None,
        EventType::Normal,
        reasons::RUN_STARTED,
        actions::START,
        note,
    )
    .await;
    ctx.metrics.run_started();
    Ok(Pin::Ready(Box::new(Pinned {
        valid,
        context,
        timeout,
        started_at: now,
        status,
    })))
}

enum Found {
    Spec(Box<PipelineSpec>),
    /// The named Pipeline does not exist (yet).
    Missing(String),
    Bad(Refusal),
}

async fn find_pipeline(ctx: &Context, run: &PipelineRun) -> Result<Found> {
    let bad = |message: &str| {
        Found::Bad(Refusal {
            reason: reasons::INVALID_SPEC,
            message: message.into(),
        })
    };
    match run_source(&run.spec) {
        Err(e) => Ok(bad(&format!("{}: {}", e.field, e.message))),
        Ok(RunSource::Inline(spec)) => Ok(Found::Spec(Box::new(spec.clone()))),
        Ok(RunSource::Ref(name)) => {
            let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &namespace(run)?);
            Ok(match api.get(name).await.ignore_not_found()? {
                Some(pipeline) => Found::Spec(Box::new(pipeline.spec)),
                None => Found::Missing(name.to_string()),
            })
        }
    }
}

/// A run whose Pipeline does not exist waits for it a while (GitOps tools may apply the
/// run first), then fails.
async fn wait_for_pipeline(
    ctx: &Context,
    run: &PipelineRun,
    mut status: PipelineRunStatus,
    pipeline: &str,
    now: Timestamp,
) -> Result<Pin> {
    let ns = namespace(run)?;
    let age = run
        .creation_timestamp()
        .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
        .unwrap_or_default();
    let message = format!("Pipeline {pipeline:?} not found in namespace {ns}");
    if age >= PIPELINE_GRACE {
        let refusal = Refusal {
            reason: reasons::PIPELINE_NOT_FOUND,
            message,
        };
        return fail(ctx, run, status, refusal, now).await;
    }
    status.phase = Some(RunPhase::Pending);
    set_condition(
        &mut status.conditions,
        condition_types::SUCCEEDED,
        ConditionStatus::Unknown,
        reasons::PIPELINE_NOT_FOUND,
        format!("{message}; waiting for it"),
        run.metadata.generation,
        now,
    );
    write_if_changed(ctx, run, &status).await?;
    Ok(Pin::Wait(Action::requeue(Duration::from_secs(3))))
}

/// Why a run cannot start, as [`run_problems`] finds it.
#[derive(Clone, Debug, PartialEq)]
pub enum RunProblem {
    /// The pipeline (pinned, inline or referenced) is invalid.
    Pipeline(ValidationErrors),
    /// `spec.timeout` cannot be read.
    Timeout(String),
    /// The params do not fit the pipeline's: one message per problem.
    Params(Vec<String>),
}

/// Checks what a run needs before anything of it runs: a valid pipeline, a readable
/// timeout, params that fit the pipeline's. Every problem found, for the admission webhook
/// to list; the controller refuses with the first kind (see [`check`]). No client.
pub fn run_problems(
    run: &PipelineRun,
    spec: &PipelineSpec,
) -> std::result::Result<(ValidPipeline, RunContext, Option<Duration>), Vec<RunProblem>> {
    let valid = validate(spec).map_err(|errors| vec![RunProblem::Pipeline(errors)])?;
    let timeout = run_timeout(&valid, run.spec.timeout.as_deref()).map_err(RunProblem::Timeout);
    let identity = RunIdentity {
        name: run.name_any(),
        namespace: run.namespace().unwrap_or_default(),
        uid: run.uid().unwrap_or_default(),
        pipeline: run
            .spec
            .pipeline_ref
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default(),
    };
    let context =
        RunContext::new(identity, &valid.spec, Some(&run.spec), &run.spec.params).map_err(RunProblem::Params);
    match (timeout, context) {
        (Ok(timeout), Ok(context)) => Ok((valid, context, timeout)),
        (timeout, context) => Err(timeout.err().into_iter().chain(context.err()).collect()),
    }
}

/// [`run_problems`] as the controller refuses a run: the first kind of problem, with its
/// reason.
fn check(
    run: &PipelineRun,
    spec: &PipelineSpec,
) -> std::result::Result<(ValidPipeline, RunContext, Option<Duration>), Refusal> {
    run_problems(run, spec).map_err(|problems| match problems.into_iter().next() {
        Some(RunProblem::Pipeline(errors)) => Refusal {
            reason: reasons::INVALID_PIPELINE,
            message: format!("invalid pipeline: {errors}"),
        },
        Some(RunProblem::Timeout(message)) => Refusal {
            reason: reasons::INVALID_SPEC,
            message,
        },
        Some(RunProblem::Params(problems)) => Refusal {
            reason: reasons::INVALID_PARAMS,
            message: format!("invalid params: {}", problems.join("; ")),
        },
        None => Refusal {
            reason: reasons::INVALID_SPEC,
            message: "the run cannot start".into(),
        },
    })
}

/// Step 2: the run's TaskRuns, from the watch cache when it holds every write made to them,
/// else fresh from the API server (see [`super::children`]: a cache that lags could hide
/// TaskRuns just created and let a run exceed its parallelism).
async fn observe(ctx: &Context, run: &PipelineRun) -> Result<Vec<TaskRun>> {
    let uid = run.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &namespace(run)?);
    let selector = format!("{}={uid}", labels::PIPELINE_RUN_UID);
    ctx.children
        .of_run(run, || async { list_by_label(&api, &selector).await })
        .await
}

/// Step 2b: a new rerun request on the run is applied (see [`rerun`]) before the step.
async fn take_rerun(
    ctx: &Context,
    run: &PipelineRun,
    pinned: &mut Pinned,
    task_runs: &mut [TaskRun],
    now: Timestamp,
) -> Result<()> {
    let Some(request) = rerun::new_request(run) else {
        return Ok(());
    };
    let selection = {
        let children = children_of(task_runs);
        let states = plan(pinned, &children, false, now).states;
        rerun::select(run, &pinned.valid, &states, &children, request)
    };
    let status = std::mem::take(&mut pinned.status);
    pinned.status = rerun::apply(ctx, run, request, selection, task_runs, status, now).await?;
    if let Some(start) = &pinned.status.start_time {
        pinned.started_at = start.0;
        pinned.context.started = Some(start.0);
    }
    Ok(())
}

/// What the engine reads of each TaskRun. One asked to run again that has not taken the
/// request in yet is pending: its earlier result no longer counts.
fn children_of(task_runs: &[TaskRun]) -> Vec<Child<'_>> {
    static NO_OUTPUTS: BTreeMap<String, String> = BTreeMap::new();
    task_runs
        .iter()
        .map(|tr| {
            let (rerun, held, restarting) = rerun::rerun_of(tr);
            let status = tr.status.as_ref().filter(|_| !restarting);
            Child {
                name: tr.metadata.name.as_deref().unwrap_or_default(),
                task: &tr.spec.task_name,
                instance: tr.spec.instance,
                phase: status.and_then(|s| s.phase).unwrap_or(TaskPhase::Pending),
                cancel_requested: tr.spec.cancelled,
                outputs: status.map_or(&NO_OUTPUTS, |s| &s.outputs),
                attempts: status.and_then(|s| s.attempt_count),
                message: status.and_then(|s| {
                    // Why it failed; for an approval task, what it waits for.
                    crate::api::condition::find(&s.conditions, condition_types::SUCCEEDED)
                        .filter(|c| {
                            c.status == ConditionStatus::False.as_str()
                                || (tr.spec.approval.is_some() && c.reason == crate::api::reasons::WAITING)
                        })
                        .map(|c| c.message.as_str())
                }),
                rerun,
                held,
            }
        })
        .collect()
}

/// Step 3 as soon as Jobs complete: a task whose Job was seen complete and whose result is
/// nothing more (see [`super::children::ends_with_its_job`]) counts as succeeded before its
/// TaskRun says so, and its successors start on that one watch event. Not when that would
/// end the run: the run ends on its TaskRuns' own word, so that it never says it ended
/// before they do.
fn plan_ahead<'a>(
    ctx: &Context,
    run: &PipelineRun,
    pinned: &Pinned,
    task_runs: &'a [TaskRun],
    now: Timestamp,
) -> (Vec<Child<'a>>, RunStep) {
    let uid = run.uid().unwrap_or_default();
    let mut children = children_of(task_runs);
    let mut ahead = false;
    for (child, tr) in children.iter_mut().zip(task_runs) {
        let done = ctx.children.job_done_attempt(&uid, child.name);
        if done.is_some_and(|done| super::children::ends_with_its_job(tr, done)) {
            child.phase = TaskPhase::Succeeded;
            ahead = true;
        }
    }
    let step = plan(pinned, &children, run.spec.cancelled, now);
    if ahead && step.outcome.is_some() {
        let children = children_of(task_runs);
        let step = plan(pinned, &children, run.spec.cancelled, now);
        return (children, step);
    }
    (children, step)
}

/// Step 3: the engine's step, the same one `weir run` takes. No client, no clock.
fn plan(pinned: &Pinned, children: &[Child<'_>], cancel_requested: bool, now: Timestamp) -> RunStep {
    step_run(&StepInput {
        pipeline: &pinned.valid,
        context: &pinned.context,
        children,
        cancel_requested,
        started_at: pinned.started_at,
        timeout: pinned.timeout,
        now,
        refused: &pinned.status.refused,
    })
}

/// Step 4: creates the TaskRuns that start, asks the ones that stop to stop, and tells
/// people about tasks that could not start and about a run being stopped.
async fn apply(
    ctx: &Context,
    run: &PipelineRun,
    pinned: &mut Pinned,
    task_runs: &[TaskRun],
    step: &RunStep,
) -> Result<()> {
    let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &namespace(run)?);
    // Several at once (each is a TaskRun and its first Job): a wide fan-out starts at the
    // pace of the API server, not of one request after another.
    let starts: Vec<_> = step
        .start
        .iter()
        .map(|start| start_task_run(ctx, &api, run, task_runs, start))
        .collect();
    let started: Vec<Result<Option<RefusedTaskRun>>> = futures::stream::iter(starts)
        .buffered(STARTS_AT_ONCE)
        .collect()
        .await;
    for (start, result) in step.start.iter().zip(started) {
        if let Some(refused) = result? {
            let note = format!(
                "task {} failed without running: the API server refused its TaskRun {}: {}",
                pinned.valid.name(start.task),
                start.name,
                refused.message
            );
            ctx.event(
                &run.object_ref(&()),
                None,
                EventType::Warning,
                reasons::TASK_NOT_STARTED,
                actions::START,
                note,
            )
            .await;
            if pinned.status.refused.len() < MAX_REFUSED {
                pinned.status.refused.push(refused);
            }
        }
    }
    let cancel = serde_json::json!({ "spec": { "cancelled": true } });
    for &c in &step.cancel {
        let written = api
            .patch(
                &task_runs[c].name_any(),
                &PatchParams::default(),
                &Patch::Merge(&cancel),
            )
            .await
            .ignore_not_found()?;
        ctx.children.wrote_opt(run, written.as_ref());
    }
    let regarding = run.object_ref(&());
    for (reason, note) in new_task_failures(&pinned.status, step, &pinned.valid) {
        ctx.event(&regarding, None, EventType::Warning, reason, actions::START, note)
            .await;
    }
    if let Some((reason, note)) = stopping_event(step, pinned.timeout) {
        ctx.event(
            &regarding,
            None,
            EventType::Warning,
            reason,
            actions::CANCEL,
            note,
        )
        .await;
    }
    Ok(())
}

/// Creates a TaskRun, or starts a held one again (rerun). A TaskRun the API server refuses
/// as invalid (or an admission webhook denies) is returned: trying again would fail again.
async fn start_task_run(
    ctx: &Context,
    api: &Api<TaskRun>,
    run: &PipelineRun,
    task_runs: &[TaskRun],
    start: &Start,
) -> Result<Option<RefusedTaskRun>> {
    if let Some(c) = start.resume {
        let held = &task_runs[c];
        let request = rerun::rerun_of(held).0.unwrap_or_default();
        let patch = rerun::resume_patch(start.spec.clone(), request);
        let written = api
            .patch(
                &held.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(serde_json::from_value(patch)?),
            )
            .await
            .ignore_not_found()?;
        ctx.children.wrote_opt(run, written.as_ref());
        return Ok(None);
    }
    let task_run = build_task_run(run, &start.name, start.spec.clone())?;
    // From before the TaskRun exists until its first Job's create returned, its own look
    // leaves the Job to this pass.
    let ns = namespace(run)?;
    let _expecting = makes_first_job(&task_run.spec).then(|| ctx.fresh.first_jobs.expect(&ns, &start.name));
    match api.create(&PostParams::default(), &task_run).await {
        Err(kube::Error::Api(s)) if s.code == 400 || s.code == 422 => Ok(Some(RefusedTaskRun {
            task: start.spec.task_name.clone(),
            instance: start.instance,
            message: super::truncate(&s.message, 256),
        })),
        Ok(created) => {
            ctx.children.wrote_opt(run, Some(&created));
            first_job(ctx, &created).await;
            Ok(None)
        }
        result => result.ignore_already_exists().map(|_| None),
    }
}

/// Creates the Job of a new TaskRun's first attempt at once, in the pass that made the
/// TaskRun, instead of waiting for the TaskRun's own reconcile to see it (a watch event and
/// a reconcile less between one task's end and the next task's pod). Only for a task whose
/// first attempt needs nothing else first: one with a pod and no pool (the pool's slots are
/// taken by the TaskRun's reconcile). The Job is the one that reconcile would make, under
/// the same deterministic name, so it finds the Job made and records the attempt; should this
/// create fail, that reconcile creates the Job and reports why it cannot.
async fn first_job(ctx: &Context, task_run: &TaskRun) {
    if !makes_first_job(&task_run.spec) {
        return;
    }
    let (Some(job), Some(ns)) = (
        super::job::build_job(task_run, 1, &ctx.task_defaults),
        task_run.namespace(),
    ) else {
        return;
    };
    match Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .create(&PostParams::default(), &job)
        .await
    {
        Ok(created) => {
            ctx.fresh.jobs.saw_object(&created);
            ctx.metrics.job_created(1, task_run.creation_timestamp().as_ref());
        }
        Err(err) => tracing::debug!(%err, task_run = %task_run.name_any(), "first Job left to the TaskRun"),
    }
}

/// Whether the pass that creates a TaskRun of `spec` creates its first Job too.
fn makes_first_job(spec: &TaskRunSpec) -> bool {
    spec.uses_pod() && spec.pool.is_none() && !spec.stop_requested()
}

/// A TaskRun owned by the run, labelled so its Jobs and pods can be found by run and task.
fn build_task_run(run: &PipelineRun, name: &str, spec: TaskRunSpec) -> Result<TaskRun> {
    let mut labels = BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (
            labels::PIPELINE_RUN.to_string(),
            names::label_value(&run.name_any()),
        ),
        (
            labels::PIPELINE_RUN_UID.to_string(),
            run.uid().ok_or(Error::MissingField("metadata.uid"))?,
        ),
        (labels::TASK.to_string(), spec.task_name.clone()),
    ]);
    if let Some(reference) = &run.spec.pipeline_ref {
        labels.insert(labels::PIPELINE.to_string(), names::label_value(&reference.name));
    }
    if let Some(k) = spec.instance {
        labels.insert(labels::INSTANCE.to_string(), k.to_string());
    }
    Ok(TaskRun {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: run.namespace(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                annotations::PIPELINE_RUN.to_string(),
                run.name_any(),
            )])),
            owner_references: Some(vec![
                run.controller_owner_ref(&())
                    .ok_or(Error::MissingField("metadata.uid"))?,
            ]),
            ..Default::default()
        },
        spec,
        status: None,
    })
}

/// Tasks that failed without running (a template that cannot be filled, an instance too
/// large to start) and were not shown failed before: one Event each, once.
fn new_task_failures(
    old: &PipelineRunStatus,
    step: &RunStep,
    valid: &ValidPipeline,
) -> Vec<(&'static str, String)> {
    step.notes
        .iter()
        .filter(|(t, _)| step.states[*t] == TaskPhase::Failed)
        .filter(|(t, _)| {
            !old.tasks
                .iter()
                .any(|s| s.name == valid.name(*t) && s.phase == TaskPhase::Failed)
        })
        .map(|(t, note)| {
            (
                reasons::TASK_NOT_STARTED,
                format!("task {} failed without running: {note}", valid.name(*t)),
            )
        })
        .collect()
}

/// The Event of a run that starts stopping its tasks (cancelled, or out of time).
fn stopping_event(step: &RunStep, timeout: Option<Duration>) -> Option<(&'static str, String)> {
    let stopping = step.cancel.len();
    if stopping == 0 {
        return None;
    }
    Some(match step.stop {
        Some(StopReason::Timeout) => (
            reasons::RUN_TIMEOUT,
            format!(
                "run timed out after {}; stopping {stopping} task(s)",
                timeout.map(duration::format).unwrap_or_default(),
            ),
        ),
        _ => (
            reasons::RUN_CANCELLING,
            format!("run cancelled; stopping {stopping} task(s)"),
        ),
    })
}

/// How a run ended, for its Event.
struct Finish {
    type_: EventType,
    reason: &'static str,
    note: String,
    phase: RunPhase,
}

/// Step 5: writes the status when it changed; a run that ended says so once.
async fn update_status(
    ctx: &Context,
    run: &PipelineRun,
    pinned: &Pinned,
    children: &[Child<'_>],
    step: &RunStep,
    now: Timestamp,
) -> Result<Action> {
    let (status, finish) = build_status(run, pinned, children, step, now);
    write_if_changed(ctx, run, &status).await?;
    if let Some(finish) = finish {
        ctx.event(
            &run.object_ref(&()),
            None,
            finish.type_,
            finish.reason,
            actions::FINISH,
            finish.note,
        )
        .await;
        ctx.metrics.run_finished(finish.phase);
        return Ok(Action::await_change());
    }
    Ok(match step.requeue_after {
        Some(wait) => Action::requeue(wait + Duration::from_millis(50)),
        None => Action::requeue(RESYNC),
    })
}

/// The run's status after a step: phase, the `Succeeded` condition, counts and the task
/// summary; and, once the run ended, its Event. No client, no clock.
fn build_status(
    run: &PipelineRun,
    pinned: &Pinned,
    children: &[Child<'_>],
    step: &RunStep,
    now: Timestamp,
) -> (PipelineRunStatus, Option<Finish>) {
    let generation = run.metadata.generation;
    let mut status = pinned.status.clone();
    let summary = &step.summary;
    status.progress = Some(summary.progress.clone());
    status.counts = Some(summary.counts.clone());
    status.tasks = summary.tasks.clone();
    status.tasks_omitted = (summary.omitted > 0).then_some(summary.omitted);
    status.observed_generation = generation;
    let phase = step.phase(children);
    status.phase = Some(phase);
    let (condition, reason, message) = run_condition(step, pinned.valid.len());
    set_condition(
        &mut status.conditions,
        condition_types::SUCCEEDED,
        condition,
        reason,
        message.clone(),
        generation,
        now,
    );
    let Some(outcome) = &step.outcome else {
        return (status, None);
    };
    status.completion_time = Some(Time(now));
    status.duration = Duration::try_from(now.duration_since(pinned.started_at))
        .ok()
        .map(duration::format);
    let (type_, reason) = match outcome {
        RunOutcome::Succeeded => (EventType::Normal, reasons::RUN_SUCCEEDED),
        RunOutcome::Failed { .. } => (EventType::Warning, reasons::RUN_FAILED),
        RunOutcome::Cancelled { .. } => (EventType::Normal, reasons::RUN_CANCELLED),
    };
    let took = status.duration.clone().unwrap_or_default();
    let finish = Finish {
        type_,
        reason,
        note: format!("{message} ({took})"),
        phase,
    };
    (status, Some(finish))
}

/// The run's `Succeeded` condition: status, reason and message.
fn run_condition(step: &RunStep, tasks: usize) -> (ConditionStatus, &'static str, String) {
    match (&step.outcome, step.stop) {
        (Some(RunOutcome::Succeeded), _) => (
            ConditionStatus::True,
            reasons::SUCCEEDED,
            "all tasks finished".into(),
        ),
        (Some(RunOutcome::Failed { reason, message }), _) => {
            (ConditionStatus::False, reason, message.clone())
        }
        (Some(RunOutcome::Cancelled { message }), _) => {
            (ConditionStatus::False, reasons::CANCELLED, message.clone())
        }
        (None, Some(StopReason::Cancelled)) => (
            ConditionStatus::Unknown,
            reasons::CANCELLING,
            "the run is being cancelled; finally tasks still run".into(),
        ),
        (None, Some(StopReason::Timeout)) => (
            ConditionStatus::Unknown,
            reasons::RUN_TIMEOUT,
            "the run timed out; finally tasks still run".into(),
        ),
        (None, None) => (
            ConditionStatus::Unknown,
            reasons::RUNNING,
            format!("{} of {tasks} tasks done", step::done_count(&step.summary.counts)),
        ),
    }
}

/// Ends a run that cannot start: `Failed` with the reason, an Event, the metric.
async fn fail(
    ctx: &Context,
    run: &PipelineRun,
    mut status: PipelineRunStatus,
    refusal: Refusal,
    now: Timestamp,
) -> Result<Pin> {
    status.phase = Some(RunPhase::Failed);
    status.completion_time = Some(Time(now));
    status.observed_generation = run.metadata.generation;
    set_condition(
        &mut status.conditions,
        condition_types::SUCCEEDED,
        ConditionStatus::False,
        refusal.reason,
        refusal.message.clone(),
        run.metadata.generation,
        now,
    );
    apply_run_status(&runs_api(ctx, run)?, &run.name_any(), &status).await?;
    ctx.event(
        &run.object_ref(&()),
        None,
        EventType::Warning,
        refusal.reason,
        actions::VALIDATE,
        refusal.message,
    )
    .await;
    ctx.metrics.run_finished(RunPhase::Failed);
    Ok(Pin::Wait(Action::await_change()))
}

async fn write_if_changed(ctx: &Context, run: &PipelineRun, status: &PipelineRunStatus) -> Result<()> {
    if run.status.as_ref() != Some(status) {
        apply_run_status(&runs_api(ctx, run)?, &run.name_any(), status).await?;
    }
    Ok(())
}

/// Writes a run's status as the run's reconcile owns it: everything but the notifier's
/// `notifications`, which a status read a moment ago could hold stale and would write back
/// over newer records. (The notifier's `NotificationsDelivered` condition is written back
/// as read: the API server treats `conditions` as one value, see `controller::notify`.)
pub async fn apply_run_status(api: &Api<PipelineRun>, name: &str, status: &PipelineRunStatus) -> Result<()> {
    let mut own = status.clone();
    own.notifications.clear();
    let written = super::apply_status(api, name, &own).await?;
    own_writes::wrote(&written);
    Ok(())
}

/// The run's own status writes, so that a reconcile never acts on a copy of the run older
/// than what it wrote itself. The watch cache can lag behind a write; a reconcile woken
/// meanwhile by something else (a TaskRun's change) would otherwise decide again from the
/// status before the write, and say again what the write recorded as said (a missed
/// deadline, a failure). Such a reconcile waits for the cache instead, as Kubernetes'
/// controllers wait for their expectations.
mod own_writes {
    use super::PipelineRun;
    use kube::ResourceExt;
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex, PoisonError};

    /// By run uid, the resourceVersion of the last status write.
    static WRITTEN: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Mutex::default);

    pub fn wrote(run: &PipelineRun) {
        if let (Some(uid), Some(version)) = (run.uid(), version(run)) {
            let mut written = WRITTEN.lock().unwrap_or_else(PoisonError::into_inner);
            let last = written.entry(uid).or_insert(0);
            *last = (*last).max(version);
        }
    }

    /// Whether `run` is older than the operator's last write to its status. Versions that
    /// are not numbers are never taken as older.
    pub fn behind(run: &PipelineRun) -> bool {
        let (Some(uid), Some(version)) = (run.uid(), version(run)) else {
            return false;
        };
        let mut written = WRITTEN.lock().unwrap_or_else(PoisonError::into_inner);
        match written.get(&uid) {
            Some(&last) if version < last => true,
            Some(_) => {
                written.remove(&uid);
                false
            }
            None => false,
        }
    }

    fn version(run: &PipelineRun) -> Option<u64> {
        run.resource_version()?.parse().ok()
    }
}

fn namespace(run: &PipelineRun) -> Result<String> {
    run.namespace().ok_or(Error::MissingField("metadata.namespace"))
}

fn runs_api(ctx: &Context, run: &PipelineRun) -> Result<Api<PipelineRun>> {
    Ok(Api::namespaced(ctx.client.clone(), &namespace(run)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PipelineRef, PipelineRunSpec, TaskRunStatus};
    use crate::engine::step::StepInput;
    use serde_json::json;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn spec(yaml: serde_json::Value) -> PipelineSpec {
        serde_json::from_value(yaml).unwrap()
    }

    fn two_tasks() -> PipelineSpec {
        spec(json!({
            "params": [{"name": "region", "default": "eu"}],
            "tasks": [
                {"name": "a", "image": "busybox", "command": ["echo", "{{ params.region }}"]},
                {"name": "b", "image": "busybox", "dependsOn": ["a"]},
            ],
        }))
    }

    fn mk_run(params: serde_json::Value, timeout: Option<&str>) -> PipelineRun {
        let mut run = PipelineRun::new(
            "etl-1",
            PipelineRunSpec {
                pipeline_ref: Some(PipelineRef { name: "etl".into() }),
                params: serde_json::from_value(params).unwrap(),
                timeout: timeout.map(String::from),
                ..Default::default()
            },
        );
        run.metadata.namespace = Some("data".into());
        run.metadata.uid = Some("uid-1".into());
        run.metadata.generation = Some(3);
        run
    }

    fn pinned(run: &PipelineRun, spec: &PipelineSpec) -> Pinned {
        let (valid, context, timeout) = check(run, spec).unwrap();
        Pinned {
            valid,
            context,
            timeout,
            started_at: ts(0),
            status: PipelineRunStatus::default(),
        }
    }

    fn mk_task_run(task: &str, phase: TaskPhase, failure: Option<&str>) -> TaskRun {
        let mut tr = TaskRun::new(
            &format!("etl-1-{task}"),
            TaskRunSpec {
                task_name: task.into(),
                ..Default::default()
            },
        );
        let mut status = TaskRunStatus {
            phase: Some(phase),
            attempt_count: Some(2),
            ..Default::default()
        };
        if let Some(message) = failure {
            set_condition(
                &mut status.conditions,
                condition_types::SUCCEEDED,
                ConditionStatus::False,
                "Error",
                message,
                None,
                ts(0),
            );
        }
        tr.status = Some(status);
        tr
    }

    fn step_over(pinned: &Pinned, children: &[Child<'_>], cancel: bool, now: Timestamp) -> RunStep {
        step_run(&StepInput {
            pipeline: &pinned.valid,
            context: &pinned.context,
            children,
            cancel_requested: cancel,
            started_at: pinned.started_at,
            timeout: pinned.timeout,
            now,
            refused: &[],
        })
    }

    #[test]
    fn check_refuses_with_a_reason_for_each_kind_of_problem() {
        let cases = [
            (
                mk_run(json!({}), None),
                spec(json!({"tasks": [{"name": "a", "dependsOn": ["nope"]}]})),
                reasons::INVALID_PIPELINE,
                "nope",
            ),
            (
                mk_run(json!({}), Some("soon")),
                two_tasks(),
                reasons::INVALID_SPEC,
                "spec.timeout",
            ),
            (
                mk_run(json!({"regoin": "us"}), None),
                two_tasks(),
                reasons::INVALID_PARAMS,
                "unknown parameter \"regoin\"",
            ),
        ];
        for (run, spec, reason, needle) in cases {
            let refusal = check(&run, &spec).expect_err("refused");
            assert_eq!(refusal.reason, reason, "{refusal:?}");
            assert!(refusal.message.contains(needle), "{refusal:?}");
        }
    }

    #[test]
    fn check_builds_the_context_templates_read() {
        let run = mk_run(json!({"region": "us"}), Some("1h"));
        let (valid, context, timeout) = check(&run, &two_tasks()).unwrap();
        assert_eq!(valid.len(), 2);
        assert_eq!(
            (
                context.name.as_str(),
                context.namespace.as_str(),
                context.uid.as_str()
            ),
            ("etl-1", "data", "uid-1")
        );
        assert_eq!(context.pipeline, "etl");
        assert_eq!(context.params["region"], json!("us"));
        assert_eq!(timeout, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn children_carry_phase_outputs_and_the_failure_message() {
        let mut ok = mk_task_run("a", TaskPhase::Succeeded, None);
        ok.status.as_mut().unwrap().outputs = BTreeMap::from([("rows".into(), "42".into())]);
        let failed = mk_task_run("b", TaskPhase::Failed, Some("exit code 3"));
        let mut fresh = mk_task_run("c", TaskPhase::Pending, None);
        fresh.status = None;
        fresh.spec.cancelled = true;
        fresh.spec.instance = Some(4);
        let task_runs = [ok, failed, fresh];
        let children = children_of(&task_runs);
        assert_eq!(children[0].outputs["rows"], "42");
        assert_eq!(children[0].message, None);
        assert_eq!(children[1].message, Some("exit code 3"));
        assert_eq!(children[1].attempts, Some(2));
        assert_eq!(
            (
                children[2].phase,
                children[2].cancel_requested,
                children[2].instance
            ),
            (TaskPhase::Pending, true, Some(4))
        );
        assert!(children[2].outputs.is_empty());
    }

    #[test]
    fn status_while_running_and_once_finished() {
        let run = mk_run(json!({}), None);
        let pinned = pinned(&run, &two_tasks());
        // Nothing yet: task a starts; the run is running.
        let step = step_over(&pinned, &[], false, ts(1));
        let (status, finish) = build_status(&run, &pinned, &[], &step, ts(1));
        assert!(finish.is_none());
        assert_eq!(status.phase, Some(RunPhase::Running));
        assert_eq!(status.progress.as_deref(), Some("0/2"));
        assert_eq!(status.observed_generation, Some(3));
        let cond = &status.conditions[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str(), cond.message.as_str()),
            ("Unknown", "Running", "0 of 2 tasks done")
        );

        let task_runs = [
            mk_task_run("a", TaskPhase::Succeeded, None),
            mk_task_run("b", TaskPhase::Failed, Some("exit code 3")),
        ];
        let children = children_of(&task_runs);
        let step = step_over(&pinned, &children, false, ts(90));
        let (status, finish) = build_status(&run, &pinned, &children, &step, ts(90));
        assert_eq!(status.phase, Some(RunPhase::Failed));
        assert_eq!(status.duration.as_deref(), Some("1m30s"));
        assert_eq!(status.completion_time, Some(Time(ts(90))));
        let cond = &status.conditions[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "TaskFailed")
        );
        let b = status.tasks.iter().find(|t| t.name == "b").unwrap();
        assert_eq!(b.message.as_deref(), Some("exit code 3"));
        assert_eq!(b.task_run.as_deref(), Some("etl-1-b"));
        let finish = finish.expect("the run ended");
        assert_eq!(
            (finish.reason, finish.phase),
            (reasons::RUN_FAILED, RunPhase::Failed)
        );
        assert!(finish.note.ends_with("(1m30s)"), "{}", finish.note);
    }

    #[test]
    fn a_cancelled_run_says_so_while_stopping_and_at_the_end() {
        let run = mk_run(json!({}), None);
        let pinned = pinned(&run, &two_tasks());
        let task_runs = [mk_task_run("a", TaskPhase::Running, None)];
        let children = children_of(&task_runs);
        let step = step_over(&pinned, &children, true, ts(5));
        assert_eq!(step.cancel, vec![0]);
        let (reason, note) = stopping_event(&step, None).unwrap();
        assert_eq!(reason, reasons::RUN_CANCELLING);
        assert_eq!(note, "run cancelled; stopping 1 task(s)");
        let (condition, reason, _) = run_condition(&step, 2);
        assert_eq!(
            (condition, reason),
            (ConditionStatus::Unknown, reasons::CANCELLING)
        );

        let task_runs = [mk_task_run("a", TaskPhase::Cancelled, None)];
        let children = children_of(&task_runs);
        let step = step_over(&pinned, &children, true, ts(6));
        assert!(stopping_event(&step, None).is_none());
        let (condition, reason, _) = run_condition(&step, 2);
        assert_eq!((condition, reason), (ConditionStatus::False, reasons::CANCELLED));
    }

    #[test]
    fn a_task_that_fails_without_running_is_announced_once() {
        let bad = spec(json!({
            "tasks": [
                {"name": "a", "image": "busybox", "outputs": [{"name": "rows"}]},
                {"name": "b", "image": "busybox", "dependsOn": ["a"],
                 "args": ["{{ tasks.a.outputs.rows }}"]},
            ],
        }));
        let run = mk_run(json!({}), None);
        let mut pinned = pinned(&run, &bad);
        // `a` succeeded without its output (as if the driver had not checked it).
        let task_runs = [mk_task_run("a", TaskPhase::Succeeded, None)];
        let children = children_of(&task_runs);
        let step = step_over(&pinned, &children, false, ts(5));
        let events = new_task_failures(&pinned.status, &step, &pinned.valid);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, reasons::TASK_NOT_STARTED);
        assert!(
            events[0].1.starts_with("task b failed without running: "),
            "{events:?}"
        );
        // Once the status shows it failed, no second Event.
        let (status, _) = build_status(&run, &pinned, &children, &step, ts(5));
        pinned.status = status;
        let step = step_over(&pinned, &children, false, ts(6));
        assert!(new_task_failures(&pinned.status, &step, &pinned.valid).is_empty());
    }

    #[test]
    fn a_copy_older_than_the_last_status_write_is_behind() {
        let at = |version: &str| {
            let mut run = mk_run(serde_json::json!({}), None);
            run.metadata.uid = Some("uid-behind".into());
            run.metadata.resource_version = Some(version.into());
            run
        };
        assert!(!own_writes::behind(&at("10")));
        own_writes::wrote(&at("12"));
        assert!(own_writes::behind(&at("10")));
        assert!(own_writes::behind(&at("11")));
        assert!(!own_writes::behind(&at("12")));
        // Caught up: forgotten, so an older copy is no longer held back.
        assert!(!own_writes::behind(&at("11")));
        own_writes::wrote(&at("20"));
        assert!(!own_writes::behind(&at("abc")));
    }

    #[test]
    fn task_runs_are_owned_labelled_and_annotated() {
        let run = mk_run(json!({}), None);
        let spec = TaskRunSpec {
            task_name: "shard".into(),
            instance: Some(2),
            ..Default::default()
        };
        let tr = build_task_run(&run, "etl-1-shard-2", spec).unwrap();
        let labels = tr.metadata.labels.unwrap();
        assert_eq!(labels[labels::TASK], "shard");
        assert_eq!(labels[labels::INSTANCE], "2");
        assert_eq!(labels[labels::PIPELINE_RUN_UID], "uid-1");
        assert_eq!(labels[labels::PIPELINE], "etl");
        assert_eq!(
            tr.metadata.annotations.unwrap()[annotations::PIPELINE_RUN],
            "etl-1"
        );
        let owner = &tr.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("PipelineRun", Some(true))
        );
    }
}
