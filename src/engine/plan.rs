//! Planning: from (validated pipeline, observed task states, now) to the actions that move a
//! run forward. The operator and the local runner both drive these functions, so behaviour
//! tested here holds in both.
//!
//! Two levels:
//! - [`plan_run`] decides which tasks of a run start, which are cancelled, which are skipped,
//!   and how the run ends. Linear in tasks + edges.
//! - [`plan_task`] decides, for one task, whether to start an attempt, wait for a retry delay,
//!   stop a running attempt, or finish.

use super::retry;
use super::validate::ValidPipeline;
use crate::api::{AttemptPhase, FailureReason, RetryPolicy, TaskPhase, TriggerRule};
use jiff::Timestamp;
use std::time::Duration;

/// What was observed of one task that has a TaskRun.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedTask {
    pub phase: TaskPhase,
    /// The TaskRun was already asked to stop.
    pub cancel_requested: bool,
}

/// Why a run is stopping before its tasks are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    Timeout,
}

/// Everything [`plan_run`] needs.
#[derive(Clone, Copy)]
pub struct RunInput<'a> {
    pub pipeline: &'a ValidPipeline,
    /// Indexed like the pipeline's tasks; `None` for tasks without a TaskRun yet.
    pub observed: &'a [Option<ObservedTask>],
    pub cancel_requested: bool,
    pub started_at: Timestamp,
    /// The run's timeout (the run's own, else the pipeline's).
    pub timeout: Option<Duration>,
    pub now: Timestamp,
    /// For tasks with `forEach`: what was observed of each instance (index = instance).
    /// Indexed like the tasks; may be shorter, or empty when no task fans out.
    pub instances: &'a [Vec<Option<ObservedTask>>],
    /// Asked, when a task's trigger rule holds, whether it runs (its `when` conditions) and
    /// with how many instances (its `forEach` items). Deterministic for a given run state:
    /// it only reads params, run fields and outputs of finished upstream tasks.
    /// [`always_run`] suits pipelines without `when` or `forEach`.
    pub prepare: &'a dyn Fn(usize) -> Prepared,
}

/// Whether a task whose trigger rule holds runs, and with how many instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    Run {
        instances: u32,
    },
    /// Its `when` conditions do not hold (or it fans out over nothing).
    Skip(String),
    /// Its conditions or items cannot be worked out (say a bad output); the task fails.
    Fail(String),
}

/// A `prepare` for pipelines without `when` or `forEach`.
pub fn always_run(_task: usize) -> Prepared {
    Prepared::Run { instances: 1 }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed { reason: &'static str, message: String },
    Cancelled { message: String },
}

/// What to do next for a run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPlan {
    /// Tasks whose TaskRun should be created now, in topological order.
    pub start: Vec<usize>,
    /// Active tasks whose TaskRun should be told to stop.
    pub cancel: Vec<usize>,
    /// Instances of fanned-out tasks to create now: (task, instance).
    pub start_instances: Vec<(usize, u32)>,
    /// Active instances of fanned-out tasks to stop.
    pub cancel_instances: Vec<(usize, u32)>,
    /// Why tasks without a TaskRun were skipped or failed by `prepare`.
    pub notes: Vec<(usize, String)>,
    /// The state of every task, including the derived ones (skipped, upstream-failed,
    /// cancelled before starting) that have no TaskRun.
    pub states: Vec<TaskPhase>,
    pub stop: Option<StopReason>,
    /// Set once every task (finally included) has reached a final state.
    pub outcome: Option<RunOutcome>,
    /// Look again after this long even if nothing changes (the run timeout).
    pub requeue_after: Option<Duration>,
}

/// What a trigger rule says about a task, given its upstream states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Run,
    Wait,
    Skip,
    UpstreamFailed,
}

fn counts_as_failed(phase: TaskPhase) -> bool {
    matches!(
        phase,
        TaskPhase::Failed | TaskPhase::UpstreamFailed | TaskPhase::Cancelled
    )
}

/// Evaluates a trigger rule over the states of a task's upstream tasks. A task with no
/// upstream tasks always runs.
///
/// Every verdict other than `Wait` is final: it holds however the unfinished upstream tasks
/// end. The planner derives the states of tasks without a TaskRun afresh on every pass, so a
/// verdict that could change later (say `Skipped` that becomes `UpstreamFailed` once a
/// running upstream task fails) would let downstream tasks start on a state that does not
/// last. So `AllSucceeded` with a skipped upstream task waits until every upstream task is
/// done (then `Skip`, or `UpstreamFailed` if one failed), where Airflow would skip at once.
pub fn evaluate(rule: TriggerRule, upstream: impl Iterator<Item = TaskPhase>) -> Verdict {
    let (mut total, mut succeeded, mut failed, mut skipped, mut done) = (0, 0, 0, 0, 0);
    for phase in upstream {
        total += 1;
        if phase.is_terminal() {
            done += 1;
        }
        match phase {
            TaskPhase::Succeeded => succeeded += 1,
            TaskPhase::Skipped => skipped += 1,
            p if counts_as_failed(p) => failed += 1,
            _ => {}
        }
    }
    if total == 0 {
        return Verdict::Run;
    }
    let all_done = done == total;
    match rule {
        TriggerRule::AllSucceeded => {
            if failed > 0 {
                Verdict::UpstreamFailed
            } else if !all_done {
                Verdict::Wait
            } else if skipped > 0 {
                Verdict::Skip
            } else {
                Verdict::Run
            }
        }
        TriggerRule::AllDone => {
            if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::AllFailed => {
            if succeeded > 0 || skipped > 0 {
                Verdict::Skip
            } else if failed == total {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::OneSucceeded => {
            if succeeded > 0 {
                Verdict::Run
            } else if !all_done {
                Verdict::Wait
            } else if skipped == total {
                Verdict::Skip
            } else {
                Verdict::UpstreamFailed
            }
        }
        TriggerRule::OneFailed => {
            if failed > 0 {
                Verdict::Run
            } else if all_done {
                Verdict::Skip
            } else {
                Verdict::Wait
            }
        }
        TriggerRule::NoneFailed => {
            if failed > 0 {
                Verdict::UpstreamFailed
            } else if all_done {
                Verdict::Run
            } else {
                Verdict::Wait
            }
        }
    }
}

/// Plans the next step of a run.
pub fn plan_run(input: &RunInput<'_>) -> RunPlan {
    let pipeline = input.pipeline;
    let n = pipeline.len();
    debug_assert_eq!(input.observed.len(), n);
    let deadline = input.timeout.and_then(|t| {
        input
            .started_at
            .checked_add(jiff::SignedDuration::try_from(t).ok()?)
            .ok()
    });
    let stop = if input.cancel_requested {
        Some(StopReason::Cancelled)
    } else if deadline.is_some_and(|d| input.now >= d) {
        Some(StopReason::Timeout)
    } else {
        None
    };

    let mut states = vec![TaskPhase::Pending; n];
    let mut acts = Acts::default();
    // Sensors (`wait` tasks) hold no slot: they have no pod, and while they wait the
    // operator only looks now and then (Airflow's reschedule mode, always on).
    let holds_slot = |task: usize| !pipeline.waits(task);
    let singles = input
        .observed
        .iter()
        .enumerate()
        .filter_map(|(t, o)| o.filter(|_| holds_slot(t)));
    let fanned = (input.instances.iter().enumerate())
        .filter(|&(t, _)| holds_slot(t))
        .flat_map(|(_, list)| list.iter().flatten().copied());
    let active = singles.chain(fanned).filter(|o| !o.phase.is_terminal()).count();

    let order = pipeline.dag.topological_order();
    // Main tasks first (the order holds them before finally tasks only by index, so filter).
    let mut main_done = true;
    for &task in order.iter().filter(|&&t| !pipeline.is_finally(t)) {
        let state = decide(input, task, &states, stop.is_some(), &mut acts);
        states[task] = state;
        if !state.is_terminal() {
            main_done = false;
        }
    }
    if main_done {
        for &task in order.iter().filter(|&&t| pipeline.is_finally(t)) {
            // Finally tasks run whatever happened, cancellation included.
            states[task] = decide(input, task, &states, false, &mut acts);
        }
    }

    let slots = pipeline
        .parallelism
        .map_or(usize::MAX, |p| p.saturating_sub(active));
    let mut left = slots;
    acts.ready.retain(|&(task, _)| {
        let fits = !holds_slot(task) || left > 0;
        if holds_slot(task) {
            left = left.saturating_sub(1);
        }
        fits
    });
    let Acts { ready, cancel, notes } = acts;
    let split = |list: Vec<(usize, Option<u32>)>| {
        let mut single = Vec::new();
        let mut instances = Vec::new();
        for (task, instance) in list {
            match instance {
                None => single.push(task),
                Some(k) => instances.push((task, k)),
            }
        }
        (single, instances)
    };
    let (start, start_instances) = split(ready);
    let (cancel, cancel_instances) = split(cancel);

    let all_done = states.iter().all(|s| s.is_terminal());
    let outcome = all_done.then(|| outcome(pipeline, &states, stop));
    let requeue_after = match (stop, deadline, &outcome) {
        (None, Some(deadline), None) => {
            let left = deadline.duration_since(input.now);
            Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
        }
        _ => None,
    };
    RunPlan {
        start,
        cancel,
        start_instances,
        cancel_instances,
        notes,
        states,
        stop,
        outcome,
        requeue_after,
    }
}

/// What a plan asks for: (task, instance) pairs to start or stop, and notes.
#[derive(Default)]
struct Acts {
    ready: Vec<(usize, Option<u32>)>,
    cancel: Vec<(usize, Option<u32>)>,
    notes: Vec<(usize, String)>,
}

/// The state of one task, recording what to start or stop in `acts`.
fn decide(
    input: &RunInput<'_>,
    task: usize,
    states: &[TaskPhase],
    stopping: bool,
    acts: &mut Acts,
) -> TaskPhase {
    let fans_out = input.pipeline.fans_out(task);
    let instances: &[Option<ObservedTask>] = input.instances.get(task).map_or(&[], Vec::as_slice);
    let started = if fans_out {
        instances.iter().any(Option::is_some)
    } else {
        input.observed[task].is_some()
    };
    if !fans_out && let Some(observed) = input.observed[task] {
        if stopping && !observed.phase.is_terminal() && !observed.cancel_requested {
            acts.cancel.push((task, None));
        }
        return observed.phase;
    }
    if !started {
        let rule = input.pipeline.rule(task);
        let upstream = input.pipeline.dag.upstream(task).iter().map(|&u| states[u]);
        // While stopping, an upstream task that was cancelled never got to finish: judge as
        // if it were still pending, so that a task held back by the stop ends `Cancelled`
        // (and stays so once its upstream task's cancellation lands) rather than
        // `UpstreamFailed`.
        let verdict = if stopping {
            evaluate(
                rule,
                upstream.map(|p| {
                    if p == TaskPhase::Cancelled {
                        TaskPhase::Pending
                    } else {
                        p
                    }
                }),
            )
        } else {
            evaluate(rule, upstream)
        };
        match verdict {
            Verdict::Skip => return TaskPhase::Skipped,
            Verdict::UpstreamFailed => return TaskPhase::UpstreamFailed,
            _ if stopping => return TaskPhase::Cancelled,
            Verdict::Wait => return TaskPhase::Pending,
            Verdict::Run => {}
        }
    }
    let (width, failure) = match (input.prepare)(task) {
        Prepared::Run { instances } => (instances, None),
        // Already started: keep following the instances that exist, start no more, and
        // fail once they are done.
        Prepared::Fail(note) if started => (instances.len() as u32, Some(note)),
        _ if started => (instances.len() as u32, None),
        Prepared::Skip(note) => {
            acts.notes.push((task, note));
            return TaskPhase::Skipped;
        }
        Prepared::Fail(note) => {
            acts.notes.push((task, note));
            return TaskPhase::Failed;
        }
    };
    if !fans_out {
        acts.ready.push((task, None));
        return TaskPhase::Pending;
    }
    let Some(note) = failure else {
        return fan_out_state(task, width, instances, stopping, started, true, acts);
    };
    acts.notes.push((task, note));
    match fan_out_state(task, width, instances, stopping, started, false, acts) {
        TaskPhase::Running => TaskPhase::Running,
        _ => TaskPhase::Failed,
    }
}

/// The state of a fanned-out task from its instances; every instance runs (no fail-fast),
/// and the task fails once all are done if any failed.
/// `open` is false when no more instances may start (the task cannot be resolved any more).
fn fan_out_state(
    task: usize,
    width: u32,
    instances: &[Option<ObservedTask>],
    stopping: bool,
    started: bool,
    open: bool,
    acts: &mut Acts,
) -> TaskPhase {
    let (mut active, mut failed, mut cancelled, mut unstarted) = (false, false, false, false);
    let closed = stopping || !open;
    for k in 0..width {
        match instances.get(k as usize).copied().flatten() {
            None => {
                unstarted = true;
                if !closed {
                    acts.ready.push((task, Some(k)));
                }
            }
            Some(o) if !o.phase.is_terminal() => {
                active = true;
                if stopping && !o.cancel_requested {
                    acts.cancel.push((task, Some(k)));
                }
            }
            Some(o) => match o.phase {
                TaskPhase::Failed | TaskPhase::UpstreamFailed => failed = true,
                TaskPhase::Cancelled => cancelled = true,
                _ => {}
            },
        }
    }
    if active || (unstarted && !closed) {
        if started {
            TaskPhase::Running
        } else {
            TaskPhase::Pending
        }
    } else if failed {
        TaskPhase::Failed
    } else if cancelled || unstarted {
        TaskPhase::Cancelled
    } else {
        TaskPhase::Succeeded
    }
}

fn outcome(pipeline: &ValidPipeline, states: &[TaskPhase], stop: Option<StopReason>) -> RunOutcome {
    let failed_names = |filter: &dyn Fn(usize) -> bool| -> Vec<String> {
        (0..states.len())
            .filter(|&t| states[t] == TaskPhase::Failed && filter(t))
            .map(|t| pipeline.name(t).to_string())
            .collect()
    };
    let finally_failed = failed_names(&|t| pipeline.is_finally(t));
    match stop {
        Some(StopReason::Cancelled) => {
            return RunOutcome::Cancelled {
                message: "the run was cancelled".into(),
            };
        }
        // The deadline only decides the outcome if it cut something short: a run whose tasks
        // had all finished when it passed (observed late, or only finally tasks were still
        // going) ends on its own merits, however late the controller looks.
        Some(StopReason::Timeout) if states.contains(&TaskPhase::Cancelled) => {
            return RunOutcome::Failed {
                reason: crate::api::reasons::RUN_TIMEOUT,
                message: "the run took longer than its timeout; remaining tasks were cancelled".into(),
            };
        }
        _ => {}
    }
    // As in Airflow, a run fails when one of its final (leaf) tasks did not succeed: a failure
    // that a downstream task handled (say an alert with triggerRule OneFailed) does not fail it.
    // Main tasks never have finally tasks downstream, so a leaf has no downstream task at all.
    let is_failed_leaf = |t: usize| counts_as_failed(states[t]) && pipeline.dag.downstream(t).is_empty();
    if (0..pipeline.main_count).any(is_failed_leaf) {
        let mut names = failed_names(&|t| !pipeline.is_finally(t));
        if names.is_empty() {
            // No task failed by itself (a TaskRun cancelled by hand, say): name the leaves.
            names = (0..pipeline.main_count)
                .filter(|&t| is_failed_leaf(t))
                .map(|t| format!("{} ({})", pipeline.name(t), states[t].as_str()))
                .collect();
        }
        return RunOutcome::Failed {
            reason: crate::api::reasons::TASK_FAILED,
            message: list_message("failed", &names),
        };
    }
    if !finally_failed.is_empty() {
        return RunOutcome::Failed {
            reason: "FinallyFailed",
            message: list_message("finally task failed", &finally_failed),
        };
    }
    RunOutcome::Succeeded
}

fn list_message(what: &str, names: &[String]) -> String {
    const SHOWN: usize = 5;
    match names.len() {
        0 => format!("a task {what} upstream of a final task"),
        n if n <= SHOWN => format!("{what}: {}", names.join(", ")),
        n => format!("{what}: {} and {} more", names[..SHOWN].join(", "), n - SHOWN),
    }
}

/// What was observed of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObservedAttempt {
    pub number: u32,
    pub phase: AttemptPhase,
    pub reason: Option<FailureReason>,
    pub exit_code: Option<i32>,
    pub finished_at: Option<Timestamp>,
}

/// Everything [`plan_task`] needs.
#[derive(Clone, Copy, Debug)]
pub struct TaskInput<'a> {
    pub retries: Option<&'a RetryPolicy>,
    /// Attempts so far, oldest first.
    pub attempts: &'a [ObservedAttempt],
    pub cancel_requested: bool,
    pub now: Timestamp,
}

/// The one thing to do for a task right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptAction {
    None,
    /// Create the Job of this attempt number.
    Create(u32),
    /// Stop (delete) the Job of this running attempt and record it as cancelled.
    Stop(u32),
}

/// What to do next for a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskPlan {
    pub phase: TaskPhase,
    pub action: AttemptAction,
    /// When the next attempt starts, while waiting for a retry delay.
    pub next_retry_at: Option<Timestamp>,
    /// The last attempt failed and another one is (or will be) made.
    pub retrying: bool,
    /// Set when the last attempt failed with a disruption reason.
    pub disruption: Option<Disruption>,
}

/// How a task's last attempt, ended by a disruption, counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disruption {
    /// Disruptions so far, this one included.
    pub count: u32,
    /// How many disruptions the task retries without spending `retries.limit`.
    pub budget: u32,
}

impl Disruption {
    /// Within the budget: retried after [`retry::DISRUPTION_DELAY`] without spending the
    /// limit. Otherwise it counted as an ordinary failure.
    pub fn spared(&self) -> bool {
        self.count <= self.budget
    }
}

/// Plans the next step of one task.
pub fn plan_task(input: &TaskInput<'_>) -> TaskPlan {
    let plan = |phase, action| TaskPlan {
        phase,
        action,
        next_retry_at: None,
        retrying: false,
        disruption: None,
    };
    let Some(last) = input.attempts.last() else {
        return if input.cancel_requested {
            plan(TaskPhase::Cancelled, AttemptAction::None)
        } else {
            plan(TaskPhase::Running, AttemptAction::Create(1))
        };
    };
    match last.phase {
        AttemptPhase::Running if input.cancel_requested => {
            plan(TaskPhase::Cancelled, AttemptAction::Stop(last.number))
        }
        AttemptPhase::Running => plan(TaskPhase::Running, AttemptAction::None),
        AttemptPhase::Succeeded => plan(TaskPhase::Succeeded, AttemptAction::None),
        AttemptPhase::Failed if input.cancel_requested => plan(TaskPhase::Cancelled, AttemptAction::None),
        AttemptPhase::Failed => plan_retry(input, last),
    }
}

/// After a failed attempt: wait for the next one, start it, or fail. A disruption within
/// the budget is retried after a short fixed delay and spends nothing; any other failure
/// spends one of `retries.limit`, and its delay grows with the failures so far.
fn plan_retry(input: &TaskInput<'_>, last: &ObservedAttempt) -> TaskPlan {
    let reason = last.reason.unwrap_or(FailureReason::Unknown);
    let budget = retry::disruption_budget(input.retries);
    let failed = input.attempts.iter().filter(|a| a.phase == AttemptPhase::Failed);
    let tally = retry::tally(failed.map(|a| a.reason), budget);
    let disruption = retry::is_disruption(reason).then_some(Disruption {
        count: tally.disruptions,
        budget,
    });
    let plan = |phase, action, next_retry_at, retrying| TaskPlan {
        phase,
        action,
        next_retry_at,
        retrying,
        disruption,
    };
    let wait = if tally.last_spared {
        retry::DISRUPTION_DELAY
    } else {
        let Some(policy) = input.retries else {
            return plan(TaskPhase::Failed, AttemptAction::None, None, false);
        };
        let retries_used = tally.failures.saturating_sub(1);
        if retries_used >= policy.limit || !retry::is_retryable(policy, reason, last.exit_code) {
            return plan(TaskPhase::Failed, AttemptAction::None, None, false);
        }
        retry::delay(policy, tally.failures)
    };
    let next = AttemptAction::Create(last.number + 1);
    // Without a finish time there is nothing to count the delay from; waiting from `now`
    // would wait forever (every pass moves the target), so retry at once.
    let Some(finished) = last.finished_at else {
        return plan(TaskPhase::Running, next, None, true);
    };
    let at = jiff::SignedDuration::try_from(wait)
        .ok()
        .and_then(|w| finished.checked_add(w).ok())
        .unwrap_or(Timestamp::MAX);
    if input.now >= at {
        plan(TaskPhase::Running, next, None, true)
    } else {
        plan(TaskPhase::Retrying, AttemptAction::None, Some(at), true)
    }
}
