//! A run driven by hand: observed states set by name, plans read by name.

use crate::api::{PipelineSpec, TaskPhase};
use crate::engine::{ObservedTask, RunInput, RunPlan, ValidPipeline, always_run, plan_run, validate};
use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// When every test run starts.
pub fn t0() -> Timestamp {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

/// `secs` seconds after [`t0`].
pub fn at(secs: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(secs)
}

pub fn valid(spec: &PipelineSpec) -> ValidPipeline {
    validate(spec).unwrap_or_else(|e| panic!("pipeline should be valid: {e}"))
}

/// A run of a pipeline started at [`t0`], with what the controller observed of each task.
pub struct Run {
    pub pipeline: ValidPipeline,
    pub observed: Vec<Option<ObservedTask>>,
    pub cancel_requested: bool,
    pub timeout: Option<Duration>,
    pub now: Timestamp,
}

impl Run {
    pub fn new(spec: PipelineSpec) -> Run {
        let pipeline = valid(&spec);
        let observed = vec![None; pipeline.len()];
        let timeout = pipeline.timeout;
        Run {
            pipeline,
            observed,
            cancel_requested: false,
            timeout,
            now: t0(),
        }
    }

    pub fn index(&self, name: &str) -> usize {
        *self
            .pipeline
            .index
            .get(name)
            .unwrap_or_else(|| panic!("no task {name:?}"))
    }

    pub fn plan(&self) -> RunPlan {
        plan_run(&RunInput {
            pipeline: &self.pipeline,
            observed: &self.observed,
            cancel_requested: self.cancel_requested,
            started_at: t0(),
            timeout: self.timeout,
            now: self.now,
            instances: &[],
            prepare: &always_run,
        })
    }

    /// Records what the TaskRun of `name` reports.
    pub fn set(&mut self, name: &str, phase: TaskPhase) -> &mut Self {
        let i = self.index(name);
        let cancel_requested = self.observed[i].is_some_and(|o| o.cancel_requested);
        self.observed[i] = Some(ObservedTask {
            phase,
            cancel_requested,
        });
        self
    }

    /// Does what a plan says, as the controller would: creates the TaskRuns of started
    /// tasks (Pending) and asks those in `cancel` to stop.
    pub fn apply(&mut self, plan: &RunPlan) -> &mut Self {
        for &t in &plan.start {
            assert!(
                self.observed[t].is_none(),
                "{} started twice",
                self.pipeline.name(t)
            );
            self.observed[t] = Some(ObservedTask {
                phase: TaskPhase::Pending,
                cancel_requested: false,
            });
        }
        for &t in &plan.cancel {
            let o = self.observed[t]
                .as_mut()
                .expect("only tasks with a TaskRun are cancelled");
            o.cancel_requested = true;
        }
        self
    }

    /// Plans and applies the plan.
    pub fn step(&mut self) -> RunPlan {
        let plan = self.plan();
        self.apply(&plan);
        plan
    }

    /// Plans, applies the plan, and gives the names of the tasks it started.
    pub fn started(&mut self) -> Vec<String> {
        let plan = self.step();
        self.names(&plan.start).into_iter().map(String::from).collect()
    }

    pub fn names(&self, tasks: &[usize]) -> Vec<&str> {
        tasks.iter().map(|&t| self.pipeline.name(t)).collect()
    }

    pub fn state(&self, plan: &RunPlan, name: &str) -> TaskPhase {
        plan.states[self.index(name)]
    }

    /// `name=State` for every task, in index order: compact to assert on.
    pub fn states(&self, plan: &RunPlan) -> String {
        plan.states
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}={}", self.pipeline.name(i), s.as_str()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
