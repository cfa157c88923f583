//! Resolution of a task: the pipeline's defaults applied, producing the spec of its TaskRun.

use super::validate::ValidPipeline;
use crate::api::{TaskRunSpec, TaskSpec};

/// The TaskRun spec of task `index` of a validated pipeline.
pub fn task_run_spec(pipeline: &ValidPipeline, index: usize) -> TaskRunSpec {
    let spec = &pipeline.spec;
    let task: &TaskSpec = pipeline.task(index);
    let defaults = spec.defaults.clone().unwrap_or_default();
    // Defaults first, then the task's own variables replacing any of the same name.
    let mut env = defaults.env.clone();
    for var in &task.env {
        match env.iter_mut().find(|v| v.name == var.name) {
            Some(existing) => *existing = var.clone(),
            None => env.push(var.clone()),
        }
    }
    TaskRunSpec {
        task_name: task.name.clone(),
        image: task.image.clone().or(defaults.image).unwrap_or_default(),
        command: task.command.clone(),
        args: task.args.clone(),
        env,
        working_dir: task.working_dir.clone(),
        resources: task.resources.clone().or(defaults.resources),
        security_context: task.security_context.clone(),
        retries: task.retries.clone().or(defaults.retries),
        timeout: task.timeout.clone().or(defaults.timeout),
        pod_template: spec.pod_template.clone(),
        cancelled: false,
    }
}
