//! One watch and one cache of a kind for several controllers of it. PipelineRuns have two
//! controllers, the run's own and the notifier (a queue of its own, so that sending a
//! message never waits behind the runs' reconciles, nor holds them up). With a watch cache
//! each, the operator kept every PipelineRun twice; a run of an inline pipeline of ten tasks
//! is some 15 KiB in memory (issue 14's memory goal: 1,000 finished runs).

use super::instrument::{CONCURRENCY, Reconciled, WatchBackoff, strip};
use crate::metrics::Queue;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How many changes the watch may be ahead of the slowest of its controllers before it
/// waits for them.
const BUFFER: usize = 1024;

/// One controller of `K` per queue, all fed by one watch of `api` into one cache. Returns
/// the controllers, the cache (readiness, metrics) and the watch itself: a future to run
/// beside the controllers, which ends when `shutdown` is cancelled.
pub fn controllers<K: Reconciled, const N: usize>(
    api: Api<K>,
    config: watcher::Config,
    queues: [&Queue; N],
    shutdown: &CancellationToken,
    shard: crate::shard::Shard,
) -> ([Controller<K>; N], Store<K>, BoxFuture<'static, ()>) {
    let (reader, writer) = reflector::store_shared(BUFFER);
    let controllers = queues.map(|queue| {
        let queue = queue.clone();
        let changes = writer
            .subscribe()
            .expect("a shared store has subscribers")
            .inspect(move |obj: &Arc<K>| queue.add(obj.namespace().as_deref(), &obj.name_any()));
        Controller::for_shared_stream(changes, reader.clone())
            .with_config(controller::Config::default().concurrency(CONCURRENCY))
    });
    let watch = shard
        .owned_events(watcher(api, config))
        .backoff(WatchBackoff::default())
        .modify(strip::<K>)
        .reflect_shared(writer)
        .take_until(shutdown.clone().cancelled_owned())
        .for_each(|event| {
            if let Err(err) = event {
                tracing::warn!(controller = ?K::CONTROLLER, %err, "shared watch");
            }
            std::future::ready(())
        })
        .boxed();
    (controllers, reader, watch)
}
