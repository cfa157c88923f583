//! Large outputs: a value too large for a termination message is moved to the artifact store
//! by `weir exec`, and the task reports a reference under `weir.large.<key>` (object key,
//! size, digest). Before a run's step, the references of its succeeded tasks are read back
//! (digest checked) so that templates see the whole value as `tasks.<task>.outputs.<key>`,
//! for example a list of ten thousand partitions for a fan-out. Values are kept in memory by
//! digest: an object never changes under its digest, so it is read once.

use super::{Context, Error, Result};
use crate::api::{ArtifactRef, TaskPhase, TaskRun};
use crate::artifacts as store;
use crate::engine::outputs;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most bytes of values kept in memory; past it the cache starts again empty.
const CACHED_BYTES: usize = 64 << 20;

/// Values read from the store, by digest.
#[derive(Default)]
pub struct LargeValues(Mutex<(HashMap<String, Arc<str>>, usize)>);

impl LargeValues {
    fn get(&self, digest: &str) -> Option<Arc<str>> {
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache.0.get(digest).cloned()
    }

    fn put(&self, digest: &str, value: Arc<str>) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.1 + value.len() > CACHED_BYTES {
            *cache = Default::default();
        }
        cache.1 += value.len();
        cache.0.insert(digest.to_string(), value);
    }
}

/// Puts the values that the succeeded TaskRuns moved to the store back into their outputs
/// (in these copies only: nothing is written to the API server). A value that cannot be
/// read fails the reconcile with an error naming the task, the key and the store's answer;
/// the run is looked at again with backoff.
pub async fn fill(ctx: &Context, ns: &str, task_runs: &mut [TaskRun]) -> Result<()> {
    for tr in task_runs.iter_mut() {
        let Some(status) = tr.status.as_mut() else {
            continue;
        };
        if status.phase != Some(TaskPhase::Succeeded) {
            continue;
        }
        let moved: Vec<(String, String)> = status
            .outputs
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(outputs::LARGE_PREFIX)?.to_string(), v.clone())))
            .collect();
        for (key, reference) in moved {
            let value = read(ctx, ns, &tr.spec, &reference).await.map_err(|e| {
                Error::LargeOutput(format!("output {key} of task {}: {e}", tr.spec.task_name))
            })?;
            status.outputs.remove(&outputs::large_key(&key));
            status.outputs.insert(key, value.to_string());
        }
    }
    Ok(())
}

/// One moved value, from the cache or the store the task used.
async fn read(
    ctx: &Context,
    ns: &str,
    spec: &crate::api::TaskRunSpec,
    reference: &str,
) -> std::result::Result<Arc<str>, String> {
    let r: ArtifactRef = serde_json::from_str(reference).map_err(|e| format!("not a reference: {e}"))?;
    if let Some(value) = ctx.large_values.get(&r.sha256) {
        return Ok(value);
    }
    let settings = &ctx.task_defaults.artifacts;
    let spec_store = settings
        .store_of(spec)
        .ok_or("no artifact store is configured to read it from")?;
    let opened = store::open_spec(&ctx.client, ns, spec_store).await?;
    let body = opened.get_checked(&r).await.map_err(|e| e.to_string())?;
    let value: Arc<str> = String::from_utf8(body)
        .map_err(|_| "the stored value is not UTF-8 text".to_string())?
        .into();
    ctx.large_values.put(&r.sha256, value.clone());
    Ok(value)
}
