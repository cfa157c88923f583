//! What every controller gets around its reconcile: its own watch cache (so readiness can
//! wait for it), the queue of objects waiting for a reconcile (the `weir_queue_depth`
//! gauge), a span naming the object (`namespace`, `run`, `task`), the duration histogram
//! and the error counter by category. The reconcile functions themselves stay plain.

use super::{Context, Error, Result};
use crate::api::{Pipeline, PipelineRun, Pool, TaskRun};
use crate::metrics::{ControllerKind, Queue};
use crate::shard::Shard;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use tracing::Instrument;

/// A resource Weir reconciles.
pub trait Reconciled:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    const CONTROLLER: ControllerKind;
    /// Whether the reconciler reads `metadata.managedFields` (who asked for a rerun). The
    /// cache of any other kind drops them: they are often the larger part of an object
    /// written with server-side apply, kept once per object in memory for nothing.
    const KEEPS_MANAGED_FIELDS: bool = false;
    /// The span a reconcile of this object runs in.
    fn span(&self) -> tracing::Span;
}

impl Reconciled for Pipeline {
    const CONTROLLER: ControllerKind = ControllerKind::pipeline;
    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "reconcile",
            controller = "pipeline",
            namespace = %self.namespace().unwrap_or_default(),
            pipeline = %self.name_any(),
        )
    }
}

impl Reconciled for PipelineRun {
    const CONTROLLER: ControllerKind = ControllerKind::pipelinerun;
    const KEEPS_MANAGED_FIELDS: bool = true;
    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "reconcile",
            controller = "pipelinerun",
            namespace = %self.namespace().unwrap_or_default(),
            run = %self.name_any(),
        )
    }
}

impl Reconciled for crate::api::Asset {
    const CONTROLLER: ControllerKind = ControllerKind::asset;
    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "reconcile",
            controller = "asset",
            namespace = %self.namespace().unwrap_or_default(),
            asset = %self.spec.name,
        )
    }
}

impl Reconciled for Pool {
    const CONTROLLER: ControllerKind = ControllerKind::pool;
    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "reconcile",
            controller = "pool",
            namespace = %self.namespace().unwrap_or_default(),
            pool = %self.name_any(),
        )
    }
}

impl Reconciled for TaskRun {
    const CONTROLLER: ControllerKind = ControllerKind::taskrun;
    fn span(&self) -> tracing::Span {
        // A TaskRun made by hand has no run: it is named by its own name then.
        let run = self
            .annotations()
            .get(crate::api::annotations::PIPELINE_RUN)
            .cloned()
            .or_else(|| {
                self.owner_references()
                    .iter()
                    .find(|o| o.kind == PipelineRun::kind(&()))
                    .map(|o| o.name.clone())
            })
            .unwrap_or_default();
        tracing::info_span!(
            "reconcile",
            controller = "taskrun",
            namespace = %self.namespace().unwrap_or_default(),
            run = %run,
            task = %self.spec.task_name,
            taskrun = %self.name_any(),
        )
    }
}

/// A controller of `K` over `api`, fed by a watch cache of its own that holds only the
/// objects of `shard`'s namespaces. Returns the cache too, to wait for its first full list
/// (readiness) and to read from it (metrics).
pub fn controller<K: Reconciled>(
    api: Api<K>,
    config: watcher::Config,
    queue: &Queue,
    shard: Shard,
) -> (Controller<K>, Store<K>) {
    controller_woken_by(api, config, queue, shard, |_: &K| None)
}

/// [`controller`], woken only by the changes of `K` in which `woken_by` differs from the
/// last one seen of the object (every change when it gives `None`): the cache still holds
/// every change.
pub fn controller_woken_by<K: Reconciled>(
    api: Api<K>,
    config: watcher::Config,
    queue: &Queue,
    shard: Shard,
    woken_by: impl kube::runtime::Predicate<K> + Send + 'static,
) -> (Controller<K>, Store<K>) {
    let (reader, writer) = reflector::store();
    let queue = queue.clone();
    let objects = shard
        .owned_events(watcher(api, config))
        .modify(strip::<K>)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(woken_by, Default::default())
        .inspect_ok(move |obj: &K| queue.add(obj.namespace().as_deref(), &obj.name_any()));
    let controller = Controller::for_stream(objects, reader.clone())
        .trigger_backoff(WatchBackoff::default())
        .with_config(controller::Config::default().concurrency(CONCURRENCY));
    (controller, reader)
}

/// `controller` with its wake-ups of one object gathered for `settle` (a reconcile starts
/// once no new reason to look came for that long: kube-runtime's trailing-edge debounce),
/// and at most `concurrency` reconciles at a time.
pub fn settling<K: Reconciled>(
    controller: Controller<K>,
    settle: std::time::Duration,
    concurrency: u16,
) -> Controller<K> {
    controller.with_config(
        controller::Config::default()
            .concurrency(concurrency)
            .debounce(settle),
    )
}

/// What no reconcile of `K` reads, taken off before an object enters a cache.
pub fn strip<K: Reconciled>(obj: &mut K) {
    if !K::KEEPS_MANAGED_FIELDS {
        obj.meta_mut().managed_fields = None;
    }
}

/// Most reconciles of one controller at a time. Unbounded (kube-runtime's default), an
/// operator starting on 10,000 TaskRuns begins 10,000 reconciles at once, each listing Jobs
/// and pods: a burst on the API server, and memory the process keeps afterwards.
pub const CONCURRENCY: u16 = 32;

/// How long the watches behind a controller wait before trying again after an error: from
/// 250 ms, doubling, at most [`WatchBackoff::MAX`]; back to the start after a minute without
/// errors. kube-runtime's default grows to 30 s, so after an API server restart the watches
/// (and every run) could sit idle for half a minute after the server was back.
#[derive(Debug, Clone, Default)]
pub struct WatchBackoff {
    failures: u32,
    last: Option<std::time::Instant>,
}

impl WatchBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(250);
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(4);
    const RESET_AFTER: std::time::Duration = std::time::Duration::from_secs(60);
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) > Self::RESET_AFTER)
        {
            self.failures = 0;
        }
        self.last = Some(now);
        let delay = Self::FIRST
            .saturating_mul(1 << self.failures.min(8))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        Some(delay)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Other objects that wake up a `K` found by `mapper`, counted in the queue; those of other
/// shards' namespaces wake nothing.
pub fn watches<K: Reconciled, Other>(
    controller: Controller<K>,
    api: Api<Other>,
    config: watcher::Config,
    queue: &Queue,
    shard: Shard,
    mapper: impl Fn(Other) -> Option<ObjectRef<K>> + Send + Sync + 'static,
) -> Controller<K>
where
    Other: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let queue = queue.clone();
    let wake = move |other| {
        let target = mapper(other);
        if let Some(t) = &target {
            queue.add(t.namespace.as_deref(), &t.name);
        }
        target
    };
    controller.watches(api, config, shard.gate(wake))
}

/// Wraps a reconcile function: takes the object off the queue, runs it in its span, records
/// the duration and, on failure, the error's category.
pub fn reconciler<K, F, Fut>(
    queue: &Queue,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> BoxFuture<'static, Result<Action>> + use<K, F, Fut>
where
    K: Reconciled,
    F: Fn(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let queue = queue.clone();
    move |obj, ctx| {
        queue.remove(obj.namespace().as_deref(), &obj.name_any());
        let span = obj.span();
        let timer = ctx.metrics.reconcile_timer(K::CONTROLLER);
        let work = reconcile(obj, ctx.clone());
        async move {
            let _timer = timer;
            let result = work.await;
            if let Err(err) = &result {
                ctx.metrics.reconcile_error(K::CONTROLLER, err.category());
            }
            result
        }
        .instrument(span)
        .boxed()
    }
}

/// What a controller's stream yields.
type Outcome<K> = std::result::Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>;

/// Handles what a controller's stream yields: reconcile results are logged (failures were
/// already logged by the error policy); an object deleted before its reconcile started
/// leaves the queue.
pub fn on_result<K: Reconciled>(queue: &Queue) -> impl FnMut(Outcome<K>) -> std::future::Ready<()> + use<K> {
    let queue = queue.clone();
    move |result| {
        match result {
            Ok((obj, action)) => tracing::trace!(%obj, ?action, "reconciled"),
            Err(controller::Error::ObjectNotFound(obj)) => queue.remove(obj.namespace.as_deref(), &obj.name),
            Err(controller::Error::ReconcilerFailed(..)) => {}
            Err(err) => tracing::warn!(controller = ?K::CONTROLLER, %err, "controller"),
        }
        std::future::ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff as _;
    use std::time::Duration;

    #[test]
    fn watch_retries_double_to_a_few_seconds_and_start_over_after_a_reset() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(7).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        // What an API server down for 10 s costs at most once it is back: one delay.
        assert!(delays.iter().all(|d| *d <= WatchBackoff::MAX));
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(250)));
    }
}
