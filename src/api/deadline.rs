//! Deadlines (Airflow's SLAs, its 3.1 "deadline alerts"): a run should be done within a
//! time after its logical date, its scheduled time or its start. A miss is said once, at
//! the moment it happens: a `DeadlineMissed` condition, an Event, a metric and a
//! `DeadlineMissed` notification. The run goes on unless `onMiss: Fail`.
//!
//! A task can have a deadline of its own (`tasks[].deadline`, which may also count from the
//! task's start): its miss is recorded in the run's `status.missedDeadlines`, set as a
//! condition on its TaskRun, and with `onMiss: Fail` the task (not the run) fails with
//! reason `DeadlineExceeded`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// When a run should be done by.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deadline {
    /// How long after `from` the run should be done, for example `2h`.
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub within: String,

    /// What `within` counts from. Default `ScheduledTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DeadlineFrom>,

    /// What a miss does: `Continue` (default: say so, and let the run go on) or `Fail`
    /// (stop the run as its `timeout` would, running `finally` tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_miss: Option<OnMiss>,
}

/// What a deadline counts from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeadlineFrom {
    /// The run's logical date (the start of its data interval).
    LogicalDate,
    /// When the run was due: the end of its data interval for a scheduled or backfill run
    /// (when the schedule fires), the logical date otherwise.
    #[default]
    ScheduledTime,
    /// When the run started (took its pipeline snapshot).
    RunStart,
    /// When the task's first attempt started (a task's deadline only; a task not started
    /// yet has no deadline).
    TaskStart,
}

/// What a missed deadline does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnMiss {
    /// Say so and let the run go on.
    #[default]
    Continue,
    /// On a run: stop it (running tasks stopped, pending ones cancelled, `finally` tasks
    /// run; it fails with reason `RunTimeout`). On a task: stop that task (its attempt is
    /// stopped, no further attempt is made, one not started yet never starts); it fails with
    /// reason `DeadlineExceeded`, and the run goes on as after any failed task.
    Fail,
}

/// A task's deadline that passed while the task was not done, as the run records it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MissedDeadline {
    /// The task.
    pub task: String,
    /// When it should have been done by.
    pub due_time: Time,
    /// What the deadline was and what the miss does, in words.
    pub message: String,
    /// Whether the task is stopped (`onMiss: Fail`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
}

/// Set on a TaskRun by its run when the task's deadline passed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineMiss {
    /// What the deadline was, in words; the message of the TaskRun's `DeadlineMissed`
    /// condition.
    pub message: String,
    /// `true` with `onMiss: Fail`: the running attempt is stopped, no further one is made,
    /// and the TaskRun fails with reason `DeadlineExceeded`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail: bool,
}
