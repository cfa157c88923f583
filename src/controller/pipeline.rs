//! Pipeline: validated on every change of its spec; the result goes to its `Ready`
//! condition (and an Event when invalid). Then its schedule, history limits and run queue
//! are handled (`super::schedule`) and the status is written. Runs that appear, start or
//! finish wake their Pipeline ([`pipeline_of_run`]). The operator never writes its spec or
//! metadata, so GitOps tools see no drift.

use super::{Context, Error, Result, apply_status, now};
use crate::api::condition::find;
use crate::api::condition_types::READY;
use crate::api::{
    ConditionStatus, Pipeline, PipelineRun, PipelineStatus, RunPhase, actions, reasons, set_condition,
};
use crate::engine::{revision, validate};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;

/// What validation found: the number of tasks, or the message of every error.
type Validation = Result<usize, String>;

/// Validates (no client), hands the schedule, history limits and run queue to
/// `schedule::reconcile_pipeline` (observe, decide, apply), then writes the status.
pub async fn reconcile(p: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    let now = now();
    let old = p.status.clone().unwrap_or_default();
    let validation = validate(&p.spec)
        .map(|valid| valid.len())
        .map_err(|errors| format!("invalid pipeline: {errors}"));
    let mut status = validated_status(&p, old.clone(), &validation, now);
    // The validation result is written even when scheduling fails (it is retried).
    let scheduled = super::schedule::reconcile_pipeline(&ctx, &p, &mut status, validation.is_ok(), now).await;
    let by_assets = match &scheduled {
        Ok(_) => super::asset::reconcile_pipeline(&ctx, &p, &mut status, validation.is_ok(), now).await,
        Err(_) => Ok(None),
    };
    update_status(&ctx, &p, &old, &status).await?;
    // Runs and the clock bring the Pipeline here too; validation news is told once.
    if let Err(message) = validation
        && spec_changed(&p, &old)
    {
        ctx.event(
            &p.object_ref(&()),
            None,
            EventType::Warning,
            reasons::INVALID_PIPELINE,
            actions::VALIDATE,
            message,
        )
        .await;
    }
    let again = [scheduled?, by_assets?].into_iter().flatten().min();
    Ok(again.map_or_else(Action::await_change, Action::requeue))
}

/// `status` with what validation found: the generation it describes, the task count and
/// the `Ready` condition.
fn validated_status(
    p: &Pipeline,
    status: PipelineStatus,
    validation: &Validation,
    now: jiff::Timestamp,
) -> PipelineStatus {
    let generation = p.metadata.generation;
    let mut status = PipelineStatus {
        observed_generation: generation,
        task_count: Some((p.spec.tasks.len() + p.spec.finally.len()) as u32),
        current_revision: Some(revision::name(Some(&p.name_any()), &revision::hash(&p.spec))),
        ..status
    };
    let (ready, reason, message) = match validation {
        Ok(tasks) => (
            ConditionStatus::True,
            reasons::VALID,
            format!("{tasks} task(s), valid"),
        ),
        Err(message) => (ConditionStatus::False, reasons::INVALID_PIPELINE, message.clone()),
    };
    set_condition(
        &mut status.conditions,
        READY,
        ready,
        reason,
        message,
        generation,
        now,
    );
    status
}

/// Whether the spec changed since the status was last written (or it never was).
fn spec_changed(p: &Pipeline, old: &PipelineStatus) -> bool {
    old.observed_generation != p.metadata.generation || find(&old.conditions, READY).is_none()
}

/// Writes `status` unless the Pipeline has it already.
async fn update_status(
    ctx: &Context,
    p: &Pipeline,
    old: &PipelineStatus,
    status: &PipelineStatus,
) -> Result<()> {
    if status == old {
        return Ok(());
    }
    let ns = p.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    apply_status(
        &Api::<Pipeline>::namespaced(ctx.client.clone(), &ns),
        &p.name_any(),
        status,
    )
    .await?;
    Ok(())
}

/// For the Pipeline controller's watch of runs: the Pipeline a run belongs to. Runs that
/// are merely making progress are left out (their Pipeline has nothing to do about them);
/// runs that appear, wait, start or finish are not.
pub fn pipeline_of_run(run: PipelineRun) -> Option<ObjectRef<Pipeline>> {
    let running = run.status.as_ref().and_then(|s| s.phase) == Some(RunPhase::Running);
    if running && !run.spec.cancelled {
        return None;
    }
    let name = &run.spec.pipeline_ref.as_ref()?.name;
    Some(ObjectRef::new(name).within(&run.namespace()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RunPhase::Pending;
    use crate::api::{PipelineRef, PipelineRunSpec, PipelineRunStatus, TaskSpec};
    use crate::controller::fixture::{mk_pipeline, mk_run, ts};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ready(status: &PipelineStatus) -> (&str, &str, &str) {
        let c = find(&status.conditions, READY).expect("a Ready condition");
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    #[test]
    fn validation_sets_ready_the_generation_and_the_task_count() {
        let mut p = mk_pipeline();
        p.metadata.generation = Some(4);
        p.spec.tasks = vec![TaskSpec::default(), TaskSpec::default()];
        p.spec.finally = vec![TaskSpec::default()];
        let cases: [(Validation, (&str, &str, &str)); 2] = [
            (Ok(3), ("True", reasons::VALID, "3 task(s), valid")),
            (
                Err("invalid pipeline: task b: depends on missing task c".into()),
                (
                    "False",
                    reasons::INVALID_PIPELINE,
                    "invalid pipeline: task b: depends on missing task c",
                ),
            ),
        ];
        for (validation, expected) in cases {
            let status = validated_status(
                &p,
                PipelineStatus::default(),
                &validation,
                ts("2024-03-01T00:00:00Z"),
            );
            assert_eq!(ready(&status), expected);
            assert_eq!(status.observed_generation, Some(4));
            assert_eq!(status.conditions[0].observed_generation, Some(4));
            assert_eq!(status.task_count, Some(3));
        }
    }

    #[test]
    fn validation_keeps_the_schedule_fields_and_moves_ready_only_when_it_flips() {
        let p = mk_pipeline();
        let (t0, t1, t2) = (
            ts("2024-03-01T00:00:00Z"),
            ts("2024-03-01T01:00:00Z"),
            ts("2024-03-01T02:00:00Z"),
        );
        let old = PipelineStatus {
            last_schedule_time: Some(Time(t0)),
            active_runs: vec!["etl-a".into()],
            ..Default::default()
        };
        let valid = validated_status(&p, old, &Ok(1), t0);
        assert_eq!(valid.last_schedule_time, Some(Time(t0)));
        assert_eq!(valid.active_runs, ["etl-a"]);
        let still_valid = validated_status(&p, valid.clone(), &Ok(2), t1);
        assert_eq!(still_valid.conditions[0].last_transition_time, Time(t0));
        assert_eq!(ready(&still_valid).2, "2 task(s), valid");
        let invalid = validated_status(&p, still_valid, &Err("invalid pipeline: x".into()), t2);
        assert_eq!(invalid.conditions.len(), 1);
        assert_eq!(invalid.conditions[0].last_transition_time, Time(t2));
    }

    #[test]
    fn the_spec_changed_when_the_generation_moved_or_ready_was_never_written() {
        let p = mk_pipeline();
        let written = validated_status(&p, PipelineStatus::default(), &Ok(1), ts("2024-03-01T00:00:00Z"));
        let mut edited = mk_pipeline();
        edited.metadata.generation = Some(2);
        let no_ready = PipelineStatus {
            observed_generation: Some(1),
            ..Default::default()
        };
        // (the pipeline, its old status, whether the spec changed)
        let cases = [
            (&p, &written, false),
            (&edited, &written, true),
            (&p, &no_ready, true),
            (&p, &PipelineStatus::default(), true),
        ];
        for (i, (pipeline, old, expected)) in cases.into_iter().enumerate() {
            assert_eq!(spec_changed(pipeline, old), expected, "case {i}");
        }
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

    #[test]
    fn a_run_moves_the_pipeline_of_its_namespace_and_an_inline_run_none() {
        let run = mk_run("etl-new", Pending, "2024-03-01T00:00:00Z");
        let pipeline = pipeline_of_run(run.clone()).expect("a pipeline");
        assert_eq!(
            (pipeline.name.as_str(), pipeline.namespace.as_deref()),
            ("etl", Some("data"))
        );
        let mut inline = run;
        inline.spec.pipeline_ref = None;
        assert_eq!(pipeline_of_run(inline), None);
    }
}
