//! `Asset`: a piece of data the user names (`warehouse/sales/daily`), and the history of its
//! updates. Tasks declare what they produce (`produces`); when such a task succeeds, or when
//! someone runs `weir asset update`, the operator appends an event. Pipelines that name the
//! asset in `spec.assets` start a run when their condition over these events holds.
//!
//! Asset names are chosen by users and may hold `/`, `.` or capitals, so the object's name is
//! derived from the asset name (`engine::asset::object_name`) and the name itself is kept in
//! `spec.name`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Pattern of an asset name: letters, digits and `/ . _ -`, starting with a letter or digit.
pub const ASSET_NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9/._-]*$";

/// A named piece of data and its last updates. Created and written by the operator (and by
/// `weir asset update`); its name is derived from `spec.name`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Asset",
    namespaced,
    doc = "An Asset: a piece of data named by users (spec.name) and its bounded history of updates (status.events). Pipelines whose spec.assets names it run when it is updated.",
    status = "AssetStatus",
    category = "weir",
    printcolumn = r#"{"name":"Asset","type":"string","jsonPath":".spec.name"}"#,
    printcolumn = r#"{"name":"Sequence","type":"integer","jsonPath":".status.sequence"}"#,
    printcolumn = r#"{"name":"Last Update","type":"date","jsonPath":".status.lastUpdateTime"}"#,
    printcolumn = r#"{"name":"Consumers","type":"string","jsonPath":".status.consumerList"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AssetSpec {
    /// The asset's name as users write it in `produces` and `spec.assets`, for example
    /// `warehouse/sales/daily`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9/._-]*$"))]
    pub name: String,

    /// Lets callers of the operator's HTTP trigger endpoint record events of this asset
    /// with the token kept in a Secret (see `docs/triggers.md`). Unset: no HTTP events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_trigger: Option<HttpTrigger>,
}

/// Where the token of the HTTP trigger endpoint is kept.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTrigger {
    /// A Secret in the same namespace; its key `token` holds the token callers send as
    /// `Authorization: Bearer <token>` (at least 16 characters, compared in constant time).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// The updates of an asset, newest last, and who consumes it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetStatus {
    /// The sequence number of the newest event: it grows by one with every event and never
    /// goes back, so a consumer remembers what it has seen by a number.
    #[serde(default)]
    pub sequence: u64,

    /// When the newest event was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,

    /// The newest events, oldest first (at most 50; older ones are dropped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<AssetEvent>,

    /// The Pipelines of this namespace whose `spec.assets` names the asset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,

    /// `consumers` as one comma-separated text, for `kubectl get assets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_list: Option<String>,
}

/// One update of an asset.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetEvent {
    /// The asset's name: set in a run's `spec.assetEvents`, unset in the Asset's own history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,

    /// The asset's sequence number after this event.
    pub sequence: u64,

    /// When the event was recorded.
    pub time: Time,

    /// Who made the event: `task` (a task that `produces` it succeeded), `cli`
    /// (`weir asset update`) or `http` (the trigger endpoint).
    pub source: String,

    /// The PipelineRun whose task made the event, if a task did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<String>,

    /// The task that made the event, if a task did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,

    /// The logical date of the run that made the event (or the one given to
    /// `weir asset update --logical-date`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_date: Option<Time>,

    /// Extra values: the task outputs named in `produces[].extra`, or `--extra key=value`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,

    /// What makes the event unique: the producing TaskRun's uid and attempt, or the
    /// idempotency key of an outside update. An event whose key is already in the history is
    /// not recorded twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl Default for AssetEvent {
    fn default() -> Self {
        AssetEvent {
            asset: None,
            sequence: 0,
            time: Time(jiff::Timestamp::UNIX_EPOCH),
            source: String::new(),
            pipeline_run: None,
            task: None,
            logical_date: None,
            extra: BTreeMap::new(),
            key: None,
        }
    }
}

/// An asset a task updates when it succeeds.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducedAsset {
    /// The asset's name, for example `warehouse/sales/daily`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9/._-]*$"))]
    pub asset: String,

    /// Names of the task's `outputs` copied into the event's extra values, so that consumers
    /// can read them (`{{ assetEvent.extra.<name> }}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

/// Runs a pipeline when the assets it reads were updated (Airflow's data-aware scheduling).
/// Set exactly one of `all` and `any`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetTrigger {
    /// A run starts once every one of these assets has been updated since the pipeline's
    /// last asset-triggered run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<String>,

    /// A run starts as soon as any of these assets has been updated since the pipeline's
    /// last asset-triggered run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<String>,

    /// Only events this recent count (for example `24h`): with `all`, an update older than
    /// this does not pair with a fresh update of another asset. Unset: every event counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub within: Option<String>,

    /// Set to `true` to stop creating asset-triggered runs. Events keep being recorded;
    /// when set back to `false`, the events that came meanwhile make one run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

impl AssetTrigger {
    /// The assets named, in the order written.
    pub fn assets(&self) -> impl Iterator<Item = &String> {
        self.all.iter().chain(self.any.iter())
    }
}

/// An asset and one of its sequence numbers: in a Pipeline's status the newest event a run
/// was started for; in a TaskRun's status the event its success recorded.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssetSequence {
    /// The asset's name.
    pub asset: String,
    /// The sequence number.
    pub sequence: u64,
}
