//! Resolution of a task: the pipeline's defaults applied and its templates rendered with the
//! values known when it starts (params, run fields, upstream outputs, its fan-out item),
//! producing the spec of its TaskRun. Also decides `when` conditions and fan-out width.

use super::params::effective_params;
use super::quote::{self, q};
use super::template::{self, AssetEventField, Reference, RunField, Values};
use super::validate::ValidPipeline;
use crate::api::artifact::{self, ArtifactRef, ResolvedInput};
use crate::api::params::DEFAULT_MAX_INSTANCES;
use crate::api::{AssetEvent, PipelineRunSpec, PipelineSpec, TaskRunSpec, TaskSpec};
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
        produces: task.produces.clone(),
        artifacts: task.artifacts.clone(),
        inputs: Vec::new(),
        artifact_store: spec.artifact_store.clone(),
        wait: task.wait.clone(),
        approval: task.approval.clone(),
        instance: None,
        cancelled: false,
        rerun: None,
        pool: pipeline.pool(index).map(str::to_string),
        pool_slots: task.pool_slots.filter(|_| pipeline.pool(index).is_some()),
        priority: pipeline.pool(index).map(|_| pipeline.priority(index)),
        // Set by the run's driver when the task's own deadline passes.
        deadline_missed: None,
    }
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
    /// The asset events that started the run, oldest first (none for other runs).
    pub asset_events: Vec<AssetEvent>,
    /// When the run started (what sensors count from when it has no logical date).
    pub started: Option<Timestamp>,
}

/// Who a run is: its name, namespace and uid, and the pipeline it was made from (empty for
/// an inline spec).
#[derive(Clone, Debug, Default)]
pub struct RunIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub pipeline: String,
}

impl RunContext {
    /// The context of a run, the same way for the operator and `weir run`: the identity as
    /// given, logical date and data interval from the run's spec (when there is one), and
    /// `given` checked against the pipeline's params, defaults filled in. Every problem with
    /// the params is reported.
    pub fn new(
        identity: RunIdentity,
        pipeline: &PipelineSpec,
        run: Option<&PipelineRunSpec>,
        given: &BTreeMap<String, Value>,
    ) -> Result<RunContext, Vec<String>> {
        let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.map(|t| t.0);
        Ok(RunContext {
            name: identity.name,
            namespace: identity.namespace,
            uid: identity.uid,
            pipeline: identity.pipeline,
            logical_date: run.and_then(|r| time(r.logical_date.as_ref())),
            data_interval_start: run.and_then(|r| time(r.data_interval_start.as_ref())),
            data_interval_end: run.and_then(|r| time(r.data_interval_end.as_ref())),
            params: effective_params(pipeline, given)?,
            asset_events: run.map(|r| r.asset_events.clone()).unwrap_or_default(),
            started: None,
        })
    }
}

impl RunContext {
    /// What sensors count from.
    pub fn moments(&self) -> super::sensor::RunMoments {
        super::sensor::RunMoments {
            logical_date: self.logical_date,
            data_interval_start: self.data_interval_start,
            data_interval_end: self.data_interval_end,
            started: self.started,
        }
    }
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
                None => Err(format!(
                    "task {} has no output {} (did it succeed?)",
                    q(task),
                    q(key)
                )),
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
            Reference::AssetEvents => serde_json::to_value(&self.run.asset_events).map_err(|e| e.to_string()),
            Reference::AssetEvent(field) => asset_event_value(&self.run.asset_events, field),
            Reference::Notification(_) => Err(format!(
                "{{{{ {reference} }}}} is only available in a notification's message"
            )),
        }
    }
}

/// `assetEvent.<field>` of the newest triggering event (for `extra.<key>`, the newest that
/// has the key).
fn asset_event_value(events: &[AssetEvent], field: &AssetEventField) -> Result<Value, String> {
    let newest = events.last().ok_or_else(|| {
        format!(
            "{{{{ {} }}}}: the run was not started by asset events",
            Reference::AssetEvent(field.clone())
        )
    })?;
    let text = |s: Option<&String>| Value::String(s.cloned().unwrap_or_default());
    Ok(match field {
        AssetEventField::Asset => text(newest.asset.as_ref()),
        AssetEventField::Sequence => Value::from(newest.sequence),
        AssetEventField::Time => Value::String(newest.time.0.to_string()),
        AssetEventField::LogicalDate => timestamp(newest.logical_date.as_ref().map(|t| t.0)),
        AssetEventField::PipelineRun => text(newest.pipeline_run.as_ref()),
        AssetEventField::Source => Value::String(newest.source.clone()),
        AssetEventField::Extra(key) => events
            .iter()
            .rev()
            .find_map(|e| e.extra.get(key))
            .map(|v| Value::String(v.clone()))
            .ok_or_else(|| format!("no triggering asset event has the extra value {}", q(key)))?,
    })
}

/// What a task whose trigger rule holds comes to, with the values known now.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    /// The specs of its TaskRuns: one, or one per fan-out instance in instance order.
    Run(Vec<TaskRunSpec>),
    /// Its `when` conditions do not hold, or it fans out over nothing.
    Skip(String),
    /// A condition, its items or one of its specs cannot be worked out; the task fails.
    Fail(String),
}

/// Evaluates a task's `when` conditions, expands its fan-out items and resolves the spec of
/// every TaskRun it would start, so that a template that cannot be filled, or an instance
/// whose spec is too large, fails the task with the reason before anything of it starts.
pub fn resolve_ready(pipeline: &ValidPipeline, index: usize, values: &TaskValues<'_>) -> Resolved {
    if let Err(not) = check_when(pipeline.task(index), values) {
        return not;
    }
    if pipeline.task(index).for_each.is_none() {
        return match resolve_task(pipeline, index, None, values) {
            Ok(spec) => Resolved::Run(vec![spec]),
            Err(e) => Resolved::Fail(e),
        };
    }
    let items = match items(pipeline, index, values) {
        Ok(items) if items.is_empty() => return Resolved::Skip("forEach has no items".into()),
        Ok(items) => items,
        Err(e) => return Resolved::Fail(e),
    };
    let mut specs = Vec::with_capacity(items.len());
    let mut total = 0;
    for (k, item) in items.iter().enumerate() {
        let values = TaskValues {
            item: Some(item),
            ..*values
        };
        match resolve_sized(pipeline, index, Some(k as u32), &values) {
            Ok((spec, size)) => {
                total += size;
                if total > MAX_FAN_OUT_BYTES {
                    return Resolved::Fail(format!(
                        "the first {} forEach instances' resolved specs are {total} bytes, more than the {MAX_FAN_OUT_BYTES} (32 MiB) one fan-out may hold: pass large values by reference, for example a storage path",
                        k + 1
                    ));
                }
                specs.push(spec);
            }
            Err(e) => return Resolved::Fail(format!("forEach instance {k}: {e}")),
        }
    }
    Resolved::Run(specs)
}

/// `Ok` when every `when` condition of the task holds.
fn check_when(task: &TaskSpec, values: &TaskValues<'_>) -> Result<(), Resolved> {
    for (i, cond) in task.when.iter().enumerate() {
        let input = template::render(&cond.input, values)
            .map_err(|e| Resolved::Fail(format!("when[{i}].input: {e}")))?;
        let mut rendered = Vec::with_capacity(cond.values.len());
        for v in &cond.values {
            let v =
                template::render(v, values).map_err(|e| Resolved::Fail(format!("when[{i}].values: {e}")))?;
            rendered.push(v);
        }
        if !template::holds(cond.operator, &input, &rendered) {
            let rendered: Vec<String> = rendered.iter().map(|v| q(v).to_string()).collect();
            return Err(Resolved::Skip(format!(
                "when[{i}] is false: {} {:?} [{}]",
                q(&input),
                cond.operator,
                rendered.join(", ")
            )));
        }
    }
    Ok(())
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
        other => Err(format!("{field} must be a list, got {}", quote::json(&other))),
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
    // What the combinations hold: each value is copied into every combination it is in.
    let mut bytes: usize = 0;
    for (name, value) in &for_each.matrix {
        let list = as_list(&format!("forEach.matrix.{name}"), value, values)?;
        let total = combos.len().saturating_mul(list.len());
        if total > limit {
            return Err(too_many(total));
        }
        let list_bytes: usize = list
            .iter()
            .map(|v| v.as_str().map_or(0, str::len) + name.len())
            .sum();
        bytes = bytes
            .saturating_mul(list.len())
            .saturating_add(combos.len().saturating_mul(list_bytes));
        if bytes > MAX_FAN_OUT_BYTES {
            return Err(format!(
                "forEach.matrix gives {total} combinations holding {bytes} bytes of values, more than the {MAX_FAN_OUT_BYTES} (32 MiB) one fan-out may hold: pass large values by reference, for example a storage path"
            ));
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
    resolve_sized(pipeline, index, instance, values).map(|(spec, _)| spec)
}

/// [`resolve_task`], with the size of the spec as JSON.
fn resolve_sized(
    pipeline: &ValidPipeline,
    index: usize,
    instance: Option<u32>,
    values: &TaskValues<'_>,
) -> Result<(TaskRunSpec, usize), String> {
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
    for (i, a) in spec.artifacts.iter_mut().enumerate() {
        a.path = render(format!("artifacts[{i}].path"), &a.path)?;
    }
    if let Some(wait) = &mut spec.wait {
        super::sensor::resolve(wait, &values.run.moments(), values)?;
    }
    spec.inputs = resolve_inputs(pipeline.task(index), values)?;
    for (i, input) in spec.inputs.iter_mut().enumerate() {
        input.path = render(format!("inputs[{i}].path"), &input.path)?;
    }
    let size = serde_json::to_vec(&spec).map_or(0, |v| v.len());
    if size > MAX_RESOLVED_BYTES {
        return Err(format!(
            "the task's resolved spec is {size} bytes, more than the {MAX_RESOLVED_BYTES} Weir allows (Kubernetes refuses objects over about 1.5 MiB): pass large values by reference, for example a storage path as an output"
        ));
    }
    Ok((spec, size))
}

/// The artifacts a task's inputs name, from what the producers reported (an output under
/// [`artifact::output_key`]): one, or the list of every instance's of a fanned-out producer.
fn resolve_inputs(task: &TaskSpec, values: &TaskValues<'_>) -> Result<Vec<ResolvedInput>, String> {
    let mut inputs = Vec::with_capacity(task.inputs.len());
    for (i, input) in task.inputs.iter().enumerate() {
        let field = format!("inputs[{i}] {}", q(&input.from));
        let (producer, name) = artifact::parse_from(&input.from).map_err(|e| format!("{field}: {e}"))?;
        let missing = || {
            format!(
                "{field}: task {} reported no artifact {} (did it succeed?)",
                q(producer),
                q(name)
            )
        };
        let reported = values.outputs.output(producer, &artifact::output_key(name));
        let parse = |v: &Value| -> Result<ArtifactRef, String> {
            let text = v.as_str().ok_or_else(missing)?;
            serde_json::from_str(text).map_err(|e| {
                format!(
                    "{field}: what task {} reported is not an artifact: {e}",
                    q(producer)
                )
            })
        };
        let (artifacts, fan_in) = match reported {
            Some(Value::Array(list)) => (list.iter().map(parse).collect::<Result<Vec<_>, _>>()?, true),
            Some(v) => (vec![parse(&v)?], false),
            // A finally task runs whatever happened upstream: what is missing is left out.
            None if values.lenient => continue,
            None => return Err(missing()),
        };
        inputs.push(ResolvedInput {
            from: input.from.clone(),
            path: input.path.clone(),
            artifacts,
            fan_in,
        });
    }
    Ok(inputs)
}

/// Most bytes the instances of one fan-out may hold, resolved (or their matrix values,
/// before): each instance copies what it reads, so 10,000 instances of a matrix over long
/// strings would otherwise hold gigabytes while a step of the run is worked out.
pub const MAX_FAN_OUT_BYTES: usize = 32 << 20;

/// Largest resolved TaskRun spec: well under the API server's ~1.5 MiB object limit, since a
/// fan-in of thousands of outputs can grow a spec quickly.
pub const MAX_RESOLVED_BYTES: usize = 512 * 1024;
