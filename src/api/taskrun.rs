//! `TaskRun`: one task of a run, with every attempt it made.

use super::task::{FailureReason, PodTemplate, RetryPolicy, TaskPhase};
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One task of a run, fully resolved (defaults applied, templates expanded). Each attempt
/// runs as its own Job, named `<taskrun>-<attempt>`. Usually created by a PipelineRun; can
/// be created by hand to run a single task with retries.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "TaskRun",
    namespaced,
    doc = "A TaskRun: one task of a run, fully resolved; every attempt runs as its own Job.",
    status = "TaskRunStatus",
    shortname = "tr",
    category = "weir",
    printcolumn = r#"{"name":"Task","type":"string","jsonPath":".spec.taskName"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Attempts","type":"integer","jsonPath":".status.attemptCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].reason","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_empty_string_defaults)]
pub struct TaskRunSpec {
    /// Name of the task within its pipeline.
    #[schemars(length(min = 1, max = 63))]
    pub task_name: String,

    /// Container image; empty for a task that uses no pod (`wait`, `approval`).
    // Skipped when empty, so the schema has no `default: ""`: the 1.20 API server turns it
    // into null and refuses the whole CRD.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image: String,

    /// Entrypoint of the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,

    /// Environment variables of the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Working directory of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,

    /// Resources of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Security context of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,

    /// How failed attempts are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,

    /// Longest time one attempt may run (Job `activeDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub timeout: Option<String>,

    /// Pod-level settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,

    /// Outputs the task must produce (see `Pipeline.spec.tasks[].outputs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,

    /// Assets the task updates when it succeeds (see `Pipeline.spec.tasks[].produces`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub produces: Vec<super::asset::ProducedAsset>,
    /// Files and directories the task leaves for later tasks (see
    /// `Pipeline.spec.tasks[].artifacts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<super::artifact::ArtifactSpec>,

    /// Artifacts of upstream tasks put into the container before the command starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<super::artifact::ResolvedInput>,

    /// The pipeline's own artifact store, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_store: Option<super::artifact::ArtifactStoreSpec>,

    /// What the task waits for, when it is a sensor the operator evaluates itself: it then
    /// makes no Job (see `Pipeline.spec.tasks[].wait`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<super::wait::WaitSpec>,

    /// The approval gate, when the task waits for a person's decision: it then makes no
    /// Job (see `Pipeline.spec.tasks[].approval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<super::approval::ApprovalGate>,

    /// For an instance of a fanned-out task: its index among the task's instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,

    /// Set to `true` to stop the task: its running Job is deleted and no further attempt is
    /// made. The TaskRun ends `Cancelled`. (Deleting the Job does not stop the task: a Job
    /// deleted by anyone but Weir is a disruption, retried as the next attempt.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,

    /// Set by the run to ask for the task to run again after it finished (the run's
    /// `spec.rerun.request`): a new attempt is made, numbered on from the earlier ones, with
    /// a fresh retry budget. Applied once per value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<String>,

    /// The Pool whose slots each attempt takes; the attempt's Job is created only once they
    /// are held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub pool: Option<String>,

    /// How many slots of `pool` an attempt takes. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub pool_slots: Option<u32>,

    /// The task's priority in its pool's queue, its weight rule applied: higher first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,

    /// Set by the run when the task's `deadline` passed while it was not done: the TaskRun
    /// gets condition `DeadlineMissed`, and with `fail` it stops and fails with reason
    /// `DeadlineExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_missed: Option<super::deadline::DeadlineMiss>,
}

/// What the operator observed of a TaskRun.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Succeeded`: `Unknown` while attempts go on, then `True`, or `False` with the reason
    /// of the last failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Pending, Running, Retrying, Succeeded, Failed or Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TaskPhase>,

    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the task reached its final state: when its last attempt ended (its Job's
    /// completion), or, for an end without an attempt time, when the operator saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// Number of attempts made so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_count: Option<u32>,

    /// Every attempt, oldest first, but for the oldest attempts of earlier rounds (before
    /// reruns) past the last 10 of them: those are counted in `attemptsOmitted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,

    /// How many attempts of earlier rounds were left out of `attempts` (the oldest: numbers
    /// 1 to this), so that a task run again and again stays a small object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_omitted: Option<u32>,

    /// What the succeeded attempt handed on, by output name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub outputs: std::collections::BTreeMap<String, String>,

    /// The asset events recorded for the task's success (see `spec.produces`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub asset_events: Vec<super::asset::AssetSequence>,

    /// The succeeded attempt `assetEvents` were recorded for (a rerun that succeeds again
    /// records new events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset_events_attempt: Option<u32>,

    /// When the next attempt will start, while the task waits for its retry delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_time: Option<Time>,

    /// The `spec.rerun` request this status has taken in: its attempts from then on form a
    /// new round, with a fresh retry budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun: Option<String>,

    /// Attempts before the current round (earlier runs of the task, before reruns): they
    /// stay in `attempts` but no longer count against the retry budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_start: Option<u32>,

    /// The decision on an approval task: who approved or rejected it, when, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<super::approval::ApprovalRecord>,

    /// Approvals naming this task that decided nothing (no valid signature, made before
    /// the task waited), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_approvals: Vec<super::approval::IgnoredApproval>,
}

/// One attempt of a task: one Job and its pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_empty_string_defaults)]
pub struct Attempt {
    /// Attempt number, 1 for the first try.
    pub number: u32,
    /// Name of the attempt's Job; unset for a task that uses no pod (`wait`, `approval`).
    // Skipped when empty: the 1.20 API server refuses an empty string inside a list of a
    // custom resource (kubernetes/kubernetes#99804).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_name: String,
    /// Running, Succeeded or Failed.
    pub phase: AttemptPhase,
    /// When the Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the attempt finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Exit code of the task container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// What Kubernetes or the container said about the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The pod that runs (or ran) the attempt, once one was seen: the newest, if the Job
    /// replaced one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Pods of this attempt that its Job replaced with another. On Kubernetes 1.20 a Job
    /// replaces a pod deleted while it ran, and the task would start over within the same
    /// attempt (`WEIR_ATTEMPT` unchanged): Weir ends such an attempt as a disruption
    /// (`PodDeleted`) and stops its Job as soon as it sees it, and records here how many pods
    /// were replaced, also when the replacement finished before Weir could stop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_replacements: Option<PodReplacements>,
}

/// The pods of one attempt that were replaced within its Job.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodReplacements {
    /// How many pods of the attempt were replaced.
    pub count: u32,
    /// Why the last one was (for example `PodDeleted`).
    pub reason: FailureReason,
    /// Which pod was replaced by which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The state of one attempt.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AttemptPhase {
    /// The Job exists and has not finished.
    #[default]
    Running,
    /// The container exited 0.
    Succeeded,
    /// The attempt failed; `reason` says why.
    Failed,
}

/// Drops `default: ""` from the schema's string fields (`image`, `jobName`: empty for a task
/// that uses no pod). Kubernetes 1.20 built with Go 1.19 reads an empty string in a custom
/// resource as `null` (kubernetes/kubernetes#99804), refusing the whole CRD for such a
/// default (`default: Invalid value: "null": in body must be of type string`) and an
/// object holding one: so empty strings are also never written (`skip_serializing_if`).
fn no_empty_string_defaults(schema: &mut schemars::Schema) {
    let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for field in properties.values_mut().filter_map(|f| f.as_object_mut()) {
        if field.get("default").and_then(|d| d.as_str()) == Some("") {
            field.remove("default");
        }
    }
}

impl TaskRunSpec {
    /// Whether attempts of the task run as Jobs with pods. A `wait` or `approval` task is
    /// evaluated by the operator itself instead: its attempts have no Job (`jobName` empty).
    pub fn uses_pod(&self) -> bool {
        self.wait.is_none() && self.approval.is_none()
    }

    /// Whether the task is asked to stop: cancelled, or its deadline passed with
    /// `onMiss: Fail`.
    pub fn stop_requested(&self) -> bool {
        self.cancelled || self.deadline_fails()
    }

    /// Whether the task's deadline passed with `onMiss: Fail`: it stops and fails with
    /// reason `DeadlineExceeded` (a cancellation wins: it ends `Cancelled`).
    pub fn deadline_fails(&self) -> bool {
        !self.cancelled && self.deadline_missed.as_ref().is_some_and(|d| d.fail)
    }
}
