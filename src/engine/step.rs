//! The one step of a run that both drivers take: the operator's PipelineRun controller and
//! `weir run`. Given the validated pipeline, the run's context, what was observed of each of
//! its children (TaskRuns, or the local runner's stand-ins for them) and `now`, [`step_run`]
//! says everything a driver has to do: which TaskRuns to start, with their fully resolved
//! specs, which to cancel, which tasks end without running and why, how the run ends, and
//! the compact summary of its tasks. The drivers keep only their I/O, so a decision made
//! here is made the same way on a laptop and in a cluster.
//!
//! A task that cannot be resolved (a template that cannot be filled, a fan-out instance
//! whose spec is too large) fails with the reason before anything of it starts; should a
//! later instance of a started fan-out fail to resolve, no further instance starts and the
//! task fails once the started ones are done.

use super::names;
use super::plan::{Prepared, RunInput, RunOutcome, RunPlan, StopReason, plan_run};
use super::resolve::{self, Resolved, RunContext, TaskValues};
use super::validate::ValidPipeline;
use crate::api::{RefusedTaskRun, RunPhase, TaskCounts, TaskPhase, TaskRunSpec, TaskSummary};
use jiff::Timestamp;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most entries of a run's task summary; the rest are only counted.
pub const MAX_SUMMARY: usize = 100;
/// Longest message of one task in the summary.
pub const MAX_SUMMARY_MESSAGE: usize = 256;

/// What a driver observed of one child of the run (a TaskRun).
#[derive(Clone, Copy, Debug)]
pub struct Child<'a> {
    /// The child's own name (the TaskRun's name).
    pub name: &'a str,
    /// The pipeline task it runs.
    pub task: &'a str,
    /// Its fan-out instance; `None` for a task that does not fan out.
    pub instance: Option<u32>,
    pub phase: TaskPhase,
    /// It was already asked to stop.
    pub cancel_requested: bool,
    /// Its outputs; read only once it succeeded.
    pub outputs: &'a BTreeMap<String, String>,
    /// Attempts made so far, for the summary.
    pub attempts: Option<u32>,
    /// Why it failed, for the summary.
    pub message: Option<&'a str>,
    /// The rerun request it was selected for (see `engine::rerun`), if any.
    pub rerun: Option<&'a str>,
    /// Selected for a rerun and waiting for its turn: the step treats the task (or
    /// instance) as not started, and starts it again, through [`Start::resume`], once its
    /// trigger rule holds, with its spec resolved afresh.
    pub held: bool,
}

/// Everything [`step_run`] needs.
#[derive(Clone, Copy)]
pub struct StepInput<'a> {
    pub pipeline: &'a ValidPipeline,
    pub context: &'a RunContext,
    pub children: &'a [Child<'a>],
    pub cancel_requested: bool,
    pub started_at: Timestamp,
    /// The run's timeout (see [`run_timeout`]).
    pub timeout: Option<Duration>,
    pub now: Timestamp,
    /// TaskRuns the API server refused to create: their tasks fail with its message.
    pub refused: &'a [RefusedTaskRun],
}

/// A TaskRun to create.
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    pub task: usize,
    pub instance: Option<u32>,
    /// Its deterministic name: the same pass, or a second driver, never makes two.
    pub name: String,
    pub spec: TaskRunSpec,
    /// The held child (index into the children) this start runs again, instead of a new
    /// TaskRun.
    pub resume: Option<usize>,
}

/// What a driver has to do now for a run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunStep {
    pub start: Vec<Start>,
    /// Children (indexes into [`StepInput::children`]) to ask to stop.
    pub cancel: Vec<usize>,
    /// The state of every task, including those that ended without a TaskRun.
    pub states: Vec<TaskPhase>,
    /// Why tasks were skipped or failed without running (`when`, `forEach`, templates,
    /// resolution), by task.
    pub notes: Vec<(usize, String)>,
    pub stop: Option<StopReason>,
    /// Set once every task (finally included) reached a final state.
    pub outcome: Option<RunOutcome>,
    /// Look again after this long even if nothing changes (the run's deadline).
    pub requeue_after: Option<Duration>,
    /// Children that belong to no task of the pipeline, or whose instance does not match
    /// how the task runs: left alone, reported so a driver can say so.
    pub strays: Vec<usize>,
    pub summary: RunSummary,
}

impl RunStep {
    /// The run's phase after this step.
    pub fn phase(&self, children: &[Child<'_>]) -> RunPhase {
        match &self.outcome {
            Some(RunOutcome::Succeeded) => RunPhase::Succeeded,
            Some(RunOutcome::Failed { .. }) => RunPhase::Failed,
            Some(RunOutcome::Cancelled { .. }) => RunPhase::Cancelled,
            None if children.is_empty() && self.start.is_empty() => RunPhase::Pending,
            None => RunPhase::Running,
        }
    }
}

/// Counts, progress and the capped per-task list a run's status shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSummary {
    pub counts: TaskCounts,
    /// `done/total`.
    pub progress: String,
    /// Tasks that are not pending, the most telling first (failed, running, ...), at most
    /// [`MAX_SUMMARY`].
    pub tasks: Vec<TaskSummary>,
    /// How many more there were.
    pub omitted: u32,
}

/// The run's timeout: its own when it sets one, else the pipeline's.
pub fn run_timeout(pipeline: &ValidPipeline, own: Option<&str>) -> Result<Option<Duration>, String> {
    match own {
        Some(text) => super::duration::parse(text)
            .map(Some)
            .map_err(|e| format!("spec.timeout: {e}")),
        None => Ok(pipeline.timeout),
    }
}

/// Children sorted by task: the one of a task that does not fan out, or each instance.
struct Children {
    single: Vec<Option<usize>>,
    instances: Vec<Vec<Option<usize>>>,
    /// Children held for a rerun, by task and instance.
    held: BTreeMap<(usize, Option<u32>), usize>,
    strays: Vec<usize>,
}

impl Children {
    fn sort(pipeline: &ValidPipeline, children: &[Child<'_>]) -> Children {
        let n = pipeline.len();
        let mut sorted = Children {
            single: vec![None; n],
            instances: vec![Vec::new(); n],
            held: BTreeMap::new(),
            strays: Vec::new(),
        };
        for (c, child) in children.iter().enumerate() {
            let task = pipeline.index.get(child.task).copied();
            if child.held
                && let Some(t) = task
            {
                sorted.held.insert((t, child.instance), c);
                continue;
            }
            match (task, child.instance) {
                (Some(t), None) if !pipeline.fans_out(t) => sorted.single[t] = Some(c),
                (Some(t), Some(k)) if pipeline.fans_out(t) => {
                    let list = &mut sorted.instances[t];
                    if list.len() <= k as usize {
                        list.resize(k as usize + 1, None);
                    }
                    list[k as usize] = Some(c);
                }
                _ => sorted.strays.push(c),
            }
        }
        sorted
    }

    fn started(&self, task: usize) -> bool {
        self.single[task].is_some() || self.instances[task].iter().any(Option::is_some)
    }
}

/// Plans the next step of a run. Pure: the same input gives the same step.
pub fn step_run(input: &StepInput<'_>) -> RunStep {
    let pipeline = input.pipeline;
    let children = Children::sort(pipeline, input.children);
    let observe = |c: usize| {
        let child = &input.children[c];
        super::plan::ObservedTask {
            phase: child.phase,
            cancel_requested: child.cancel_requested,
        }
    };
    let observed: Vec<_> = children.single.iter().map(|c| c.map(observe)).collect();
    let instances: Vec<Vec<_>> = children
        .instances
        .iter()
        .map(|list| list.iter().map(|c| c.map(observe)).collect())
        .collect();
    let outputs = |task: &str, key: &str| output(input, &children, task, key);
    let resolver = Resolver {
        input,
        children: &children,
        outputs: &outputs,
        ready: RefCell::default(),
        items: RefCell::default(),
    };
    // Tasks found unable to start while resolving what a plan starts. Each round adds at
    // least one, so this ends; in practice a second round is never needed, since a task is
    // resolved in full (every instance) before anything of it starts.
    let mut unable: BTreeMap<usize, String> = refusals(input);
    loop {
        let prepare = |task: usize| match unable.get(&task) {
            Some(reason) => Prepared::Fail(reason.clone()),
            None => resolver.prepare(task),
        };
        let plan = plan_run(&RunInput {
            pipeline,
            observed: &observed,
            cancel_requested: input.cancel_requested,
            started_at: input.started_at,
            timeout: input.timeout,
            now: input.now,
            instances: &instances,
            prepare: &prepare,
        });
        match starts(&plan, &resolver) {
            Ok(start) => {
                let widths = resolver.widths();
                return finish(input, children, plan, start, &widths);
            }
            Err(failed) => unable.extend(failed),
        }
    }
}

/// Tasks whose TaskRun (or one instance's) the API server refused to create.
fn refusals(input: &StepInput<'_>) -> BTreeMap<usize, String> {
    let mut out = BTreeMap::new();
    for r in input.refused {
        if let Some(&t) = input.pipeline.index.get(&r.task) {
            let message = match r.instance {
                Some(k) => format!(
                    "forEach instance {k}: the API server refused its TaskRun: {}",
                    r.message
                ),
                None => format!("the API server refused its TaskRun: {}", r.message),
            };
            out.entry(t).or_insert(message);
        }
    }
    out
}

/// The TaskRuns a plan starts, resolved; or the tasks that turned out unable to start.
fn starts(plan: &RunPlan, resolver: &Resolver<'_>) -> Result<Vec<Start>, BTreeMap<usize, String>> {
    let input = resolver.input;
    let wanted = plan
        .start
        .iter()
        .map(|&t| (t, None))
        .chain(plan.start_instances.iter().map(|&(t, k)| (t, Some(k))));
    let mut start = Vec::new();
    let mut failed = BTreeMap::new();
    for (task, instance) in wanted {
        if failed.contains_key(&task) {
            continue;
        }
        match resolver.spec(task, instance) {
            Ok(spec) => start.push(Start {
                task,
                instance,
                name: child_name(&input.context.name, input.pipeline.name(task), instance),
                spec,
                resume: resolver.children.held.get(&(task, instance)).copied(),
            }),
            Err(reason) => {
                failed.insert(task, reason);
            }
        }
    }
    if failed.is_empty() { Ok(start) } else { Err(failed) }
}

/// The step from a plan whose starts all resolved.
fn finish(
    input: &StepInput<'_>,
    children: Children,
    plan: RunPlan,
    start: Vec<Start>,
    widths: &BTreeMap<usize, usize>,
) -> RunStep {
    let cancel = plan
        .cancel
        .iter()
        .filter_map(|&t| children.single[t])
        .chain(
            plan.cancel_instances
                .iter()
                .filter_map(|&(t, k)| children.instances[t].get(k as usize).copied().flatten()),
        )
        .collect();
    // What starts now counts as running: its TaskRun exists once the driver is done.
    let mut states = plan.states;
    for s in &start {
        states[s.task] = TaskPhase::Running;
    }
    let summary = summarize(
        input.pipeline,
        &states,
        input.children,
        &children,
        &plan.notes,
        widths,
    );
    RunStep {
        start,
        cancel,
        states,
        notes: plan.notes,
        stop: plan.stop,
        outcome: plan.outcome,
        requeue_after: plan.requeue_after,
        strays: children.strays,
        summary,
    }
}

/// The name of the TaskRun of a task, or of one instance of it.
pub fn child_name(run: &str, task: &str, instance: Option<u32>) -> String {
    let name = names::task_run_name(run, task);
    match instance {
        None => name,
        Some(k) => names::child_name(&name, &k.to_string()),
    }
}

/// What templates read of upstream outputs: the value of a task that succeeded; for a
/// fanned-out task, the list of every instance's value (null where it has none).
fn output(input: &StepInput<'_>, children: &Children, task: &str, key: &str) -> Option<Value> {
    let &t = input.pipeline.index.get(task)?;
    let value_of = |c: usize| {
        let child = &input.children[c];
        (child.phase == TaskPhase::Succeeded)
            .then(|| child.outputs.get(key).cloned())
            .flatten()
    };
    if input.pipeline.fans_out(t) {
        let values = children.instances[t]
            .iter()
            .map(|c| c.and_then(value_of).map_or(Value::Null, Value::String))
            .collect();
        Some(Value::Array(values))
    } else {
        children.single[t].and_then(value_of).map(Value::String)
    }
}

/// Works out tasks as the planner reaches them, remembering what it resolved so that what
/// starts is rendered once.
struct Resolver<'a> {
    input: &'a StepInput<'a>,
    children: &'a Children,
    outputs: &'a (dyn resolve::Outputs + Sync),
    /// Specs of tasks resolved in full, by task.
    ready: RefCell<BTreeMap<usize, Vec<TaskRunSpec>>>,
    /// Fan-out items of started tasks, by task.
    items: RefCell<BTreeMap<usize, Vec<Value>>>,
}

impl Resolver<'_> {
    /// How many instances each fanned-out task it prepared has.
    fn widths(&self) -> BTreeMap<usize, usize> {
        let mut widths: BTreeMap<usize, usize> =
            self.items.borrow().iter().map(|(&t, v)| (t, v.len())).collect();
        widths.extend(self.ready.borrow().iter().map(|(&t, v)| (t, v.len())));
        widths
    }

    fn values(&self, task: usize) -> TaskValues<'_> {
        TaskValues {
            run: self.input.context,
            outputs: self.outputs,
            item: None,
            lenient: self.input.pipeline.is_finally(task),
        }
    }

    /// Asked by the planner once a task's trigger rule holds (and on every pass for a
    /// started fan-out, to know how wide it is).
    fn prepare(&self, task: usize) -> Prepared {
        let pipeline = self.input.pipeline;
        if self.children.started(task) {
            // Started: its conditions held and every instance resolved when it started, and
            // the values it reads have not changed since. Only its width is needed.
            return match resolve::items(pipeline, task, &self.values(task)) {
                Ok(items) => {
                    let instances = items.len() as u32;
                    self.items.borrow_mut().insert(task, items);
                    Prepared::Run { instances }
                }
                Err(e) => Prepared::Fail(e),
            };
        }
        match resolve::resolve_ready(pipeline, task, &self.values(task)) {
            Resolved::Run(specs) => {
                let instances = specs.len() as u32;
                self.ready.borrow_mut().insert(task, specs);
                Prepared::Run { instances }
            }
            Resolved::Skip(note) => Prepared::Skip(note),
            Resolved::Fail(note) => Prepared::Fail(note),
        }
    }

    /// The spec of a TaskRun the plan starts.
    fn spec(&self, task: usize, instance: Option<u32>) -> Result<TaskRunSpec, String> {
        let k = instance.unwrap_or(0) as usize;
        if let Some(spec) = self.ready.borrow().get(&task).and_then(|specs| specs.get(k)) {
            return Ok(spec.clone());
        }
        let pipeline = self.input.pipeline;
        let values = self.values(task);
        let Some(k) = instance else {
            return resolve::resolve_task(pipeline, task, None, &values);
        };
        let items = self.items.borrow();
        let item = items
            .get(&task)
            .and_then(|items| items.get(k as usize))
            .ok_or_else(|| format!("forEach instance {k} has no item"))?;
        let values = TaskValues {
            item: Some(item),
            ..values
        };
        resolve::resolve_task(pipeline, task, Some(k), &values)
            .map_err(|e| format!("forEach instance {k}: {e}"))
    }
}

/// Counts, progress and the capped per-task summary.
fn summarize(
    pipeline: &ValidPipeline,
    states: &[TaskPhase],
    all: &[Child<'_>],
    children: &Children,
    notes: &[(usize, String)],
    widths: &BTreeMap<usize, usize>,
) -> RunSummary {
    let mut counts = TaskCounts {
        total: states.len() as u32,
        ..Default::default()
    };
    for s in states {
        match s {
            TaskPhase::Pending => counts.pending += 1,
            TaskPhase::Running | TaskPhase::Retrying => counts.running += 1,
            TaskPhase::Succeeded => counts.succeeded += 1,
            TaskPhase::Failed | TaskPhase::UpstreamFailed => counts.failed += 1,
            TaskPhase::Skipped => counts.skipped += 1,
            TaskPhase::Cancelled => counts.cancelled += 1,
        }
    }
    let rank = |s: TaskPhase| match s {
        TaskPhase::Failed => 0,
        TaskPhase::UpstreamFailed => 1,
        TaskPhase::Running | TaskPhase::Retrying => 2,
        TaskPhase::Cancelled => 3,
        TaskPhase::Skipped => 4,
        TaskPhase::Succeeded => 5,
        TaskPhase::Pending => 6,
    };
    let mut shown: Vec<usize> = pipeline
        .dag
        .topological_order()
        .iter()
        .copied()
        .filter(|&t| states[t] != TaskPhase::Pending)
        .collect();
    shown.sort_by_key(|&t| rank(states[t]));
    let omitted = shown.len().saturating_sub(MAX_SUMMARY);
    shown.truncate(MAX_SUMMARY);
    let tasks = shown
        .into_iter()
        .map(|t| {
            let child = children.single[t].map(|c| &all[c]);
            let note = notes.iter().find(|(n, _)| *n == t).map(|(_, m)| m.clone());
            let fan_out = fan_out_message(all, &children.instances[t], widths.get(&t).copied());
            let failure = child.and_then(|c| c.message).map(str::to_string);
            TaskSummary {
                name: pipeline.name(t).to_string(),
                phase: states[t],
                task_run: child.map(|c| c.name.to_string()),
                attempts: child.and_then(|c| c.attempts),
                message: note
                    .or(fan_out)
                    .or(failure)
                    .map(|m| super::quote::truncate(&m, MAX_SUMMARY_MESSAGE)),
            }
        })
        .collect();
    RunSummary {
        progress: format!("{}/{}", done_count(&counts), counts.total),
        counts,
        tasks,
        omitted: omitted as u32,
    }
}

/// How far a fanned-out task's instances are; `width` is how many it has in all, when
/// known and more than have started.
fn fan_out_message(all: &[Child<'_>], instances: &[Option<usize>], width: Option<usize>) -> Option<String> {
    let seen: Vec<&Child<'_>> = instances.iter().flatten().map(|&c| &all[c]).collect();
    if seen.is_empty() {
        return None;
    }
    let done = seen.iter().filter(|c| c.phase.is_terminal()).count();
    let failed = seen.iter().filter(|c| c.phase == TaskPhase::Failed).count();
    let of_all = match width {
        Some(w) if w > seen.len() => format!(" (of {w})"),
        _ => String::new(),
    };
    Some(format!(
        "{done} instance(s) done of {} started{of_all}, {failed} failed",
        seen.len()
    ))
}

/// Tasks in a final state.
pub fn done_count(c: &TaskCounts) -> u32 {
    c.succeeded + c.failed + c.skipped + c.cancelled
}
