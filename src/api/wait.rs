//! Tasks that use no pod. A `wait` task is a sensor the operator evaluates itself (Airflow's
//! deferrable sensors, without a triggerer process): no Job, no pod, no container. Each
//! attempt looks at its condition every `pokeInterval` until it holds (the attempt
//! succeeds) or the task's `timeout` passes (the attempt fails with `DeadlineExceeded`,
//! and retries apply as to any task).

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
}
