//! The operator's Prometheus metrics. Every label has a small, fixed set of values
//! (controller kind, error category, outcome): object names never become labels, so the
//! number of series does not grow with the number of runs.

use crate::api::{FailureReason, RunPhase, TaskPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which controller a reconcile belongs to.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ControllerKind {
    pipeline,
    pipelinerun,
    taskrun,
    pool,
    asset,
    notifier,
}

const CONTROLLERS: [ControllerKind; 6] = [
    ControllerKind::pipeline,
    ControllerKind::pipelinerun,
    ControllerKind::taskrun,
    ControllerKind::pool,
    ControllerKind::asset,
    ControllerKind::notifier,
];

/// How a run or a task ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Outcome {
    succeeded,
    failed,
    cancelled,
}

/// How one try to deliver a notification ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    sent,
    /// A failure worth trying again (connection, timeout, 5xx, 429).
    transient_error,
    /// A failure trying again cannot mend (a 4xx, a bad address, a forbidden Secret).
    permanent_error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: DeliveryOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: ControllerKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: ControllerKind,
    category: &'static str,
}

/// Which shard a process is, of how many.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabels {
    shard: u32,
    shards: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// A failure reason: one of the few `FailureReason` values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Counts the active runs at scrape time (from the leader's watch cache).
type Source = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What the pools of one watch cache add up to. Pools are summed, not labelled by name (the
/// number of series stays fixed); each pool's own numbers are in its status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolTotals {
    pub pools: i64,
    pub slots: i64,
    pub occupied: i64,
    pub queued: i64,
}

impl std::iter::Sum for PoolTotals {
    fn sum<I: Iterator<Item = PoolTotals>>(iter: I) -> PoolTotals {
        iter.fold(PoolTotals::default(), |a, b| PoolTotals {
            pools: a.pools + b.pools,
            slots: a.slots + b.slots,
            occupied: a.occupied + b.occupied,
            queued: a.queued + b.queued,
        })
    }
}

type PoolSource = Arc<dyn Fn() -> PoolTotals + Send + Sync>;

/// All metric families, registered once in [`Metrics::new`].
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Family<ControllerLabels, Histogram>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    runs_started: Counter,
    runs_finished: Family<OutcomeLabels, Counter>,
    tasks_started: Counter,
    tasks_retried: Counter,
    tasks_finished: Family<OutcomeLabels, Counter>,
    attempts_disrupted: Family<ReasonLabels, Counter>,
    task_ready_to_job: Histogram,
    active_runs: Gauge,
    active_runs_sources: Mutex<Vec<Source>>,
    queue_depth: Family<ControllerLabels, Gauge>,
    queues: Mutex<Vec<(ControllerKind, Queue)>>,
    leader: Gauge,
    shard_info: Family<ShardLabels, Gauge>,
    pools: Gauge,
    pool_slots: Gauge,
    pool_slots_occupied: Gauge,
    pool_tasks_queued: Gauge,
    pool_admissions: Counter,
    pool_sources: Mutex<Vec<PoolSource>>,
    notifications: Family<DeliveryLabels, Counter>,
    deadlines_missed: Counter,
    task_deadlines_missed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weir");
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            reconcile_duration.clone(),
        );
        for controller in CONTROLLERS {
            // Present from the start, so rates work from the first scrape.
            let _ = reconcile_duration.get_or_create(&ControllerLabels { controller });
        }
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by controller and error category",
            reconcile_errors.clone(),
        );
        let runs_started = Counter::default();
        registry.register("runs_started", "PipelineRuns started", runs_started.clone());
        let runs_finished = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "runs_finished",
            "PipelineRuns finished, by outcome",
            runs_finished.clone(),
        );
        let tasks_started = Counter::default();
        registry.register(
            "tasks_started",
            "Tasks whose first attempt's Job was created",
            tasks_started.clone(),
        );
        let tasks_retried = Counter::default();
        registry.register(
            "tasks_retried",
            "Failed attempts that will be retried",
            tasks_retried.clone(),
        );
        let tasks_finished = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "tasks_finished",
            "Tasks finished, by outcome (failed: after their last attempt)",
            tasks_finished.clone(),
        );
        let attempts_disrupted = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "attempts_disrupted",
            "Attempts ended from outside their task (a disruption), by reason",
            attempts_disrupted.clone(),
        );
        let task_ready_to_job = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0]);
        registry.register(
            "task_ready_to_job_seconds",
            "Time from a task becoming ready (its TaskRun created) to its first Job being created",
            task_ready_to_job.clone(),
        );
        let active_runs = Gauge::default();
        registry.register(
            "active_runs",
            "PipelineRuns started and not finished (reported by the leader)",
            active_runs.clone(),
        );
        let queue_depth = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Objects waiting for a reconcile to start, by controller",
            queue_depth.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process runs the controllers (holds the lease, or leader election is off)",
            leader.clone(),
        );
        let shard_info = Family::<ShardLabels, Gauge>::default();
        registry.register(
            "shard_info",
            "Always 1: which shard this process runs (shard) of how many (shards); 0 of 1 without sharding",
            shard_info.clone(),
        );
        shard_info
            .get_or_create(&ShardLabels { shard: 0, shards: 1 })
            .set(1);
        let pools = Gauge::default();
        registry.register("pools", "Pools (reported by the leader)", pools.clone());
        let pool_slots = Gauge::default();
        registry.register("pool_slots", "Slots of every pool, summed", pool_slots.clone());
        let pool_slots_occupied = Gauge::default();
        registry.register(
            "pool_slots_occupied",
            "Slots held by running attempts in every pool, summed",
            pool_slots_occupied.clone(),
        );
        let pool_tasks_queued = Gauge::default();
        registry.register(
            "pool_tasks_queued",
            "Tasks waiting for slots of a pool, in every pool",
            pool_tasks_queued.clone(),
        );
        let pool_admissions = Counter::default();
        registry.register(
            "pool_admissions",
            "Attempts that took slots of a pool",
            pool_admissions.clone(),
        );
        let notifications = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "notification_deliveries",
            "Tries to deliver a notification, by outcome",
            notifications.clone(),
        );
        for outcome in [
            DeliveryOutcome::sent,
            DeliveryOutcome::transient_error,
            DeliveryOutcome::permanent_error,
        ] {
            let _ = notifications.get_or_create(&DeliveryLabels { outcome });
        }
        let deadlines_missed = Counter::default();
        registry.register(
            "deadlines_missed",
            "PipelineRuns not done by their deadline (counted when it passed)",
            deadlines_missed.clone(),
        );
        let task_deadlines_missed = Counter::default();
        registry.register(
            "task_deadlines_missed",
            "Tasks not done by their own deadline (counted when it passed)",
            task_deadlines_missed.clone(),
        );
        Metrics {
            deadlines_missed,
            task_deadlines_missed,
            notifications,
            registry,
            pools,
            pool_slots,
            pool_slots_occupied,
            pool_tasks_queued,
            pool_admissions,
            pool_sources: Mutex::default(),
            reconcile_duration,
            reconcile_errors,
            runs_started,
            runs_finished,
            tasks_started,
            tasks_retried,
            tasks_finished,
            attempts_disrupted,
            task_ready_to_job,
            active_runs,
            active_runs_sources: Mutex::default(),
            queue_depth,
            queues: Mutex::default(),
            leader,
            shard_info,
        }
    }

    /// Starts timing a reconcile; the duration is recorded when the guard is dropped (also
    /// when the reconcile is cancelled half-way).
    pub fn reconcile_timer(&self, controller: ControllerKind) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self
                .reconcile_duration
                .get_or_create_owned(&ControllerLabels { controller }),
            start: Instant::now(),
        }
    }

    pub fn deadline_missed(&self) {
        self.deadlines_missed.inc();
    }

    /// Counts a task's deadline that passed while the task was not done.
    pub fn task_deadline_missed(&self) {
        self.task_deadlines_missed.inc();
    }

    /// Counts one try to deliver a notification.
    pub fn notification_tried(&self, outcome: DeliveryOutcome) {
        self.notifications
            .get_or_create(&DeliveryLabels { outcome })
            .inc();
    }

    pub fn reconcile_error(&self, controller: ControllerKind, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { controller, category })
            .inc();
    }

    pub fn run_started(&self) {
        self.runs_started.inc();
    }

    /// Counts a run that reached `phase` (only final phases count).
    pub fn run_finished(&self, phase: RunPhase) {
        let outcome = match phase {
            RunPhase::Succeeded => Outcome::succeeded,
            RunPhase::Failed => Outcome::failed,
            RunPhase::Cancelled => Outcome::cancelled,
            _ => return,
        };
        self.runs_finished.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts the Job of an attempt that was just created. The first attempt starts the
    /// task: how long it waited since its TaskRun was created (the moment the run found it
    /// ready) is recorded too.
    pub fn job_created(&self, attempt: u32, task_ready_at: Option<&Time>) {
        if attempt != 1 {
            return;
        }
        self.tasks_started.inc();
        if let Some(ready) = task_ready_at {
            let waited = jiff::Timestamp::now().duration_since(ready.0);
            self.task_ready_to_job
                .observe(Duration::try_from(waited).unwrap_or_default().as_secs_f64());
        }
    }

    /// Counts a failed attempt that will be retried.
    pub fn task_retried(&self) {
        self.tasks_retried.inc();
    }

    /// Counts a task whose phase just changed to `phase`, if that is the task's end.
    pub fn task_phase_changed(&self, phase: Option<TaskPhase>) {
        let outcome = match phase {
            Some(TaskPhase::Succeeded) => Outcome::succeeded,
            Some(TaskPhase::Failed | TaskPhase::UpstreamFailed) => Outcome::failed,
            Some(TaskPhase::Cancelled) => Outcome::cancelled,
            _ => return,
        };
        self.tasks_finished
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts an attempt ended by a disruption (its Job deleted, its pod evicted, ...).
    pub fn attempt_disrupted(&self, reason: FailureReason) {
        self.attempts_disrupted
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Says which shard this process runs (`weir_shard_info`); shard 0 of 1 until then.
    pub fn set_shard(&self, shard: u32, shards: u32) {
        self.shard_info.clear();
        self.shard_info
            .get_or_create(&ShardLabels { shard, shards })
            .set(1);
    }

    /// Adds a way to count active runs (one per watch cache of PipelineRuns).
    pub fn add_active_runs_source(&self, source: impl Fn() -> i64 + Send + Sync + 'static) {
        lock(&self.active_runs_sources).push(Arc::new(source));
    }

    /// Adds a way to add up the pools (one per watch cache of Pools).
    pub fn add_pools_source(&self, source: impl Fn() -> PoolTotals + Send + Sync + 'static) {
        lock(&self.pool_sources).push(Arc::new(source));
    }

    /// Counts an attempt that took slots of a pool.
    pub fn pool_admitted(&self) {
        self.pool_admissions.inc();
    }

    /// The queue of objects waiting for a reconcile of `controller`. Each watched namespace
    /// has its own; the gauge shows their sum.
    pub fn queue(&self, controller: ControllerKind) -> Queue {
        let queue = Queue::default();
        lock(&self.queues).push((controller, queue.clone()));
        queue
    }

    /// Forgets the caches and queues of controllers that stopped (lost the lease, shut down).
    pub fn controllers_stopped(&self) {
        lock(&self.active_runs_sources).clear();
        lock(&self.pool_sources).clear();
        lock(&self.queues).clear();
    }

    /// The metrics in Prometheus' text format (OpenMetrics).
    pub fn encode(&self) -> String {
        let sources: Vec<Source> = lock(&self.active_runs_sources).clone();
        self.active_runs.set(sources.iter().map(|count| count()).sum());
        let pool_sources: Vec<PoolSource> = lock(&self.pool_sources).clone();
        let totals: PoolTotals = pool_sources.iter().map(|add_up| add_up()).sum();
        self.pools.set(totals.pools);
        self.pool_slots.set(totals.slots);
        self.pool_slots_occupied.set(totals.occupied);
        self.pool_tasks_queued.set(totals.queued);
        for kind in CONTROLLERS {
            let depth: usize = lock(&self.queues)
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, q)| q.len())
                .sum();
            self.queue_depth
                .get_or_create(&ControllerLabels { controller: kind })
                .set(depth as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Records a reconcile's duration when dropped.
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Objects (namespace, name) that something changed for and whose reconcile has not started
/// yet. Watch events add to it, the start of a reconcile takes the object out, so its size
/// is what a work queue's depth means elsewhere (delayed requeues count once they start).
#[derive(Clone, Default)]
pub struct Queue {
    waiting: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Queue {
    pub fn add(&self, namespace: Option<&str>, name: &str) {
        lock(&self.waiting).insert((namespace.unwrap_or_default().to_string(), name.to_string()));
    }

    pub fn remove(&self, namespace: Option<&str>, name: &str) {
        lock(&self.waiting).remove(&(namespace.unwrap_or_default().to_string(), name.to_string()));
    }

    pub fn len(&self) -> usize {
        lock(&self.waiting).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A poisoned lock only means another thread panicked while counting: the data is still
/// usable for metrics.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_bounded_labels() {
        let m = Metrics::new();
        m.run_started();
        m.run_finished(RunPhase::Succeeded);
        m.run_finished(RunPhase::Running);
        let created = Time(jiff::Timestamp::now() - jiff::SignedDuration::from_millis(300));
        m.job_created(1, Some(&created));
        m.job_created(2, Some(&created));
        m.task_retried();
        m.task_phase_changed(Some(TaskPhase::Retrying));
        m.task_phase_changed(Some(TaskPhase::Failed));
        m.task_phase_changed(Some(TaskPhase::Running));
        m.attempt_disrupted(FailureReason::Lost);
        m.reconcile_error(ControllerKind::taskrun, "conflict");
        drop(m.reconcile_timer(ControllerKind::pipelinerun));
        m.add_active_runs_source(|| 2);
        m.add_active_runs_source(|| 1);
        let q = m.queue(ControllerKind::taskrun);
        q.add(Some("ns"), "a");
        q.add(Some("ns"), "a");
        q.add(Some("ns"), "b");
        q.remove(Some("ns"), "b");
        let text = m.encode();
        for line in [
            "weir_runs_started_total 1",
            "weir_runs_finished_total{outcome=\"succeeded\"} 1",
            "weir_tasks_started_total 1",
            "weir_tasks_retried_total 1",
            "weir_tasks_finished_total{outcome=\"failed\"} 1",
            "weir_attempts_disrupted_total{reason=\"Lost\"} 1",
            "weir_task_ready_to_job_seconds_count 1",
            "weir_reconcile_errors_total{controller=\"taskrun\",category=\"conflict\"} 1",
            "weir_reconcile_duration_seconds_count{controller=\"pipelinerun\"} 1",
            "weir_active_runs 3",
            "weir_queue_depth{controller=\"taskrun\"} 1",
            "weir_queue_depth{controller=\"pipeline\"} 0",
            "weir_leader 0",
            "weir_shard_info{shard=\"0\",shards=\"1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        m.set_shard(1, 2);
        let shards: Vec<String> = m
            .encode()
            .lines()
            .filter(|l| l.starts_with("weir_shard_info"))
            .map(String::from)
            .collect();
        assert_eq!(shards, ["weir_shard_info{shard=\"1\",shards=\"2\"} 1"]);
        m.controllers_stopped();
        assert!(m.encode().lines().any(|l| l == "weir_active_runs 0"));
    }
}
