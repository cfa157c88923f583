//! Approval gates. A task with `approval` runs no pod: it waits for a person's decision,
//! given by creating an `Approval` object that names the TaskRun. Who may decide is plain
//! RBAC on `approvals`; who did decide comes from Kubernetes itself: the operator's mutating
//! admission webhook writes the requester's user name and groups (from the admission
//! request's `userInfo`) into `spec.decidedBy`/`spec.groups` and signs the decision with a
//! key only the operator reads. The operator counts only Approvals whose signature checks,
//! so a value the requester wrote, or an Approval that skipped the webhook, decides nothing
//! (see docs/approvals.md).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the message of a waiting approval task begins (its condition, the run's summary):
/// `waiting for approval: weir approve RUN TASK`.
pub const WAITING_MESSAGE: &str = "waiting for approval";

/// Makes a task an approval gate (`Pipeline.spec.tasks[].approval`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalGate {
    /// How long the task waits for a decision from the moment it starts waiting, for
    /// example `24h`. Unset: it waits until the run is cancelled or times out. (The task's
    /// own `timeout` does not apply to an approval task.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub timeout: Option<String>,

    /// The decision taken when `timeout` passes with none: `Reject` (the default) or
    /// `Approve`. It is recorded with `decidedBy: timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<Decision>,

    /// What the approver is asked, shown by `weir get`, the UI and the notification (for
    /// example "deploy the new model to production?").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A person's decision on an approval task.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Decision {
    /// The task succeeds and the run goes on.
    Approve,
    /// The task fails with reason `Rejected` (never retried).
    #[default]
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "Approve",
            Decision::Reject => "Reject",
        }
    }

    /// `approved` or `rejected`.
    pub fn past(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
        }
    }
}

/// One decision on one approval task. Create it with `weir approve RUN TASK` (or `weir
/// reject`), or `kubectl create -f`: RBAC on `approvals` decides who may. Once created it
/// cannot be changed: make a new one only if the task still waits.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Approval",
    namespaced,
    doc = "An Approval: one person's decision (Approve or Reject) on a waiting approval task.",
    category = "weir",
    printcolumn = r#"{"name":"TaskRun","type":"string","jsonPath":".spec.taskRun"}"#,
    printcolumn = r#"{"name":"Decision","type":"string","jsonPath":".spec.decision"}"#,
    printcolumn = r#"{"name":"By","type":"string","jsonPath":".spec.decidedBy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// The TaskRun of the approval task decided on (`weir get RUN` lists it), in the same
    /// namespace.
    #[schemars(length(min = 1, max = 253))]
    pub task_run: String,

    /// `Approve` or `Reject`.
    pub decision: Decision,

    /// Why, in the approver's words; recorded in the TaskRun's status and Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,

    /// Who decided: set by Weir's admission webhook from the request's authenticated user.
    /// Whatever the requester writes here is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,

    /// The decider's groups, as Kubernetes authenticated them; set by the webhook.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,

    /// The webhook's signature over the namespace, name, TaskRun, decision, comment, user
    /// and groups (HMAC-SHA256, base64). An Approval without a valid one is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The decision taken on an approval task, as the TaskRun records it (`status.approval`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// `Approve` or `Reject`.
    pub decision: Decision,
    /// Who decided, as Kubernetes authenticated them; `timeout` for the default taken when
    /// `approval.timeout` passed.
    pub decided_by: String,
    /// The decider's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The decider's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When the decision was made (the Approval's creation, or when the timeout passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    /// The Approval object that carried the decision; empty for a timeout.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approval_name: String,
}

/// An Approval naming the task that the operator did not count, and why.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredApproval {
    /// The Approval's name.
    pub name: String,
    /// Why it decides nothing (for example its signature does not check).
    pub reason: String,
}
