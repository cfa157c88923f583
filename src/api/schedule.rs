//! The schedule of a Pipeline: when the operator creates runs by itself, and how runs of
//! one pipeline share the cluster (`maxActiveRuns`, history limits live on `PipelineSpec`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Runs the pipeline on a cron schedule, Airflow style: each run covers one data interval,
/// from one cron time to the next, and is created when its interval ends. Its logical date
/// is the start of the interval, and its name is derived from it
/// (`<pipeline>-<yyyymmdd>-<hhmmss>`, UTC), so no interval ever gets two runs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Cron expression: the standard five fields (`minute hour day-of-month month
    /// day-of-week`, for example `0 2 * * *`), a macro (`@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`), or six fields with seconds first (`*/10 * * * * *`) for fast
    /// cadences and tests. Also understood: `L` (last day), `W` (nearest weekday),
    /// `#` (nth weekday), names (`MON`, `JAN`).
    #[schemars(length(min = 1, max = 256))]
    pub cron: String,

    /// IANA time zone the cron expression is read in, for example `Europe/Berlin`. Default
    /// `UTC`. Across daylight-saving changes a time that does not exist runs at the first
    /// instant after the gap, and a time that exists twice runs once (the first time);
    /// expressions with wildcard or stepped hours keep their rhythm through both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub timezone: Option<String>,

    /// The first data interval starts at the first cron time at or after this instant
    /// (Airflow's `start_date`). Default: the interval the Pipeline was created in, so the
    /// first run comes at the first cron time after the Pipeline exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// No run is scheduled for a data interval starting after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,

    /// After the operator was down or the schedule suspended, create runs for every missed
    /// interval, oldest first (at most `maxActiveRuns`, or 16, unfinished at a time; the
    /// rest follow as they finish). When `false` (the default) only the latest missed
    /// interval gets a run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catchup: bool,

    /// What happens when an interval ends while a run made by this schedule is still going:
    /// `Allow` (default) starts another one, `Forbid` skips the interval (or, with
    /// `catchup`, waits and runs it afterwards), `Replace` cancels the running one.
    /// Manual and backfill runs are left alone; `maxActiveRuns` limits every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,

    /// A run that cannot be created within this long after its interval ended (the
    /// operator was down, `Forbid` kept it waiting) is skipped, for example `10m`.
    /// Default: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub starting_deadline: Option<String>,

    /// Set to `true` to stop creating runs; runs already created go on. When it is set back
    /// to `false`, intervals missed meanwhile are handled as `catchup` says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// How a schedule treats its own runs that are still going when the next interval ends.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Start the new run alongside (it may still wait for `maxActiveRuns`).
    #[default]
    Allow,
    /// Skip the new interval (with `catchup`: run it once the running one finished).
    Forbid,
    /// Cancel the running scheduled runs (their `finally` tasks still run) and start the new
    /// one.
    Replace,
}

/// What created a run: the value of the `weir.dev/trigger` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The pipeline's schedule.
    Schedule,
    /// `weir trigger`.
    Manual,
    /// `weir backfill`.
    Backfill,
    /// Updates of the assets in the pipeline's `spec.assets`.
    Asset,
    /// The operator's HTTP trigger endpoint.
    Http,
}

impl Trigger {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Backfill => "backfill",
            Trigger::Asset => "asset",
            Trigger::Http => "http",
        }
    }
}
