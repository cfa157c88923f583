//! The Kubernetes side of Weir: one module per resource. Each reconcile observes (fresh
//! lists from the API server, never a possibly stale cache, for anything that decides what
//! to create), asks `engine::plan_*`, applies the result, then writes status with
//! server-side apply under one field manager.

pub mod admission;
pub mod approval;
pub mod artifacts;
pub mod asset;
pub mod children;
pub mod deadline;
pub mod finished;
#[cfg(test)]
mod fixture;
pub mod fresh;
pub mod instrument;
pub mod job;
pub mod large;
pub mod mail;
pub mod notify;
pub mod pipeline;
pub mod pipelinerun;
pub mod podless;
pub mod pool;
pub mod rerun;
pub mod revision;
pub mod schedule;
pub mod sensor;
pub mod shared;
pub mod taskrun;

use crate::api::Pipeline;
use crate::api::{Approval, Asset, PipelineRun, Pool, TaskRun};
use crate::metrics::ControllerKind;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use instrument::{controller, on_result, reconciler, watches};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// The one field manager every status write uses.
pub const FIELD_MANAGER: &str = "weir-operator";
/// Name of the operator in Events.
pub const REPORTER: &str = "weir-operator";

/// Errors of the controller layer. Each has a short, static category for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// A compare-and-swap write lost to other writers every time it was tried.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A value a task moved to the artifact store could not be read back.
    #[error("large output: {0}")]
    LargeOutput(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 429 => "throttled",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Serialization(_) => "serialization",
            Error::MissingField(_) => "invalid-object",
            Error::Conflict(_) => "conflict",
            Error::LargeOutput(_) => "artifact-store",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Cluster-wide defaults for task pods, set by whoever installs the operator.
    pub task_defaults: Arc<job::TaskPodDefaults>,
    /// The PipelineRevisions read so far (they never change).
    pub revisions: Arc<revision::RevisionCache>,
    /// The notifier's settings and the messages it is sending.
    pub notifier: Arc<notify::Notifier>,
    /// Large outputs read back from the artifact store.
    pub large_values: Arc<large::LargeValues>,
    /// The key Approvals are signed with (read on first use).
    pub approval_key: Arc<approval::ApprovalKey>,
    /// The namespaces this process runs (all of them unless the operator is sharded).
    pub shard: crate::shard::Shard,
    /// The runs' TaskRuns, from the run controller's watch cache.
    pub children: Arc<children::Children>,
    /// The newest Jobs and pods seen, for lists from the API server's watch cache.
    pub fresh: Arc<fresh::Fresh>,
}

impl Context {
    pub fn new(client: Client) -> Self {
        let reporter = Reporter {
            controller: REPORTER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Arc::default(),
            task_defaults: Arc::default(),
            revisions: Arc::default(),
            notifier: Arc::default(),
            large_values: Arc::default(),
            approval_key: Arc::default(),
            shard: crate::shard::Shard::WHOLE,
            children: Arc::default(),
            fresh: Arc::default(),
        }
    }

    /// Runs only the namespaces `shard` owns (docs/sharding.md).
    pub fn with_shard(mut self, shard: crate::shard::Shard) -> Self {
        self.shard = shard;
        self
    }

    /// Reads the approval signing key from this Secret (made on first use if missing).
    pub fn with_approval_key(mut self, key: approval::ApprovalKey) -> Self {
        self.approval_key = Arc::new(key);
        self
    }

    /// Sends notifications with these settings (installation defaults, UI address).
    pub fn with_notifier(mut self, notifier: notify::Notifier) -> Self {
        self.notifier = Arc::new(notifier);
        self
    }

    /// Applies `defaults` to every task pod (a pipeline's own settings win).
    pub fn with_task_defaults(mut self, defaults: job::TaskPodDefaults) -> Self {
        self.task_defaults = Arc::new(defaults);
        self
    }

    /// Counts into `metrics` (the registry `/metrics` serves) instead of a private one.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Publishes an Event; a failure to publish is logged, never fatal.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(&one_line(&note), 1000)),
            action: action.into(),
            secondary: related,
        };
        // The same line in the logs, inside the reconcile's span (namespace, run, task).
        let text = event.note.as_deref().unwrap_or_default();
        match type_ {
            EventType::Normal => tracing::info!(reason, "{text}"),
            EventType::Warning => tracing::warn!(reason, "{text}"),
        }
        if let Err(err) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%err, reason, "could not publish event");
        }
    }
}

/// Joins the lines of a (possibly multi-line) message with "; " so Events read on one line.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

pub use crate::engine::quote::truncate;

pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Writes `status` with server-side apply. The whole status is always sent: fields this
/// manager owns and leaves out are removed. Returns the object as written.
pub async fn apply_status<K>(api: &Api<K>, name: &str, status: &impl Serialize) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(written)
}

/// Whether an API error is "already exists" (409 from a create).
pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Whether an API error is "not found" (404).
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// The answers of the API server that mean "already done" for an idempotent write.
pub trait ApiResultExt<T> {
    /// `Ok(None)` when the object is gone (a delete or patch of something deleted already).
    fn ignore_not_found(self) -> Result<Option<T>>;
    /// `Ok(None)` when the object exists already (a create made by an earlier reconcile).
    fn ignore_already_exists(self) -> Result<Option<T>>;
}

impl<T> ApiResultExt<T> for std::result::Result<T, kube::Error> {
    fn ignore_not_found(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn ignore_already_exists(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_already_exists(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The error policy of every controller: log with the error's category, then requeue with
/// backoff and jitter ([`error_backoff`]).
pub fn error_policy<K>(object: Arc<K>, err: &Error, _ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    tracing::warn!(
        kind = %K::kind(&()),
        name = object.meta().name.as_deref().unwrap_or_default(),
        namespace = object.meta().namespace.as_deref().unwrap_or_default(),
        category = err.category(),
        %err,
        "reconcile failed"
    );
    error_backoff(err, object.meta().name.as_deref().unwrap_or_default())
}

/// Requeue after an error, with jitter so many failing objects do not retry in lockstep;
/// longer when the API server asks us to slow down.
pub fn error_backoff(err: &Error, name: &str) -> Action {
    let base = match err.category() {
        "throttled" => 10_000,
        "conflict" => 500,
        _ => 3_000,
    };
    // Cheap deterministic jitter from the name and the clock's sub-second part.
    let seed = name.bytes().fold(now().subsec_nanosecond() as u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(b as u64)
    });
    Action::requeue(Duration::from_millis(base + seed % (base / 2).max(1)))
}

/// Which namespaces the operator watches.
#[derive(Clone, Debug, Default)]
pub enum Scope {
    #[default]
    All,
    Namespace(String),
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match self {
            Scope::All => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }
}

fn managed_selector() -> String {
    format!(
        "{}={}",
        crate::api::labels::MANAGED_BY,
        crate::api::labels::MANAGED_BY_VALUE
    )
}

/// The watch of objects the operator is not done with: finished ones stay out of memory
/// (see [`finished`]).
fn at_work() -> watcher::Config {
    watcher::Config::default().labels(finished::UNFINISHED)
}

/// The watches of whole PipelineRuns list them a hundred at a time (kube's default is
/// 500): a run of an inline pipeline is some 15 KiB once read, and every page read is held
/// whole while it is taken in, beside the cache it fills.
fn runs_page() -> watcher::Config {
    watcher::Config::default().page_size(100)
}

/// How long a shutdown waits for reconciles in flight before abandoning them.
const DRAIN: Duration = Duration::from_secs(20);

/// Runs the controllers for every scope until `shutdown` is cancelled, then lets the
/// reconciles in flight finish (for at most [`DRAIN`]). `health` becomes ready once the
/// watch cache of every controller holds its first full list, and never if one of them
/// stopped before that.
pub async fn run(
    ctx: Arc<Context>,
    scopes: Vec<Scope>,
    shutdown: tokio_util::sync::CancellationToken,
    health: crate::http::Health,
) -> anyhow::Result<()> {
    let (mut controllers, caches): (Vec<_>, Vec<_>) = scopes
        .iter()
        .flat_map(|scope| controllers_for(&ctx, scope, &shutdown))
        .map(|c| (c.running, c.synced))
        .unzip();
    let synced = async {
        if all_synced(caches).await {
            health.advance(crate::http::Phase::Syncing, crate::http::Phase::Ready);
            health.advance(crate::http::Phase::Starting, crate::http::Phase::Ready);
            tracing::info!("watch caches synced");
        } else {
            tracing::error!("a watch stopped before its first full list: not ready");
        }
    };
    let abandon = async {
        shutdown.cancelled().await;
        health.set(crate::http::Phase::Stopping);
        tokio::time::sleep(DRAIN).await;
    };
    tracing::info!(?scopes, shard = %ctx.shard, "weir operator started");
    if controllers.is_empty() {
        tracing::warn!(shard = %ctx.shard, "this shard owns none of the namespaces given: nothing to run");
        controllers.push(shutdown.clone().cancelled_owned().boxed());
    }
    tokio::select! {
        _ = futures::future::join(futures::future::join_all(controllers), synced) => {}
        () = abandon => tracing::warn!("reconciles still running after {DRAIN:?}: abandoning them"),
    }
    ctx.metrics.controllers_stopped();
    tracing::info!("weir operator stopped");
    Ok(())
}

/// A controller, running, and whether its watch cache got its first full list.
struct Started {
    running: BoxFuture<'static, ()>,
    synced: BoxFuture<'static, bool>,
}

/// True once the cache holds its first full list; false if its writer (the watch feeding
/// it) was dropped before that.
fn synced<K>(cache: Store<K>) -> BoxFuture<'static, bool>
where
    K: kube::runtime::reflector::Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    async move { cache.wait_until_ready().await.is_ok() }.boxed()
}

/// Whether every cache synced: a cache that never did must not count as ready.
async fn all_synced(caches: Vec<BoxFuture<'static, bool>>) -> bool {
    futures::future::join_all(caches).await.into_iter().all(|ok| ok)
}

/// The six controllers of one scope.
fn controllers_for(
    ctx: &Arc<Context>,
    scope: &Scope,
    shutdown: &tokio_util::sync::CancellationToken,
) -> [Started; 6] {
    let [runs, notifier] = pipeline_run_controllers(ctx, scope, shutdown);
    [
        pipeline_controller(ctx, scope, shutdown),
        runs,
        task_run_controller(ctx, scope, shutdown),
        pool_controller(ctx, scope, shutdown),
        asset_controller(ctx, scope, shutdown),
        notifier,
    ]
}

/// The two controllers of PipelineRuns, the run's own and the notifier, on one watch and
/// one cache (see [`shared`]); the watch runs with the runs' controller.
fn pipeline_run_controllers(
    ctx: &Arc<Context>,
    scope: &Scope,
    shutdown: &tokio_util::sync::CancellationToken,
) -> [Started; 2] {
    let queues = [
        ctx.metrics.queue(ControllerKind::pipelinerun),
        ctx.metrics.queue(ControllerKind::notifier),
    ];
    let ([runs, notifier], cache, watch) = shared::controllers(
        scope.api::<PipelineRun>(&ctx.client),
        runs_page(),
        [&queues[0], &queues[1]],
        shutdown,
        ctx.shard,
    );
    let [run_queue, notifier_queue] = queues;
    let runs = run_controller(ctx, scope, shutdown, (runs, cache.clone()), &run_queue);
    let notifier = notifier_controller(ctx, shutdown, (notifier, cache), &notifier_queue);
    let running = futures::future::join(runs.running, watch).map(|_| ()).boxed();
    [Started { running, ..runs }, notifier]
}

/// Assets: their `status.consumers`, kept from the Pipelines that name them.
fn asset_controller(
    ctx: &Arc<Context>,
    scope: &Scope,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Started {
    let client = &ctx.client;
    let queue = ctx.metrics.queue(ControllerKind::asset);
    let (c, cache) = controller(
        scope.api::<Asset>(client),
        watcher::Config::default(),
        &queue,
        ctx.shard,
    );
    let wake = queue.clone();
    let running = c
        .watches(
            scope.api::<Pipeline>(client),
            watcher::Config::default(),
            ctx.shard.gate(move |p| {
                let assets = asset::assets_of_pipeline(p);
                for a in &assets {
                    wake.add(a.namespace.as_deref(), &a.name);
                }
                assets
            }),
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconciler(&queue, asset::reconcile), error_policy, ctx.clone())
        .for_each(on_result(&queue));
    Started {
        running: running.boxed(),
        synced: synced(cache),
    }
}

/// The notifier: PipelineRuns again, with a queue of their own, so that sending messages
/// never waits behind (or holds up) the runs' reconciles.
fn notifier_controller(
    ctx: &Arc<Context>,
    shutdown: &tokio_util::sync::CancellationToken,
    (c, cache): (kube::runtime::Controller<PipelineRun>, Store<PipelineRun>),
    queue: &crate::metrics::Queue,
) -> Started {
    let running = c
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconciler(queue, notify::reconcile), error_policy, ctx.clone())
        .for_each(on_result(queue));
    Started {
        running: running.boxed(),
        synced: synced(cache),
    }
}

/// Pools: their status derived again whenever a TaskRun that uses them changes, which
/// frees the slots of attempts that ended.
fn pool_controller(
    ctx: &Arc<Context>,
    scope: &Scope,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Started {
    let client = &ctx.client;
    let queue = ctx.metrics.queue(ControllerKind::pool);
    let (c, cache) = controller(
        scope.api::<Pool>(client),
        watcher::Config::default(),
        &queue,
        ctx.shard,
    );
    let running = watches(
        c,
        scope.api::<TaskRun>(client),
        at_work(),
        &queue,
        ctx.shard,
        pool::pool_of_task_run,
    )
    .graceful_shutdown_on(shutdown.clone().cancelled_owned())
    .run(reconciler(&queue, pool::reconcile), error_policy, ctx.clone())
    .for_each(on_result(&queue));
    let pools = cache.clone();
    ctx.metrics.add_pools_source(move || {
        pools
            .state()
            .iter()
            .filter_map(|p| p.status.as_ref())
            .map(|s| crate::metrics::PoolTotals {
                pools: 1,
                slots: i64::from(s.slots),
                occupied: i64::from(s.occupied),
                queued: i64::from(s.queued),
            })
            .sum()
    });
    Started {
        running: running.boxed(),
        synced: synced(cache),
    }
}

/// Pipelines: validated on change; schedules, queues and history follow their runs.
fn pipeline_controller(
    ctx: &Arc<Context>,
    scope: &Scope,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Started {
    let client = &ctx.client;
    let queue = ctx.metrics.queue(ControllerKind::pipeline);
    let (c, cache) = controller(
        scope.api::<Pipeline>(client),
        watcher::Config::default(),
        &queue,
        ctx.shard,
    );
    // Runs appearing, starting and finishing move the schedule, queue and history.
    let c = watches(
        c,
        scope.api::<PipelineRun>(client),
        runs_page(),
        &queue,
        ctx.shard,
        pipeline::pipeline_of_run,
    );
    // Asset events wake the Pipelines whose spec.assets names the asset.
    let pipelines = cache.clone();
    let wake = queue.clone();
    let c = c.watches(
        scope.api::<Asset>(client),
        watcher::Config::default(),
        ctx.shard.gate(move |a| {
            let consumers = asset::pipelines_of_asset(&pipelines, &a);
            for p in &consumers {
                wake.add(p.namespace.as_deref(), &p.name);
            }
            consumers
        }),
    );
    let running = c
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconciler(&queue, pipeline::reconcile), error_policy, ctx.clone())
        .for_each(on_result(&queue));
    Started {
        running: running.boxed(),
        synced: synced(cache),
    }
}

/// PipelineRuns: woken by their TaskRuns, and by a Pipeline whose slots under
/// `maxActiveRuns` freed up (seen in its status) for the runs first in line.
fn run_controller(
    ctx: &Arc<Context>,
    scope: &Scope,
    shutdown: &tokio_util::sync::CancellationToken,
    (c, cache): (kube::runtime::Controller<PipelineRun>, Store<PipelineRun>),
    queue: &crate::metrics::Queue,
) -> Started {
    let client = &ctx.client;
    let wake_queued = {
        let queue = queue.clone();
        ctx.shard.gate(move |p| {
            let runs = admission::queued_runs_to_wake(p);
            for r in &runs {
                queue.add(r.namespace.as_deref(), &r.name);
            }
            runs
        })
    };
    let children = children::watch(scope.api::<TaskRun>(client), &ctx.children, queue, ctx.shard);
    let jobs = children::watch_jobs(scope.api::<Job>(client), ctx.shard);
    let job_done = {
        let (children, queue) = (ctx.children.clone(), queue.clone());
        move |job: Job| {
            let run = children.job_done(&job);
            if let Some(r) = &run {
                queue.add(r.namespace.as_deref(), &r.name);
            }
            run
        }
    };
    let running = c
        .owns_stream(children)
        .watches_stream(jobs, job_done)
        .watches(
            scope.api::<Pipeline>(client),
            watcher::Config::default(),
            wake_queued,
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(
            reconciler(queue, pipelinerun::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(on_result(queue));
    let active = cache.clone();
    ctx.metrics.add_active_runs_source(move || {
        active
            .state()
            .iter()
            .filter(|run| {
                run.status.as_ref().is_some_and(|s| {
                    s.start_time.is_some() && !s.phase.is_some_and(crate::api::RunPhase::is_terminal)
                })
            })
            .count() as i64
    });
    Started {
        running: running.boxed(),
        synced: synced(cache),
    }
}

/// How long a TaskRun's wake-ups are gathered before its reconcile. A task's end comes as a
/// burst of events (its pod terminated, then its Job complete, each a look with two lists and
/// perhaps a status write); gathered, they make one look. The TaskRun's status comes that
/// much later, but a run starts the successors of a task whose Job completed without waiting
/// for it (see `children`), and meanwhile the API server serves the run's creates instead.
const TASK_RUN_SETTLE: Duration = Duration::from_millis(20);

/// Most TaskRun reconciles at a time. A TaskRun's look is bookkeeping (its Jobs and pods
/// listed, its status written) that starts nothing: a run starts its tasks' Jobs itself. In a
/// wide fan-out, with 32 looks at once, the looks of the TaskRuns just created (a few each,
/// as their Job, pod and pod status arrive) took the API server from the run's creates:
/// Jobs came at 37 – 50 % of a bare client's rate. With 4, a TaskRun waiting for its turn
/// gathers its wake-ups into one look (kube-runtime keeps one pending request per object), the
/// looks come after the burst of creates, and the rate was 67 – 127 % (see "Speed" in
/// `docs/operations.md`). Four looks of a few milliseconds each still make hundreds a second.
const TASK_RUN_LOOKS: u16 = 4;

/// TaskRuns: woken by their Jobs, by their pods (a pod's status moves first) and by their
/// pool when slots free up; not by their own status writes (see `taskrun::woken_by`).
fn task_run_controller(
    ctx: &Arc<Context>,
    scope: &Scope,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Started {
    let client = &ctx.client;
    let managed = watcher::Config::default().labels(&managed_selector());
    let queue = ctx.metrics.queue(ControllerKind::taskrun);
    let (c, cache) = instrument::controller_woken_by(
        scope.api::<TaskRun>(client),
        at_work(),
        &queue,
        ctx.shard,
        taskrun::woken_by(),
    );
    let c = instrument::settling(c, TASK_RUN_SETTLE, TASK_RUN_LOOKS);
    // Every Job and pod event is recorded before it wakes its TaskRun (see `fresh`).
    let fresh = ctx.fresh.clone();
    let c = watches(
        c,
        scope.api::<PartialObjectMeta<Job>>(client),
        managed.clone(),
        &queue,
        ctx.shard,
        move |job: PartialObjectMeta<Job>| {
            fresh.jobs.saw_object(&job);
            let owner = job
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))?;
            Some(kube::runtime::reflector::ObjectRef::new(&owner.name).within(&job.namespace()?))
        },
    );
    let fresh = ctx.fresh.clone();
    let wake_queued = {
        let queue = queue.clone();
        ctx.shard.gate(move |found| {
            let tasks = pool::tasks_to_wake(found);
            for t in &tasks {
                queue.add(t.namespace.as_deref(), &t.name);
            }
            tasks
        })
    };
    let running = watches(
        c,
        scope.api::<Pod>(client),
        managed,
        &queue,
        ctx.shard,
        move |pod: Pod| {
            fresh.pods.saw_object(&pod);
            let name = pod.annotations().get(crate::api::annotations::TASK_RUN)?.clone();
            Some(kube::runtime::reflector::ObjectRef::new(&name).within(&pod.namespace()?))
        },
    )
    // Slots freed in a pool wake the tasks first in line for them.
    .watches(scope.api::<Pool>(client), watcher::Config::default(), wake_queued)
    // A decision wakes the approval task it names.
    .watches(
        scope.api::<Approval>(client),
        watcher::Config::default(),
        ctx.shard.gate(|a: Approval| {
            Some(kube::runtime::reflector::ObjectRef::new(&a.spec.task_run).within(&a.namespace()?))
        }),
    )
    .graceful_shutdown_on(shutdown.clone().cancelled_owned())
    .run(reconciler(&queue, taskrun::reconcile), error_policy, ctx.clone())
    .for_each(on_result(&queue));
    Started {
        running: running.boxed(),
        synced: synced(cache),
    }
}

/// One scope per listed namespace that `shard` owns; all namespaces when none is listed
/// (the shard then drops other shards' objects from every watch). Empty when the shard owns
/// none of the listed namespaces.
pub fn scopes(namespaces: &[String], shard: crate::shard::Shard) -> Vec<Scope> {
    if namespaces.is_empty() {
        vec![Scope::All]
    } else {
        let owned = namespaces.iter().filter(|ns| shard.owns(ns));
        owned.cloned().map(Scope::Namespace).collect()
    }
}

/// Lists objects of a kind by label selector straight from the API server.
pub async fn list_by_label<K>(api: &Api<K>, selector: &str) -> Result<Vec<K>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(api.list(&ListParams::default().labels(selector)).await?.items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;

    #[tokio::test]
    async fn a_cache_whose_watch_stopped_before_its_first_list_is_not_ready() {
        let (never, writer) = reflector::store::<Pipeline>();
        drop(writer);
        let (listed, mut writer) = reflector::store::<Pipeline>();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(all_synced(vec![synced(listed.clone())]).await);
        assert!(!all_synced(vec![synced(listed), synced(never)]).await);
    }

    #[test]
    fn a_shard_watches_only_the_listed_namespaces_it_owns() {
        use crate::shard::{Shard, shard_of};
        let listed: Vec<String> = (0..16).map(|i| format!("team-{i}")).collect();
        let shard = Shard::new(1, 2).unwrap();
        let watched: Vec<String> = scopes(&listed, shard)
            .into_iter()
            .map(|s| match s {
                Scope::Namespace(ns) => ns,
                Scope::All => panic!("a list of namespaces never becomes all of them"),
            })
            .collect();
        let owned: Vec<String> = listed.iter().filter(|ns| shard_of(ns, 2) == 1).cloned().collect();
        assert!(!owned.is_empty() && owned.len() < listed.len(), "{owned:?}");
        assert_eq!(watched, owned);
        assert_eq!(scopes(&listed, Shard::WHOLE).len(), listed.len());
        // No list: every namespace, the shard's filter then drops others' objects.
        assert!(matches!(scopes(&[], shard).as_slice(), [Scope::All]));
    }

    #[test]
    fn api_answers_that_mean_already_done() {
        let api_error = |code: u16, reason: &str| {
            kube::Error::Api(kube::core::Status::failure("no", reason).with_code(code).boxed())
        };
        let gone: std::result::Result<(), kube::Error> = Err(api_error(404, "NotFound"));
        assert!(matches!(gone.ignore_not_found(), Ok(None)));
        let exists: std::result::Result<(), kube::Error> = Err(api_error(409, "AlreadyExists"));
        assert!(matches!(exists.ignore_already_exists(), Ok(None)));
        let conflict: std::result::Result<(), kube::Error> = Err(api_error(409, "Conflict"));
        let err = conflict.ignore_already_exists().unwrap_err();
        assert_eq!(err.category(), "conflict");
        let forbidden: std::result::Result<(), kube::Error> = Err(api_error(403, "Forbidden"));
        assert!(forbidden.ignore_not_found().is_err());
        assert!(matches!(Ok::<u8, kube::Error>(7).ignore_not_found(), Ok(Some(7))));
    }
}
