//! Assets on the Kubernetes side, in three parts:
//!
//! - [`record_event`]: appends an event to an Asset (creating it on its first event), under
//!   the Asset's resourceVersion, so concurrent writers never lose an event or reuse a
//!   sequence number. Used by the TaskRun controller ([`record_produced`]), `weir asset
//!   update` and the HTTP trigger.
//! - [`reconcile_pipeline`]: the Pipeline controller's asset step: when the condition of
//!   `spec.assets` holds, one run named after what was consumed before it
//!   (`engine::asset::run_name`), then the consumed sequence numbers in the status.
//! - [`reconcile`]: an Asset's `status.consumers`, from the Pipelines of its namespace.

use super::admission::{is_finished, runs_of};
use super::schedule::new_run;
use super::{ApiResultExt, Context, Error, Result, is_already_exists};
use crate::api::{
    Asset, AssetSequence, AssetSpec, AssetStatus, Pipeline, PipelineRun, PipelineStatus, TaskPhase, TaskRun,
    TaskRunStatus, Trigger, actions, annotations, reasons,
};
use crate::engine::asset::{self as rules, AssetRun, Hold, NewEvent, Recorded, TriggerInput};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often a write under a resourceVersion is tried again after a conflict.
const CONFLICT_RETRIES: usize = 10;
/// How often an Asset's consumers are looked at even without a change (a Pipeline that stops
/// naming an asset wakes only the assets it names now).
const CONSUMERS_RESYNC: Duration = Duration::from_secs(300);

/// Appends `event` to asset `name` in `ns` and returns its sequence number (the existing
/// one when an event with the same key is already recorded).
pub async fn record_event(client: &Client, ns: &str, name: &str, event: NewEvent) -> Result<u64> {
    let api: Api<Asset> = Api::namespaced(client.clone(), ns);
    let object = rules::object_name(name);
    for _ in 0..CONFLICT_RETRIES {
        let asset = match api.get_opt(&object).await? {
            Some(asset) => asset,
            None => {
                let new = Asset {
                    metadata: ObjectMeta {
                        name: Some(object.clone()),
                        ..Default::default()
                    },
                    spec: AssetSpec {
                        name: name.to_string(),
                        http_trigger: None,
                    },
                    status: None,
                };
                api.create(&PostParams::default(), &new)
                    .await
                    .ignore_already_exists()?;
                continue;
            }
        };
        let status = asset.status.clone().unwrap_or_default();
        let (status, sequence) = match rules::record(&status, event.clone(), super::now()) {
            Recorded::Already(sequence) => return Ok(sequence),
            Recorded::Added(status, sequence) => (status, sequence),
        };
        let updated = Asset {
            status: Some(status),
            ..asset
        };
        // The resourceVersion read above makes this a compare-and-swap.
        match api
            .replace_status(&object, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => return Ok(sequence),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(format!("asset {name}: the Asset kept changing")))
}

/// For a TaskRun that succeeded and `produces` assets: records an event on each (once per
/// succeeded attempt: the key is the TaskRun's uid and the attempt) and notes them in the
/// status. Runs before the status is written, so a crash in between records nothing twice.
pub async fn record_produced(
    ctx: &Context,
    ns: &str,
    tr: &TaskRun,
    mut status: TaskRunStatus,
) -> Result<TaskRunStatus> {
    let attempt = status.attempt_count.unwrap_or(0);
    if tr.spec.produces.is_empty()
        || status.phase != Some(TaskPhase::Succeeded)
        || status.asset_events_attempt == Some(attempt)
    {
        return Ok(status);
    }
    let uid = tr.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let run = tr.annotations().get(annotations::PIPELINE_RUN).cloned();
    let logical_date = match &run {
        Some(run) => Api::<PipelineRun>::namespaced(ctx.client.clone(), ns)
            .get_opt(run)
            .await?
            .and_then(|r| r.spec.logical_date.map(|t| t.0)),
        None => None,
    };
    let mut recorded = Vec::new();
    for produced in &tr.spec.produces {
        let extra = produced
            .extra
            .iter()
            .filter_map(|key| status.outputs.get(key).map(|v| (key.clone(), v.clone())))
            .collect();
        let event = NewEvent {
            source: "task".into(),
            pipeline_run: run.clone(),
            task: Some(tr.spec.task_name.clone()),
            logical_date,
            extra,
            key: Some(format!("{uid}/{attempt}/{}", produced.asset)),
        };
        let sequence = record_event(&ctx.client, ns, &produced.asset, event).await?;
        recorded.push(AssetSequence {
            asset: produced.asset.clone(),
            sequence,
        });
    }
    tracing::info!(task = %tr.spec.task_name, assets = ?recorded, "asset events recorded");
    status.asset_events = recorded;
    status.asset_events_attempt = Some(attempt);
    Ok(status)
}

/// The asset step of a Pipeline's reconcile: creates the run the condition of
/// `spec.assets` calls for and records what it consumed in `status`. Returns when to look
/// again (only while runs are held back by `maxActiveRuns`; events wake the Pipeline).
pub async fn reconcile_pipeline(
    ctx: &Context,
    pipeline: &Pipeline,
    status: &mut PipelineStatus,
    valid: bool,
    now: jiff::Timestamp,
) -> Result<Option<Duration>> {
    let Some(trigger) = pipeline.spec.assets.as_ref().filter(|_| valid) else {
        return Ok(None);
    };
    let ns = pipeline
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = pipeline.name_any();
    // The watch cache may not hold our last status write: a stale consumedAssets would
    // make a run for events already consumed (its name would differ).
    let fresh = Api::<Pipeline>::namespaced(ctx.client.clone(), &ns)
        .get(&name)
        .await?;
    let consumed = fresh.status.map(|s| s.consumed_assets).unwrap_or_default();
    let assets = observe_assets(ctx, &ns, trigger.assets()).await?;
    let runs = runs_of(&Api::namespaced(ctx.client.clone(), &ns), &name).await?;
    let input = TriggerInput {
        trigger,
        consumed: &consumed,
        assets: &assets,
        created: pipeline
            .creation_timestamp()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
        unfinished: runs.iter().filter(|r| !is_finished(r)).count() as u32,
        max_active_runs: pipeline.spec.max_active_runs,
        now,
    };
    status.consumed_assets = consumed.clone();
    match rules::plan_asset_run(&input) {
        Ok(run) => {
            let taken = create_asset_run(ctx, pipeline, &ns, &consumed, run).await?;
            status.consumed_assets = rules::advance(&consumed, &taken);
            Ok(None)
        }
        Err(Hold::MaxActiveRuns) => Ok(Some(super::admission::QUEUED_REQUEUE)),
        Err(Hold::Suspended | Hold::Waiting(_)) => Ok(None),
    }
}

/// The statuses of the named assets that exist, by asset name.
async fn observe_assets<'a>(
    ctx: &Context,
    ns: &str,
    names: impl Iterator<Item = &'a String>,
) -> Result<BTreeMap<String, AssetStatus>> {
    let api: Api<Asset> = Api::namespaced(ctx.client.clone(), ns);
    let mut out = BTreeMap::new();
    for name in names {
        if let Some(asset) = api.get_opt(&rules::object_name(name)).await? {
            out.insert(name.clone(), asset.status.unwrap_or_default());
        }
    }
    Ok(out)
}

/// Creates the run for `run`'s events, named after `consumed` (what was consumed before).
/// Returns the sequence numbers the run consumed: its own, or, when a run of that name
/// exists already (made before a crash), the ones that run says it consumed.
async fn create_asset_run(
    ctx: &Context,
    pipeline: &Pipeline,
    ns: &str,
    consumed: &[AssetSequence],
    run: AssetRun,
) -> Result<Vec<AssetSequence>> {
    let name = rules::run_name(
        &pipeline.name_any(),
        &pipeline.uid().unwrap_or_default(),
        consumed,
    );
    let mut new = new_run(pipeline, &name, Trigger::Asset, run.interval_end, None)?;
    new.spec.data_interval_start = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        run.interval_start,
    ));
    new.spec.asset_events = run.events.clone();
    new.annotations_mut().insert(
        annotations::CONSUMED_ASSETS.into(),
        serde_json::to_string(&run.consumed)?,
    );
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&PostParams::default(), &new).await {
        Ok(_) => {
            crash_point("after-asset-run-created");
            let assets: Vec<&str> = run.consumed.iter().map(|c| c.asset.as_str()).collect();
            let note = format!(
                "created run {name} for {} event(s) of {}",
                run.events.len(),
                assets.join(", ")
            );
            let regarding = pipeline.object_ref(&());
            ctx.event(
                &regarding,
                None,
                EventType::Normal,
                reasons::RUN_TRIGGERED_BY_ASSETS,
                actions::SCHEDULE,
                note,
            )
            .await;
            Ok(run.consumed)
        }
        Err(e) if is_already_exists(&e) => {
            let existing = api.get(&name).await?;
            let taken = existing
                .annotations()
                .get(annotations::CONSUMED_ASSETS)
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or(run.consumed);
            tracing::info!(run = %name, "the asset-triggered run exists already: recording what it consumed");
            Ok(taken)
        }
        Err(e) => Err(e.into()),
    }
}

/// For tests of crash recovery: when `WEIR_CRASH_AT` names this point, the process exits
/// here at once, as a killed operator would.
fn crash_point(point: &str) {
    if std::env::var("WEIR_CRASH_AT").is_ok_and(|at| at == point) {
        tracing::error!(point, "WEIR_CRASH_AT: exiting");
        std::process::exit(86);
    }
}

/// An Asset's `status.consumers`: the Pipelines of its namespace that name it in
/// `spec.assets`, looked at again every [`CONSUMERS_RESYNC`].
pub async fn reconcile(asset: Arc<Asset>, ctx: Arc<Context>) -> Result<Action> {
    let ns = asset
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pipelines = Api::<Pipeline>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let consumers = pipelines
        .items
        .iter()
        .filter(|p| consumes(p, &asset.spec.name))
        .map(ResourceExt::name_any)
        .collect();
    let old = asset.status.clone().unwrap_or_default();
    let status = rules::with_consumers(&old, consumers);
    if status.consumers != old.consumers {
        let patch = serde_json::json!({
            "status": { "consumers": status.consumers, "consumerList": status.consumer_list }
        });
        Api::<Asset>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &asset.name_any(),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(Action::requeue(CONSUMERS_RESYNC))
}

fn consumes(pipeline: &Pipeline, asset: &str) -> bool {
    pipeline
        .spec
        .assets
        .as_ref()
        .is_some_and(|t| t.assets().any(|a| a == asset))
}

/// For the Asset controller's watch of Pipelines: the Assets a Pipeline names.
pub fn assets_of_pipeline(pipeline: Pipeline) -> Vec<ObjectRef<Asset>> {
    let ns = pipeline.namespace().unwrap_or_default();
    pipeline
        .spec
        .assets
        .iter()
        .flat_map(|t| t.assets())
        .map(|a| ObjectRef::new(&rules::object_name(a)).within(&ns))
        .collect()
}

/// For the Pipeline controller's watch of Assets: the Pipelines (in the controller's cache)
/// that name the asset.
pub fn pipelines_of_asset(pipelines: &Store<Pipeline>, asset: &Asset) -> Vec<ObjectRef<Pipeline>> {
    let ns = asset.namespace();
    pipelines
        .state()
        .iter()
        .filter(|p| p.namespace() == ns && consumes(p, &asset.spec.name))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}
