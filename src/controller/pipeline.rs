//! Pipeline: validated on every change of its spec; the result goes to its `Ready`
//! condition (and an Event when invalid). The operator never writes its spec or metadata,
//! so GitOps tools see no drift.

use super::{Context, Error, Result, apply_status, error_backoff, now};
use crate::api::condition::find;
use crate::api::{ConditionStatus, Pipeline, set_condition};
use crate::engine::validate;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::sync::Arc;

pub fn error_policy(p: Arc<Pipeline>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(pipeline = %p.name_any(), namespace = p.namespace().unwrap_or_default(), category = err.category(), %err, "reconcile failed");
    error_backoff(err, &p.name_any())
}

pub async fn reconcile(p: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    let old = p.status.clone().unwrap_or_default();
    let generation = p.metadata.generation;
    if old.observed_generation == generation
        && generation.is_some()
        && find(&old.conditions, "Ready").is_some()
    {
        return Ok(Action::await_change());
    }
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
                now(),
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
                now(),
            );
            Some(message)
        }
    };
    apply_status(
        &Api::<Pipeline>::namespaced(ctx.client.clone(), &ns),
        &p.name_any(),
        &status,
    )
    .await?;
    if let Some(message) = invalid {
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
    Ok(Action::await_change())
}
