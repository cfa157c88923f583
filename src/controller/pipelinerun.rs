//! PipelineRun: snapshots the pipeline when the run starts, then drives its tasks: observes
//! the TaskRuns, asks `engine::plan_run` which tasks start, stop or are skipped, creates and
//! cancels TaskRuns, and keeps a compact status.

use super::{
    Context, Error, Result, apply_status, error_backoff, is_already_exists, is_not_found, list_by_label, now,
};
use crate::api::{
    ConditionStatus, Pipeline, PipelineRun, PipelineRunStatus, PipelineSpec, RunPhase, TaskCounts, TaskPhase,
    TaskRun, TaskSummary, labels, set_condition,
};
use crate::engine::{
    ObservedTask, Prepared, RunInput, RunOutcome, StopReason, ValidPipeline, duration, names, plan_run,
    resolve, validate,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Most entries of `status.tasks`; the rest are counted in `tasksOmitted`.
pub const MAX_SUMMARY: usize = 100;
/// How long a run waits for its Pipeline to appear (GitOps tools may apply a run first).
const PIPELINE_GRACE: Duration = Duration::from_secs(30);

enum Unresolved {
    NotFound(String),
    BadSpec(String),
}

async fn resolve_pipeline(
    run: &PipelineRun,
    ctx: &Context,
    ns: &str,
) -> Result<std::result::Result<(Option<String>, PipelineSpec), Unresolved>> {
    match (&run.spec.pipeline_ref, &run.spec.pipeline_spec) {
        (Some(_), Some(_)) => Ok(Err(Unresolved::BadSpec(
            "set either spec.pipelineRef or spec.pipelineSpec, not both".into(),
        ))),
        (None, None) => Ok(Err(Unresolved::BadSpec(
            "spec.pipelineRef or spec.pipelineSpec is required".into(),
        ))),
        (None, Some(spec)) => Ok(Ok((None, spec.clone()))),
        (Some(reference), None) => {
            let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), ns);
            match api.get(&reference.name).await {
                Ok(p) => Ok(Ok((Some(reference.name.clone()), p.spec))),
                Err(e) if is_not_found(&e) => Ok(Err(Unresolved::NotFound(reference.name.clone()))),
                Err(e) => Err(e.into()),
            }
        }
    }
}

pub async fn reconcile(run: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    if run.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = run.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let name = run.name_any();
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status = run.status.clone().unwrap_or_default();
    if status.phase.is_some_and(RunPhase::is_terminal) {
        return Ok(Action::await_change());
    }
    let now = now();
    let generation = run.metadata.generation;
    let regarding = run.object_ref(&());

    // 1. The pipeline this run follows: the snapshot once taken, never the live Pipeline.
    // A run beyond its pipeline's `maxActiveRuns` waits here, before its snapshot.
    let mut admission = None;
    if status.pipeline_spec.is_none() {
        // The cache may lag behind our own snapshot write: ask the API server.
        let fresh = api.get_status(&name).await?;
        if let Some(fresh_status) = fresh.status.filter(|s| s.pipeline_spec.is_some()) {
            status = fresh_status;
            if status.phase.is_some_and(RunPhase::is_terminal) {
                return Ok(Action::await_change());
            }
        }
    }
    let spec = match status.pipeline_spec.clone() {
        Some(spec) => spec,
        None => match resolve_pipeline(&run, &ctx, &ns).await? {
            Ok((_, spec)) => match super::admission::admit(&ctx, &run, spec.max_active_runs).await? {
                super::admission::Admission::Start(guard) => {
                    admission = guard;
                    spec
                }
                super::admission::Admission::Queued(message) => {
                    return super::admission::wait_in_queue(&ctx, &api, &run, status, message, now).await;
                }
            },
            Err(Unresolved::NotFound(pipeline)) => {
                let age = run
                    .creation_timestamp()
                    .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
                    .unwrap_or_default();
                let message = format!("Pipeline {pipeline:?} not found in namespace {ns}");
                if age < PIPELINE_GRACE {
                    status.phase = Some(RunPhase::Pending);
                    set_condition(
                        &mut status.conditions,
                        "Succeeded",
                        ConditionStatus::Unknown,
                        "PipelineNotFound",
                        format!("{message}; waiting for it"),
                        generation,
                        now,
                    );
                    write_if_changed(&api, &name, &run, &status).await?;
                    return Ok(Action::requeue(Duration::from_secs(3)));
                }
                fail(&ctx, &api, &run, status, "PipelineNotFound", message, now).await?;
                return Ok(Action::await_change());
            }
            Err(Unresolved::BadSpec(message)) => {
                fail(&ctx, &api, &run, status, "InvalidSpec", message, now).await?;
                return Ok(Action::await_change());
            }
        },
    };
    let valid = match validate(&spec) {
        Ok(valid) => valid,
        Err(errors) => {
            fail(
                &ctx,
                &api,
                &run,
                status,
                "InvalidPipeline",
                format!("invalid pipeline: {errors}"),
                now,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    let run_timeout = match run.spec.timeout.as_deref().map(duration::parse) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            fail(
                &ctx,
                &api,
                &run,
                status,
                "InvalidSpec",
                format!("spec.timeout: {e}"),
                now,
            )
            .await?;
            return Ok(Action::await_change());
        }
        None => valid.timeout,
    };
    let params = match resolve::effective_params(&valid.spec, &run.spec.params) {
        Ok(params) => params,
        Err(problems) => {
            let message = format!("invalid params: {}", problems.join("; "));
            fail(&ctx, &api, &run, status, "InvalidParams", message, now).await?;
            return Ok(Action::await_change());
        }
    };
    if status.start_time.is_none() || status.pipeline_spec.is_none() {
        status.pipeline_spec = Some(spec);
        status.start_time = Some(Time(now));
        status.phase = Some(RunPhase::Pending);
        set_condition(
            &mut status.conditions,
            "Succeeded",
            ConditionStatus::Unknown,
            "Started",
            "the run started",
            generation,
            now,
        );
        // Persist the snapshot and start time before anything is created.
        apply_status(&api, &name, &status).await?;
        drop(admission);
        let note = format!(
            "run started: {} task(s){}",
            valid.len(),
            run.spec
                .pipeline_ref
                .as_ref()
                .map(|r| format!(" of pipeline {}", r.name))
                .unwrap_or_default()
        );
        ctx.event(&regarding, None, EventType::Normal, "RunStarted", "Start", note)
            .await;
        ctx.metrics.run_started();
    }
    let started_at = status.start_time.as_ref().map(|t| t.0).unwrap_or(now);

    // 2. Observe the TaskRuns, fresh from the API server (a stale cache could hide TaskRuns
    // just created and let a run exceed its parallelism).
    let uid = run.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let tr_api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &ns);
    let task_runs = list_by_label(&tr_api, &format!("{}={uid}", labels::PIPELINE_RUN_UID)).await?;
    let n = valid.len();
    let mut observed: Vec<Option<ObservedTask>> = vec![None; n];
    let mut by_index: Vec<Option<&TaskRun>> = vec![None; n];
    let mut instances: Vec<Vec<Option<ObservedTask>>> = vec![Vec::new(); n];
    let mut instance_runs: Vec<Vec<Option<&TaskRun>>> = vec![Vec::new(); n];
    for tr in &task_runs {
        let Some(&i) = valid.index.get(&tr.spec.task_name) else {
            continue;
        };
        let phase = tr
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(TaskPhase::Pending);
        let seen = ObservedTask {
            phase,
            cancel_requested: tr.spec.cancelled,
        };
        match (valid.task(i).for_each.is_some(), tr.spec.instance) {
            (true, Some(k)) => {
                let k = k as usize;
                if instances[i].len() <= k {
                    instances[i].resize(k + 1, None);
                    instance_runs[i].resize(k + 1, None);
                }
                instances[i][k] = Some(seen);
                instance_runs[i][k] = Some(tr);
            }
            (false, None) => {
                observed[i] = Some(seen);
                by_index[i] = Some(tr);
            }
            _ => {}
        }
    }

    // What templates see: params, run fields, and outputs of tasks that succeeded (for a
    // fanned-out task, the list of its instances' values).
    let context = resolve::RunContext {
        name: name.clone(),
        namespace: ns.clone(),
        uid: uid.clone(),
        pipeline: run
            .spec
            .pipeline_ref
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default(),
        logical_date: run.spec.logical_date.as_ref().map(|t| t.0),
        data_interval_start: run.spec.data_interval_start.as_ref().map(|t| t.0),
        data_interval_end: run.spec.data_interval_end.as_ref().map(|t| t.0),
        params,
    };
    let output_of = |tr: &TaskRun, key: &str| -> Option<String> {
        let status = tr.status.as_ref()?;
        (status.phase == Some(TaskPhase::Succeeded)).then(|| status.outputs.get(key).cloned())?
    };
    let outputs = |task: &str, key: &str| -> Option<serde_json::Value> {
        let &i = valid.index.get(task)?;
        if valid.task(i).for_each.is_some() {
            let values = instance_runs[i]
                .iter()
                .map(|tr| {
                    tr.and_then(|tr| output_of(tr, key))
                        .map_or(serde_json::Value::Null, serde_json::Value::String)
                })
                .collect();
            Some(serde_json::Value::Array(values))
        } else {
            output_of(by_index[i]?, key).map(serde_json::Value::String)
        }
    };
    // The values task `i`'s templates see (finally tasks read a missing output as empty).
    let values_for = |i: usize| resolve::TaskValues {
        run: &context,
        outputs: &outputs,
        item: None,
        lenient: valid.is_finally(i),
    };
    let prepare = |i: usize| -> Prepared { resolve::prepare(&valid, i, &values_for(i)) };

    // 3. Plan.
    let plan = plan_run(&RunInput {
        pipeline: &valid,
        observed: &observed,
        cancel_requested: run.spec.cancelled,
        started_at,
        timeout: run_timeout,
        now,
        instances: &instances,
        prepare: &prepare,
    });

    // 4. Apply.
    let mut states = plan.states.clone();
    let labels_for = |task: &str, instance: Option<u32>| {
        let mut labels = BTreeMap::from([
            (
                labels::MANAGED_BY.to_string(),
                labels::MANAGED_BY_VALUE.to_string(),
            ),
            (labels::PIPELINE_RUN.to_string(), names::label_value(&name)),
            (labels::PIPELINE_RUN_UID.to_string(), uid.clone()),
            (labels::TASK.to_string(), task.to_string()),
        ]);
        if let Some(reference) = &run.spec.pipeline_ref {
            labels.insert(labels::PIPELINE.to_string(), names::label_value(&reference.name));
        }
        if let Some(k) = instance {
            labels.insert(labels::INSTANCE.to_string(), k.to_string());
        }
        labels
    };
    for &i in &plan.start {
        let values = values_for(i);
        // `prepare` rendered this task a moment ago with the same values, so this succeeds.
        let spec = resolve::resolve_task(&valid, i, None, &values)
            .unwrap_or_else(|_| resolve::task_run_spec(&valid, i));
        let task_run_name = names::task_run_name(&name, valid.name(i));
        create_task_run(
            &tr_api,
            &run,
            task_run_name,
            spec,
            labels_for(valid.name(i), None),
        )
        .await?;
        states[i] = TaskPhase::Running;
    }
    let mut items_cache: BTreeMap<usize, Vec<serde_json::Value>> = BTreeMap::new();
    for &(i, k) in &plan.start_instances {
        let values = values_for(i);
        let items = items_cache
            .entry(i)
            .or_insert_with(|| resolve::items(&valid, i, &values).unwrap_or_default());
        let Some(item) = items.get(k as usize) else {
            continue;
        };
        let values = resolve::TaskValues {
            item: Some(item),
            ..values
        };
        let spec = resolve::resolve_task(&valid, i, Some(k), &values)
            .unwrap_or_else(|_| resolve::task_run_spec(&valid, i));
        let task_run_name = names::child_name(&names::task_run_name(&name, valid.name(i)), &k.to_string());
        create_task_run(
            &tr_api,
            &run,
            task_run_name,
            spec,
            labels_for(valid.name(i), Some(k)),
        )
        .await?;
        states[i] = TaskPhase::Running;
    }
    let to_cancel = plan.cancel.iter().filter_map(|&i| by_index[i]).chain(
        plan.cancel_instances
            .iter()
            .filter_map(|&(i, k)| instance_runs[i].get(k as usize).copied().flatten()),
    );
    for tr in to_cancel {
        let patch = serde_json::json!({ "spec": { "cancelled": true } });
        match tr_api
            .patch(&tr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let stopping_count = plan.cancel.len() + plan.cancel_instances.len();
    if stopping_count > 0 {
        let (reason, note) = match plan.stop {
            Some(StopReason::Timeout) => (
                "RunTimeout",
                format!(
                    "run timed out after {}; stopping {} task(s)",
                    run_timeout.map(duration::format).unwrap_or_default(),
                    stopping_count
                ),
            ),
            _ => (
                "RunCancelling",
                format!("run cancelled; stopping {stopping_count} task(s)"),
            ),
        };
        ctx.event(&regarding, None, EventType::Warning, reason, "Cancel", note)
            .await;
    }

    // 5. Status.
    summarize(&mut status, &valid, &states, &by_index, &instances, &plan.notes);
    let anything_started = observed.iter().any(Option::is_some)
        || instances.iter().flatten().any(Option::is_some)
        || !plan.start.is_empty()
        || !plan.start_instances.is_empty();
    match &plan.outcome {
        None => {
            status.phase = Some(if anything_started {
                RunPhase::Running
            } else {
                RunPhase::Pending
            });
            let (reason, message) = match plan.stop {
                Some(StopReason::Cancelled) => (
                    "Cancelling",
                    "the run is being cancelled; finally tasks still run".to_string(),
                ),
                Some(StopReason::Timeout) => (
                    "RunTimeout",
                    "the run timed out; finally tasks still run".to_string(),
                ),
                None => (
                    "Running",
                    format!(
                        "{} of {} tasks done",
                        status.counts.as_ref().map_or(0, done_count),
                        valid.len()
                    ),
                ),
            };
            set_condition(
                &mut status.conditions,
                "Succeeded",
                ConditionStatus::Unknown,
                reason,
                message,
                generation,
                now,
            );
        }
        Some(outcome) => {
            let (phase, cond, reason, message, event_type, event_reason) = match outcome {
                RunOutcome::Succeeded => (
                    RunPhase::Succeeded,
                    ConditionStatus::True,
                    "Succeeded",
                    "all tasks finished".to_string(),
                    EventType::Normal,
                    "RunSucceeded",
                ),
                RunOutcome::Failed { reason, message } => (
                    RunPhase::Failed,
                    ConditionStatus::False,
                    *reason,
                    message.clone(),
                    EventType::Warning,
                    "RunFailed",
                ),
                RunOutcome::Cancelled { message } => (
                    RunPhase::Cancelled,
                    ConditionStatus::False,
                    "Cancelled",
                    message.clone(),
                    EventType::Normal,
                    "RunCancelled",
                ),
            };
            status.phase = Some(phase);
            status.completion_time = Some(Time(now));
            status.duration = Duration::try_from(now.duration_since(started_at))
                .ok()
                .map(duration::format);
            set_condition(
                &mut status.conditions,
                "Succeeded",
                cond,
                reason,
                message.clone(),
                generation,
                now,
            );
            write_if_changed(&api, &name, &run, &status).await?;
            let took = status.duration.clone().unwrap_or_default();
            ctx.event(
                &regarding,
                None,
                event_type,
                event_reason,
                "Finish",
                format!("{message} ({took})"),
            )
            .await;
            ctx.metrics.run_finished(phase);
            return Ok(Action::await_change());
        }
    }
    status.observed_generation = generation;
    write_if_changed(&api, &name, &run, &status).await?;
    Ok(match plan.requeue_after {
        Some(wait) => Action::requeue(wait + Duration::from_millis(50)),
        None => Action::requeue(Duration::from_secs(300)),
    })
}

fn done_count(c: &TaskCounts) -> u32 {
    c.succeeded + c.failed + c.skipped + c.cancelled
}

async fn create_task_run(
    api: &Api<TaskRun>,
    run: &PipelineRun,
    name: String,
    spec: crate::api::TaskRunSpec,
    labels: BTreeMap<String, String>,
) -> Result<()> {
    let task_run = TaskRun {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: run.namespace(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                crate::api::annotations::PIPELINE_RUN.to_string(),
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
    };
    match api.create(&PostParams::default(), &task_run).await {
        Ok(_) => Ok(()),
        Err(e) if is_already_exists(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn fail(
    ctx: &Context,
    api: &Api<PipelineRun>,
    run: &PipelineRun,
    mut status: PipelineRunStatus,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> Result<()> {
    status.phase = Some(RunPhase::Failed);
    status.completion_time = Some(Time(now));
    status.observed_generation = run.metadata.generation;
    set_condition(
        &mut status.conditions,
        "Succeeded",
        ConditionStatus::False,
        reason,
        message.clone(),
        run.metadata.generation,
        now,
    );
    apply_status(api, &run.name_any(), &status).await?;
    ctx.event(
        &run.object_ref(&()),
        None,
        EventType::Warning,
        reason,
        "Validate",
        message,
    )
    .await;
    ctx.metrics.run_finished(RunPhase::Failed);
    Ok(())
}

async fn write_if_changed(
    api: &Api<PipelineRun>,
    name: &str,
    run: &PipelineRun,
    status: &PipelineRunStatus,
) -> Result<()> {
    if run.status.as_ref() != Some(status) {
        apply_status(api, name, status).await?;
    }
    Ok(())
}

/// Counts, progress and the capped per-task summary.
fn summarize(
    status: &mut PipelineRunStatus,
    valid: &ValidPipeline,
    states: &[TaskPhase],
    task_runs: &[Option<&TaskRun>],
    instances: &[Vec<Option<ObservedTask>>],
    notes: &[(usize, String)],
) {
    let mut counts = TaskCounts {
        total: states.len() as u32,
        ..Default::default()
    };
    for s in states {
        match s {
            TaskPhase::Pending => counts.pending += 1,
            TaskPhase::Running | TaskPhase::Retrying => counts.running += 1,
            TaskPhase::Succeeded => counts.succeeded += 1,
            TaskPhase::Failed | TaskPhase::UpstreamFailed => counts.failed += 1,
            TaskPhase::Skipped => counts.skipped += 1,
            TaskPhase::Cancelled => counts.cancelled += 1,
        }
    }
    status.progress = Some(format!("{}/{}", done_count(&counts), counts.total));
    status.counts = Some(counts);
    let rank = |s: TaskPhase| match s {
        TaskPhase::Failed => 0,
        TaskPhase::UpstreamFailed => 1,
        TaskPhase::Running | TaskPhase::Retrying => 2,
        TaskPhase::Cancelled => 3,
        TaskPhase::Skipped => 4,
        TaskPhase::Succeeded => 5,
        TaskPhase::Pending => 6,
    };
    let mut shown: Vec<usize> = valid
        .dag
        .topological_order()
        .iter()
        .copied()
        .filter(|&i| states[i] != TaskPhase::Pending)
        .collect();
    shown.sort_by_key(|&i| rank(states[i]));
    let omitted = shown.len().saturating_sub(MAX_SUMMARY);
    shown.truncate(MAX_SUMMARY);
    status.tasks = shown
        .into_iter()
        .map(|i| {
            let tr = task_runs[i];
            let note = notes.iter().find(|(t, _)| *t == i).map(|(_, n)| n.clone());
            // A fanned-out task: how far its instances are (each has its own TaskRun).
            let fan_out = (valid.task(i).for_each.is_some() && !instances[i].is_empty()).then(|| {
                let seen = instances[i].iter().flatten();
                let done = seen.clone().filter(|o| o.phase.is_terminal()).count();
                let failed = seen.filter(|o| o.phase == TaskPhase::Failed).count();
                format!(
                    "{done} instance(s) done of {} started, {failed} failed",
                    instances[i].iter().flatten().count()
                )
            });
            TaskSummary {
                name: valid.name(i).to_string(),
                phase: states[i],
                task_run: tr.map(|t| t.name_any()),
                attempts: tr.and_then(|t| t.status.as_ref()?.attempt_count),
                message: note
                    .or(fan_out)
                    .or_else(|| tr.and_then(super::taskrun::failure_message))
                    .map(|m| super::truncate(&m, 256)),
            }
        })
        .collect();
    status.tasks_omitted = (omitted > 0).then_some(omitted as u32);
}
