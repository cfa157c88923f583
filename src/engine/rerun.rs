//! Rerun (Airflow's "clear"): which tasks and which of their TaskRuns a rerun request runs
//! again. Pure: the operator applies the result by asking each TaskRun to run again and
//! recording the request as applied; the run step then sees those TaskRuns as pending, and
//! tasks derived from them (upstream-failed, skipped, cancelled before starting) are worked
//! out afresh.

use super::step::Child;
use super::suggest;
use super::validate::ValidPipeline;
use crate::api::{PipelineSpec, RerunRequest, TaskPhase};
use std::collections::BTreeSet;

/// What a rerun request runs again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rerun {
    /// Tasks run again, in dependency order, `finally` tasks last: those selected, those
    /// downstream of them (when asked), and every `finally` task.
    pub tasks: Vec<usize>,
    /// Children (indexes into the children given) to ask to run again.
    pub children: Vec<usize>,
}

/// States a task can be rerun from when no task is named: it did not succeed.
fn did_not_succeed(phase: TaskPhase) -> bool {
    matches!(
        phase,
        TaskPhase::Failed | TaskPhase::UpstreamFailed | TaskPhase::Cancelled
    )
}

/// What is wrong with the tasks a rerun request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameProblem {
    /// Names that are no task of the pipeline, each with the closest task name if any.
    Unknown {
        names: Vec<(String, Option<String>)>,
        known: Vec<String>,
    },
    /// Only `finally` tasks are named: they run again at the end of every rerun anyway.
    FinallyOnly,
}

impl std::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameProblem::Unknown { names, known } => {
                let names: Vec<String> = names.iter().map(|(n, hint)| with_hint(n, hint)).collect();
                write!(
                    f,
                    "unknown task(s) {} (the pipeline has: {})",
                    names.join(", "),
                    known.join(", ")
                )
            }
            NameProblem::FinallyOnly => write!(
                f,
                "finally tasks only: they run again at the end of every rerun anyway, so name tasks of the pipeline's spec.tasks"
            ),
        }
    }
}

/// `name`, with "(did you mean ...?)" when there is a closest known name.
pub fn with_hint(name: &str, hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("{name} (did you mean {h}?)"),
        None => name.to_string(),
    }
}

/// Checks the tasks a rerun request names against the pipeline: the operator and
/// `weir rerun` both ask this, so a request is refused for the same reasons in both.
pub fn check_names(pipeline: &PipelineSpec, names: &[String]) -> Result<(), NameProblem> {
    let known: Vec<&str> = pipeline
        .tasks
        .iter()
        .chain(&pipeline.finally)
        .map(|t| t.name.as_str())
        .collect();
    let unknown: Vec<(String, Option<String>)> = names
        .iter()
        .filter(|n| !known.contains(&n.as_str()))
        .map(|n| {
            (
                n.clone(),
                suggest::closest(n, known.iter().copied()).map(String::from),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(NameProblem::Unknown {
            names: unknown,
            known: known.iter().map(|k| k.to_string()).collect(),
        });
    }
    let finally = |n: &String| pipeline.finally.iter().any(|t| &t.name == n);
    if !names.is_empty() && names.iter().all(finally) {
        return Err(NameProblem::FinallyOnly);
    }
    Ok(())
}

/// Works out a rerun request against the run's current task states (`states`, from the
/// run step) and children. Children already asked to run again for this same request count
/// as selected, so that working a request out again after a crash half way through
/// selects the same tasks.
pub fn plan_rerun(
    pipeline: &ValidPipeline,
    states: &[TaskPhase],
    children: &[Child<'_>],
    request: &RerunRequest,
) -> Result<Rerun, String> {
    if let Err(problem) = check_names(&pipeline.spec, &request.tasks) {
        return Err(problem.to_string());
    }
    let mut selected: BTreeSet<usize> = request.tasks.iter().map(|name| pipeline.index[name]).collect();
    if request.tasks.is_empty() {
        selected.extend((0..pipeline.main_count).filter(|&t| did_not_succeed(states[t])));
    }
    for child in children
        .iter()
        .filter(|c| c.rerun == Some(request.request.as_str()))
    {
        if let Some(&t) = pipeline.index.get(child.task) {
            selected.insert(t);
        }
    }
    if request.downstream {
        let mut stack: Vec<usize> = selected.iter().copied().collect();
        while let Some(t) = stack.pop() {
            for &d in pipeline.dag.downstream(t) {
                if selected.insert(d) {
                    stack.push(d);
                }
            }
        }
    }
    if selected.iter().all(|&t| pipeline.is_finally(t)) {
        return Err("nothing to rerun: every task succeeded (name the tasks to run again)".into());
    }
    selected.extend(pipeline.main_count..pipeline.len());
    let mut tasks: Vec<usize> = pipeline
        .dag
        .topological_order()
        .iter()
        .copied()
        .filter(|t| selected.contains(t))
        .collect();
    tasks.sort_by_key(|&t| pipeline.is_finally(t));
    let children = children
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            pipeline.index.get(c.task).is_some_and(|t| selected.contains(t))
                && (c.instance.is_none()
                    || !request.failed_instances_only
                    || c.phase != TaskPhase::Succeeded
                    || c.rerun == Some(request.request.as_str()))
        })
        .map(|(i, _)| i)
        .collect();
    Ok(Rerun { tasks, children })
}
