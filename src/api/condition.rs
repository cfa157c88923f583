//! Status conditions following the Kubernetes API conventions: `type`, `status`, `reason`
//! (a CamelCase constant), `message`, `lastTransitionTime` and `observedGeneration`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The three values of a condition's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// The condition types Weir writes.
pub mod condition_types {
    /// On PipelineRuns and TaskRuns: Unknown while running, then True or False.
    pub const SUCCEEDED: &str = "Succeeded";
    /// On Pipelines: whether the spec is valid and the schedule works.
    pub const READY: &str = "Ready";
    /// On PipelineRuns, written by the notifier: `False` while a notification could not be
    /// delivered, `True` once all were.
    pub const NOTIFICATIONS_DELIVERED: &str = "NotificationsDelivered";
    /// On PipelineRuns with a deadline: `True` once the run was not done in time. On
    /// TaskRuns whose task has a deadline: `True` once the task was not done in time.
    pub const DEADLINE_MISSED: &str = "DeadlineMissed";
}

/// Reasons of conditions and Events: CamelCase constants that tools and people can match on.
/// A failed attempt's reason is its [`crate::api::FailureReason`] instead.
pub mod reasons {
    // Pipeline `Ready`.
    pub const VALID: &str = "Valid";
    pub const INVALID: &str = "Invalid";
    pub const INVALID_PIPELINE: &str = "InvalidPipeline";
    // Run and task `Succeeded`.
    pub const STARTED: &str = "Started";
    pub const RUNNING: &str = "Running";
    pub const RETRYING: &str = "Retrying";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const CANCELLED: &str = "Cancelled";
    pub const CANCELLING: &str = "Cancelling";
    pub const QUEUED: &str = "Queued";
    /// A task that uses no pod waits for its condition (a sensor) or a decision.
    pub const WAITING: &str = "Waiting";
    pub const PIPELINE_NOT_FOUND: &str = "PipelineNotFound";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const INVALID_PARAMS: &str = "InvalidParams";
    pub const RUN_TIMEOUT: &str = "RunTimeout";
    pub const TASK_FAILED: &str = "TaskFailed";
    pub const FINALLY_FAILED: &str = "FinallyFailed";
    /// The PipelineRevision a run follows was deleted or altered by hand.
    pub const REVISION_UNAVAILABLE: &str = "RevisionUnavailable";
    // Events only.
    pub const RUN_STARTED: &str = "RunStarted";
    pub const RUN_SUCCEEDED: &str = "RunSucceeded";
    pub const RUN_FAILED: &str = "RunFailed";
    pub const RUN_CANCELLED: &str = "RunCancelled";
    pub const RUN_CANCELLING: &str = "RunCancelling";
    pub const RUN_QUEUED: &str = "RunQueued";
    pub const RUN_SCHEDULED: &str = "RunScheduled";
    /// A run was created because the assets of the pipeline's `spec.assets` were updated.
    pub const RUN_TRIGGERED_BY_ASSETS: &str = "RunTriggeredByAssets";
    pub const RUNS_REPLACED: &str = "RunsReplaced";
    pub const INTERVALS_SKIPPED: &str = "IntervalsSkipped";
    pub const TASK_STARTED: &str = "TaskStarted";
    pub const TASK_SUCCEEDED: &str = "TaskSucceeded";
    pub const TASK_RETRYING: &str = "TaskRetrying";
    /// An attempt was ended from outside the task (a disruption).
    pub const TASK_DISRUPTED: &str = "TaskDisrupted";
    /// An attempt's Job replaced its pod, and the task ran again within the attempt.
    pub const TASK_POD_REPLACED: &str = "TaskPodReplaced";
    pub const TASK_CANCELLED: &str = "TaskCancelled";
    pub const TASK_SKIPPED: &str = "TaskSkipped";
    pub const TASK_NOT_STARTED: &str = "TaskNotStarted";
    pub const RUN_RERUN: &str = "RunRerun";
    pub const RERUN_REFUSED: &str = "RerunRefused";
    pub const TASK_RERUN: &str = "TaskRerun";
    /// A task waits for slots of its pool (`Queued` is its condition's reason meanwhile).
    pub const TASK_QUEUED: &str = "TaskQueued";
    /// A person (or the approval's timeout) approved an approval task.
    pub const TASK_APPROVED: &str = "TaskApproved";
    /// A person (or the approval's timeout) rejected an approval task.
    pub const TASK_REJECTED: &str = "TaskRejected";
    /// An Approval naming the task was not counted (its signature does not check).
    pub const APPROVAL_IGNORED: &str = "ApprovalIgnored";
    /// A task names a pool that does not exist; it waits until the pool is created.
    pub const POOL_NOT_FOUND: &str = "PoolNotFound";
    /// A task takes more slots than its pool has; it waits until the pool is made larger.
    pub const POOL_TOO_SMALL: &str = "PoolTooSmall";
    /// A notification was delivered (Event), or every one was (condition).
    pub const NOTIFICATION_SENT: &str = "NotificationSent";
    /// A try to deliver a notification failed; it is tried again.
    pub const NOTIFICATION_RETRYING: &str = "NotificationRetrying";
    /// A notification could not be delivered and is not tried again.
    pub const NOTIFICATION_FAILED: &str = "NotificationFailed";
    /// A run (or a task) was not done by its deadline (condition and Event).
    pub const DEADLINE_MISSED: &str = "DeadlineMissed";
    /// A value a task moved to the artifact store could not be read back for later tasks.
    pub const OUTPUT_UNAVAILABLE: &str = "OutputUnavailable";
    /// A task stopped by its deadline (`onMiss: Fail`): its `Succeeded` condition.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// A deleted run's objects were deleted from the artifact store.
    pub const ARTIFACTS_DELETED: &str = "ArtifactsDeleted";
    /// A deleted run's objects could not be deleted in time; the run was let go, and they
    /// are left in the store.
    pub const ARTIFACTS_KEPT: &str = "ArtifactsKept";
}

/// The `action` of Events (what the operator was doing).
pub mod actions {
    pub const START: &str = "Start";
    pub const FINISH: &str = "Finish";
    pub const CANCEL: &str = "Cancel";
    pub const VALIDATE: &str = "Validate";
    pub const SCHEDULE: &str = "Schedule";
    pub const QUEUE: &str = "Queue";
    pub const RECONCILE: &str = "Reconcile";
    pub const RERUN: &str = "Rerun";
    pub const NOTIFY: &str = "Notify";
    pub const DELETE: &str = "Delete";
    /// An approval task was decided on.
    pub const DECIDE: &str = "Decide";
}

/// Merges a condition into `conditions`. `lastTransitionTime` moves only when the status
/// flips, so watchers can tell how long a resource has been in its current state.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status.as_str() {
                existing.last_transition_time = Time(now);
            }
            existing.status = status.as_str().to_string();
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.as_str().to_string(),
            reason: reason.to_string(),
            message,
            last_transition_time: Time(now),
            observed_generation,
        }),
    }
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::False,
            "Invalid",
            "a",
            Some(1),
            ts(10),
        );
        set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::False,
            "Invalid",
            "b",
            Some(2),
            ts(20),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Time(ts(10)));
        assert_eq!(conds[0].message, "b");
        assert_eq!(conds[0].observed_generation, Some(2));
        set_condition(
            &mut conds,
            "Ready",
            ConditionStatus::True,
            "Valid",
            "",
            Some(3),
            ts(30),
        );
        assert_eq!(conds[0].last_transition_time, Time(ts(30)));
        assert_eq!(conds[0].status, "True");
    }
}
