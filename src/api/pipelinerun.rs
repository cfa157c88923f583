//! `PipelineRun`: one execution of a pipeline.

use super::pipeline::PipelineSpec;
use super::task::TaskPhase;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One execution of a pipeline. Its status holds a snapshot of the pipeline as it was when
/// the run started, so editing or deleting the Pipeline never changes a run in flight.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "PipelineRun",
    namespaced,
    doc = "A PipelineRun: one execution of a Pipeline. Its status snapshots the pipeline when the run starts, so later edits never change a run in flight.",
    status = "PipelineRunStatus",
    shortname = "plr",
    category = "weir",
    printcolumn = r#"{"name":"Pipeline","type":"string","jsonPath":".spec.pipelineRef.name"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Duration","type":"string","jsonPath":".status.duration"}"#,
    printcolumn = r#"{"name":"Logical Date","type":"string","jsonPath":".spec.logicalDate","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.pipelineRevision","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunSpec {
    /// The Pipeline to run, in the run's namespace. Exactly one of `pipelineRef` and
    /// `pipelineSpec` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_ref: Option<PipelineRef>,

    /// A pipeline given inline instead of by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_spec: Option<PipelineSpec>,

    /// Set to `true` to cancel the run: running tasks are stopped, pending ones cancelled,
    /// and `finally` tasks still run. The run ends with reason `Cancelled`. This, not
    /// deleting Jobs, is how to stop tasks: a deleted Job is a disruption, retried.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,

    /// Values of the pipeline's parameters for this run: a string, or a list of strings for
    /// `List` parameters. Parameters left out take their default; an unknown parameter or a
    /// missing required one fails the run before anything starts.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(schema_with = "super::params::map_of_string_or_list")]
    pub params: std::collections::BTreeMap<String, serde_json::Value>,

    /// Overrides the pipeline's `timeout` for this run (for example `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub timeout: Option<String>,

    /// The logical date of the run (Airflow's `logical_date`): for a scheduled or backfill
    /// run, the start of its data interval; for `weir trigger`, when it was triggered.
    /// Offered to tasks as `{{ run.logicalDate }}`. Also orders runs waiting under
    /// `maxActiveRuns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_date: Option<Time>,

    /// Start of the data interval the run covers (inclusive), `{{ run.dataIntervalStart }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_interval_start: Option<Time>,

    /// End of the data interval the run covers (exclusive), `{{ run.dataIntervalEnd }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_interval_end: Option<Time>,

    /// For a run started by asset updates (`spec.assets` of its pipeline): the events that
    /// started it, oldest first (at most 20 per asset). Templates read them as
    /// `{{ assetEvents }}` and `{{ assetEvent.<field> }}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asset_events: Vec<super::asset::AssetEvent>,

    /// Asks to run part of the run again (Airflow's "clear"), running or finished: the
    /// tasks named, or every task that did not succeed. Tasks that succeeded keep their
    /// outputs; rerun tasks get new attempts (numbered on from the earlier ones, which stay
    /// in the history); `finally` tasks run again at the end; the run ends with a new
    /// outcome. Applied once per `request`: set a new `request` to ask again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<RerunRequest>,

    /// Overrides the pipeline's `deadline` for this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<super::deadline::Deadline>,
}

/// A request to run part of a run again.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Every field is always written, so that a merge patch of a whole request replaces the
// previous one instead of keeping the fields it leaves at their default.
pub struct RerunRequest {
    /// Names the request: it is applied once, and a different value asks again. Any text
    /// unique within the run (`weir rerun` uses the current time).
    #[schemars(length(min = 1, max = 63))]
    pub request: String,

    /// Tasks to run again. Empty: every task that failed, was upstream-failed or was
    /// cancelled.
    #[serde(default)]
    pub tasks: Vec<String>,

    /// Also run again every task downstream of those (Airflow's `downstream`), even those
    /// that succeeded.
    #[serde(default)]
    pub downstream: bool,

    /// Of a fanned-out task, run again only the instances that did not succeed (the others
    /// keep their outputs). Default: every instance.
    #[serde(default)]
    pub failed_instances_only: bool,
}

/// A reference to a Pipeline in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRef {
    /// Name of the Pipeline.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The overall state of a run.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RunPhase {
    /// Accepted; no task has started yet.
    Pending,
    /// Tasks are running.
    Running,
    /// Every task succeeded or was skipped as its trigger rules intended.
    Succeeded,
    /// A task failed, the run timed out, or the pipeline is invalid.
    Failed,
    /// The run was cancelled.
    Cancelled,
}

impl RunPhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, RunPhase::Succeeded | RunPhase::Failed | RunPhase::Cancelled)
    }
}

/// What the operator observed of a run. Kept small however large the DAG: per-attempt
/// details live in the TaskRuns.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Succeeded`: `Unknown` while the run is going, then `True`, or `False` with a reason
    /// (`TaskFailed`, `RunTimeout`, `Cancelled`, `InvalidPipeline`, `PipelineNotFound`).
    /// `NotificationsDelivered` (set by the notifier): `False` while a notification could
    /// not be delivered, `True` once every one was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Pending, Running, Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,

    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// How long the finished run took, for example `1m30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,

    /// Finished tasks out of all tasks, for example `3/5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,

    /// How many tasks are in each state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<TaskCounts>,

    /// One line per task that is not pending, failures and running tasks first; at most 100
    /// entries (`tasksOmitted` counts the rest). Details are in the TaskRuns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskSummary>,

    /// Tasks left out of `tasks` to keep the status small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_omitted: Option<u32>,

    /// The PipelineRevision this run follows: the pipeline as it was when the run started.
    /// Set once, when the run starts; later edits of the Pipeline never change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_revision: Option<String>,

    /// The last rerun request applied to the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<AppliedRerun>,

    /// TaskRuns the API server refused to create (invalid, or denied by an admission
    /// webhook): their tasks fail with the API server's message instead of being tried
    /// again forever. At most 20; a run with more fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedTaskRun>,

    /// The notifications of the run and how far each got: written by the notifier only
    /// (before each try and after it), so a message is sent once per event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<super::notify::NotificationRecord>,

    /// Tasks whose own `deadline` passed before they were done, recorded when it passed
    /// (each once per run; the `DeadlineMissed` notification of the task is sent from here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missed_deadlines: Vec<super::deadline::MissedDeadline>,
}

/// A TaskRun the API server refused to create.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefusedTaskRun {
    /// The task.
    pub task: String,
    /// Its fan-out instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    /// What the API server said.
    pub message: String,
}

/// A rerun request as the operator applied it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedRerun {
    /// The `spec.rerun.request` applied.
    pub request: String,
    /// When it was applied.
    pub time: Time,
    /// Who asked, as far as Kubernetes tells: the field manager that last wrote
    /// `spec.rerun` (for example `kubectl-patch` or `weir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The tasks run again (at most 50 named; `tasksOmitted` counts the rest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    /// Rerun tasks left out of `tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_omitted: Option<u32>,
    /// Why the request was not applied, when it was refused (then `tasks` is empty). Kept
    /// here as well as in a `RerunRefused` Event, so a client that reads the status reads
    /// the reason with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// How many rerun requests the run has had.
    pub count: u32,
}

/// How many tasks of a run are in each state.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    pub total: u32,
    pub pending: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub skipped: u32,
    pub cancelled: u32,
}

/// The state of one task of a run.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSummary {
    /// Task name.
    pub name: String,
    /// Task state.
    pub phase: TaskPhase,
    /// The TaskRun holding the task's attempts, once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_run: Option<String>,
    /// Attempts made so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Why the task failed or was skipped; for an approval task, what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
