//! Parameters, conditions, outputs and fan-out: the declarative data flow of a pipeline.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Schema of a value that may be a string or a list of strings (checked by Weir's
/// validation; Kubernetes 1.20 schemas cannot say "string or list").
pub(crate) fn string_or_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A string, or a list of strings.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

pub(crate) fn map_of_string_or_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Values by name: strings, or lists of strings.",
        "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// A parameter of the pipeline, given by each run (or taken from its default).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParamSpec {
    /// Name, used as `{{ params.<name> }}`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_-]*$"))]
    pub name: String,

    /// What the parameter means, for people reading the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// `String` (the default) or `List` (a list of strings, for fan-out).
    #[serde(default, rename = "type", skip_serializing_if = "ParamType::is_string")]
    pub type_: ParamType,

    /// Value used when a run gives none. A parameter without a default is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "string_or_list")]
    pub default: Option<Value>,
}

/// The type of a parameter.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ParamType {
    #[default]
    String,
    List,
}

impl ParamType {
    fn is_string(&self) -> bool {
        *self == ParamType::String
    }
}

/// A condition on a task (all of a task's conditions must hold, else it is `Skipped`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhenCondition {
    /// A template, for example `{{ tasks.check.outputs.status }}` or `{{ params.env }}`.
    pub input: String,
    /// How `input` is compared with `values`.
    pub operator: WhenOperator,
    /// Values compared with `input` (templates allowed). `Equals` and `NotEquals` take one.
    #[schemars(length(min = 1))]
    pub values: Vec<String>,
}

/// Comparison of a `when` condition.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum WhenOperator {
    #[default]
    Equals,
    NotEquals,
    In,
    NotIn,
}

/// A value a task hands to later tasks (Airflow's XCom, Tekton's results).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Key, read downstream as `{{ tasks.<task>.outputs.<name> }}`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_-]*$"))]
    pub name: String,
    /// What the output holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Runs the task once per item of a list, or per combination of a matrix of lists. Each
/// instance is its own TaskRun (`<run>-<task>-<index>`); downstream tasks wait for all of
/// them and read an output of the task as the JSON list of every instance's value.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForEach {
    /// A list of strings, or a template giving one: `{{ params.regions }}` (a `List`
    /// parameter) or `{{ tasks.list.outputs.partitions }}` (an output holding a JSON list).
    /// Each instance reads its element as `{{ item }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "string_or_list")]
    pub items: Option<Value>,

    /// Named lists (literal or templates as in `items`); one instance runs per combination,
    /// reading its values as `{{ item.<name> }}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "map_of_string_or_list")]
    pub matrix: BTreeMap<String, Value>,

    /// Most instances this task may have; more items fail the task with a clear message.
    /// Default 1000, at most 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_instances: Option<u32>,
}

/// Default of `forEach.maxInstances`.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// Largest `forEach.maxInstances`.
pub const MAX_INSTANCES: u32 = 10_000;
