//! `Pipeline`: the definition of a DAG of tasks, written by people and synced by GitOps.
//! The operator never writes its spec or metadata, only its status.

use super::task::{PodTemplate, TaskDefaults, TaskSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pipeline: tasks with dependencies, run as Kubernetes Jobs in DAG order each time a
/// PipelineRun refers to it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Pipeline",
    namespaced,
    doc = "A Pipeline: a DAG of tasks run as Kubernetes Jobs each time a PipelineRun refers to it. The operator writes only its status.",
    status = "PipelineStatus",
    shortname = "pl",
    category = "weir",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Tasks","type":"integer","jsonPath":".status.taskCount"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    /// The tasks of the pipeline. Each runs when its `dependsOn` tasks are done and its
    /// `triggerRule` holds.
    #[schemars(length(min = 1))]
    pub tasks: Vec<TaskSpec>,

    /// Tasks that run after every task in `tasks` has finished, whatever the outcome, even
    /// when the run failed, was cancelled or timed out (clean-up, notifications). They may
    /// depend on each other, not on tasks in `tasks`. A failed finally task fails the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<TaskSpec>,

    /// Settings applied to every task that does not set them itself (Airflow's
    /// `default_args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<TaskDefaults>,

    /// Most tasks of one run that may be active at once (a task waiting for a retry counts).
    /// Unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub parallelism: Option<u32>,

    /// Longest time a run may take (for example `2h`). When it passes, running tasks are
    /// stopped, pending ones cancelled, `finally` tasks run and the run fails with reason
    /// `RunTimeout`. Unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub timeout: Option<String>,

    /// Pod settings of every task pod: service account, node selector, tolerations, image
    /// pull secrets, security context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

/// What the operator observed of a Pipeline.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` is `True` when the pipeline is valid, `False` with every validation error in
    /// its message otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Number of tasks, `finally` tasks included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_count: Option<u32>,
}
