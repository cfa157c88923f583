//! The local controller: the operator's two reconcile loops (PipelineRun and TaskRun) run
//! in one process, over local state instead of Kubernetes objects, with one local process
//! per attempt instead of a Job.
//!
//! Each pass plans every task run with `engine::plan_task` (start an attempt, wait for a
//! retry delay, stop one, finish), then the run with `engine::plan_run` (which tasks start,
//! which are cancelled, how the run ends), applies the actions, and repeats until nothing
//! changes; then it waits for a process to end, a retry time, the run deadline or a signal.
//! The clock is read once per pass and handed to the engine as `now`.

use super::process::{self, Control, Ended, Launch};
use super::progress::{self, Progress, Row};
use super::{LocalRun, env};
use crate::api::artifact;
use crate::api::{AttemptPhase, FailureReason, TaskPhase, TaskRunSpec};
use crate::artifacts::exec;
use crate::engine::{
    AttemptAction, Child, ObservedAttempt, RunOutcome, RunStep, Start, StepInput, StopReason, TaskInput,
    duration, outputs, plan_task, pool, step_run,
};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// Lines of a failed task's log shown with its failure.
const TAIL_LINES: usize = 10;

/// How the runner talks to people.
#[derive(Clone, Copy, Debug)]
pub struct Display {
    /// Redraw one line per task in place (a terminal), else print changes as lines.
    pub live: bool,
    pub colored: bool,
}

/// How a run went.
#[derive(Debug)]
pub struct Report {
    /// `None` when the run was stopped at once by a second interrupt.
    pub outcome: Option<RunOutcome>,
    /// The run was cancelled by an interrupt (Ctrl-C) or SIGTERM.
    pub interrupted: bool,
    pub rows: Vec<Row>,
    pub duration: Duration,
}

/// One attempt: a process, then its result.
struct Attempt {
    number: u32,
    phase: AttemptPhase,
    reason: Option<FailureReason>,
    exit_code: Option<i32>,
    message: Option<String>,
    started_at: Timestamp,
    finished_at: Option<Timestamp>,
    log: PathBuf,
    outputs_file: PathBuf,
    /// Set while the process lives.
    control: Option<mpsc::UnboundedSender<Control>>,
    stopping: bool,
}

/// The local TaskRun: one task, or one instance of a fanned-out task.
struct Unit {
    task: usize,
    instance: Option<u32>,
    /// `extract`, or `shard[2]` for an instance.
    label: String,
    /// Start of its files' names in the run directory: `extract`, `shard.2`.
    stem: String,
    /// The name its TaskRun would have (`WEIR_TASK_RUN`).
    task_run: String,
    spec: TaskRunSpec,
    attempts: Vec<Attempt>,
    cancel_requested: bool,
    phase: TaskPhase,
    next_retry_at: Option<Timestamp>,
    outputs: BTreeMap<String, String>,
    finished_at: Option<Timestamp>,
    /// When the run started it: its age in its pool's queue.
    since: Timestamp,
    /// Why it waits for its pool, while it does.
    waiting: Option<String>,
}

impl Unit {
    fn alive(&self) -> bool {
        self.attempts.iter().any(|a| a.control.is_some())
    }

    /// The phase the run sees: a task being stopped is still running until its process is
    /// gone, so that `finally` tasks start after it really ended and nothing outlives the run.
    fn observed_phase(&self) -> TaskPhase {
        if self.alive() && self.phase.is_terminal() {
            TaskPhase::Running
        } else {
            self.phase
        }
    }

    /// Whether it wants the slots of its pool now: an attempt is due and none runs.
    fn wants_slot(&self, now: Timestamp) -> bool {
        !self.alive() && matches!(self.plan(now).action, AttemptAction::Create(_))
    }

    /// What the TaskRun controller's `plan_task` says of this unit.
    fn plan(&self, now: Timestamp) -> crate::engine::TaskPlan {
        let observed: Vec<ObservedAttempt> = self
            .attempts
            .iter()
            .map(|a| ObservedAttempt {
                number: a.number,
                phase: a.phase,
                reason: a.reason,
                exit_code: a.exit_code,
                finished_at: a.finished_at,
            })
            .collect();
        plan_task(&TaskInput {
            retries: self.spec.retries.as_ref(),
            attempts: &observed,
            cancel_requested: self.cancel_requested,
            now,
        })
    }

    fn max_attempts(&self) -> u32 {
        self.spec.retries.as_ref().map_or(0, |r| r.limit) + 1
    }

    /// What the run's step reads of this unit: what the operator reads of a TaskRun.
    fn child(&self) -> Child<'_> {
        Child {
            name: &self.task_run,
            task: &self.spec.task_name,
            instance: self.instance,
            phase: self.observed_phase(),
            cancel_requested: self.cancel_requested,
            outputs: &self.outputs,
            attempts: Some(self.attempts.len() as u32),
            message: self.attempts.last().and_then(|a| a.message.as_deref()),
            rerun: None,
            held: false,
        }
    }
}

struct Event {
    unit: usize,
    number: u32,
    ended: Ended,
}

pub struct Runner {
    run: LocalRun,
    units: Vec<Unit>,
    /// Unit of each task that does not fan out.
    single: Vec<Option<usize>>,
    /// Units of each instance of each fanned-out task.
    instances: Vec<Vec<Option<usize>>>,
    states: Vec<TaskPhase>,
    /// Why tasks were skipped or failed before starting (`when`, `forEach`, templates).
    notes: Vec<Option<String>>,
    cancel_requested: bool,
    interrupted: bool,
    /// A second interrupt: everything is killed and nothing more starts.
    aborted: bool,
    stop: Option<StopReason>,
    outcome: Option<RunOutcome>,
    requeue_after: Option<Duration>,
    started_at: Timestamp,
    events: mpsc::UnboundedSender<Event>,
    progress: Progress,
}

impl Runner {
    fn new(run: LocalRun, display: Display, events: mpsc::UnboundedSender<Event>) -> Runner {
        let n = run.pipeline.len();
        Runner {
            units: Vec::new(),
            single: vec![None; n],
            instances: vec![Vec::new(); n],
            states: vec![TaskPhase::Pending; n],
            notes: vec![None; n],
            cancel_requested: false,
            interrupted: false,
            aborted: false,
            stop: None,
            outcome: None,
            requeue_after: None,
            started_at: Timestamp::now(),
            events,
            progress: Progress::new(display.live, display.colored),
            run,
        }
    }

    fn live_processes(&self) -> usize {
        self.units.iter().filter(|u| u.alive()).count()
    }

    /// Passes until nothing changes.
    fn step(&mut self, now: Timestamp) {
        // Each pass that changes something starts a task, an attempt or a stop, so this ends;
        // the bound is a guard against a planner bug turning into a busy loop.
        for _ in 0..10_000 {
            let mut changed = false;
            for u in 0..self.units.len() {
                changed |= self.step_unit(u, now);
            }
            changed |= self.step_run(now);
            if !changed {
                return;
            }
        }
    }

    /// What the TaskRun controller does for one TaskRun.
    fn step_unit(&mut self, u: usize, now: Timestamp) -> bool {
        let mut plan = self.units[u].plan(now);
        if let AttemptAction::Create(_) = plan.action
            && let Some(message) = self.pool_wait(u, now)
        {
            // What the operator does when the pool's slots are taken: no Job, Pending.
            plan.action = AttemptAction::None;
            plan.phase = TaskPhase::Pending;
            plan.next_retry_at = None;
            // Told once when it begins to wait; the row keeps saying why as it changes.
            if self.units[u].waiting.is_none() {
                self.progress.note(&format!("{}: {message}", self.units[u].label));
            }
            self.units[u].waiting = Some(message);
        } else {
            self.units[u].waiting = None;
        }
        let mut changed = false;
        match plan.action {
            AttemptAction::Create(number) if !self.aborted => {
                self.start_attempt(u, number, now);
                changed = true;
            }
            AttemptAction::Stop(number) => {
                if let Some(a) = self.units[u].attempts.iter_mut().find(|a| a.number == number)
                    && !a.stopping
                    && let Some(control) = &a.control
                {
                    let _ = control.send(Control::Stop);
                    a.stopping = true;
                    changed = true;
                }
            }
            _ => {}
        }
        let unit = &mut self.units[u];
        unit.next_retry_at = plan.next_retry_at;
        let phase = match plan.action {
            AttemptAction::Create(_) if !self.aborted => TaskPhase::Running,
            _ => plan.phase,
        };
        if phase != unit.phase {
            unit.phase = phase;
            if phase.is_terminal() {
                unit.finished_at = Some(now);
            }
            self.on_change(u, now);
        }
        changed
    }

    /// Why unit `u` may not start an attempt now: the slots of its pool are taken by running
    /// units, or due to units before it in line (the engine's `pool::admit`, as the
    /// operator decides it over the TaskRuns of a namespace).
    fn pool_wait(&self, u: usize, now: Timestamp) -> Option<String> {
        let name = self.units[u].spec.pool.as_deref()?;
        let slots = self.run.pools.get(name).copied().unwrap_or(0);
        let in_pool = |unit: &&Unit| unit.spec.pool.as_deref() == Some(name);
        let held = self
            .units
            .iter()
            .filter(in_pool)
            .filter(|unit| unit.alive())
            .map(|unit| unit.spec.pool_slots.unwrap_or(1));
        let occupied = pool::occupied(held);
        let waiting: Vec<usize> = (0..self.units.len())
            .filter(|&i| in_pool(&&self.units[i]) && (i == u || self.units[i].wants_slot(now)))
            .collect();
        let candidates: Vec<pool::Candidate<'_>> = waiting
            .iter()
            .map(|&i| pool::Candidate {
                key: &self.units[i].task_run,
                slots: self.units[i].spec.pool_slots.unwrap_or(1),
                priority: self.units[i].spec.priority.unwrap_or(pool::DEFAULT_WEIGHT),
                since: self.units[i].since,
            })
            .collect();
        let decision = pool::admit(slots, occupied, &candidates);
        let mine = waiting.iter().position(|&i| i == u)?;
        match decision.places[mine] {
            pool::Place::Admitted => None,
            place => Some(pool::waiting_message(
                name,
                slots,
                occupied,
                candidates[mine].slots,
                place,
            )),
        }
    }

    /// What the PipelineRun controller does for the run: the engine's step over the units,
    /// then its actions.
    fn step_run(&mut self, now: Timestamp) -> bool {
        let step = {
            let children: Vec<Child<'_>> = self.units.iter().map(Unit::child).collect();
            step_run(&StepInput {
                pipeline: &self.run.pipeline,
                context: &self.run.context,
                children: &children,
                cancel_requested: self.cancel_requested,
                started_at: self.started_at,
                timeout: self.run.timeout,
                now,
                refused: &[],
            })
        };
        let RunStep {
            start,
            cancel,
            states,
            notes,
            stop,
            outcome,
            requeue_after,
            ..
        } = step;
        let had_stop = self.stop.is_some();
        self.stop = stop;
        self.outcome = outcome;
        self.requeue_after = requeue_after;
        self.states = states;
        self.show_notes(notes);
        let mut changed = false;
        if !self.aborted {
            changed = !start.is_empty();
            for start in start {
                self.add_unit(start, now);
            }
        }
        for &u in &cancel {
            if !self.units[u].cancel_requested {
                self.units[u].cancel_requested = true;
                changed = true;
            }
        }
        if !had_stop && let Some(stop) = self.stop {
            self.show_stop(stop, cancel.len());
        }
        changed
    }

    /// Says once why a task was skipped or failed without running.
    fn show_notes(&mut self, notes: Vec<(usize, String)>) {
        for (task, note) in notes {
            if self.notes[task].as_ref() != Some(&note) {
                let name = self.run.pipeline.name(task).to_string();
                let what = match self.states[task] {
                    TaskPhase::Failed => "failed",
                    _ => "skipped",
                };
                self.progress.note(&format!("{name} {what}: {note}"));
                self.notes[task] = Some(note);
            }
        }
    }

    fn show_stop(&mut self, stop: StopReason, running: usize) {
        let why = match stop {
            StopReason::Timeout => format!(
                "the run timed out after {}",
                self.run.timeout.map(duration::format).unwrap_or_default()
            ),
            StopReason::Cancelled => "the run was cancelled".to_string(),
        };
        let finally = if self.run.pipeline.len() > self.run.pipeline.main_count {
            "; finally tasks still run"
        } else {
            ""
        };
        self.progress
            .note(&format!("{why}: stopping {running} running task(s){finally}"));
    }

    fn add_unit(&mut self, start: Start, now: Timestamp) {
        let Start {
            task,
            instance,
            name: task_run,
            spec,
            ..
        } = start;
        let name = self.run.pipeline.name(task);
        let (label, stem) = match instance {
            None => (name.to_string(), name.to_string()),
            Some(k) => (format!("{name}[{k}]"), format!("{name}.{k}")),
        };
        let u = self.units.len();
        self.units.push(Unit {
            task,
            instance,
            label,
            stem,
            task_run,
            spec,
            attempts: Vec::new(),
            cancel_requested: false,
            phase: TaskPhase::Pending,
            next_retry_at: None,
            outputs: BTreeMap::new(),
            finished_at: None,
            since: now,
            waiting: None,
        });
        match instance {
            None => self.single[task] = Some(u),
            Some(k) => {
                let list = &mut self.instances[task];
                if list.len() <= k as usize {
                    list.resize(k as usize + 1, None);
                }
                list[k as usize] = Some(u);
            }
        }
    }

    /// What `build_job` and the kubelet do: the environment, the command line, the process.
    fn start_attempt(&mut self, u: usize, number: u32, now: Timestamp) {
        let run_dir = self.run.run_dir.clone();
        let unit = &self.units[u];
        let log = run_dir.join(format!("{}.attempt-{number}.log", unit.stem));
        let outputs_file = run_dir.join(format!("{}.attempt-{number}.outputs", unit.stem));
        let weir = [
            ("WEIR_TASK", unit.spec.task_name.clone()),
            ("WEIR_TASK_RUN", unit.task_run.clone()),
            ("WEIR_PIPELINE_RUN", self.run.name.clone()),
            ("WEIR_ATTEMPT", number.to_string()),
            (outputs::OUTPUTS_ENV, outputs_file.display().to_string()),
        ];
        let attempt = Attempt {
            number,
            phase: AttemptPhase::Running,
            reason: None,
            exit_code: None,
            message: None,
            started_at: now,
            finished_at: None,
            log: log.clone(),
            outputs_file,
            control: None,
            stopping: false,
        };
        if let Some(wait) = unit.spec.wait.clone() {
            self.start_wait(u, attempt, &wait, now);
            return;
        }
        let host = |name: &str| std::env::var(name).ok();
        let launch = env::container_env(&weir, &unit.spec.env, &host)
            .map_err(|missing| {
                format!(
                    "environment variable(s) {} come from Kubernetes objects: set them in the environment of `weir run`",
                    missing.join(", ")
                )
            })
            .and_then(|vars| {
                let argv: Vec<String> = unit
                    .spec
                    .command
                    .iter()
                    .chain(&unit.spec.args)
                    .map(|a| env::expand(a, |name| env::lookup(&vars, name)))
                    .collect();
                let (mut program, mut args) = argv
                    .split_first()
                    .map(|(p, a)| (p.clone(), a.to_vec()))
                    .ok_or_else(|| "no command: the image's entrypoint cannot run locally".to_string())?;
                let mut vars = vars;
                if !unit.spec.artifacts.is_empty() || !unit.spec.inputs.is_empty() {
                    // As in a pod: the command runs under `weir exec` (this executable), with
                    // the run's directory store.
                    let plan = exec::Plan {
                        store: Some(crate::artifacts::Location::Dir(self.run.artifact_dir.clone())),
                        prefix: artifact::attempt_prefix(None, "local", &self.run.name, &unit.task_run, number),
                        inputs: unit.spec.inputs.clone(),
                        artifacts: unit.spec.artifacts.clone(),
                        result: attempt.outputs_file.display().to_string(),
                        work_dir: run_dir.join(format!("{}.attempt-{number}.exec", unit.stem)).display().to_string(),
                        keep_log: false,
                    };
                    let me = std::env::current_exe().map_err(|e| format!("finding the weir executable: {e}"))?;
                    args = ["exec".to_string(), "--".to_string(), program].into_iter().chain(args).collect();
                    program = me.display().to_string();
                    vars.push((exec::PLAN_ENV.to_string(), serde_json::to_string(&plan).map_err(|e| e.to_string())?));
                }
                Ok(Launch {
                    program,
                    args,
                    env: vars,
                    working_dir: unit.spec.working_dir.as_ref().map(PathBuf::from),
                    log,
                    timeout: unit.spec.timeout.as_deref().and_then(|t| duration::parse(t).ok()),
                    grace: self.run.grace,
                })
            });
        let start = launch.map(|launch| move |requests| process::run(launch, requests));
        self.begin(u, attempt, start, now);
    }

    /// Starts an attempt that `start` runs to its end (a process, or a wait), or records it
    /// as failed to start with the message.
    fn begin<F, Fut>(&mut self, u: usize, mut attempt: Attempt, start: Result<F, String>, now: Timestamp)
    where
        F: FnOnce(mpsc::UnboundedReceiver<Control>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Ended> + Send + 'static,
    {
        match start {
            Ok(start) => {
                let (control, requests) = mpsc::unbounded_channel();
                attempt.control = Some(control);
                let events = self.events.clone();
                let number = attempt.number;
                tokio::spawn(async move {
                    let ended = start(requests).await;
                    let _ = events.send(Event {
                        unit: u,
                        number,
                        ended,
                    });
                });
            }
            Err(message) => {
                let _ = std::fs::write(&attempt.log, format!("weir: {message}\n"));
                attempt.phase = AttemptPhase::Failed;
                attempt.reason = Some(FailureReason::ConfigError);
                attempt.message = Some(message);
                attempt.finished_at = Some(now);
            }
        }
        self.units[u].attempts.push(attempt);
    }

    /// A wait task's attempt: `delay` and `time` are honoured here, with no process; kinds
    /// that need a cluster (refused before the run starts) fail the attempt, saying so.
    fn start_wait(&mut self, u: usize, attempt: Attempt, wait: &crate::api::WaitSpec, now: Timestamp) {
        let timeout = self.units[u]
            .spec
            .timeout
            .as_deref()
            .and_then(|t| duration::parse(t).ok());
        let wait_for = match (&wait.delay, wait.time.as_ref().and_then(|t| t.at.as_ref())) {
            (Some(delay), _) => duration::parse(delay).map_err(|e| format!("wait.delay: {e}")),
            (None, Some(at)) => Ok(Duration::try_from(at.0.duration_since(now)).unwrap_or(Duration::ZERO)),
            _ => Err(format!(
                "wait.{} needs a cluster: `weir run` can only wait for a delay or a time",
                wait.kinds().join(", ")
            )),
        };
        let start = wait_for.map(|wait_for| {
            let note = format!("weir: waiting {} (no process)\n", duration::format(wait_for));
            let _ = std::fs::write(&attempt.log, note);
            move |requests| process::wait(wait_for, timeout, requests)
        });
        self.begin(u, attempt, start, now);
    }

    /// What `observe_attempt` and the TaskRun controller record when a Job ends.
    fn record(&mut self, event: Event, now: Timestamp) {
        let unit = &mut self.units[event.unit];
        let declared = unit.spec.outputs.clone();
        let timeout = unit.spec.timeout.clone().unwrap_or_default();
        let stop_reason = match self.stop {
            Some(StopReason::Timeout) => "the run timed out",
            _ => "the run was cancelled",
        };
        let Some(a) = unit.attempts.iter_mut().find(|a| a.number == event.number) else {
            return;
        };
        a.control = None;
        a.finished_at = Some(now);
        let (phase, reason, exit_code, message) = match event.ended {
            Ended::Exited { code: Some(0), .. } => {
                // As on a cluster with an artifact store, where `weir exec` moves values too
                // large for a termination message to the store: up to 32 MiB in all.
                let text = read_tail(&a.outputs_file, outputs::MAX_LARGE_BYTES);
                match outputs::parse_within(&text, &declared, outputs::MAX_LARGE_BYTES) {
                    Ok(parsed) => {
                        unit.outputs = parsed;
                        (AttemptPhase::Succeeded, None, Some(0), None)
                    }
                    Err(problem) => (
                        AttemptPhase::Failed,
                        Some(FailureReason::OutputError),
                        Some(0),
                        Some(problem),
                    ),
                }
            }
            Ended::Exited { code: Some(code), .. } => {
                let text = read_tail(&a.outputs_file, outputs::MAX_BYTES);
                match text.strip_prefix(exec::FAILURE_PREFIX) {
                    Some(_) if code == exec::FAILURE_EXIT_CODE => (
                        AttemptPhase::Failed,
                        Some(FailureReason::ArtifactError),
                        Some(code),
                        Some(format!("exit code {code}: {}", text.trim_end())),
                    ),
                    _ => (
                        AttemptPhase::Failed,
                        Some(FailureReason::Error),
                        Some(code),
                        Some(format!("exit code {code}")),
                    ),
                }
            }
            Ended::Exited { signal, .. } => {
                let signal = signal.unwrap_or(0);
                (
                    AttemptPhase::Failed,
                    Some(FailureReason::Error),
                    Some(128 + signal),
                    Some(format!("killed by signal {signal}")),
                )
            }
            Ended::TimedOut => (
                AttemptPhase::Failed,
                Some(FailureReason::DeadlineExceeded),
                None,
                Some(format!("ran longer than its timeout of {timeout}")),
            ),
            Ended::Stopped => (
                AttemptPhase::Failed,
                Some(FailureReason::Cancelled),
                None,
                Some(format!("stopped: {stop_reason}")),
            ),
            Ended::NotStarted(message) => (
                AttemptPhase::Failed,
                Some(FailureReason::ConfigError),
                None,
                Some(message),
            ),
        };
        a.phase = phase;
        a.reason = reason;
        a.exit_code = exit_code;
        a.message = message;
    }

    /// Tells people about a task that changed: why an attempt failed, and the end of the
    /// log of a task that failed for good.
    fn on_change(&mut self, u: usize, now: Timestamp) {
        let unit = &self.units[u];
        let Some(last) = unit.attempts.last() else { return };
        let why = || {
            let reason = last.reason.map(|r| r.as_str()).unwrap_or("Unknown");
            match &last.message {
                Some(m) => format!("{reason}: {m}"),
                None => reason.to_string(),
            }
        };
        match unit.phase {
            TaskPhase::Retrying => {
                let wait = unit
                    .next_retry_at
                    .and_then(|at| Duration::try_from(at.duration_since(now)).ok())
                    .map(progress::elapsed)
                    .unwrap_or_default();
                self.progress.note(&format!(
                    "{}: attempt {} failed ({}); next attempt in {wait}",
                    unit.label,
                    last.number,
                    why()
                ));
            }
            TaskPhase::Failed => {
                let mut text = format!(
                    "{} failed after {} attempt(s): {}\n  log: {}",
                    unit.label,
                    unit.attempts.len(),
                    why(),
                    shown_path(&last.log)
                );
                for line in tail(&last.log, TAIL_LINES) {
                    text.push_str("\n  | ");
                    text.push_str(&line);
                }
                self.progress.note(&text);
            }
            _ => {}
        }
    }

    fn rows(&self, now: Timestamp) -> Vec<Row> {
        let pipeline = &self.run.pipeline;
        let steps = crate::graph::steps(pipeline);
        let mut order: Vec<usize> = (0..pipeline.len()).collect();
        order.sort_by_key(|&t| (steps[t], t));
        let mut rows = Vec::new();
        for t in order {
            let units: Vec<usize> = match self.single[t] {
                Some(u) => vec![u],
                None => self.instances[t].iter().flatten().copied().collect(),
            };
            if units.is_empty() {
                rows.push(Row {
                    label: pipeline.name(t).to_string(),
                    phase: self.states[t],
                    attempts: 0,
                    max_attempts: 1,
                    elapsed: None,
                    detail: self.notes[t].clone(),
                });
            }
            for u in units {
                rows.push(self.row(&self.units[u], now));
            }
        }
        rows
    }

    fn row(&self, unit: &Unit, now: Timestamp) -> Row {
        let first = unit.attempts.first().map(|a| a.started_at);
        let end = unit.finished_at.filter(|_| !unit.alive()).unwrap_or(now);
        let elapsed = first.and_then(|s| Duration::try_from(end.duration_since(s)).ok());
        let last = unit.attempts.last();
        let failure = || {
            last.and_then(|a| {
                let reason = a.reason?;
                Some(match &a.message {
                    // "Cancelled: stopped: ..." says it twice.
                    Some(m) if reason == FailureReason::Cancelled => m.clone(),
                    Some(m) => format!("{}: {m}", reason.as_str()),
                    None => reason.as_str().to_string(),
                })
            })
        };
        let detail = match unit.phase {
            _ if unit.alive() && unit.cancel_requested => Some("stopping".to_string()),
            TaskPhase::Retrying => unit.next_retry_at.map(|at| {
                let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
                format!("next attempt in {}", progress::elapsed(wait))
            }),
            TaskPhase::Failed | TaskPhase::Cancelled => failure(),
            TaskPhase::Pending => unit.waiting.clone(),
            _ => None,
        };
        Row {
            label: unit.label.clone(),
            phase: unit.observed_phase(),
            attempts: unit.attempts.len() as u32,
            max_attempts: unit.max_attempts(),
            elapsed,
            detail,
        }
    }

    fn footer(&self, rows: &[Row], now: Timestamp) -> String {
        let done = rows.iter().filter(|r| r.phase.is_terminal()).count();
        let running = rows
            .iter()
            .filter(|r| matches!(r.phase, TaskPhase::Running | TaskPhase::Retrying))
            .count();
        let took = Duration::try_from(now.duration_since(self.started_at)).unwrap_or_default();
        let hint = if self.aborted {
            "stopping everything"
        } else if self.interrupted {
            "cancelling (Ctrl-C again to stop at once)"
        } else {
            "Ctrl-C to cancel"
        };
        format!(
            "{done}/{} done, {running} running, {} · {hint}",
            rows.len(),
            progress::elapsed(took)
        )
    }

    fn render(&mut self, now: Timestamp) {
        let rows = self.rows(now);
        let footer = self.footer(&rows, now);
        self.progress.update(&rows, &footer);
    }

    fn interrupt(&mut self) {
        if !self.interrupted {
            self.interrupted = true;
            self.cancel_requested = true;
            self.progress.note(&format!(
                "interrupted: cancelling the run (running tasks get SIGTERM, then SIGKILL after {}); press Ctrl-C again to stop everything at once",
                progress::elapsed(self.run.grace)
            ));
        } else if !self.aborted {
            self.aborted = true;
            self.progress
                .note("interrupted again: killing every task process now");
            for unit in &self.units {
                for a in &unit.attempts {
                    if let Some(control) = &a.control {
                        let _ = control.send(Control::Kill);
                    }
                }
            }
        }
    }

    /// How long until something is due without any event: a retry, the run deadline.
    fn next_wake(&self, now: Timestamp) -> Option<Duration> {
        let retries = self
            .units
            .iter()
            .filter_map(|u| u.next_retry_at)
            .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or_default());
        retries
            .chain(self.requeue_after)
            .min()
            .map(|d| d + Duration::from_millis(5))
    }
}

/// A path relative to the current directory when it is under it (shorter to read).
pub fn shown_path(path: &std::path::Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
        .unwrap_or_else(|| path.display().to_string())
}

/// The last `max` bytes of a file, read without holding the rest (a task may write far
/// more to its outputs file than the 4 KiB a termination message keeps); empty when the
/// file cannot be read.
fn read_tail(path: &std::path::Path, max: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max as u64)))?;
        let mut bytes = Vec::with_capacity(max);
        file.take(max as u64).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    read().map_or_else(|_| String::new(), |b| String::from_utf8_lossy(&b).into_owned())
}

/// The last `n` lines of a file.
fn tail(path: &std::path::Path, n: usize) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Runs the pipeline to its end (or until a second interrupt).
pub async fn execute(run: LocalRun, display: Display) -> std::io::Result<Report> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupts = signal(SignalKind::interrupt())?;
    let mut terminations = signal(SignalKind::terminate())?;
    let (events, mut ended) = mpsc::unbounded_channel();
    let mut runner = Runner::new(run, display, events);
    let mut ticker = tokio::time::interval(Duration::from_millis(150));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let now = Timestamp::now();
        runner.step(now);
        runner.render(now);
        let done = runner.outcome.is_some() || runner.aborted;
        if done && runner.live_processes() == 0 {
            break;
        }
        let wake = runner.next_wake(now).unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            Some(event) = ended.recv() => runner.record(event, Timestamp::now()),
            () = tokio::time::sleep(wake) => {}
            _ = interrupts.recv() => runner.interrupt(),
            _ = terminations.recv() => runner.interrupt(),
            _ = ticker.tick(), if runner.progress.is_live() => {}
        }
        // Take every event that is already there before planning again.
        while let Ok(event) = ended.try_recv() {
            runner.record(event, Timestamp::now());
        }
    }
    let now = Timestamp::now();
    runner.progress.finish();
    let rows = runner.rows(now);
    let duration = Duration::try_from(now.duration_since(runner.started_at)).unwrap_or_default();
    write_record(&runner, now);
    Ok(Report {
        outcome: runner.outcome.clone(),
        interrupted: runner.interrupted,
        rows,
        duration,
    })
}

/// `run.json` in the run directory: every task and attempt, for tools and for later.
fn write_record(runner: &Runner, now: Timestamp) {
    let time = |t: Option<Timestamp>| t.map(|t| t.to_string());
    let units: Vec<serde_json::Value> = runner
        .units
        .iter()
        .map(|u| {
            serde_json::json!({
                "task": runner.run.pipeline.name(u.task),
                "instance": u.instance,
                "taskRun": u.task_run,
                "phase": u.phase.as_str(),
                "outputs": u.outputs,
                "attempts": u.attempts.iter().map(|a| serde_json::json!({
                    "number": a.number,
                    "phase": format!("{:?}", a.phase),
                    "reason": a.reason.map(|r| r.as_str()),
                    "exitCode": a.exit_code,
                    "message": a.message,
                    "startTime": a.started_at.to_string(),
                    "completionTime": time(a.finished_at),
                    "log": a.log.display().to_string(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    use crate::api::{RunPhase, reasons};
    let (phase, reason, message) = match &runner.outcome {
        Some(RunOutcome::Succeeded) => (RunPhase::Succeeded, reasons::SUCCEEDED, String::new()),
        Some(RunOutcome::Failed { reason, message }) => (RunPhase::Failed, *reason, message.clone()),
        Some(RunOutcome::Cancelled { message }) => (RunPhase::Cancelled, reasons::CANCELLED, message.clone()),
        None => (
            RunPhase::Cancelled,
            "Killed",
            "stopped at once by a second interrupt".into(),
        ),
    };
    let record = serde_json::json!({
        "name": runner.run.name,
        "pipeline": runner.run.pipeline_name,
        "phase": phase,
        "reason": reason,
        "message": message,
        "startTime": runner.started_at.to_string(),
        "completionTime": now.to_string(),
        "states": (0..runner.run.pipeline.len())
            .map(|t| (runner.run.pipeline.name(t).to_string(), runner.states[t].as_str()))
            .collect::<BTreeMap<_, _>>(),
        "taskRuns": units,
    });
    if let Ok(text) = serde_json::to_string_pretty(&record) {
        let _ = std::fs::write(runner.run.run_dir.join("run.json"), text + "\n");
    }
}
