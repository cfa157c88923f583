//! `Pool`: a number of slots that tasks of any run and any pipeline of a namespace share
//! (Airflow's pools). A task names its pool (`pool`) and how many slots it takes
//! (`poolSlots`); it starts only when that many are free, in order of priority, then age.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pool of slots shared by the tasks that name it, across runs and pipelines of its
/// namespace. The operator writes only its status.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Pool",
    namespaced,
    doc = "A Pool: slots shared by the tasks that name it (spec.tasks[].pool), across runs and pipelines of its namespace. A task starts only when the slots it takes are free.",
    status = "PoolStatus",
    category = "weir",
    printcolumn = r#"{"name":"Slots","type":"integer","jsonPath":".spec.slots"}"#,
    printcolumn = r#"{"name":"Occupied","type":"integer","jsonPath":".status.occupied"}"#,
    printcolumn = r#"{"name":"Queued","type":"integer","jsonPath":".status.queued"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Description","type":"string","jsonPath":".spec.description","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// How many slots the pool has. A task takes `poolSlots` of them (default 1) while an
    /// attempt runs. `0` stops new tasks from starting; lowering it below what is occupied
    /// stops nothing that runs, new tasks wait until enough slots are free.
    #[schemars(range(min = 0))]
    pub slots: u32,

    /// What the pool limits, for people (`kubectl get pools -o wide`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What the operator observed of a Pool, derived each time from the live TaskRuns that use
/// it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `spec.slots` when the status was written.
    #[serde(default)]
    pub slots: u32,

    /// Slots held by running attempts (can exceed `slots` for a while after the pool was made
    /// smaller).
    #[serde(default)]
    pub occupied: u32,

    /// Number of tasks waiting for slots.
    #[serde(default)]
    pub queued: u32,

    /// The attempts that hold slots, oldest first. An attempt's hold is written here before
    /// its Job is created, under the Pool's resourceVersion, so two writers can never both
    /// take the last slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<PoolHolder>,

    /// The TaskRuns waiting for slots, in the order they will start (at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<QueuedTask>,
}

/// One attempt holding slots of a pool.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolHolder {
    /// The TaskRun.
    pub task_run: String,
    /// Its UID: a TaskRun deleted and made again under the same name holds nothing.
    pub uid: String,
    /// Its PipelineRun, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<String>,
    /// The task's name in its pipeline.
    pub task: String,
    /// The attempt the slots are held for; they are freed when it ends.
    pub attempt: u32,
    /// How many slots it holds.
    pub slots: u32,
    /// The task's priority (after its weight rule).
    #[serde(default)]
    pub priority: i64,
    /// When it took them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// One TaskRun waiting for slots.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedTask {
    /// The TaskRun.
    pub task_run: String,
    /// How many slots it waits for.
    pub slots: u32,
    /// Its priority (after its weight rule).
    #[serde(default)]
    pub priority: i64,
}
