//! Resolution of a task: the pipeline's defaults applied and its templates rendered with the
//! values known when it starts (params, run fields, upstream outputs, its fan-out item),
//! producing the spec of its TaskRun. Also decides `when` conditions and fan-out width.

use super::template::{self, Reference, RunField, Template, Values};
use super::validate::ValidPipeline;
use crate::api::params::{DEFAULT_MAX_INSTANCES, ParamType};
use crate::api::{PipelineSpec, TaskRunSpec, TaskSpec};
use jiff::Timestamp;
use serde_json::Value;
use std::collections::BTreeMap;

/// The TaskRun spec of task `index` with defaults applied and templates left as written.
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
        outputs: task.outputs.iter().map(|o| o.name.clone()).collect(),
        instance: None,
        cancelled: false,
    }
}

/// The parameters of a run: what it gives, defaults for the rest. Every problem is reported
/// (unknown parameter, missing required one, string given for a list or the other way).
pub fn effective_params(
    spec: &PipelineSpec,
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, Vec<String>> {
    let mut errors = Vec::new();
    let mut out = BTreeMap::new();
    for name in given.keys() {
        if !spec.params.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
            errors.push(format!(
                "unknown parameter {name:?} (the pipeline declares: {})",
                known.join(", ")
            ));
        }
    }
    for param in &spec.params {
        let value = match given.get(&param.name).or(param.default.as_ref()) {
            Some(v) => v.clone(),
            None => {
                errors.push(format!(
                    "parameter {:?} is required (it has no default)",
                    param.name
                ));
                continue;
            }
        };
        match coerce(param.type_, value) {
            Ok(v) => {
                out.insert(param.name.clone(), v);
            }
            Err(e) => errors.push(format!("parameter {:?}: {e}", param.name)),
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Checks a value against a parameter type. A list may be given as JSON text
/// (`--param parts='["a","b"]'`) or as comma-separated text (`--param parts=a,b`).
pub fn coerce(type_: ParamType, value: Value) -> Result<Value, String> {
    match (type_, value) {
        (ParamType::String, Value::String(s)) => Ok(Value::String(s)),
        (ParamType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (ParamType::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
        (ParamType::List, Value::Array(items)) => list_of_strings(items),
        (ParamType::List, Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Array(items)) => list_of_strings(items),
            _ if s.is_empty() => Ok(Value::Array(vec![])),
            _ => Ok(Value::Array(
                s.split(',')
                    .map(|p| Value::String(p.trim().to_string()))
                    .collect(),
            )),
        },
        (ParamType::String, other) => Err(format!("expected a string, got {other}")),
        (ParamType::List, other) => Err(format!("expected a list of strings, got {other}")),
    }
}

fn list_of_strings(items: Vec<Value>) -> Result<Value, String> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(s) => out.push(Value::String(s)),
            Value::Number(n) => out.push(Value::String(n.to_string())),
            other => return Err(format!("list items must be strings, got {other}")),
        }
    }
    Ok(Value::Array(out))
}

/// The run-level facts templates can read.
#[derive(Clone, Debug, Default)]
pub struct RunContext {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub pipeline: String,
    pub logical_date: Option<Timestamp>,
    pub data_interval_start: Option<Timestamp>,
    pub data_interval_end: Option<Timestamp>,
    /// Effective parameters (see [`effective_params`]).
    pub params: BTreeMap<String, Value>,
}

/// Where upstream outputs come from: the value of output `key` of task `task`, if the task
/// produced one. For a fanned-out task, the JSON list of every instance's value.
pub trait Outputs {
    fn output(&self, task: &str, key: &str) -> Option<Value>;
}

impl<F: Fn(&str, &str) -> Option<Value>> Outputs for F {
    fn output(&self, task: &str, key: &str) -> Option<Value> {
        self(task, key)
    }
}

/// The values one task's templates are rendered with.
#[derive(Clone, Copy)]
pub struct TaskValues<'a> {
    pub run: &'a RunContext,
    pub outputs: &'a (dyn Outputs + Sync),
    /// The fan-out element of this instance.
    pub item: Option<&'a Value>,
    /// Finally tasks read a missing output as empty text (the task that should have made it
    /// may have failed); other tasks fail on one.
    pub lenient: bool,
}

fn timestamp(t: Option<Timestamp>) -> Value {
    t.map_or(Value::String(String::new()), |t| Value::String(t.to_string()))
}

impl Values for TaskValues<'_> {
    fn get(&self, reference: &Reference) -> Result<Value, String> {
        match reference {
            Reference::Param(name) => self
                .run
                .params
                .get(name)
                .cloned()
                .ok_or_else(|| format!("no value for params.{name}")),
            Reference::Run(field) => Ok(match field {
                RunField::Name => Value::String(self.run.name.clone()),
                RunField::Namespace => Value::String(self.run.namespace.clone()),
                RunField::Uid => Value::String(self.run.uid.clone()),
                RunField::Pipeline => Value::String(self.run.pipeline.clone()),
                RunField::LogicalDate => timestamp(self.run.logical_date),
                RunField::DataIntervalStart => timestamp(self.run.data_interval_start),
                RunField::DataIntervalEnd => timestamp(self.run.data_interval_end),
            }),
            Reference::Output { task, key } => match self.outputs.output(task, key) {
                Some(v) => Ok(v),
                None if self.lenient => Ok(Value::String(String::new())),
                None => Err(format!("task {task:?} has no output {key:?} (did it succeed?)")),
            },
            Reference::Item(None) => self
                .item
                .cloned()
                .ok_or_else(|| "{{ item }} outside a forEach task".into()),
            Reference::Item(Some(key)) => self
                .item
                .and_then(|i| i.get(key))
                .cloned()
                .ok_or_else(|| format!("no matrix value item.{key}")),
        }
    }
}

pub use super::plan::Prepared;

/// Evaluates a task's `when` conditions, counts its fan-out items and checks that its
/// templates can be rendered with the values known now. The operator and the local runner
/// both call this, so a task is gated the same way in both.
pub fn prepare(pipeline: &ValidPipeline, index: usize, values: &TaskValues<'_>) -> Prepared {
    let task = pipeline.task(index);
    for (i, cond) in task.when.iter().enumerate() {
        let input = match template::render(&cond.input, values) {
            Ok(v) => v,
            Err(e) => return Prepared::Fail(format!("when[{i}].input: {e}")),
        };
        let mut rendered = Vec::with_capacity(cond.values.len());
        for v in &cond.values {
            match template::render(v, values) {
                Ok(v) => rendered.push(v),
                Err(e) => return Prepared::Fail(format!("when[{i}].values: {e}")),
            }
        }
        if !template::holds(cond.operator, &input, &rendered) {
            return Prepared::Skip(format!(
                "when[{i}] is false: {input:?} {:?} {:?}",
                cond.operator, rendered
            ));
        }
    }
    // Render the task now (its first instance, for a fan-out), so that a template that
    // cannot be filled fails the task with the reason instead of leaving it waiting.
    let (instances, first_item) = if task.for_each.is_none() {
        (1, None)
    } else {
        match items(pipeline, index, values) {
            Ok(items) if items.is_empty() => return Prepared::Skip("forEach has no items".into()),
            Ok(items) => (items.len() as u32, items.into_iter().next()),
            Err(e) => return Prepared::Fail(e),
        }
    };
    let check = TaskValues {
        item: first_item.as_ref(),
        ..*values
    };
    let instance = task.for_each.as_ref().map(|_| 0);
    if let Err(e) = resolve_task(pipeline, index, instance, &check) {
        return Prepared::Fail(e);
    }
    Prepared::Run { instances }
}

fn as_list(field: &str, value: &Value, values: &TaskValues<'_>) -> Result<Vec<Value>, String> {
    let resolved = match value {
        Value::String(text) => template::render_value(text, values).map_err(|e| format!("{field}: {e}"))?,
        other => other.clone(),
    };
    match resolved {
        Value::Array(items) => Ok(items
            .into_iter()
            .map(|v| match v {
                Value::String(_) => v,
                other => Value::String(other.to_string()),
            })
            .collect()),
        other => Err(format!("{field} must be a list, got {other}")),
    }
}

/// The fan-out elements of a task: the items, or one object per matrix combination (in the
/// order of the matrix keys, last key fastest).
pub fn items(pipeline: &ValidPipeline, index: usize, values: &TaskValues<'_>) -> Result<Vec<Value>, String> {
    let task = pipeline.task(index);
    let Some(for_each) = &task.for_each else {
        return Ok(vec![]);
    };
    let limit = for_each.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES) as usize;
    let too_many = |n: usize| {
        format!(
            "forEach gives {n} instances, more than maxInstances {limit} (raise forEach.maxInstances, at most 10000)"
        )
    };
    if let Some(items) = &for_each.items {
        let list = as_list("forEach.items", items, values)?;
        if list.len() > limit {
            return Err(too_many(list.len()));
        }
        return Ok(list);
    }
    let mut combos: Vec<serde_json::Map<String, Value>> = vec![serde_json::Map::new()];
    for (name, value) in &for_each.matrix {
        let list = as_list(&format!("forEach.matrix.{name}"), value, values)?;
        let total = combos.len().saturating_mul(list.len());
        if total > limit {
            return Err(too_many(total));
        }
        combos = combos
            .into_iter()
            .flat_map(|c| {
                list.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(name.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    Ok(combos.into_iter().map(Value::Object).collect())
}

/// The TaskRun spec of a task (instance), templates rendered.
pub fn resolve_task(
    pipeline: &ValidPipeline,
    index: usize,
    instance: Option<u32>,
    values: &TaskValues<'_>,
) -> Result<TaskRunSpec, String> {
    let mut spec = task_run_spec(pipeline, index);
    spec.instance = instance;
    let render =
        |field: String, text: &str| template::render(text, values).map_err(|e| format!("{field}: {e}"));
    for (i, c) in spec.command.iter_mut().enumerate() {
        *c = render(format!("command[{i}]"), c)?;
    }
    for (i, a) in spec.args.iter_mut().enumerate() {
        *a = render(format!("args[{i}]"), a)?;
    }
    for var in spec.env.iter_mut() {
        if let Some(value) = &var.value {
            var.value = Some(render(format!("env {}", var.name), value)?);
        }
    }
    let size = serde_json::to_vec(&spec).map_or(0, |v| v.len());
    if size > MAX_RESOLVED_BYTES {
        return Err(format!(
            "the task's resolved spec is {size} bytes, more than the {MAX_RESOLVED_BYTES} Weir allows (Kubernetes refuses objects over about 1.5 MiB): pass large values by reference, for example a storage path as an output"
        ));
    }
    Ok(spec)
}

/// Largest resolved TaskRun spec: well under the API server's ~1.5 MiB object limit, since a
/// fan-in of thousands of outputs can grow a spec quickly.
pub const MAX_RESOLVED_BYTES: usize = 512 * 1024;

/// Every template of a task, with the field it is in, for validation.
pub fn templates_of(task: &TaskSpec) -> Vec<(String, Result<Template, String>)> {
    let mut out = Vec::new();
    let mut add = |field: String, text: &str| {
        if text.contains("{{") {
            out.push((field, Template::parse(text)));
        }
    };
    for (i, c) in task.command.iter().enumerate() {
        add(format!("command[{i}]"), c);
    }
    for (i, a) in task.args.iter().enumerate() {
        add(format!("args[{i}]"), a);
    }
    for (i, var) in task.env.iter().enumerate() {
        if let Some(v) = &var.value {
            add(format!("env[{i}].value"), v);
        }
    }
    for (i, w) in task.when.iter().enumerate() {
        add(format!("when[{i}].input"), &w.input);
        for (j, v) in w.values.iter().enumerate() {
            add(format!("when[{i}].values[{j}]"), v);
        }
    }
    if let Some(fe) = &task.for_each {
        if let Some(Value::String(s)) = &fe.items {
            add("forEach.items".into(), s);
        }
        for (name, v) in &fe.matrix {
            if let Value::String(s) = v {
                add(format!("forEach.matrix.{name}"), s);
            }
        }
    }
    out
}
