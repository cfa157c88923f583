//! The pure heart of Weir: validation, DAG analysis, retry arithmetic and planning.
//! Nothing here does I/O or reads the clock: time is always a parameter.

pub mod approval;
pub mod asset;
pub mod dag;
pub mod deadline;
pub mod duration;
#[cfg(test)]
pub mod fixture;
pub mod names;
pub mod notify;
pub mod outputs;
pub mod params;
pub mod plan;
pub mod pool;
pub mod quote;
pub mod rerun;
pub mod resolve;
pub mod retry;
pub mod revision;
pub mod schedule;
pub mod sensor;
pub mod step;
pub mod suggest;
pub mod template;
pub mod validate;

pub use plan::{
    AttemptAction, Disruption, ObservedAttempt, ObservedTask, Prepared, RunInput, RunOutcome, RunPlan,
    StopReason, TaskInput, TaskPlan, always_run, plan_run, plan_task,
};
pub use step::{Child, RunStep, RunSummary, Start, StepInput, run_timeout, step_run};
pub use validate::{RunSource, ValidPipeline, ValidationError, ValidationErrors, run_source, validate};

#[cfg(test)]
mod tests;
