//! Deadlines (Airflow's SLAs, its 3.1 "deadline alerts"): a run should be done within a
//! time after its logical date, its scheduled time or its start. A miss is said once, at
//! the moment it happens: a `DeadlineMissed` condition, an Event, a metric and a
//! `DeadlineMissed` notification. The run goes on unless `onMiss: Fail`.

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
}

/// What a missed deadline does.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnMiss {
    /// Say so and let the run go on.
    #[default]
    Continue,
    /// Stop the run: running tasks stopped, pending ones cancelled, `finally` tasks run,
    /// the run fails with reason `RunTimeout`.
    Fail,
}
