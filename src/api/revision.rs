//! `PipelineRevision`: an immutable, content-addressed snapshot of a pipeline's spec. A run
//! records the revision it follows instead of carrying a copy of the spec, and every run of
//! the same spec shares one revision (Airflow's DAG versioning).

use super::PipelineSpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One version of a pipeline, named after the pipeline and a hash of its spec. Made by the
/// operator when a run first needs it, never changed, and removed by Kubernetes' garbage
/// collector once no run that follows it is left (its owners are those runs).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "PipelineRevision",
    namespaced,
    doc = "A PipelineRevision: one immutable version of a pipeline's spec, shared by every run of that version (status.pipelineRevision of a PipelineRun). Made by the operator; never edit it.",
    category = "weir",
    shortname = "prev",
    printcolumn = r#"{"name":"Pipeline","type":"string","jsonPath":".spec.pipeline"}"#,
    printcolumn = r#"{"name":"Tasks","type":"integer","jsonPath":".spec.taskCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Hash","type":"string","jsonPath":".spec.hash","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRevisionSpec {
    /// The Pipeline this is a version of; unset for the inline `pipelineSpec` of runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,

    /// SHA-256 of the spec (its JSON, as the operator writes it), in hex. The operator checks
    /// it on every read, so a revision edited by hand is refused instead of followed.
    pub hash: String,

    /// Number of tasks, `finally` tasks included.
    pub task_count: u32,

    /// The pipeline's spec.
    pub pipeline_spec: PipelineSpec,
}
