//! Property tests: random pipelines run to the end by a simulated controller that drives
//! `step_run` (the run step the operator and `weir run` both take) and `plan_task` the way
//! the operator does (TaskRuns created Pending, attempts
//! that finish one at a time in random order, some of them ended by disruptions, a clock that jumps to retry times, a cancel or
//! a run timeout now and then), checking the engine's promises at every step. And random
//! graphs with a cycle added: validation always finds a real one.

use super::support::t0;
use crate::api::{AttemptPhase, FailureReason, PipelineSpec, RetryOn, RetryPolicy, TaskPhase, TriggerRule};
use crate::engine::fixture::pipeline;
use crate::engine::resolve::RunContext;
use crate::engine::{
    AttemptAction, Child, Disruption, ObservedAttempt, ObservedTask, RunOutcome, RunPlan, StepInput,
    StopReason, TaskInput, ValidPipeline, plan_task, step_run, validate,
};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::{collection::vec, option, sample::select};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

#[derive(Clone, Debug)]
struct RetryGen {
    limit: u32,
    delay_secs: u64,
    factor: u32,
    /// `maxDelay` is `delay` plus this (validation wants it at least `delay`).
    cap_extra_secs: Option<u64>,
    /// `retryOn.exceptExitCodes: [2]`.
    except_code_2: bool,
    /// `disruptions`; `None` leaves the default budget.
    disruptions: Option<u32>,
}

#[derive(Clone, Debug)]
struct TaskGen {
    /// Taken modulo the task's index: each task depends on earlier ones only.
    deps: Vec<usize>,
    rule: TriggerRule,
    retries: Option<RetryGen>,
    /// How many attempts fail before one succeeds.
    failures: u32,
    reason: FailureReason,
    exit_code: i32,
    /// Failure `k` (from 0) is a disruption when bit `k % 8` is set...
    disrupted: u8,
    /// ...with this reason.
    disruption: FailureReason,
}

#[derive(Clone, Debug)]
struct RunGen {
    main: Vec<TaskGen>,
    finally: Vec<TaskGen>,
    parallelism: Option<u32>,
    timeout_secs: Option<u64>,
    cancel_at_step: Option<u32>,
    /// Drives the listing order of tasks and every choice the simulated world makes.
    seed: u64,
}

fn rules() -> impl Strategy<Value = TriggerRule> {
    use TriggerRule::*;
    prop_oneof![
        4 => Just(AllSucceeded),
        1 => Just(AllDone),
        1 => Just(AllFailed),
        1 => Just(OneSucceeded),
        1 => Just(OneFailed),
        1 => Just(NoneFailed),
    ]
}

fn retry_gen() -> impl Strategy<Value = RetryGen> {
    (
        0u32..4,
        0u64..20,
        1u32..4,
        option::of(0u64..40),
        any::<bool>(),
        option::of(0u32..4),
    )
        .prop_map(
            |(limit, delay_secs, factor, cap_extra_secs, except_code_2, disruptions)| RetryGen {
                limit,
                delay_secs,
                factor,
                cap_extra_secs,
                except_code_2,
                disruptions,
            },
        )
}

fn task_gen() -> impl Strategy<Value = TaskGen> {
    use FailureReason::*;
    (
        vec(any::<usize>(), 0..4),
        rules(),
        option::weighted(0.6, retry_gen()),
        prop_oneof![3 => Just(0u32), 2 => 1u32..8],
        select(vec![Error, Error, OOMKilled, DeadlineExceeded, Unknown]),
        select(vec![1, 2]),
        prop_oneof![2 => Just(0u8), 1 => any::<u8>()],
        select(vec![Lost, Evicted, PodDeleted, NodeLost, Preempted]),
    )
        .prop_map(
            |(deps, rule, retries, failures, reason, exit_code, disrupted, disruption)| TaskGen {
                deps,
                rule,
                retries,
                failures,
                reason,
                exit_code,
                disrupted,
                disruption,
            },
        )
}

fn run_gen() -> impl Strategy<Value = RunGen> {
    (
        vec(task_gen(), 1..14),
        vec(task_gen(), 0..4),
        option::of(1u32..5),
        option::weighted(0.3, 10u64..400),
        option::weighted(0.2, 0u32..30),
        any::<u64>(),
    )
        .prop_map(
            |(main, finally, parallelism, timeout_secs, cancel_at_step, seed)| RunGen {
                main,
                finally,
                parallelism,
                timeout_secs,
                cancel_at_step,
                seed,
            },
        )
}

/// splitmix64: the simulated world's choices, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn deps_of(rg: &TaskGen, index: usize) -> Vec<usize> {
    if index == 0 {
        return vec![];
    }
    let mut deps: Vec<usize> = rg.deps.iter().map(|d| d % index).collect();
    deps.sort_unstable();
    deps.dedup();
    deps
}

fn policy_of(r: &RetryGen) -> RetryPolicy {
    RetryPolicy {
        limit: r.limit,
        delay: Some(format!("{}s", r.delay_secs)),
        backoff_factor: Some(f64::from(r.factor)),
        max_delay: r.cap_extra_secs.map(|extra| format!("{}s", r.delay_secs + extra)),
        retry_on: r.except_code_2.then(|| RetryOn {
            except_exit_codes: vec![2],
            ..Default::default()
        }),
        disruptions: r.disruptions,
    }
}

/// The wait before retry `retry`, worked out independently of `retry::delay`.
fn expected_delay(r: &RetryGen, retry: u32) -> SignedDuration {
    let mut ms = r.delay_secs * 1000 * u64::from(r.factor).pow(retry - 1);
    if let Some(extra) = r.cap_extra_secs {
        ms = ms.min((r.delay_secs + extra) * 1000);
    }
    SignedDuration::from_millis(ms as i64)
}

/// The reasons that end an attempt from outside the task, listed independently of
/// `retry::is_disruption`.
fn is_disruption(reason: Option<FailureReason>) -> bool {
    use FailureReason::*;
    matches!(reason, Some(Lost | Evicted | PodDeleted | NodeLost | Preempted))
}

/// How long after a disruption the next attempt starts.
const DISRUPTION_DELAY: SignedDuration = SignedDuration::from_secs(5);

fn is_retryable(r: &RetryGen, attempt: &ObservedAttempt) -> bool {
    let reason = attempt.reason.unwrap_or(FailureReason::Unknown);
    reason != FailureReason::Cancelled
        && !(r.except_code_2 && reason == FailureReason::Error && attempt.exit_code == Some(2))
}

fn names(main: usize, finally: usize) -> (Vec<String>, Vec<String>) {
    (
        (0..main).map(|i| format!("t{i}")).collect(),
        (0..finally).map(|i| format!("f{i}")).collect(),
    )
}

/// The pipeline of a generated run, main tasks listed in a shuffled order (the engine must
/// not rely on tasks being listed after their upstream tasks).
fn build(rg: &RunGen, rng: &mut Rng) -> PipelineSpec {
    let (main_names, finally_names) = names(rg.main.len(), rg.finally.len());
    let mut listing: Vec<usize> = (0..rg.main.len()).collect();
    for i in (1..listing.len()).rev() {
        listing.swap(i, rng.below(i + 1));
    }
    let mut b = pipeline();
    for &i in &listing {
        b = b
            .task(&main_names[i])
            .rule(rg.main[i].rule)
            .after(deps_of(&rg.main[i], i).iter().map(|&d| main_names[d].as_str()));
    }
    for (i, t) in rg.finally.iter().enumerate() {
        b = b
            .finally(&finally_names[i])
            .rule(t.rule)
            .after(deps_of(t, i).iter().map(|&d| finally_names[d].as_str()));
    }
    if let Some(p) = rg.parallelism {
        b = b.parallelism(p);
    }
    if let Some(t) = rg.timeout_secs {
        b = b.run_timeout(&format!("{t}s"));
    }
    let mut spec = b.build();
    for task in spec.tasks.iter_mut() {
        let i: usize = task.name[1..].parse().unwrap();
        task.retries = rg.main[i].retries.as_ref().map(policy_of);
    }
    for (task, g) in spec.finally.iter_mut().zip(&rg.finally) {
        task.retries = g.retries.as_ref().map(policy_of);
    }
    spec
}

fn failed(p: TaskPhase) -> bool {
    matches!(
        p,
        TaskPhase::Failed | TaskPhase::UpstreamFailed | TaskPhase::Cancelled
    )
}

/// Whether a task may run given these upstream states, straight from the rule's meaning.
fn rule_holds(rule: TriggerRule, upstream: &[TaskPhase]) -> bool {
    use TriggerRule::*;
    let all = |f: &dyn Fn(TaskPhase) -> bool| upstream.iter().all(|&p| f(p));
    let any = |f: &dyn Fn(TaskPhase) -> bool| upstream.iter().any(|&p| f(p));
    match rule {
        AllSucceeded => all(&|p| p == TaskPhase::Succeeded),
        AllDone => all(&|p| p.is_terminal()),
        AllFailed => all(&failed),
        OneSucceeded => upstream.is_empty() || any(&|p| p == TaskPhase::Succeeded),
        OneFailed => upstream.is_empty() || any(&failed),
        NoneFailed => all(&|p| p.is_terminal() && !failed(p)),
    }
}

/// A controller and a cluster, simulated.
struct Sim<'a> {
    rg: &'a RunGen,
    pipeline: ValidPipeline,
    /// The generated task behind each pipeline index.
    task_gens: Vec<&'a TaskGen>,
    policies: Vec<Option<RetryPolicy>>,
    observed: Vec<Option<ObservedTask>>,
    attempts: Vec<Vec<ObservedAttempt>>,
    cancel_requested: bool,
    deadline: Option<Timestamp>,
    now: Timestamp,
    rng: Rng,
    /// States of the previous plan: a final state never changes...
    previous: Option<Vec<TaskPhase>>,
    /// ...except that of a task held back by a stop, which may still move between the
    /// states of tasks that never ran when a task asked to stop finishes anyway (the race
    /// between a cancel and a Job's end; no state can tell these two apart afterwards).
    /// States settled before the stop never change.
    settled_before_stop: Vec<bool>,
    /// TaskRuns the TaskRun controller did not get to on its last pass (it lags, as a real
    /// one does; never twice in a row, so every run still ends).
    lagged: Vec<bool>,
    asked_to_stop: HashSet<usize>,
}

impl<'a> Sim<'a> {
    fn new(rg: &'a RunGen) -> Sim<'a> {
        let mut rng = Rng(rg.seed);
        let spec = build(rg, &mut rng);
        let pipeline = validate(&spec).unwrap_or_else(|e| panic!("generated pipeline is invalid: {e}"));
        let task_gens: Vec<&TaskGen> = (0..pipeline.len())
            .map(|i| {
                let name = pipeline.name(i);
                let k: usize = name[1..].parse().unwrap();
                if pipeline.is_finally(i) {
                    &rg.finally[k]
                } else {
                    &rg.main[k]
                }
            })
            .collect();
        let policies = (0..pipeline.len())
            .map(|i| pipeline.task(i).retries.clone())
            .collect();
        let n = pipeline.len();
        let deadline = rg
            .timeout_secs
            .map(|t| t0() + SignedDuration::from_secs(t as i64));
        Sim {
            rg,
            pipeline,
            task_gens,
            policies,
            observed: vec![None; n],
            attempts: vec![vec![]; n],
            cancel_requested: false,
            deadline,
            now: t0(),
            rng,
            previous: None,
            lagged: vec![false; n],
            settled_before_stop: vec![false; n],
            asked_to_stop: HashSet::new(),
        }
    }

    fn n(&self) -> usize {
        self.pipeline.len()
    }

    fn limit(&self, t: usize) -> u32 {
        self.task_gens[t].retries.as_ref().map_or(0, |r| r.limit)
    }

    /// Disruptions retried without spending the limit: 3 unless the task says otherwise,
    /// also without `retries`.
    fn budget(&self, t: usize) -> u32 {
        self.task_gens[t]
            .retries
            .as_ref()
            .and_then(|r| r.disruptions)
            .unwrap_or(3)
    }

    /// The most attempts a task may make.
    fn most_attempts(&self, t: usize) -> u32 {
        self.limit(t) + 1 + self.budget(t)
    }

    /// When the attempt after the last (failed) one of task `t` is due, or `None` if the
    /// task has failed for good; and the disruptions so far if the last was one. Worked
    /// out from the rules, independently of the engine: the first `budget` disruptions are
    /// retried after a fixed delay; every other failure spends one of `limit`, with the
    /// backoff of the failures so far.
    fn next_due(&self, t: usize) -> (Option<Timestamp>, Option<u32>) {
        let attempts = &self.attempts[t];
        let last = attempts.last().unwrap();
        let (mut disruptions, mut failures, mut spared) = (0, 0, false);
        for a in attempts.iter().filter(|a| a.phase == AttemptPhase::Failed) {
            let disrupted = is_disruption(a.reason);
            disruptions += u32::from(disrupted);
            spared = disrupted && disruptions <= self.budget(t);
            failures += u32::from(!spared);
        }
        let count = is_disruption(last.reason).then_some(disruptions);
        let finished = last.finished_at.unwrap();
        if spared {
            return (Some(finished + DISRUPTION_DELAY), count);
        }
        let due = self.task_gens[t]
            .retries
            .as_ref()
            .filter(|r| failures <= r.limit && is_retryable(r, last))
            .map(|r| finished + expected_delay(r, failures));
        (due, count)
    }

    fn upstream_states(&self, t: usize, states: &[TaskPhase]) -> Vec<TaskPhase> {
        self.pipeline.dag.upstream(t).iter().map(|&u| states[u]).collect()
    }

    /// The run step both drivers take, over the TaskRuns observed so far; its actions in
    /// terms of tasks.
    fn plan(&self) -> RunPlan {
        let none = BTreeMap::new();
        let mut tasks = Vec::new();
        let children: Vec<Child<'_>> = (0..self.n())
            .filter_map(|t| {
                let o = self.observed[t]?;
                tasks.push(t);
                Some(Child {
                    name: "",
                    task: self.pipeline.name(t),
                    instance: None,
                    phase: o.phase,
                    cancel_requested: o.cancel_requested,
                    outputs: &none,
                    attempts: Some(self.attempts[t].len() as u32),
                    message: None,
                    rerun: None,
                    held: false,
                })
            })
            .collect();
        let step = step_run(&StepInput {
            pipeline: &self.pipeline,
            context: &RunContext::default(),
            children: &children,
            cancel_requested: self.cancel_requested,
            started_at: t0(),
            timeout: self.rg.timeout_secs.map(Duration::from_secs),
            now: self.now,
            refused: &[],
        });
        for s in &step.start {
            assert_eq!(
                s.spec.task_name,
                self.pipeline.name(s.task),
                "a start carries its task's spec"
            );
        }
        RunPlan {
            start: step.start.iter().map(|s| s.task).collect(),
            cancel: step.cancel.iter().map(|&c| tasks[c]).collect(),
            start_instances: Vec::new(),
            cancel_instances: Vec::new(),
            notes: step.notes,
            states: step.states,
            stop: step.stop,
            outcome: step.outcome,
            requeue_after: step.requeue_after,
        }
    }

    /// Runs the TaskRun controller over the TaskRuns; true if it skipped some.
    fn drive_tasks(&mut self) -> Result<bool, TestCaseError> {
        let mut skipped = false;
        for t in 0..self.n() {
            let Some(observed) = self.observed[t] else {
                continue;
            };
            if !observed.phase.is_terminal() && !self.lagged[t] && self.rng.below(4) == 0 {
                self.lagged[t] = true;
                skipped = true;
                continue;
            }
            self.lagged[t] = false;
            let plan = plan_task(&TaskInput {
                retries: self.policies[t].as_ref(),
                attempts: &self.attempts[t],
                cancel_requested: observed.cancel_requested,
                now: self.now,
            });
            let name = self.pipeline.name(t).to_string();
            if observed.phase.is_terminal() {
                // A finished TaskRun stays finished.
                prop_assert_eq!(plan.phase, observed.phase, "{} changed after it finished", name);
                prop_assert_eq!(plan.action, AttemptAction::None);
                continue;
            }
            let most = self.most_attempts(t);
            let last_failed = self.attempts[t]
                .last()
                .is_some_and(|a| a.phase == AttemptPhase::Failed);
            let (due, disruptions) = if last_failed {
                self.next_due(t)
            } else {
                (None, None)
            };
            if last_failed && !observed.cancel_requested {
                let want = disruptions.map(|count| Disruption {
                    count,
                    budget: self.budget(t),
                });
                prop_assert_eq!(plan.disruption, want, "{} disruptions", name);
            }
            let attempts = &mut self.attempts[t];
            match plan.action {
                AttemptAction::Create(k) => {
                    prop_assert_eq!(
                        k as usize,
                        attempts.len() + 1,
                        "{} skipped an attempt number",
                        name
                    );
                    prop_assert!(k <= most, "{} attempt {} is past the retry limit", name, k);
                    if let Some(last) = attempts.last() {
                        prop_assert_eq!(last.phase, AttemptPhase::Failed);
                        let Some(due) = due else {
                            return Err(TestCaseError::fail(format!(
                                "{name} retried a failure it should not"
                            )));
                        };
                        prop_assert!(self.now >= due, "{} retried at {} before {}", name, self.now, due);
                        prop_assert!(plan.retrying);
                    }
                    attempts.push(ObservedAttempt {
                        number: k,
                        phase: AttemptPhase::Running,
                        reason: None,
                        exit_code: None,
                        finished_at: None,
                    });
                }
                AttemptAction::Stop(k) => {
                    prop_assert!(observed.cancel_requested);
                    let last = attempts.last_mut().unwrap();
                    prop_assert_eq!((last.number, last.phase), (k, AttemptPhase::Running));
                    last.phase = AttemptPhase::Failed;
                    last.reason = Some(FailureReason::Cancelled);
                    last.finished_at = Some(self.now);
                }
                AttemptAction::None => {}
            }
            match plan.phase {
                TaskPhase::Retrying => {
                    prop_assert_eq!(plan.next_retry_at, due, "{} retry time", name);
                    prop_assert!(due.is_some_and(|due| self.now < due));
                }
                TaskPhase::Failed => {
                    prop_assert_eq!(due, None, "{} failed with retries left", name);
                }
                TaskPhase::Succeeded => {
                    prop_assert_eq!(attempts.last().map(|a| a.phase), Some(AttemptPhase::Succeeded));
                }
                TaskPhase::Cancelled => prop_assert!(observed.cancel_requested),
                _ => {}
            }
            self.observed[t] = Some(ObservedTask {
                phase: plan.phase,
                ..observed
            });
        }
        Ok(skipped)
    }

    fn check_plan(&mut self, plan: &RunPlan) -> Result<(), TestCaseError> {
        let n = self.n();
        prop_assert_eq!(plan.states.len(), n);
        let stop = if self.cancel_requested {
            Some(StopReason::Cancelled)
        } else if self.deadline.is_some_and(|d| self.now >= d) {
            Some(StopReason::Timeout)
        } else {
            None
        };
        prop_assert_eq!(plan.stop, stop);
        let requeue = match (stop, self.deadline, &plan.outcome) {
            (None, Some(d), None) => Some(Duration::try_from(d.duration_since(self.now)).unwrap()),
            _ => None,
        };
        prop_assert_eq!(plan.requeue_after, requeue);

        for t in 0..n {
            if let Some(o) = self.observed[t] {
                prop_assert_eq!(
                    plan.states[t],
                    o.phase,
                    "{} is reported as observed",
                    self.pipeline.name(t)
                );
            }
            if let Some(previous) = &self.previous
                && previous[t].is_terminal()
            {
                let held_back = stop.is_some()
                    && self.observed[t].is_none()
                    && !self.pipeline.is_finally(t)
                    && !self.settled_before_stop[t];
                if held_back {
                    prop_assert!(
                        matches!(
                            plan.states[t],
                            TaskPhase::Cancelled | TaskPhase::Skipped | TaskPhase::UpstreamFailed
                        ),
                        "{} was held back by the stop, now {:?}",
                        self.pipeline.name(t),
                        plan.states[t]
                    );
                } else {
                    prop_assert_eq!(
                        plan.states[t],
                        previous[t],
                        "{} changed from a final state; states {:?}",
                        self.pipeline.name(t),
                        plan.states
                    );
                }
            }
            if stop.is_none() && plan.states[t].is_terminal() {
                self.settled_before_stop[t] = true;
            }
        }
        self.previous = Some(plan.states.clone());

        let main_done = (0..self.pipeline.main_count).all(|t| plan.states[t].is_terminal());
        let mut seen = HashSet::new();
        for &t in &plan.start {
            let name = self.pipeline.name(t);
            prop_assert!(seen.insert(t), "{} listed twice", name);
            prop_assert!(self.observed[t].is_none(), "{} started twice", name);
            let upstream = self.upstream_states(t, &plan.states);
            prop_assert!(
                rule_holds(self.task_gens[t].rule, &upstream),
                "{} started with upstream {:?}",
                name,
                upstream
            );
            if self.pipeline.is_finally(t) {
                prop_assert!(
                    main_done,
                    "finally task {} started before the main tasks ended",
                    name
                );
            } else {
                prop_assert_eq!(stop, None, "{} started after the run was stopped", name);
            }
        }
        for &t in &plan.cancel {
            let name = self.pipeline.name(t);
            let o = self.observed[t];
            prop_assert!(
                stop.is_some() && !self.pipeline.is_finally(t),
                "{} stopped for no reason",
                name
            );
            prop_assert!(
                o.is_some_and(|o| !o.phase.is_terminal() && !o.cancel_requested),
                "{} {:?}",
                name,
                o
            );
            prop_assert!(self.asked_to_stop.insert(t), "{} asked to stop twice", name);
        }
        Ok(())
    }

    fn apply(&mut self, plan: &RunPlan) -> Result<(), TestCaseError> {
        for &t in &plan.start {
            self.observed[t] = Some(ObservedTask {
                phase: TaskPhase::Pending,
                cancel_requested: false,
            });
        }
        for &t in &plan.cancel {
            self.observed[t].as_mut().unwrap().cancel_requested = true;
        }
        if let Some(p) = self.rg.parallelism {
            let active = self
                .observed
                .iter()
                .flatten()
                .filter(|o| !o.phase.is_terminal())
                .count();
            prop_assert!(active <= p as usize, "{} tasks active, parallelism {}", active, p);
        }
        Ok(())
    }

    /// One thing happens in the world: an attempt ends, or time passes. False if nothing
    /// could happen.
    fn event(&mut self) -> bool {
        let running: Vec<usize> = (0..self.n())
            .filter(|&t| {
                self.attempts[t]
                    .last()
                    .is_some_and(|a| a.phase == AttemptPhase::Running)
            })
            .collect();
        let retry_times: Vec<Timestamp> = (0..self.n())
            .filter(|&t| self.observed[t].is_some_and(|o| o.phase == TaskPhase::Retrying))
            .filter_map(|t| self.next_due(t).0)
            .collect();
        if !running.is_empty() && (retry_times.is_empty() || self.rng.below(3) > 0) {
            self.now += SignedDuration::from_secs(self.rng.below(21) as i64);
            let t = running[self.rng.below(running.len())];
            let g = self.task_gens[t];
            let attempt = self.attempts[t].last_mut().unwrap();
            if attempt.number <= g.failures {
                let disrupted = g.disrupted & (1 << ((attempt.number - 1) % 8)) != 0;
                let reason = if disrupted { g.disruption } else { g.reason };
                attempt.phase = AttemptPhase::Failed;
                attempt.reason = Some(reason);
                attempt.exit_code = Some(if reason == FailureReason::Error {
                    g.exit_code
                } else {
                    137
                });
            } else {
                attempt.phase = AttemptPhase::Succeeded;
                attempt.exit_code = Some(0);
            }
            attempt.finished_at = Some(self.now);
            true
        } else if let Some(&first) = retry_times.iter().min() {
            // Sometimes look just before the retry is due: nothing may start early.
            let target = if self.rng.below(4) == 0 {
                first - SignedDuration::from_millis(1)
            } else {
                first
            };
            self.now = self.now.max(target);
            true
        } else if let Some(d) = self.deadline.filter(|&d| d > self.now) {
            self.now = d;
            true
        } else {
            false
        }
    }

    fn check_end(&self, plan: &RunPlan) -> Result<(), TestCaseError> {
        let states = &plan.states;
        let stopped = plan.stop.is_some();
        for t in 0..self.n() {
            let name = self.pipeline.name(t);
            let state = states[t];
            prop_assert!(state.is_terminal(), "{} ended {:?}", name, state);
            prop_assert!(self.attempts[t].len() as u32 <= self.most_attempts(t));
            let upstream = self.upstream_states(t, states);
            let rule = self.task_gens[t].rule;
            let finally = self.pipeline.is_finally(t);
            if self.observed[t].is_some() {
                // Final states are the ones it started on: its rule still holds.
                prop_assert!(
                    rule_holds(rule, &upstream),
                    "{} ran, yet upstream ended {:?}",
                    name,
                    upstream
                );
            } else if stopped && !finally {
                prop_assert!(
                    matches!(
                        state,
                        TaskPhase::Cancelled | TaskPhase::Skipped | TaskPhase::UpstreamFailed
                    ),
                    "{} {:?}",
                    name,
                    state
                );
            } else {
                prop_assert!(
                    !rule_holds(rule, &upstream),
                    "{} never ran though its rule holds: {:?}",
                    name,
                    upstream
                );
                let want = match crate::engine::plan::evaluate(rule, upstream.iter().copied()) {
                    crate::engine::plan::Verdict::Skip => TaskPhase::Skipped,
                    crate::engine::plan::Verdict::UpstreamFailed => TaskPhase::UpstreamFailed,
                    v => return Err(TestCaseError::fail(format!("{name}: {v:?} at the end"))),
                };
                prop_assert_eq!(state, want, "{}", name);
            }
            if !stopped {
                prop_assert_ne!(state, TaskPhase::Cancelled, "{} cancelled without a stop", name);
            }
        }

        let main = 0..self.pipeline.main_count;
        let outcome = plan.outcome.clone().unwrap();
        let timed_out = plan.stop == Some(StopReason::Timeout) && states.contains(&TaskPhase::Cancelled);
        let failed_leaf = main
            .clone()
            .any(|t| failed(states[t]) && self.pipeline.dag.downstream(t).is_empty());
        let finally_failed = (self.pipeline.main_count..self.n()).any(|t| states[t] == TaskPhase::Failed);
        match outcome {
            RunOutcome::Cancelled { .. } => prop_assert!(self.cancel_requested),
            RunOutcome::Failed {
                reason: "RunTimeout", ..
            } => prop_assert!(!self.cancel_requested && timed_out),
            RunOutcome::Failed {
                reason: "TaskFailed",
                message,
            } => {
                prop_assert!(!self.cancel_requested && !timed_out && failed_leaf);
                // The first task that failed by itself, else the first failed leaf.
                let named = main
                    .clone()
                    .find(|&t| states[t] == TaskPhase::Failed)
                    .or_else(|| {
                        main.clone()
                            .find(|&t| failed(states[t]) && self.pipeline.dag.downstream(t).is_empty())
                    });
                prop_assert!(
                    message.contains(self.pipeline.name(named.unwrap())),
                    "{}",
                    message
                );
            }
            RunOutcome::Failed {
                reason: "FinallyFailed",
                ..
            } => {
                prop_assert!(!self.cancel_requested && !timed_out && !failed_leaf && finally_failed)
            }
            RunOutcome::Succeeded => {
                prop_assert!(!self.cancel_requested && !timed_out && !failed_leaf && !finally_failed)
            }
            other => return Err(TestCaseError::fail(format!("unexpected outcome {other:?}"))),
        }
        Ok(())
    }

    fn run(&mut self) -> Result<(), TestCaseError> {
        let most_attempts: usize = (0..self.n()).map(|t| self.most_attempts(t) as usize).sum();
        // Each step ends an attempt, starts or stops tasks, or moves the clock to a retry or
        // the deadline; every one of those is bounded. Lagging at most doubles the count.
        let bound = 3 * (4 * most_attempts + 4 * self.n() + 10);
        for step in 0.. {
            prop_assert!(step < bound, "run not finished after {} steps", step);
            if self.rg.cancel_at_step == Some(step as u32) {
                self.cancel_requested = true;
            }
            let lagging = self.drive_tasks()?;
            let plan = self.plan();
            self.check_plan(&plan)?;
            if plan.outcome.is_some() {
                return self.check_end(&plan);
            }
            // New TaskRuns and stop requests are seen on the next pass (or the one after).
            self.apply(&plan)?;
            let moved = self.event();
            prop_assert!(
                moved || lagging || !plan.start.is_empty() || !plan.cancel.is_empty(),
                "stuck: nothing can happen and the run has no outcome; states {:?}",
                plan.states
            );
        }
        unreachable!()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_runs_keep_every_promise(rg in run_gen()) {
        Sim::new(&rg).run()?;
    }
}

/// A random DAG as upstream lists over earlier indices.
fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    vec(vec(any::<usize>(), 0..4), 2..30).prop_map(|raw| {
        raw.iter()
            .enumerate()
            .map(|(i, deps)| {
                let mut d: Vec<usize> = if i == 0 {
                    vec![]
                } else {
                    deps.iter().map(|x| x % i).collect()
                };
                d.sort_unstable();
                d.dedup();
                d
            })
            .collect()
    })
}

fn spec_of(upstream: &[Vec<usize>], order_seed: u64) -> PipelineSpec {
    let mut listing: Vec<usize> = (0..upstream.len()).collect();
    let mut rng = Rng(order_seed);
    for i in (1..listing.len()).rev() {
        listing.swap(i, rng.below(i + 1));
    }
    let names: Vec<String> = (0..upstream.len()).map(|i| format!("t{i}")).collect();
    let mut b = pipeline();
    for &i in &listing {
        b = b
            .task(&names[i])
            .after(upstream[i].iter().map(|&d| names[d].as_str()));
    }
    b.build()
}

fn ancestors(upstream: &[Vec<usize>], task: usize) -> Vec<usize> {
    let mut seen = vec![false; upstream.len()];
    let mut stack = upstream[task].clone();
    let mut out = vec![];
    while let Some(t) = stack.pop() {
        if !std::mem::replace(&mut seen[t], true) {
            out.push(t);
            stack.extend(&upstream[t]);
        }
    }
    out.sort_unstable();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn dag_order_respects_every_edge(upstream in dag(), order_seed in any::<u64>()) {
        let spec = spec_of(&upstream, order_seed);
        let p = validate(&spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let order = p.dag.topological_order();
        let mut position = vec![usize::MAX; p.len()];
        for (k, &t) in order.iter().enumerate() {
            prop_assert_eq!(position[t], usize::MAX, "task twice in the order");
            position[t] = k;
        }
        for t in 0..p.len() {
            for &u in p.dag.upstream(t) {
                prop_assert!(position[u] < position[t]);
                prop_assert!(p.dag.downstream(u).contains(&t));
            }
        }
    }

    #[test]
    fn cycles_are_always_found(
        upstream in dag(),
        back_edges in vec((any::<usize>(), any::<usize>()), 1..4),
        order_seed in any::<u64>(),
    ) {
        let mut upstream = upstream;
        let n = upstream.len();
        for (a, b) in back_edges {
            // Make `later` depend (transitively) on `earlier`, then `earlier` on `later`.
            let later = 1 + a % (n - 1);
            let mut above = ancestors(&upstream, later);
            above.retain(|&t| t != later); // an earlier back edge may have made one cycle already
            if above.is_empty() {
                upstream[later].push(b % later);
                above = vec![b % later];
            }
            let earlier = above[b % above.len()];
            if !upstream[earlier].contains(&later) {
                upstream[earlier].push(later);
            }
        }
        let spec = spec_of(&upstream, order_seed);
        let errors = match validate(&spec) {
            Ok(_) => return Err(TestCaseError::fail("a cycle went unnoticed")),
            Err(e) => e.0,
        };
        prop_assert!(!errors.is_empty());
        for e in &errors {
            let Some(path) = e.message.strip_prefix("dependency cycle: ") else {
                return Err(TestCaseError::fail(format!("not a cycle error: {e}")));
            };
            let path: Vec<usize> = path.split(" -> ").map(|s| s[1..].parse().unwrap()).collect();
            prop_assert!(path.len() >= 3, "{}", e);
            prop_assert_eq!(path.first(), path.last(), "{}", e);
            let inner: HashSet<usize> = path[1..].iter().copied().collect();
            prop_assert_eq!(inner.len(), path.len() - 1, "a simple cycle: {}", e);
            for pair in path.windows(2) {
                // `x -> y`: y runs after x, that is y depends on x.
                prop_assert!(upstream[pair[1]].contains(&pair[0]), "t{} does not depend on t{}: {}", pair[1], pair[0], e);
            }
            let first = format!("t{}", path[0]);
            prop_assert_eq!(e.task.as_deref(), Some(first.as_str()));
            let listed_at = spec.tasks.iter().position(|t| t.name == format!("t{}", path[0])).unwrap();
            prop_assert_eq!(&e.field, &format!("tasks[{listed_at}].dependsOn"));
        }
    }
}
