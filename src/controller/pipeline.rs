//! Pipeline: validated on every change of its spec; the result goes to its `Ready`
//! condition (and an Event when invalid). Then its schedule, history limits and run queue
//! are handled (`super::schedule`). The operator never writes its spec or metadata, so
//! GitOps tools see no drift.

use super::{Context, Error, Result, apply_status, now};
use crate::api::condition::find;
use crate::api::{ConditionStatus, Pipeline, set_condition};
use crate::engine::validate;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::sync::Arc;

pub async fn reconcile(p: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    let old = p.status.clone().unwrap_or_default();
    let generation = p.metadata.generation;
    // Runs and the clock bring the Pipeline here too; validation news is told once.
    let spec_changed = old.observed_generation != generation || find(&old.conditions, "Ready").is_none();
    let now = now();
    let ns = p.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let mut status = old.clone();
    status.observed_generation = generation;
    status.task_count = Some((p.spec.tasks.len() + p.spec.finally.len()) as u32);
    let invalid = match validate(&p.spec) {
        Ok(valid) => {
            set_condition(
                &mut status.conditions,
                "Ready",
                ConditionStatus::True,
                "Valid",
                format!("{} task(s), valid", valid.len()),
                generation,
                now,
            );
            None
        }
        Err(errors) => {
            let message = format!("invalid pipeline: {errors}");
            set_condition(
                &mut status.conditions,
                "Ready",
                ConditionStatus::False,
                "InvalidPipeline",
                message.clone(),
                generation,
                now,
            );
            Some(message)
        }
    };
    // The validation result is written even when scheduling fails (it is retried).
    let scheduled = super::schedule::reconcile_pipeline(&ctx, &p, &mut status, invalid.is_none(), now).await;
    if status != old {
        apply_status(
            &Api::<Pipeline>::namespaced(ctx.client.clone(), &ns),
            &p.name_any(),
            &status,
        )
        .await?;
    }
    if let Some(message) = invalid.filter(|_| spec_changed) {
        ctx.event(
            &p.object_ref(&()),
            None,
            EventType::Warning,
            "InvalidPipeline",
            "Validate",
            message,
        )
        .await;
    }
    Ok(scheduled?.map_or_else(Action::await_change, Action::requeue))
}
