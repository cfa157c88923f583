//! PipelineRevisions on the cluster: made (or shared) when a run starts, read whenever a run
//! is reconciled, and read by the CLI, the UI and the webhook through [`followed_spec`].
//!
//! A revision's owners are the runs that follow it, so Kubernetes' garbage collector
//! removes it once the last of them is gone, and never while one is left; deleting the
//! Pipeline does not touch it. Revisions never change: their content is checked against
//! their hash on every read, and the operator keeps the ones it read in memory.

use super::{Context, Error, Result, is_already_exists, is_not_found};
use crate::api::{PipelineRevision, PipelineRevisionSpec, PipelineRun, PipelineSpec, labels};
use crate::engine::{names, revision};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Most revisions kept in memory; past it the memory is emptied and filled again by reads.
const CACHED: usize = 256;

/// Revisions read before, by namespace and name. They never change, so they are never
/// stale.
#[derive(Default)]
pub struct RevisionCache(Mutex<HashMap<(String, String), Arc<PipelineSpec>>>);

impl RevisionCache {
    fn get(&self, ns: &str, name: &str) -> Option<Arc<PipelineSpec>> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(ns.to_string(), name.to_string())).cloned()
    }

    fn put(&self, ns: &str, name: &str, spec: Arc<PipelineSpec>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHED {
            map.clear();
        }
        map.insert((ns.to_string(), name.to_string()), spec);
    }
}

/// What reading a run's revision found.
#[derive(Debug)]
pub enum Read {
    Spec(Arc<PipelineSpec>),
    /// The revision is gone (deleted by hand).
    Missing(String),
    /// Its content no longer matches its hash (edited by hand): not followed.
    Altered(String),
}

/// The spec of revision `name` in `ns`, checked against its hash.
pub async fn read(client: &Client, ns: &str, name: &str) -> Result<Read> {
    let api: Api<PipelineRevision> = Api::namespaced(client.clone(), ns);
    let rev = match api.get(name).await {
        Ok(rev) => rev,
        Err(e) if is_not_found(&e) => {
            return Ok(Read::Missing(format!(
                "PipelineRevision {name}, which this run follows, was deleted"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let found = revision::hash(&rev.spec.pipeline_spec);
    if found != rev.spec.hash {
        return Ok(Read::Altered(format!(
            "PipelineRevision {name} was changed after it was made (its spec hashes to {}, not {}): revisions never change, so it is not followed",
            &found[..12],
            &rev.spec.hash[..rev.spec.hash.len().min(12)]
        )));
    }
    Ok(Read::Spec(Arc::new(rev.spec.pipeline_spec)))
}

/// [`read`], through the operator's memory.
pub async fn read_cached(ctx: &Context, ns: &str, name: &str) -> Result<Read> {
    if let Some(spec) = ctx.revisions.get(ns, name) {
        return Ok(Read::Spec(spec));
    }
    let read = read(&ctx.client, ns, name).await?;
    if let Read::Spec(spec) = &read {
        ctx.revisions.put(ns, name, spec.clone());
    }
    Ok(read)
}

/// The revision of `spec` for `run`, made if it does not exist yet, with `run` among its
/// owners. Returns its name.
pub async fn ensure(ctx: &Context, run: &PipelineRun, spec: &PipelineSpec) -> Result<String> {
    let ns = run.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let pipeline = run.spec.pipeline_ref.as_ref().map(|r| r.name.as_str());
    let hash = revision::hash(spec);
    let name = revision::name(pipeline, &hash);
    let owner = run
        .controller_owner_ref(&())
        .map(|o| OwnerReference {
            controller: None,
            block_owner_deletion: None,
            ..o
        })
        .ok_or(Error::MissingField("metadata.uid"))?;
    let api: Api<PipelineRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let made = PipelineRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(revision_labels(pipeline)),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: PipelineRevisionSpec {
            pipeline: pipeline.map(String::from),
            hash: hash.clone(),
            task_count: (spec.tasks.len() + spec.finally.len()) as u32,
            pipeline_spec: spec.clone(),
        },
    };
    match api.create(&PostParams::default(), &made).await {
        Ok(_) => {}
        Err(e) if is_already_exists(&e) => adopt(&api, &name, &hash, owner).await?,
        Err(e) => return Err(e.into()),
    }
    ctx.revisions.put(&ns, &name, Arc::new(spec.clone()));
    Ok(name)
}

/// Adds `owner` to an existing revision's owners. The write carries the resourceVersion
/// read, so two runs adding themselves at once cannot drop each other (one retries).
async fn adopt(api: &Api<PipelineRevision>, name: &str, hash: &str, owner: OwnerReference) -> Result<()> {
    let rev = api.get(name).await?;
    if rev.spec.hash != hash {
        // Two specs whose hashes share the name's prefix: never follow the other one.
        return Err(Error::Conflict(format!(
            "PipelineRevision {name} holds a different spec (hash {}); rename the pipeline",
            rev.spec.hash
        )));
    }
    let mut owners = rev.metadata.owner_references.clone().unwrap_or_default();
    if owners.iter().any(|o| o.uid == owner.uid) {
        return Ok(());
    }
    owners.push(owner);
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": rev.resource_version(), "ownerReferences": owners}
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn revision_labels(pipeline: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(
        labels::MANAGED_BY.to_string(),
        labels::MANAGED_BY_VALUE.to_string(),
    )]);
    if let Some(p) = pipeline {
        labels.insert(labels::PIPELINE.to_string(), names::label_value(p));
    }
    labels
}

/// The spec a run follows, for readers outside the operator (CLI, UI, webhook): its
/// revision once it started, else its inline `pipelineSpec` (or `None`: a run of a
/// Pipeline that has not started follows nothing yet). A revision that is gone or was
/// altered is an error naming it.
pub async fn followed_spec(client: &Client, run: &PipelineRun) -> anyhow::Result<Option<PipelineSpec>> {
    let revision = run.status.as_ref().and_then(|s| s.pipeline_revision.as_deref());
    let Some(name) = revision else {
        return Ok(run.spec.pipeline_spec.clone());
    };
    let ns = run.namespace().unwrap_or_default();
    match read(client, &ns, name).await? {
        Read::Spec(spec) => Ok(Some(Arc::unwrap_or_clone(spec))),
        Read::Missing(why) | Read::Altered(why) => anyhow::bail!("{why}"),
    }
}
