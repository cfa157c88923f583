//! Rerun requests on a PipelineRun (Airflow's "clear"), applied by the run's own
//! controller, the one writer of run state.
//!
//! Applying request R: the TaskRuns `engine::rerun` selects get the annotation
//! `weir.dev/rerun=R` (they are *held*: the run step treats their tasks as not started),
//! then the run's status records R as applied, back to `Running`. Both writes can be
//! repeated: a crash between them works R out again, with the held TaskRuns counted as
//! selected, and applies it once. Later, when a held task's trigger rule holds again, the
//! step starts it ([`resume_patch`]): its spec is resolved afresh (upstream outputs may
//! have changed), `spec.rerun` is set to R and the annotation removed; the TaskRun
//! controller then makes a new attempt, numbered on from the earlier ones.

use super::{ApiResultExt, Context, Result};
use crate::api::{
    AppliedRerun, ConditionStatus, PipelineRun, PipelineRunStatus, RerunRequest, RunPhase, TaskPhase,
    TaskRun, TaskRunSpec, actions, annotations, condition_types, reasons, set_condition,
};
use crate::engine::ValidPipeline;
use crate::engine::rerun::{Rerun, plan_rerun};
use crate::engine::step::Child;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

/// Most rerun tasks named in `status.rerun.tasks`.
const MAX_NAMED: usize = 50;

/// The run's rerun request, when it was not applied yet.
pub fn new_request(run: &PipelineRun) -> Option<&RerunRequest> {
    let request = run.spec.rerun.as_ref()?;
    let applied = run.status.as_ref()?.rerun.as_ref().map(|a| a.request.as_str());
    (applied != Some(request.request.as_str())).then_some(request)
}

/// Whether a run that finished must still be reconciled: it has a rerun request to apply.
pub fn wanted(run: &PipelineRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.pipeline_revision.is_some()) && new_request(run).is_some()
}

/// What the run step reads of a TaskRun's part in a rerun: the request it was selected
/// for, whether it is held, and whether it was asked to run again but has not taken the
/// request in yet (it then counts as pending, its old result no longer counts).
pub fn rerun_of(tr: &TaskRun) -> (Option<&str>, bool, bool) {
    let held = tr.annotations().get(annotations::RERUN).map(String::as_str);
    let asked = tr.spec.rerun.as_deref();
    let taken = tr.status.as_ref().and_then(|s| s.rerun.as_deref());
    match (held, asked) {
        (Some(h), _) if asked != Some(h) => (Some(h), true, false),
        (_, Some(a)) => (Some(a), false, taken != Some(a)),
        _ => (None, false, false),
    }
}

/// A request worked out: what it runs again (the selection and its task names), or why it
/// cannot be applied.
pub type Selection = std::result::Result<(Rerun, Vec<String>), String>;

/// Works a request out against the run's current task states. No client.
pub fn select(
    run: &PipelineRun,
    valid: &ValidPipeline,
    states: &[TaskPhase],
    children: &[Child<'_>],
    request: &RerunRequest,
) -> Selection {
    if run.spec.cancelled {
        return Err("the run is cancelled (spec.cancelled: true): set it to false to rerun".into());
    }
    let rerun = plan_rerun(valid, states, children, request)?;
    let names = rerun.tasks.iter().map(|&t| valid.name(t).to_string()).collect();
    Ok((rerun, names))
}

/// Applies the run's new rerun request: holds the TaskRuns it selects, then records it in
/// the status (returned, written). A request that cannot be applied is recorded too, with
/// an Event saying why, so it is not tried again.
pub async fn apply(
    ctx: &Context,
    run: &PipelineRun,
    request: &RerunRequest,
    selection: Selection,
    task_runs: &mut [TaskRun],
    mut status: PipelineRunStatus,
    now: Timestamp,
) -> Result<PipelineRunStatus> {
    let requested_by = requester(run);
    let by = requested_by
        .as_deref()
        .map(|m| format!(" (asked by {m})"))
        .unwrap_or_default();
    let (tasks, refused, event) = match selection {
        Ok((rerun, names)) => {
            hold(ctx, run, &rerun, task_runs, &request.request).await?;
            mark_running(run, &mut status, &names, &by, now);
            let note = format!("rerun {}{by}: {}", request.request, names.join(", "));
            (names, None, (EventType::Normal, reasons::RUN_RERUN, note))
        }
        Err(why) => {
            let note = format!("rerun {} not applied{by}: {why}", request.request);
            (
                Vec::new(),
                Some(why),
                (EventType::Warning, reasons::RERUN_REFUSED, note),
            )
        }
    };
    let mut record = applied(&status, request, requested_by, tasks, now);
    record.refused = refused;
    status.rerun = Some(record);
    super::pipelinerun::apply_run_status(&runs_api(ctx, run), &run.name_any(), &status).await?;
    let (type_, reason, note) = event;
    ctx.event(&run.object_ref(&()), None, type_, reason, actions::RERUN, note)
        .await;
    Ok(status)
}

/// Annotates the selected TaskRuns that finished with the request (skipping those that
/// already carry it, and those still running: they go on).
async fn hold(
    ctx: &Context,
    run: &PipelineRun,
    rerun: &Rerun,
    task_runs: &mut [TaskRun],
    request: &str,
) -> Result<()> {
    let api: Api<TaskRun> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    for &c in &rerun.children {
        let tr = &mut task_runs[c];
        let finished = tr
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_terminal());
        if !finished || rerun_of(tr).0 == Some(request) {
            continue;
        }
        let patch = serde_json::json!({ "metadata": { "annotations": { annotations::RERUN: request } } });
        let written = api
            .patch(&tr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .ignore_not_found()?;
        ctx.children.wrote_opt(run, written.as_ref());
        tr.annotations_mut()
            .insert(annotations::RERUN.to_string(), request.to_string());
    }
    Ok(())
}

/// The run goes back to `Running`; its clock (for the run timeout) starts again.
fn mark_running(
    run: &PipelineRun,
    status: &mut PipelineRunStatus,
    tasks: &[String],
    by: &str,
    now: Timestamp,
) {
    status.phase = Some(RunPhase::Running);
    status.start_time = Some(Time(now));
    status.completion_time = None;
    status.duration = None;
    set_condition(
        &mut status.conditions,
        condition_types::SUCCEEDED,
        ConditionStatus::Unknown,
        reasons::RUNNING,
        format!("rerunning {} task(s){by}", tasks.len()),
        run.metadata.generation,
        now,
    );
}

fn applied(
    status: &PipelineRunStatus,
    request: &RerunRequest,
    requested_by: Option<String>,
    mut tasks: Vec<String>,
    now: Timestamp,
) -> AppliedRerun {
    let omitted = tasks.len().saturating_sub(MAX_NAMED);
    tasks.truncate(MAX_NAMED);
    AppliedRerun {
        request: request.request.clone(),
        time: Time(now),
        requested_by,
        tasks,
        tasks_omitted: (omitted > 0).then_some(omitted as u32),
        refused: None,
        count: status.rerun.as_ref().map_or(0, |a| a.count) + 1,
    }
}

/// Who asked, as far as Kubernetes tells: the field manager that last wrote `spec.rerun`.
pub fn requester(run: &PipelineRun) -> Option<String> {
    run.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec")?.get("f:rerun"))
                .is_some()
        })
        .max_by_key(|m| m.time.as_ref().map(|t| t.0))
        .and_then(|m| m.manager.clone())
}

/// The patch that starts a held TaskRun again: its spec resolved afresh, asked to run
/// again for `request`, no longer cancelled, the hold removed, and no longer marked
/// finished (so that the TaskRun controller's watch takes it in again).
pub fn resume_patch(mut spec: TaskRunSpec, request: &str) -> serde_json::Value {
    spec.rerun = Some(request.to_string());
    spec.cancelled = false;
    serde_json::json!([
        { "op": "replace", "path": "/spec", "value": spec },
        { "op": "remove", "path": format!("/metadata/annotations/{}", annotations::RERUN.replace('/', "~1")) },
        super::finished::unmark_op(),
    ])
}

fn runs_api(ctx: &Context, run: &PipelineRun) -> Api<PipelineRun> {
    Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PipelineRunSpec, TaskRunStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn mk_run(request: Option<&str>, applied: Option<&str>) -> PipelineRun {
        let mut run = PipelineRun::new(
            "etl-1",
            PipelineRunSpec {
                rerun: request.map(|r| RerunRequest {
                    request: r.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        run.status = Some(PipelineRunStatus {
            pipeline_revision: Some("p-0123456789".into()),
            phase: Some(RunPhase::Failed),
            rerun: applied.map(|r| AppliedRerun {
                request: r.into(),
                time: Time(ts(0)),
                requested_by: None,
                tasks: vec![],
                tasks_omitted: None,
                refused: None,
                count: 1,
            }),
            ..Default::default()
        });
        run
    }

    fn mk_task_run(held: Option<&str>, asked: Option<&str>, taken: Option<&str>) -> TaskRun {
        let mut tr = TaskRun::new(
            "etl-1-a",
            TaskRunSpec {
                task_name: "a".into(),
                rerun: asked.map(String::from),
                ..Default::default()
            },
        );
        if let Some(h) = held {
            tr.annotations_mut().insert(annotations::RERUN.into(), h.into());
        }
        tr.status = Some(TaskRunStatus {
            rerun: taken.map(String::from),
            ..Default::default()
        });
        tr
    }

    #[test]
    fn a_request_is_new_until_the_status_records_it() {
        assert!(new_request(&mk_run(Some("r2"), Some("r1"))).is_some());
        assert!(wanted(&mk_run(Some("r2"), Some("r1"))));
        assert!(new_request(&mk_run(Some("r1"), None)).is_some());
        assert!(new_request(&mk_run(Some("r1"), Some("r1"))).is_none());
        assert!(!wanted(&mk_run(Some("r1"), Some("r1"))));
        assert!(new_request(&mk_run(None, Some("r1"))).is_none());
    }

    #[test]
    fn a_task_runs_part_in_a_rerun_is_read_from_its_annotation_spec_and_status() {
        // (annotation, spec.rerun, status.rerun) -> (request, held, restarting)
        let cases = [
            ((None, None, None), (None, false, false)),
            ((Some("r1"), None, None), (Some("r1"), true, false)),
            ((Some("r1"), Some("r1"), None), (Some("r1"), false, true)),
            ((None, Some("r1"), None), (Some("r1"), false, true)),
            ((None, Some("r1"), Some("r1")), (Some("r1"), false, false)),
            ((Some("r2"), Some("r1"), Some("r1")), (Some("r2"), true, false)),
        ];
        for ((held, asked, taken), expected) in cases {
            let tr = mk_task_run(held, asked, taken);
            assert_eq!(rerun_of(&tr), expected, "{held:?} {asked:?} {taken:?}");
        }
    }

    #[test]
    fn the_requester_is_the_last_manager_that_wrote_spec_rerun() {
        let mut run = mk_run(Some("r1"), None);
        let entry = |manager: &str, secs: i64, fields: serde_json::Value| ManagedFieldsEntry {
            manager: Some(manager.into()),
            time: Some(Time(ts(secs))),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        };
        run.metadata.managed_fields = Some(vec![
            entry(
                "kubectl-client-side-apply",
                1,
                json!({"f:spec": {"f:params": {}}}),
            ),
            entry(
                "kubectl-patch",
                5,
                json!({"f:spec": {"f:rerun": {"f:request": {}}}}),
            ),
            entry("weir", 3, json!({"f:spec": {"f:rerun": {}}})),
            entry("weir-operator", 9, json!({"f:status": {}})),
        ]);
        assert_eq!(requester(&run).as_deref(), Some("kubectl-patch"));
        run.metadata.managed_fields = None;
        assert_eq!(requester(&run), None);
    }

    #[test]
    fn resuming_replaces_the_spec_asks_again_lifts_the_hold_and_the_finished_mark() {
        let spec = TaskRunSpec {
            task_name: "a".into(),
            args: vec!["2".into()],
            cancelled: true,
            ..Default::default()
        };
        let patch = resume_patch(spec, "r1");
        assert_eq!(patch[0]["op"], "replace");
        assert_eq!(patch[0]["path"], "/spec");
        assert_eq!(patch[0]["value"]["rerun"], "r1");
        assert_eq!(patch[0]["value"]["args"], json!(["2"]));
        assert!(
            patch[0]["value"].get("cancelled").is_none(),
            "no longer cancelled"
        );
        assert_eq!(
            patch[1],
            json!({"op": "remove", "path": "/metadata/annotations/weir.dev~1rerun"})
        );
        assert_eq!(patch[2], super::super::finished::unmark_op(), "back in the watch");
    }

    #[test]
    fn a_cancelled_run_is_not_rerun() {
        let mut run = mk_run(Some("r1"), None);
        run.spec.cancelled = true;
        let valid = crate::engine::validate(
            &serde_json::from_value(json!({"tasks": [{"name": "a", "image": "busybox"}]})).unwrap(),
        )
        .unwrap();
        let request = run.spec.rerun.clone().unwrap();
        let e = select(&run, &valid, &[TaskPhase::Cancelled], &[], &request).unwrap_err();
        assert!(e.contains("spec.cancelled"), "{e}");
    }

    #[test]
    fn applying_counts_requests_and_caps_the_names() {
        let run = mk_run(Some("r2"), Some("r1"));
        let status = run.status.clone().unwrap();
        let names: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
        let applied = applied(
            &status,
            run.spec.rerun.as_ref().unwrap(),
            Some("weir".into()),
            names,
            ts(5),
        );
        assert_eq!(applied.count, 2);
        assert_eq!(applied.tasks.len(), MAX_NAMED);
        assert_eq!(applied.tasks_omitted, Some(10));
        let mut status = status;
        mark_running(&run, &mut status, &applied.tasks, " (asked by weir)", ts(5));
        assert_eq!(status.phase, Some(RunPhase::Running));
        assert_eq!(status.start_time, Some(Time(ts(5))));
        assert!(status.completion_time.is_none());
        assert_eq!(
            status.conditions[0].message,
            "rerunning 50 task(s) (asked by weir)"
        );
    }
}
