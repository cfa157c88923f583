//! Tasks that use no pod. A `wait` task is a sensor the operator evaluates itself (Airflow's
//! deferrable sensors, without a triggerer process): no Job, no pod, no container. Each
//! attempt looks at its condition every `pokeInterval` until it holds (the attempt
//! succeeds) or the task's `timeout` passes (the attempt fails with `DeadlineExceeded`,
//! and retries apply as to any task). A wait task never takes a `parallelism` slot.
//!
//! Exactly one kind per task: `delay`, `time`, `pipelineRun`, `object` or `asset` (see
//! docs/sensors.md). Moments of the run (`time.from`, `asset.since`, the logical date a
//! `pipelineRun` sensor looks for) are worked out once, when the TaskRun is made, and
//! written into its spec, so a TaskRun says exactly what it waits for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a sensor task waits for, and how often it looks.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitSpec {
    /// How often the operator looks again while the condition does not hold (Airflow's
    /// `poke_interval`), for example `30s`. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub poke_interval: Option<String>,

    /// Holds once the attempt has waited this long, for example `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub delay: Option<String>,

    /// Holds from a moment relative to the run, for example two hours after its data
    /// interval ends (Airflow's `TimeDeltaSensor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeWait>,

    /// Holds once a run of another pipeline for the same logical date (or an offset of it),
    /// or one task of that run, has succeeded (Airflow's `ExternalTaskSensor`). Fails at
    /// once when that run or task failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<PipelineRunWait>,

    /// Holds once a Kubernetes object of the run's namespace exists, or has a condition or
    /// a field value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectWait>,

    /// Holds once an asset has been updated since a moment of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<AssetWait>,
}

/// A moment of the run that sensors count from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RunMoment {
    /// The run's logical date (`spec.logicalDate`).
    LogicalDate,
    /// The start of the run's data interval.
    DataIntervalStart,
    /// The end of the run's data interval.
    DataIntervalEnd,
    /// When the run started (`status.startTime`).
    RunStart,
}

impl RunMoment {
    /// The name as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMoment::LogicalDate => "logicalDate",
            RunMoment::DataIntervalStart => "dataIntervalStart",
            RunMoment::DataIntervalEnd => "dataIntervalEnd",
            RunMoment::RunStart => "runStart",
        }
    }
}

/// `wait.time`: holds from `from` + `offset` on.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeWait {
    /// The moment counted from: `logicalDate`, `dataIntervalStart`, `dataIntervalEnd`
    /// (default) or `runStart`. A run without a logical date or data interval (one started
    /// by hand) counts from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<RunMoment>,

    /// Added to `from`, for example `2h`; `-30m` counts back. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^-?([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub offset: Option<String>,

    /// The moment the sensor holds from: set by the operator when the TaskRun is made
    /// (never in a Pipeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Time>,
}

/// `wait.pipelineRun`: another pipeline's run (or one of its tasks) to succeed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunWait {
    /// The Pipeline (in the same namespace) whose run is waited for. Templates allowed,
    /// for example `{{ params.upstream }}`.
    #[schemars(length(min = 1, max = 253))]
    pub pipeline: String,

    /// One task of that run: holds once it succeeded, even if the run goes on. Unset: the
    /// whole run must succeed. Templates allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,

    /// The logical date looked for is this run's plus this offset: `-24h` waits for the
    /// run of the day before (Airflow's `execution_delta`, with the sign written out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^-?([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub logical_date_offset: Option<String>,

    /// The logical date looked for: set by the operator when the TaskRun is made (never in
    /// a Pipeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_date: Option<Time>,
}

/// `wait.object`: a Kubernetes object of the run's namespace to exist, or to reach a
/// condition or a field value. The operator must be allowed to `get` it (the chart's
/// `sensors.readableResources`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectWait {
    /// The object's API version, for example `apps/v1` or `v1`.
    #[schemars(length(min = 1))]
    pub api_version: String,

    /// The object's kind, for example `Deployment`.
    #[schemars(length(min = 1))]
    pub kind: String,

    /// The object's name. Templates allowed.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Holds once the object's `status.conditions` has this condition. Unset (and no
    /// `field`): the object existing is enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<ObjectCondition>,

    /// Holds once a field of the object has a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<FieldValue>,
}

/// A condition in an object's `status.conditions`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCondition {
    /// The condition's type, for example `Ready` or `Available`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub type_: String,

    /// The status it must have: `True` (default), `False` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// A field of an object and the value it must have.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldValue {
    /// The field's path, keys and list indexes separated by dots: `status.phase`,
    /// `status.loadBalancer.ingress.0.ip`.
    #[schemars(length(min = 1))]
    pub path: String,

    /// The value as text (numbers and booleans compare by how JSON writes them: `3`,
    /// `true`). Templates allowed.
    pub value: String,
}

/// `wait.asset`: an asset to be updated since a moment of the run.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetWait {
    /// The asset's name, for example `warehouse/sales/daily`. Templates allowed.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Holds on an event recorded after this moment: `logicalDate` (default),
    /// `dataIntervalStart`, `dataIntervalEnd` or `runStart`. A run without a logical date
    /// or data interval counts from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<RunMoment>,

    /// The moment events must be newer than: set by the operator when the TaskRun is made
    /// (never in a Pipeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Time>,
}

impl WaitSpec {
    /// The kinds set, by their field names (a valid spec has exactly one).
    pub fn kinds(&self) -> Vec<&'static str> {
        [
            ("delay", self.delay.is_some()),
            ("time", self.time.is_some()),
            ("pipelineRun", self.pipeline_run.is_some()),
            ("object", self.object.is_some()),
            ("asset", self.asset.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    /// Whether `weir run` can evaluate it on a machine with no cluster (`delay`, `time`).
    pub fn is_local(&self) -> bool {
        self.pipeline_run.is_none() && self.object.is_none() && self.asset.is_none()
    }
}
