//! `Pipeline`: the definition of a DAG of tasks, written by people and synced by GitOps.
//! The operator never writes its spec or metadata, only its status.

use super::schedule::Schedule;
use super::task::{PodTemplate, TaskDefaults, TaskSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule.cron"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.activeRunCount"}"#,
    printcolumn = r#"{"name":"Last Schedule","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Next Schedule","type":"string","jsonPath":".status.nextScheduleTime","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.currentRevision","priority":1}"#,
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

    /// Parameters each run gives (or takes the default of), read as `{{ params.<name> }}` in
    /// task commands, args, env values, `when` conditions and `forEach`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<super::params::ParamSpec>,

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

    /// Where this pipeline's artifacts are kept, instead of the installation's artifact store
    /// (the operator's `--artifact-bucket` and related flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_store: Option<super::artifact::ArtifactStoreSpec>,

    /// Creates runs on a cron schedule, each covering one data interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// Creates runs when assets are updated (by tasks that `produce` them, `weir asset
    /// update` or the HTTP trigger): when all of them, or any, have new events since the
    /// last asset-triggered run. Works alongside `schedule` or without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<super::asset::AssetTrigger>,

    /// Lets callers of the operator's HTTP trigger endpoint start runs of this pipeline, with
    /// params, when they present the token kept in a Secret (see `docs/triggers.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_trigger: Option<super::asset::HttpTrigger>,

    /// Most runs of this pipeline that may be active at once, whatever created them (the
    /// schedule, `weir trigger`, `weir backfill` or a PipelineRun written by hand). Runs
    /// beyond it wait in phase `Pending` with reason `Queued` and start, oldest logical date
    /// first, as others finish. Unset means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_active_runs: Option<u32>,

    /// How many succeeded runs owned by this Pipeline (made by its schedule, `weir trigger`
    /// or `weir backfill`) are kept; the ones that finished longest ago are deleted with
    /// their TaskRuns and Jobs. Unset keeps them all. Runs you create yourself are never
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_runs_history_limit: Option<u32>,

    /// Like `successfulRunsHistoryLimit`, for failed and cancelled runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_runs_history_limit: Option<u32>,

    /// Messages sent to webhooks, Slack-compatible incoming webhooks or email addresses when
    /// a run fails, succeeds, retries a task or misses a deadline (its own or a task's),
    /// each sent once per event (recorded in the run's `status.notifications`). The
    /// installation's default notifications are sent too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<super::notify::Notification>,

    /// When each run should be done by (an SLA). A miss is said once, when it happens:
    /// condition `DeadlineMissed`, an Event, a metric and the `DeadlineMissed` notification.
    /// The run goes on unless `onMiss: Fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<super::deadline::Deadline>,
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

    /// The PipelineRevision the next run will follow: the pipeline's name and a hash of its
    /// spec. It exists once a run of this version has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,

    /// Number of tasks, `finally` tasks included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_count: Option<u32>,

    /// The end of the newest data interval the schedule has dealt with (its run created, or
    /// skipped as `catchup`, `concurrencyPolicy` or `startingDeadline` said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,

    /// When the schedule fires next; unset when suspended, ended or invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,

    /// Number of runs of this pipeline that started and have not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_run_count: Option<u32>,

    /// Names of the active runs, oldest logical date first (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_runs: Vec<String>,

    /// Number of runs waiting for a free slot under `maxActiveRuns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_run_count: Option<u32>,

    /// Names of the queued runs in the order they will start (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued_runs: Vec<String>,

    /// For each asset of `spec.assets`, the newest event an asset-triggered run was started
    /// for: events after it are the ones the next run waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumed_assets: Vec<super::asset::AssetSequence>,
}
