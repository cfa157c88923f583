//! Rerun (Airflow's "clear"): which tasks and which of their TaskRuns a rerun request runs
//! again. Pure: the operator applies the result by asking each TaskRun to run again and
//! recording the request as applied; the run step then sees those TaskRuns as pending, and
//! tasks derived from them (upstream-failed, skipped, cancelled before starting) are worked
//! out afresh.

use super::step::Child;
use super::validate::ValidPipeline;
use crate::api::{RerunRequest, TaskPhase};
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
    let mut selected: BTreeSet<usize> = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in &request.tasks {
        match pipeline.index.get(name) {
            Some(&t) => {
                selected.insert(t);
            }
            None => unknown.push(name.as_str()),
        }
    }
    if !unknown.is_empty() {
        let known: Vec<&str> = (0..pipeline.len()).map(|t| pipeline.name(t)).collect();
        return Err(format!(
            "unknown task(s) {} (the pipeline has: {})",
            unknown.join(", "),
            known.join(", ")
        ));
    }
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
