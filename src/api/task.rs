//! The pieces a task is made of, shared by Pipeline (definition) and TaskRun (resolved).

use k8s_openapi::api::core::v1::{
    EnvVar, LocalObjectReference, PodSecurityContext, ResourceRequirements, SecurityContext, Toleration,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Pattern of a duration such as `30s`, `5m`, `1h30m` or `250ms` (Go's duration syntax).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
/// Pattern of a task name: a lowercase RFC 1123 label, so it can appear in object names.
pub const TASK_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// One task of a pipeline: a container run as a Kubernetes Job, once per attempt.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// Name of the task, unique within the pipeline (including `finally` tasks). A lowercase
    /// RFC 1123 label of at most 63 characters: it becomes part of TaskRun and Job names.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Container image the task runs. Falls back to `spec.defaults.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Entrypoint of the container (replaces the image's ENTRYPOINT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments to the entrypoint (replace the image's CMD).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Environment variables of the container, added to `spec.defaults.env` (a task's
    /// variable wins over a default of the same name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Working directory of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,

    /// CPU and memory requests and limits of the container. Falls back to
    /// `spec.defaults.resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Names of the tasks this task runs after (its upstream tasks). Whether it runs once they
    /// are done is decided by `triggerRule`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,

    /// When the task runs, given the outcome of its upstream tasks. Default `AllSucceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_rule: Option<TriggerRule>,

    /// How failed attempts are retried. Falls back to `spec.defaults.retries`; without either,
    /// a failed attempt fails the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,

    /// Longest time one attempt may run (for example `10m`), enforced through the Job's
    /// `activeDeadlineSeconds`; an attempt that runs longer fails with reason
    /// `DeadlineExceeded`. Falls back to `spec.defaults.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub timeout: Option<String>,

    /// Security context of the task's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,

    /// Conditions that must all hold for the task to run; otherwise it is `Skipped` (and
    /// downstream trigger rules see a skipped task).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<super::params::WhenCondition>,

    /// Values the task hands to later tasks. Weir sets `WEIR_OUTPUTS` to a file the task
    /// writes them to, as a JSON object (`{"rows": 42}`) or `key=value` lines; at most
    /// 4 KiB in all (the limit of a container's termination message), or 32 MiB for a task
    /// with a `command` when an artifact store is configured: larger values then go through
    /// the store (docs/artifacts.md). A declared output the task did not write fails the
    /// attempt with reason `OutputError`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<super::params::OutputSpec>,

    /// Assets the task updates when it succeeds: each gets an event (which run, logical
    /// date, extra values from the task's outputs), and pipelines whose `spec.assets` names
    /// the asset may start a run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub produces: Vec<super::asset::ProducedAsset>,
    /// Files and directories the task leaves for later tasks, uploaded to the artifact store
    /// when its command exits 0. A task with artifacts or inputs needs `command`: it runs
    /// under `weir exec`, which moves the files (see docs/artifacts.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<super::artifact::ArtifactSpec>,

    /// Artifacts of upstream tasks put into the container before the command starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<super::artifact::ArtifactInput>,

    /// Makes the task a sensor that the operator evaluates itself: no image, no Job, no
    /// pod. It waits for its condition, looking every `pokeInterval`, until it holds or the
    /// task's `timeout` passes (see docs/sensors.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<super::wait::WaitSpec>,

    /// Makes the task an approval gate: no image, no Job, no pod. It waits for a person's
    /// decision (an `Approval`, made with `weir approve RUN TASK`), or for
    /// `approval.timeout` and its default outcome (see docs/approvals.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<super::approval::ApprovalGate>,

    /// Runs the task once per item or matrix combination (fan-out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<super::params::ForEach>,

    /// Name of the Pool (in the run's namespace) whose slots the task takes while an attempt
    /// runs; it waits, `Pending` with reason `Queued`, while they are taken. Falls back to
    /// `spec.defaults.pool`. Unset: no pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub pool: Option<String>,

    /// How many slots of its pool the task takes. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pool_slots: Option<u32>,

    /// The task's weight in its pool's queue (Airflow's `priority_weight`): tasks of higher
    /// priority start first, then older ones. Default 1. How weights add up is `weightRule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_weight: Option<i32>,

    /// How the task's priority is worked out from weights (Airflow's `weight_rule`):
    /// `Downstream` (the default) adds the weights of every task downstream of it,
    /// `Upstream` of every task upstream, `Absolute` takes its own weight only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_rule: Option<WeightRule>,

    /// When the task should be done by (a task-level SLA), counted from the run's
    /// `ScheduledTime` (default), `LogicalDate` or `RunStart`, or the task's own
    /// `TaskStart`. A miss is said once, when it happens, whether the task runs or still
    /// waits: the run's `status.missedDeadlines`, condition `DeadlineMissed` on the
    /// TaskRun, an Event, a metric and the `DeadlineMissed` notification. The task goes on
    /// unless `onMiss: Fail`, which stops it with reason `DeadlineExceeded` (unlike
    /// `timeout`, which limits each attempt and is retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<super::deadline::Deadline>,
}

/// How a task's priority in its pool is worked out from the `priorityWeight`s of the
/// pipeline's tasks (Airflow's weight rules).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum WeightRule {
    /// Its own weight plus the weights of every task downstream of it: tasks early in a
    /// pipeline, with much depending on them, go first (Airflow's default).
    #[default]
    Downstream,
    /// Its own weight plus the weights of every task upstream of it: runs that are further
    /// along finish first.
    Upstream,
    /// Its own weight only.
    Absolute,
}

/// Settings applied to every task that does not set them itself, like Airflow's
/// `default_args`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefaults {
    /// Image of tasks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Environment variables given to every task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Resources of tasks that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Retry policy of tasks that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,

    /// Attempt timeout of tasks that set none (for example `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub timeout: Option<String>,

    /// Pool of tasks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub pool: Option<String>,

    /// Weight rule of tasks that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_rule: Option<WeightRule>,
}

/// When a task runs, given the states of its upstream tasks (Airflow's trigger rules).
/// Upstream tasks that were skipped count as skipped, not as succeeded.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum TriggerRule {
    /// Every upstream task succeeded (the default). A failed upstream task makes this task
    /// `UpstreamFailed`; a skipped one makes it `Skipped`.
    #[default]
    AllSucceeded,
    /// Every upstream task finished, whatever the outcome.
    AllDone,
    /// Every upstream task failed (or was upstream-failed). Skipped otherwise.
    AllFailed,
    /// At least one upstream task succeeded; runs as soon as one does.
    OneSucceeded,
    /// At least one upstream task failed; runs as soon as one does. Skipped when all
    /// finished without a failure.
    OneFailed,
    /// No upstream task failed (each succeeded or was skipped).
    NoneFailed,
}

/// How a task's failed attempts are retried (Airflow's `retries`, `retry_delay`,
/// `retry_exponential_backoff` and `max_retry_delay`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// How many times a failed attempt is retried; the task runs at most `limit + 1` times,
    /// not counting attempts that follow a disruption (see `disruptions`). Default 0.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub limit: u32,

    /// Wait before the first retry (for example `30s`). Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub delay: Option<String>,

    /// Each further retry waits this many times longer than the one before (exponential
    /// backoff). `1` (the default) keeps the delay constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub backoff_factor: Option<f64>,

    /// Upper bound of the delay between attempts, however large the backoff grows
    /// (for example `10m`). Default: no bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub max_delay: Option<String>,

    /// Which failures are retried. Default: every failure except a cancellation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<RetryOn>,

    /// How many disruptions are retried without spending `limit`: attempts ended from outside
    /// the task (reasons `Lost`, `Evicted`, `PodDeleted`, `NodeLost`, `Preempted`), like a
    /// pod failure policy that ignores disruptions. The next attempt starts 5 seconds later.
    /// Past this budget a disruption counts as an ordinary failure. Default 3, also for tasks
    /// that set no `retries`; `0` treats disruptions as ordinary failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub disruptions: Option<u32>,
}

/// Which failed attempts are worth another try.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryOn {
    /// Failure reasons that are retried. Empty means every reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<FailureReason>,

    /// For failures with reason `Error`: the exit codes that are retried. Empty means every
    /// exit code not listed in `exceptExitCodes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<i32>,

    /// For failures with reason `Error`: exit codes that are never retried, for example the
    /// code your program uses for bad input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_exit_codes: Vec<i32>,
}

/// Why an attempt failed, as Kubernetes reported it. `Lost`, `Evicted`, `PodDeleted`,
/// `NodeLost` and `Preempted` are disruptions: the attempt was ended from outside the task,
/// and `retries.disruptions` retries it without spending `retries.limit`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum FailureReason {
    /// The container exited with a non-zero code.
    Error,
    /// The container was killed for using more memory than its limit.
    OOMKilled,
    /// The attempt ran longer than the task's `timeout`.
    DeadlineExceeded,
    /// The pod was evicted from its node (node pressure, a drain). A disruption.
    Evicted,
    /// The pod was deleted while it ran, by anyone but Weir. A disruption.
    PodDeleted,
    /// The pod's node went away, shut down or lost the container. A disruption.
    NodeLost,
    /// The pod was preempted to make room for a pod of higher priority. A disruption.
    Preempted,
    /// The image could not be pulled (`ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`).
    ImagePullError,
    /// The container could not be created from its configuration (for example a missing
    /// Secret or ConfigMap key).
    ConfigError,
    /// The attempt's Job disappeared (or began to be deleted) before it finished, deleted by
    /// anyone but Weir: by hand, or by the garbage collector. A disruption.
    Lost,
    /// The attempt was stopped because the run was cancelled or timed out. Never retried.
    Cancelled,
    /// The container exited 0 but a declared output is missing, or the outputs could not
    /// be read (malformed, or over the 4 KiB termination-message limit).
    OutputError,
    /// `weir exec` could not move the task's artifacts: the store refused (wrong
    /// credentials, no such bucket), a digest did not match, a declared path was missing.
    ArtifactError,
    /// What a wait task waits for failed or can never hold: the other pipeline's run or
    /// task failed, the object's kind is unknown or the operator may not read it.
    WaitFailed,
    /// An approval task was rejected (by a person, or by its `approval.onTimeout`). Never
    /// retried.
    Rejected,
    /// A failure Kubernetes gave no more precise reason for.
    Unknown,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Error => "Error",
            FailureReason::OOMKilled => "OOMKilled",
            FailureReason::DeadlineExceeded => "DeadlineExceeded",
            FailureReason::Evicted => "Evicted",
            FailureReason::PodDeleted => "PodDeleted",
            FailureReason::NodeLost => "NodeLost",
            FailureReason::Preempted => "Preempted",
            FailureReason::ImagePullError => "ImagePullError",
            FailureReason::ConfigError => "ConfigError",
            FailureReason::Lost => "Lost",
            FailureReason::Cancelled => "Cancelled",
            FailureReason::OutputError => "OutputError",
            FailureReason::ArtifactError => "ArtifactError",
            FailureReason::WaitFailed => "WaitFailed",
            FailureReason::Rejected => "Rejected",
            FailureReason::Unknown => "Unknown",
        }
    }
}

/// The state of one task within a run.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TaskPhase {
    /// Waiting for its upstream tasks, or for a free slot under `parallelism`.
    Pending,
    /// An attempt is running (or its Job is starting).
    Running,
    /// An attempt failed and the next one waits for its retry delay.
    Retrying,
    /// The task succeeded.
    Succeeded,
    /// The task failed and has no retries left (or the failure is not retried).
    Failed,
    /// The task did not run because its trigger rule can no longer hold without a failure
    /// upstream (for example an upstream task was skipped).
    Skipped,
    /// The task did not run because an upstream task failed.
    UpstreamFailed,
    /// The task was stopped or never started because the run was cancelled or timed out.
    Cancelled,
}

impl TaskPhase {
    /// Whether the task has reached its final state.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            TaskPhase::Pending | TaskPhase::Running | TaskPhase::Retrying
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskPhase::Pending => "Pending",
            TaskPhase::Running => "Running",
            TaskPhase::Retrying => "Retrying",
            TaskPhase::Succeeded => "Succeeded",
            TaskPhase::Failed => "Failed",
            TaskPhase::Skipped => "Skipped",
            TaskPhase::UpstreamFailed => "UpstreamFailed",
            TaskPhase::Cancelled => "Cancelled",
        }
    }
}

/// Pod-level settings of every task's pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Service account the task pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Node labels a node must have to run the task pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the task pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Secrets used to pull the task images from private registries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Pod security context of the task pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,

    /// Priority class of the task pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Extra labels put on the task pods (Weir's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations put on the task pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,

    /// For clusters with Kueue: the LocalQueue whose quota task Jobs are admitted under. Set,
    /// every attempt's Job carries the label `kueue.x-k8s.io/queue-name` with this value.
    /// Optional: Weir's pools work without Kueue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub kueue_queue_name: Option<String>,
}
