//! Validation of a pipeline: every problem at once, each naming the task and field, so one
//! round of fixes is enough. The operator (Ready condition and Events), the CLI and the
//! admission webhook all use this one function.

use super::dag::Dag;
use super::duration;
use super::names::{self, MAX_NAME};
use super::quote::{cut, q};
use crate::api::wait::{ObjectWait, WaitSpec};
use crate::api::{PipelineRunSpec, PipelineSpec, RetryPolicy, TaskSpec, TriggerRule, WeightRule};
use k8s_openapi::api::core::v1::EnvVar;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

/// Most tasks (`finally` included) one pipeline may have.
pub const MAX_TASKS: usize = 10_000;

/// Unknown dependencies that get a "did you mean": each looks through every task name, so
/// thousands of them would take minutes, and nobody reads that many suggestions.
pub const MAX_SUGGESTIONS: usize = 20;

/// One problem in a pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// The task the problem is in, when it is in one.
    pub task: Option<String>,
    /// Where in the spec, for example `tasks[2].dependsOn`.
    pub field: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.task {
            Some(task) => write!(f, "task {} ({}): {}", q(task), self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Every problem found in a pipeline; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A pipeline that passed validation, with its graph built. Tasks are indexed `0..n` for
/// `tasks` followed by `n..n+m` for `finally`.
#[derive(Clone, Debug)]
pub struct ValidPipeline {
    pub spec: PipelineSpec,
    pub dag: Dag,
    /// Number of tasks in `tasks` (the rest are `finally` tasks).
    pub main_count: usize,
    pub index: HashMap<String, usize>,
    pub parallelism: Option<usize>,
    pub timeout: Option<Duration>,
    /// What planning reads of every task, packed by index. A `TaskSpec` is close to 1 KiB,
    /// and the planner visits tasks in dependency order, not listing order: reading the
    /// specs there misses the cache on every task of a large pipeline (3x slower at 10,000).
    hot: Vec<HotTask>,
    /// Each task's priority in its pool's queue (its weight rule applied), by index; empty
    /// when no task uses a pool.
    priorities: Vec<i64>,
}

#[derive(Clone, Copy, Debug)]
struct HotTask {
    rule: TriggerRule,
    fans_out: bool,
}

impl ValidPipeline {
    /// The task's trigger rule (default applied).
    pub fn rule(&self, task: usize) -> TriggerRule {
        self.hot[task].rule
    }

    /// Whether the task runs once per `forEach` item.
    pub fn fans_out(&self, task: usize) -> bool {
        self.hot[task].fans_out
    }

    pub fn len(&self) -> usize {
        self.dag.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dag.is_empty()
    }

    /// Whether the task waits without a pod, evaluated by the operator itself (a sensor,
    /// `wait`, or an approval gate, `approval`): it takes no `parallelism` slot.
    pub fn waits(&self, task: usize) -> bool {
        let task = self.task(task);
        task.wait.is_some() || task.approval.is_some()
    }

    pub fn is_finally(&self, task: usize) -> bool {
        task >= self.main_count
    }

    pub fn task(&self, i: usize) -> &TaskSpec {
        if i < self.main_count {
            &self.spec.tasks[i]
        } else {
            &self.spec.finally[i - self.main_count]
        }
    }

    pub fn name(&self, i: usize) -> &str {
        &self.task(i).name
    }

    /// The task's pool, its own or the default one.
    pub fn pool(&self, i: usize) -> Option<&str> {
        let default = self.spec.defaults.as_ref().and_then(|d| d.pool.as_deref());
        self.task(i).pool.as_deref().or(default)
    }

    /// The task's priority in its pool's queue (see `engine::pool::priorities`).
    pub fn priority(&self, i: usize) -> i64 {
        self.priorities
            .get(i)
            .copied()
            .unwrap_or(super::pool::DEFAULT_WEIGHT)
    }
}

/// The priorities of the tasks (see `engine::pool::priorities`), worked out only when a task
/// uses a pool: nothing else reads them.
fn task_priorities(spec: &PipelineSpec, all: &[(&TaskSpec, String)], dag: &Dag) -> Vec<i64> {
    let defaults = spec.defaults.as_ref();
    let uses_pool =
        defaults.and_then(|d| d.pool.as_ref()).is_some() || all.iter().any(|(t, _)| t.pool.is_some());
    if !uses_pool {
        return Vec::new();
    }
    let default_rule = defaults.and_then(|d| d.weight_rule).unwrap_or_default();
    let weights: Vec<i64> = all
        .iter()
        .map(|(t, _)| t.priority_weight.map_or(super::pool::DEFAULT_WEIGHT, i64::from))
        .collect();
    let rules: Vec<WeightRule> = all
        .iter()
        .map(|(t, _)| t.weight_rule.unwrap_or(default_rule))
        .collect();
    super::pool::priorities(dag, &weights, &rules)
}

struct Collector(Vec<ValidationError>);

impl Collector {
    fn task(&mut self, task: &str, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            task: Some(task.to_string()),
            field: field.into(),
            message: message.into(),
        });
    }

    fn spec(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            task: None,
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Where a run's pipeline comes from.
#[derive(Clone, Copy, Debug)]
pub enum RunSource<'a> {
    /// `pipelineRef`: the Pipeline of that name in the run's namespace.
    Ref(&'a str),
    /// `pipelineSpec`: given inline.
    Inline(&'a PipelineSpec),
}

/// A run names its pipeline by exactly one of `pipelineRef` and `pipelineSpec`. The
/// operator, `weir validate` and the admission webhook all ask here; the error's field is
/// `spec`, relative to the run.
pub fn run_source(run: &PipelineRunSpec) -> Result<RunSource<'_>, ValidationError> {
    let problem = |message: &str| ValidationError {
        task: None,
        field: "spec".into(),
        message: message.into(),
    };
    match (&run.pipeline_ref, &run.pipeline_spec) {
        (Some(_), Some(_)) => Err(problem("set either pipelineRef or pipelineSpec, not both")),
        (None, None) => Err(problem("pipelineRef or pipelineSpec is required")),
        (Some(r), None) => Ok(RunSource::Ref(&r.name)),
        (None, Some(spec)) => Ok(RunSource::Inline(spec)),
    }
}

/// Validates a pipeline, reporting every problem found.
pub fn validate(spec: &PipelineSpec) -> Result<ValidPipeline, ValidationErrors> {
    let mut errors = Collector(Vec::new());
    let main_count = spec.tasks.len();
    let all: Vec<(&TaskSpec, String)> = spec
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t, format!("tasks[{i}]")))
        .chain(
            spec.finally
                .iter()
                .enumerate()
                .map(|(i, t)| (t, format!("finally[{i}]"))),
        )
        .collect();

    if spec.tasks.is_empty() {
        errors.spec("tasks", "a pipeline needs at least one task");
    }
    if all.len() > MAX_TASKS {
        errors.spec(
            "tasks",
            format!("{} tasks is more than the limit of {MAX_TASKS}", all.len()),
        );
    }

    // Names: valid, unique across tasks and finally.
    let mut index: HashMap<String, usize> = HashMap::with_capacity(all.len());
    let mut duplicated: HashSet<&str> = HashSet::new();
    for (i, (task, path)) in all.iter().enumerate() {
        let name = task.name.as_str();
        if name.is_empty() {
            errors.spec(format!("{path}.name"), "task name is empty");
            continue;
        }
        if name.len() > MAX_NAME {
            errors.task(
                name,
                format!("{path}.name"),
                format!(
                    "name is {} characters; at most {MAX_NAME} fit in a Kubernetes name",
                    name.len()
                ),
            );
        } else if !names::is_dns_label(name) {
            errors.task(
                name,
                format!("{path}.name"),
                "name must be lowercase letters, digits and '-', starting and ending with a letter or digit",
            );
        }
        if index.insert(name.to_string(), i).is_some() {
            errors.task(
                name,
                format!("{path}.name"),
                "duplicate task name (names must be unique across tasks and finally)",
            );
            duplicated.insert(name);
        }
    }

    // Dependencies. Edges in error are left out of the graph, which is still searched for
    // cycles so that one round of fixes is enough. So are edges to or from a duplicated
    // name: which task they mean is unclear, and every cycle reported must be a real one.
    let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); all.len()];
    let mut suggestions = MAX_SUGGESTIONS;
    for (i, (task, path)) in all.iter().enumerate() {
        let is_finally = i >= main_count;
        let mut seen = HashSet::new();
        for dep in &task.depends_on {
            if !seen.insert(dep.as_str()) {
                errors.task(
                    &task.name,
                    format!("{path}.dependsOn"),
                    format!("{} is listed twice", q(dep)),
                );
                continue;
            }
            if *dep == task.name {
                errors.task(
                    &task.name,
                    format!("{path}.dependsOn"),
                    "a task cannot depend on itself",
                );
                continue;
            }
            match index.get(dep.as_str()) {
                None => {
                    // Only names this task may depend on are worth suggesting.
                    let section = if is_finally {
                        &all[main_count..]
                    } else {
                        &all[..main_count]
                    };
                    let candidates = section
                        .iter()
                        .map(|(t, _)| t.name.as_str())
                        .filter(|name| *name != task.name);
                    let suggestion = match suggestions.checked_sub(1) {
                        Some(left) => {
                            suggestions = left;
                            super::suggest::closest(dep, candidates)
                        }
                        None => None,
                    };
                    let hint = suggestion
                        .map(|s| format!(" (did you mean {}?)", q(s)))
                        .unwrap_or_default();
                    errors.task(
                        &task.name,
                        format!("{path}.dependsOn"),
                        format!("unknown task {}{hint}", q(dep)),
                    );
                }
                Some(&d) if is_finally && d < main_count => {
                    errors.task(
                        &task.name,
                        format!("{path}.dependsOn"),
                        format!("finally task cannot depend on {} from tasks: finally tasks run after all of them anyway", q(dep)),
                    );
                }
                Some(&d) if !is_finally && d >= main_count => {
                    errors.task(
                        &task.name,
                        format!("{path}.dependsOn"),
                        format!(
                            "{} is a finally task; tasks cannot depend on finally tasks",
                            q(dep)
                        ),
                    );
                }
                Some(&d) => {
                    if !duplicated.contains(task.name.as_str()) && !duplicated.contains(dep.as_str()) {
                        upstream[i].push(d);
                    }
                }
            }
        }
        check_task_fields(task, path, spec, &mut errors);
    }

    // Pipeline-level values.
    let parallelism = match spec.parallelism {
        Some(0) => {
            errors.spec("parallelism", "must be at least 1");
            None
        }
        p => p.map(|p| p as usize),
    };
    let timeout = check_duration(spec.timeout.as_deref(), "timeout", None, &mut errors);
    if let Some(defaults) = &spec.defaults {
        check_duration(defaults.timeout.as_deref(), "defaults.timeout", None, &mut errors);
        if let Some(r) = &defaults.retries {
            check_retries(r, "defaults.retries", None, &mut errors);
        }
        check_env(&defaults.env, "defaults", None, &mut errors);
    }
    if let Some(schedule) = &spec.schedule {
        for (field, message) in super::schedule::check(schedule) {
            errors.spec(format!("schedule.{field}"), message);
        }
    }
    if spec.max_active_runs == Some(0) {
        errors.spec("maxActiveRuns", "must be at least 1");
    }
    if let Some(trigger) = &spec.assets {
        for (field, message) in super::asset::check_trigger(trigger) {
            errors.spec(field, message);
        }
    }
    let declared: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
    for (field, message) in super::notify::check(&spec.notifications, &declared, "notifications") {
        errors.spec(field, message);
    }
    if let Some(deadline) = &spec.deadline {
        for (field, message) in super::deadline::check(deadline, "deadline", false) {
            errors.spec(field, message);
        }
    }

    let dag = match Dag::new(upstream) {
        Ok(dag) => Some(dag),
        Err(cycles) => {
            for cycle in cycles {
                let names: Vec<&str> = cycle.0.iter().map(|&i| all[i].0.name.as_str()).collect();
                let first = names[0];
                let path = &all[cycle.0[0]].1;
                errors.task(
                    first,
                    format!("{path}.dependsOn"),
                    format!("dependency cycle: {}", names.join(" -> ")),
                );
            }
            None
        }
    };

    check_params(spec, &mut errors);
    check_store(spec, &mut errors);
    check_data_flow(spec, &all, &index, main_count, dag.as_ref(), &mut errors);

    match (errors.0.is_empty(), dag) {
        (true, Some(dag)) => Ok(ValidPipeline {
            priorities: task_priorities(spec, &all, &dag),
            spec: spec.clone(),
            dag,
            main_count,
            index,
            parallelism,
            timeout,
            hot: all
                .iter()
                .map(|(t, _)| HotTask {
                    rule: t.trigger_rule.unwrap_or_default(),
                    fans_out: t.for_each.is_some(),
                })
                .collect(),
        }),
        _ => Err(ValidationErrors(errors.0)),
    }
}

fn check_task_fields(task: &TaskSpec, path: &str, spec: &PipelineSpec, errors: &mut Collector) {
    let name = task.name.as_str();
    let default_image = spec.defaults.as_ref().and_then(|d| d.image.as_deref());
    match task.image.as_deref().or(default_image) {
        // A sensor runs no container (its own checks are in `check_wait`).
        _ if task.wait.is_some() => check_wait(task, path, errors),
        // Nor does an approval gate.
        _ if task.approval.is_some() => check_approval(task, path, errors),
        None => errors.task(
            name,
            format!("{path}.image"),
            "no image: set image on the task or defaults.image",
        ),
        Some(image) if image.trim().is_empty() || image.chars().any(char::is_whitespace) => errors.task(
            name,
            format!("{path}.image"),
            format!("{} is not a valid image reference", q(image)),
        ),
        Some(_) => {}
    }
    check_duration(
        task.timeout.as_deref(),
        &format!("{path}.timeout"),
        Some(name),
        errors,
    );
    if let Some(r) = &task.retries {
        check_retries(r, &format!("{path}.retries"), Some(name), errors);
    }
    check_env(&task.env, path, Some(name), errors);
    check_pool(task, path, spec, errors);
    check_produces(task, path, errors);
    if let Some(deadline) = &task.deadline {
        for (field, message) in super::deadline::check(deadline, &format!("{path}.deadline"), true) {
            errors.task(name, field, message);
        }
    }
}

/// A `wait` task runs no container: it names nothing a container would need, exactly one
/// kind of wait, and every field of it reads.
fn check_wait(task: &TaskSpec, path: &str, errors: &mut Collector) {
    let name = task.name.as_str();
    check_no_container(task, path, ("a", "wait"), errors);
    for (field, set) in [
        ("outputs", !task.outputs.is_empty()),
        ("produces", !task.produces.is_empty()),
    ] {
        if set {
            errors.task(
                name,
                format!("{path}.{field}"),
                format!("a wait task hands on nothing: remove {field}"),
            );
        }
    }
    let Some(wait) = &task.wait else { return };
    let field = |f: &str| format!("{path}.wait.{f}");
    check_duration(
        wait.poke_interval.as_deref(),
        &field("pokeInterval"),
        Some(name),
        errors,
    );
    check_duration(wait.delay.as_deref(), &field("delay"), Some(name), errors);
    match wait.kinds().as_slice() {
        [] => errors.task(
            name,
            format!("{path}.wait"),
            "wait names nothing to wait for: set one of delay, time, pipelineRun, object, asset",
        ),
        [_] => {}
        many => errors.task(
            name,
            format!("{path}.wait"),
            format!(
                "wait names {} kinds ({}): a wait task waits for one thing; make one task per kind",
                many.len(),
                many.join(", ")
            ),
        ),
    }
    check_sensor_fields(wait, &field, name, errors);
}

/// The fields of each kind of sensor: offsets read, targets named, and nothing set that
/// the operator works out itself.
fn check_sensor_fields(wait: &WaitSpec, field: &dyn Fn(&str) -> String, task: &str, errors: &mut Collector) {
    let mut offset = |text: Option<&String>, f: &str| {
        if let Some(text) = text
            && let Err(e) = super::sensor::parse_offset(text)
        {
            errors.task(task, field(f), e);
        }
    };
    offset(wait.time.as_ref().and_then(|t| t.offset.as_ref()), "time.offset");
    let other = wait.pipeline_run.as_ref();
    offset(
        other.and_then(|o| o.logical_date_offset.as_ref()),
        "pipelineRun.logicalDateOffset",
    );
    let operators = [
        ("time.at", wait.time.as_ref().is_some_and(|t| t.at.is_some())),
        (
            "pipelineRun.logicalDate",
            other.is_some_and(|o| o.logical_date.is_some()),
        ),
        (
            "asset.after",
            wait.asset.as_ref().is_some_and(|a| a.after.is_some()),
        ),
    ];
    for (f, set) in operators {
        if set {
            errors.task(
                task,
                field(f),
                "set by the operator when the task starts: remove it",
            );
        }
    }
    if let Some(other) = other {
        let message = "name the pipeline to wait for";
        require(
            &other.pipeline,
            &field("pipelineRun.pipeline"),
            task,
            message,
            errors,
        );
    }
    if let Some(asset) = &wait.asset {
        require(
            &asset.name,
            &field("asset.name"),
            task,
            "name the asset to wait for",
            errors,
        );
        if !asset.name.contains("{{")
            && let Err(e) = super::asset::check_name(&asset.name)
        {
            errors.task(task, field("asset.name"), e);
        }
    }
    if let Some(object) = &wait.object {
        check_object(object, field, task, errors);
    }
}

/// `wait.object`: a kind, an API version, a name; a condition status Kubernetes uses.
fn check_object(object: &ObjectWait, field: &dyn Fn(&str) -> String, task: &str, errors: &mut Collector) {
    let named = [
        (
            &object.api_version,
            "object.apiVersion",
            "apiVersion (for example apps/v1)",
        ),
        (&object.kind, "object.kind", "kind (for example Deployment)"),
        (&object.name, "object.name", "name"),
    ];
    for (text, f, what) in named {
        require(
            text,
            &field(f),
            task,
            &format!("name the object's {what}"),
            errors,
        );
    }
    if object.api_version.split('/').count() > 2 || object.api_version.starts_with('/') {
        errors.task(
            task,
            field("object.apiVersion"),
            format!(
                "{} is not an apiVersion: write group/version, or v1",
                q(&object.api_version)
            ),
        );
    }
    if let Some(condition) = &object.condition {
        let message = "name the condition type (for example Ready)";
        require(
            &condition.type_,
            &field("object.condition.type"),
            task,
            message,
            errors,
        );
        if let Some(status) = condition.status.as_deref()
            && !["True", "False", "Unknown"].contains(&status)
        {
            errors.task(
                task,
                field("object.condition.status"),
                format!(
                    "{} is not a condition status: use True, False or Unknown",
                    q(status)
                ),
            );
        }
    }
    if let Some(f) = &object.field
        && (f.path.is_empty() || f.path.split('.').any(str::is_empty))
    {
        errors.task(
            task,
            field("object.field.path"),
            format!(
                "{} is not a field path: keys and list indexes separated by dots, for example status.phase",
                q(&f.path)
            ),
        );
    }
}

/// An error at `field` when `text` is empty.
fn require(text: &str, field: &str, task: &str, message: &str, errors: &mut Collector) {
    if text.trim().is_empty() {
        errors.task(task, field, message);
    }
}

/// A task of `kind` (`wait`, `approval`, with its article) runs no container: it names nothing a container
/// would need.
fn check_no_container(task: &TaskSpec, path: &str, (article, kind): (&str, &str), errors: &mut Collector) {
    let container_fields = [
        ("image", task.image.is_some()),
        ("command", !task.command.is_empty()),
        ("args", !task.args.is_empty()),
        ("env", !task.env.is_empty()),
        ("artifacts", !task.artifacts.is_empty()),
        ("inputs", !task.inputs.is_empty()),
        ("pool", task.pool.is_some()),
    ];
    for (field, set) in container_fields {
        if set {
            errors.task(
                &task.name,
                format!("{path}.{field}"),
                format!("{article} {kind} task runs no container: remove {field}, or {kind}"),
            );
        }
    }
}

/// An approval task runs no container, is one task (no fan-out) a person names to `weir
/// approve`, and has its own timeout (`approval.timeout`, then `onTimeout`).
fn check_approval(task: &TaskSpec, path: &str, errors: &mut Collector) {
    let name = task.name.as_str();
    check_no_container(task, path, ("an", "approval"), errors);
    let Some(gate) = &task.approval else { return };
    let refuse = |errors: &mut Collector, field: &str, message: &str| {
        errors.task(name, format!("{path}.{field}"), message.to_string());
    };
    if task.wait.is_some() {
        refuse(
            errors,
            "wait",
            "a task waits for a sensor (wait) or a person (approval), not both",
        );
    }
    if task.timeout.is_some() {
        refuse(
            errors,
            "timeout",
            "an approval task's timeout is approval.timeout (then approval.onTimeout decides): move it there",
        );
    }
    if task.retries.is_some() {
        refuse(
            errors,
            "retries",
            "an approval task is not retried (a rejection is final): remove retries",
        );
    }
    if task.for_each.is_some() {
        refuse(
            errors,
            "forEach",
            "an approval task cannot fan out: weir approve RUN TASK names one decision",
        );
    }
    if !task.outputs.is_empty() {
        refuse(
            errors,
            "outputs",
            "an approval task hands on no outputs: remove outputs",
        );
    }
    check_duration(
        gate.timeout.as_deref(),
        &format!("{path}.approval.timeout"),
        Some(name),
        errors,
    );
    if gate.on_timeout.is_some() && gate.timeout.is_none() {
        refuse(
            errors,
            "approval.onTimeout",
            "onTimeout needs approval.timeout (without one the task waits until the run ends)",
        );
    }
    if gate.message.as_deref().is_some_and(|m| m.len() > 1024) {
        refuse(errors, "approval.message", "longer than 1024 characters");
    }
}

/// Produced assets have valid names, and their extra values name declared outputs.
fn check_produces(task: &TaskSpec, path: &str, errors: &mut Collector) {
    let name = task.name.as_str();
    for (i, produced) in task.produces.iter().enumerate() {
        let field = format!("{path}.produces[{i}]");
        if let Err(e) = super::asset::check_name(&produced.asset) {
            errors.task(name, format!("{field}.asset"), e);
        }
        for key in &produced.extra {
            if !task.outputs.iter().any(|o| &o.name == key) {
                errors.task(
                    name,
                    format!("{field}.extra"),
                    format!("{} is not one of the task's outputs", q(key)),
                );
            }
        }
    }
}

/// A pool name must be a Kubernetes object name; `poolSlots` needs a pool and at least 1.
fn check_pool(task: &TaskSpec, path: &str, spec: &PipelineSpec, errors: &mut Collector) {
    let name = task.name.as_str();
    if let Some(pool) = &task.pool
        && !names::is_dns_subdomain(pool)
    {
        errors.task(
            name,
            format!("{path}.pool"),
            format!(
                "{} is not a valid Pool name: lowercase letters, digits, '-' and '.', at most 253 characters",
                q(pool)
            ),
        );
    }
    let default_pool = spec.defaults.as_ref().and_then(|d| d.pool.as_ref());
    match task.pool_slots {
        Some(0) => errors.task(name, format!("{path}.poolSlots"), "poolSlots must be at least 1"),
        Some(_) if task.pool.is_none() && default_pool.is_none() => errors.task(
            name,
            format!("{path}.poolSlots"),
            "poolSlots without a pool: set pool on the task or defaults.pool",
        ),
        _ => {}
    }
}

fn check_env(env: &[EnvVar], path: &str, task: Option<&str>, errors: &mut Collector) {
    let mut env_names = HashSet::new();
    for (j, var) in env.iter().enumerate() {
        let field = format!("{path}.env[{j}].name");
        let message = if var.name.is_empty() {
            "environment variable name is empty".to_string()
        } else if !env_names.insert(var.name.as_str()) {
            format!("environment variable {} is set twice", q(&var.name))
        } else {
            continue;
        };
        match task {
            Some(t) => errors.task(t, field, message),
            None => errors.spec(field, message),
        }
    }
}

fn check_duration(
    text: Option<&str>,
    field: &str,
    task: Option<&str>,
    errors: &mut Collector,
) -> Option<Duration> {
    let text = text?;
    let result = duration::parse(text).and_then(|d| {
        if d.is_zero() {
            Err(format!("{} must be longer than zero", q(text)))
        } else {
            Ok(d)
        }
    });
    match result {
        Ok(d) => Some(d),
        Err(message) => {
            match task {
                Some(t) => errors.task(t, field, message),
                None => errors.spec(field, message),
            }
            None
        }
    }
}

fn check_retries(r: &RetryPolicy, field: &str, task: Option<&str>, errors: &mut Collector) {
    let mut report = |f: String, m: String| match task {
        Some(t) => errors.task(t, f, m),
        None => errors.spec(f, m),
    };
    if r.limit > 100 {
        report(
            format!("{field}.limit"),
            format!("{} retries is more than the limit of 100", r.limit),
        );
    }
    if let Some(d) = r.disruptions
        && d > 100
    {
        report(
            format!("{field}.disruptions"),
            format!("{d} disruptions is more than the limit of 100"),
        );
    }
    if let Some(f) = r.backoff_factor
        && (!f.is_finite() || !(1.0..=100.0).contains(&f))
    {
        report(
            format!("{field}.backoffFactor"),
            format!("{f} must be between 1 and 100"),
        );
    }
    let delay = r.delay.as_deref().map(|d| (d, duration::parse(d)));
    let max = r.max_delay.as_deref().map(|d| (d, duration::parse(d)));
    if let Some((_, Err(m))) = &delay {
        report(format!("{field}.delay"), m.clone());
    }
    if let Some((_, Err(m))) = &max {
        report(format!("{field}.maxDelay"), m.clone());
    }
    if let (Some((dt, Ok(d))), Some((mt, Ok(m)))) = (&delay, &max)
        && m < d
    {
        report(
            format!("{field}.maxDelay"),
            format!("{mt} is shorter than delay {dt}"),
        );
    }
    if let Some(on) = &r.retry_on {
        for code in &on.exit_codes {
            if on.except_exit_codes.contains(code) {
                report(
                    format!("{field}.retryOn"),
                    format!("exit code {code} is both in exitCodes and exceptExitCodes"),
                );
            }
        }
    }
}

fn check_params(spec: &PipelineSpec, errors: &mut Collector) {
    let mut seen = std::collections::HashSet::new();
    for (i, param) in spec.params.iter().enumerate() {
        let field = format!("params[{i}]");
        if !seen.insert(param.name.as_str()) {
            errors.spec(
                format!("{field}.name"),
                format!("parameter {} is declared twice", q(&param.name)),
            );
        }
        if let Some(default) = &param.default
            && let Err(e) = super::params::coerce(param.type_, default.clone())
        {
            errors.spec(
                format!("{field}.default"),
                format!("parameter {}: {e}", q(&param.name)),
            );
        }
    }
}

/// Templates, `when`, `forEach` and outputs: every reference must name something that will
/// exist when the task starts (a declared parameter, an output declared by a task upstream).
fn check_data_flow(
    spec: &PipelineSpec,
    all: &[(&TaskSpec, String)],
    index: &HashMap<String, usize>,
    main_count: usize,
    dag: Option<&Dag>,
    errors: &mut Collector,
) {
    use super::template::Reference;
    use crate::api::WhenOperator;
    let reach = dag.map(|d| {
        Reach::new(d, |t| {
            !all[t].0.outputs.is_empty() || !all[t].0.artifacts.is_empty()
        })
    });
    check_artifacts(all, index, main_count, reach.as_ref(), errors);
    for (i, (task, path)) in all.iter().enumerate() {
        let name = task.name.as_str();
        let mut outputs = std::collections::HashSet::new();
        for (j, out) in task.outputs.iter().enumerate() {
            if !outputs.insert(out.name.as_str()) {
                errors.task(
                    name,
                    format!("{path}.outputs[{j}]"),
                    format!("output {} is declared twice", q(&out.name)),
                );
            }
        }
        for (j, w) in task.when.iter().enumerate() {
            if matches!(w.operator, WhenOperator::Equals | WhenOperator::NotEquals) && w.values.len() != 1 {
                errors.task(
                    name,
                    format!("{path}.when[{j}].values"),
                    format!(
                        "{:?} compares with exactly one value, got {}",
                        w.operator,
                        w.values.len()
                    ),
                );
            }
        }
        if let Some(fe) = &task.for_each {
            let field = format!("{path}.forEach");
            match (&fe.items, fe.matrix.is_empty()) {
                (Some(_), false) => errors.task(name, &field, "set either items or matrix, not both"),
                (None, true) => errors.task(name, &field, "needs items or matrix"),
                _ => {}
            }
            let lists = fe
                .items
                .iter()
                .map(|v| ("items".to_string(), v))
                .chain(fe.matrix.iter().map(|(k, v)| (format!("matrix.{k}"), v)));
            for (sub, value) in lists {
                match value {
                    serde_json::Value::String(s) if s.contains("{{") => {}
                    serde_json::Value::Array(items)
                        if items.iter().all(|v| v.is_string() || v.is_number()) =>
                    {
                        let limit = fe
                            .max_instances
                            .unwrap_or(crate::api::params::DEFAULT_MAX_INSTANCES)
                            as usize;
                        if items.len() > limit {
                            errors.task(
                                name,
                                format!("{field}.{sub}"),
                                format!("{} items is more than maxInstances {limit}", items.len()),
                            );
                        }
                    }
                    _ => errors.task(
                        name,
                        format!("{field}.{sub}"),
                        "must be a list of strings or a template giving one, like \"{{ params.regions }}\"",
                    ),
                }
            }
            if fe
                .max_instances
                .is_some_and(|m| m == 0 || m > crate::api::params::MAX_INSTANCES)
            {
                errors.task(
                    name,
                    format!("{field}.maxInstances"),
                    "must be between 1 and 10000",
                );
            }
        }
        for (field, parsed) in super::template::templates_of(task) {
            let field = format!("{path}.{field}");
            let template = match parsed {
                Ok(t) => t,
                Err(e) => {
                    errors.task(name, &field, format!("bad template: {e}"));
                    continue;
                }
            };
            for reference in template.references() {
                match reference {
                    Reference::Param(p) => {
                        if !spec.params.iter().any(|d| &d.name == p) {
                            errors.task(
                                name,
                                &field,
                                format!("{{{{ params.{} }}}}: no parameter {} is declared", cut(p), q(p)),
                            );
                        }
                    }
                    Reference::Run(_) => {}
                    Reference::AssetEvents | Reference::AssetEvent(_) if spec.assets.is_none() => errors.task(
                        name,
                        &field,
                        format!(
                            "{{{{ {} }}}} reads the asset events that start a run, and the pipeline has no spec.assets",
                            reference
                        ),
                    ),
                    Reference::AssetEvents | Reference::AssetEvent(_) => {}
                    Reference::Notification(_) => errors.task(
                        name,
                        &field,
                        format!(
                            "{{{{ {} }}}} is only available in a notification's message",
                            cut(&reference.to_string())
                        ),
                    ),
                    Reference::Item(key) => match (&task.for_each, key) {
                        (None, _) => errors.task(
                            name,
                            &field,
                            format!(
                                "{{{{ {} }}}} is only available in a task with forEach",
                                cut(&reference.to_string())
                            ),
                        ),
                        (Some(fe), Some(k)) if !fe.matrix.contains_key(k) => errors.task(
                            name,
                            &field,
                            format!("{{{{ item.{} }}}}: forEach.matrix has no {}", cut(k), q(k)),
                        ),
                        _ => {}
                    },
                    Reference::Output { task: up, key } => {
                        let Some(&u) = index.get(up.as_str()) else {
                            errors.task(
                                name,
                                &field,
                                format!("{{{{ {} }}}}: no task {}", cut(&reference.to_string()), q(up)),
                            );
                            continue;
                        };
                        if !all[u].0.outputs.iter().any(|o| &o.name == key) {
                            errors.task(
                                name,
                                &field,
                                format!(
                                    "{{{{ {} }}}}: task {} declares no output {}",
                                    cut(&reference.to_string()),
                                    q(up),
                                    q(key)
                                ),
                            );
                            continue;
                        }
                        let reachable = if i >= main_count && u < main_count {
                            true
                        } else {
                            reach.as_ref().is_none_or(|r| r.is_upstream(u, i))
                        };
                        if !reachable {
                            errors.task(
                                name,
                                &field,
                                format!(
                                    "{{{{ {} }}}}: task {} is not upstream of {} (add it to dependsOn)",
                                    cut(&reference.to_string()),
                                    q(up),
                                    q(name)
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Artifacts and inputs: names unique, paths absolute, a command to run under `weir exec`,
/// and every input naming an artifact that a task upstream declares.
/// An Azure store names its storage account; `account` means nothing to the others.
fn check_store(spec: &PipelineSpec, errors: &mut Collector) {
    let Some(store) = &spec.artifact_store else { return };
    let azure = store.provider == Some(crate::api::StoreProvider::Azure);
    match (azure, store.account.is_some()) {
        (true, false) => errors.spec(
            "spec.artifactStore.account",
            "an Azure store needs account: the storage account its container is in",
        ),
        (false, true) => errors.spec(
            "spec.artifactStore.account",
            "account is for Azure stores only: set provider: Azure, or remove it",
        ),
        _ => {}
    }
}

fn check_artifacts(
    all: &[(&TaskSpec, String)],
    index: &HashMap<String, usize>,
    main_count: usize,
    reach: Option<&Reach>,
    errors: &mut Collector,
) {
    for (i, (task, path)) in all.iter().enumerate() {
        let name = task.name.as_str();
        if (!task.artifacts.is_empty() || !task.inputs.is_empty()) && task.command.is_empty() {
            errors.task(
                name,
                format!("{path}.command"),
                "a task with artifacts or inputs needs a command: it runs under weir exec, which cannot know the image's entrypoint",
            );
        }
        let mut names = std::collections::HashSet::new();
        for (j, a) in task.artifacts.iter().enumerate() {
            let field = format!("{path}.artifacts[{j}]");
            if !names.insert(a.name.as_str()) {
                errors.task(name, &field, format!("artifact {} is declared twice", q(&a.name)));
            }
            check_artifact_path(&a.path, &field, name, errors);
        }
        for (j, input) in task.inputs.iter().enumerate() {
            let field = format!("{path}.inputs[{j}]");
            check_artifact_path(&input.path, &field, name, errors);
            let (producer, artifact) = match crate::api::artifact::parse_from(&input.from) {
                Ok(p) => p,
                Err(e) => {
                    errors.task(name, format!("{field}.from"), format!("{}: {e}", q(&input.from)));
                    continue;
                }
            };
            let Some(&u) = index.get(producer) else {
                errors.task(
                    name,
                    format!("{field}.from"),
                    format!("{}: no task {}", q(&input.from), q(producer)),
                );
                continue;
            };
            if !all[u].0.artifacts.iter().any(|a| a.name == artifact) {
                errors.task(
                    name,
                    format!("{field}.from"),
                    format!(
                        "{}: task {} declares no artifact {}",
                        q(&input.from),
                        q(producer),
                        q(artifact)
                    ),
                );
                continue;
            }
            let reachable = (i >= main_count && u < main_count) || reach.is_none_or(|r| r.is_upstream(u, i));
            if !reachable {
                errors.task(
                    name,
                    format!("{field}.from"),
                    format!(
                        "{}: task {} is not upstream of {} (add it to dependsOn)",
                        q(&input.from),
                        q(producer),
                        q(name)
                    ),
                );
            }
        }
    }
}

fn check_artifact_path(p: &str, field: &str, task: &str, errors: &mut Collector) {
    let normal = std::path::Path::new(p)
        .components()
        .all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)));
    if !p.starts_with('/') || p == "/" || !normal {
        errors.task(
            task,
            format!("{field}.path"),
            format!("{} must be an absolute path below / without . or .. parts", q(p)),
        );
    }
}

/// Which producers (tasks that declare outputs) are upstream of each task, as one bitset per
/// task, filled in a single pass in dependency order: time and memory (tasks + edges) x
/// producers / 64. A graph search per output reference instead is quadratic on a large
/// pipeline whose tasks read an early task's output (seconds at 10,000 tasks).
struct Reach {
    /// Bit of each producer, `u32::MAX` for other tasks.
    bit: Vec<u32>,
    /// `words` words per task.
    words: usize,
    upstream: Vec<u64>,
}

impl Reach {
    fn new(dag: &Dag, is_producer: impl Fn(usize) -> bool) -> Reach {
        let mut producers = 0u32;
        let bit: Vec<u32> = (0..dag.len())
            .map(|t| {
                if is_producer(t) {
                    producers += 1;
                    producers - 1
                } else {
                    u32::MAX
                }
            })
            .collect();
        let words = (producers as usize).div_ceil(64);
        let mut upstream = vec![0u64; dag.len() * words];
        for &t in dag.topological_order() {
            for &u in dag.upstream(t) {
                // Upstream tasks come first in the order: their sets are complete.
                for w in 0..words {
                    upstream[t * words + w] |= upstream[u * words + w];
                }
                if bit[u] != u32::MAX {
                    upstream[t * words + bit[u] as usize / 64] |= 1 << (bit[u] % 64);
                }
            }
        }
        Reach { bit, words, upstream }
    }

    /// Whether producer `producer` is (transitively) upstream of `task`.
    fn is_upstream(&self, producer: usize, task: usize) -> bool {
        let b = self.bit[producer];
        b != u32::MAX && self.upstream[task * self.words + b as usize / 64] & (1 << (b % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reaches(upstream: &[Vec<usize>], from: usize, to: usize) -> bool {
        let mut stack = upstream[to].clone();
        let mut seen = vec![false; upstream.len()];
        while let Some(t) = stack.pop() {
            if t == from {
                return true;
            }
            if !std::mem::replace(&mut seen[t], true) {
                stack.extend(&upstream[t]);
            }
        }
        false
    }

    proptest! {
        /// More than 64 producers, so several words per task are exercised.
        #[test]
        fn reach_agrees_with_a_graph_search(
            raw in proptest::collection::vec(proptest::collection::vec(any::<usize>(), 0..4), 1..150),
            producer_mask in any::<u128>(),
        ) {
            let upstream: Vec<Vec<usize>> = raw
                .iter()
                .enumerate()
                .map(|(i, deps)| {
                    let mut d: Vec<usize> = if i == 0 { vec![] } else { deps.iter().map(|x| x % i).collect() };
                    d.sort_unstable();
                    d.dedup();
                    d
                })
                .collect();
            let n = upstream.len();
            let is_producer = |t: usize| !t.is_multiple_of(3) || producer_mask >> (t % 128) & 1 == 1;
            let dag = Dag::new(upstream.clone()).unwrap();
            let reach = Reach::new(&dag, is_producer);
            for from in (0..n).filter(|&t| is_producer(t)) {
                for to in 0..n {
                    prop_assert_eq!(reach.is_upstream(from, to), reaches(&upstream, from, to), "{} -> {}", from, to);
                }
            }
            for from in (0..n).filter(|&t| !is_producer(t)) {
                prop_assert!(!reach.is_upstream(from, n - 1), "only producers are tracked");
            }
        }
    }
}
