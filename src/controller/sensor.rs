//! Sensors, the reads: one look at what a wait task waits for (`time`, `pipelineRun`,
//! `object`, `asset`), with the objects read fresh from the API server and judged by
//! `engine::sensor`. Called through `podless::check`; `delay` stays there.
//!
//! What a sensor can never see (an unknown kind, an object the operator may not read) fails
//! the attempt with `WaitFailed` and says so, rather than waiting for the timeout.

use super::podless::{Verdict, poke_interval};
use super::{Context, Result};
use crate::api::wait::{AssetWait, ObjectWait, PipelineRunWait, WaitSpec};
use crate::api::{Asset, FailureReason, PipelineRun};
use crate::engine::asset;
use crate::engine::sensor::{self, Look, OtherRun};
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// Looks once at what `wait` waits for (any kind but `delay`).
pub async fn check(ctx: &Context, ns: &str, wait: &WaitSpec, now: jiff::Timestamp) -> Result<Verdict> {
    let look = if let Some(time) = &wait.time {
        match &time.at {
            Some(at) => sensor::time_look(at.0, now),
            None => unresolved("time.at"),
        }
    } else if let Some(other) = &wait.pipeline_run {
        other_run(ctx, ns, other).await?
    } else if let Some(object) = &wait.object {
        object_look(ctx, ns, object).await?
    } else if let Some(asset) = &wait.asset {
        asset_look(ctx, ns, asset).await?
    } else {
        Look::Fails("wait names nothing to wait for".into())
    };
    Ok(verdict(look, wait))
}

/// A resolved field is missing: the TaskRun was not made by a run (or by an older operator).
fn unresolved(field: &str) -> Look {
    Look::Fails(format!(
        "wait.{field} is not set: it is worked out when the run makes the TaskRun"
    ))
}

/// A look as the attempt's verdict: a time looks again when it is due, others after the
/// poke interval.
fn verdict(look: Look, wait: &WaitSpec) -> Verdict {
    let poke = poke_interval(wait);
    match look {
        Look::Wait { message, left } => Verdict::Wait {
            message,
            look_again: left.map_or(poke, |l| l.min(poke)),
        },
        Look::Holds(message) => Verdict::Holds {
            message: Some(message),
            outputs: BTreeMap::new(),
        },
        Look::Fails(message) => Verdict::Fails {
            reason: FailureReason::WaitFailed,
            message,
        },
    }
}

/// `pipelineRun`: the runs of the other pipeline, judged by date.
async fn other_run(ctx: &Context, ns: &str, other: &PipelineRunWait) -> Result<Look> {
    let Some(date) = &other.logical_date else {
        return Ok(unresolved("pipelineRun.logicalDate"));
    };
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
    // By `spec.pipelineRef`, as the maxActiveRuns queue finds them: runs made by hand carry
    // no pipeline label.
    let runs = super::admission::runs_of(&api, &other.pipeline).await?;
    let runs: Vec<OtherRun> = runs.iter().map(|r| summary(r, other.task.as_deref())).collect();
    Ok(sensor::run_look(
        &other.pipeline,
        other.task.as_deref(),
        date.0,
        &runs,
    ))
}

/// What a sensor needs of another run.
fn summary(run: &PipelineRun, task: Option<&str>) -> OtherRun {
    let status = run.status.as_ref();
    let succeeded = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Succeeded"));
    OtherRun {
        name: run.name_any(),
        created: run
            .meta()
            .creation_timestamp
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
        logical_date: run.spec.logical_date.as_ref().map(|t| t.0),
        phase: status.and_then(|s| s.phase),
        message: succeeded.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
        task: task.and_then(|t| {
            status
                .and_then(|s| s.tasks.iter().find(|summary| summary.name == t))
                .map(|summary| summary.phase)
        }),
    }
}

/// `object`: found by discovery (its resource and scope), read with the operator's rights.
async fn object_look(ctx: &Context, ns: &str, spec: &ObjectWait) -> Result<Look> {
    let (group, version) = match spec.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", spec.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &spec.kind);
    let (resource, caps) = match discovery::pinned_kind(&ctx.client, &gvk).await {
        Ok(found) => found,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(no_kind(spec)),
        Err(kube::Error::Discovery(_)) => return Ok(no_kind(spec)),
        Err(e) => return Err(e.into()),
    };
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(ctx.client.clone(), ns, &resource),
        Scope::Cluster => Api::all_with(ctx.client.clone(), &resource),
    };
    let object = match api.get_opt(&spec.name).await {
        Ok(object) => object,
        Err(kube::Error::Api(s)) if s.code == 403 => {
            let plural = match group {
                "" => resource.plural.clone(),
                g => format!("{}.{g}", resource.plural),
            };
            return Ok(Look::Fails(format!(
                "the operator may not read {plural} in namespace {ns}: add them to the chart's sensors.readableResources (see docs/sensors.md)"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let value = object.map(|o| serde_json::to_value(&o)).transpose()?;
    Ok(sensor::object_look(spec, value.as_ref()))
}

fn no_kind(spec: &ObjectWait) -> Look {
    Look::Fails(format!(
        "the cluster serves no kind {} in apiVersion {} (is its CRD installed?)",
        spec.kind, spec.api_version
    ))
}

/// `asset`: the Asset's bounded history (none yet: never updated).
async fn asset_look(ctx: &Context, ns: &str, wait: &AssetWait) -> Result<Look> {
    let Some(after) = &wait.after else {
        return Ok(unresolved("asset.after"));
    };
    let api: Api<Asset> = Api::namespaced(ctx.client.clone(), ns);
    let found = api.get_opt(&asset::object_name(&wait.name)).await?;
    // Another asset whose name maps to the same object is not this one.
    let events = found
        .filter(|a| a.spec.name == wait.name)
        .and_then(|a| a.status)
        .map(|s| s.events)
        .unwrap_or_default();
    Ok(sensor::asset_look(&wait.name, after.0, &events))
}
