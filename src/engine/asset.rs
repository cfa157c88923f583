//! Assets, decided without I/O: the object name of an asset, how an event enters its bounded
//! history (once per key), and when a pipeline's `spec.assets` condition makes a run, with
//! which events and under which deterministic name.
//!
//! Exactly one run per set of events, even across crashes: the run's name is derived from
//! what the pipeline had consumed *before* the run (its `status.consumedAssets`) and the
//! pipeline's uid. Until the operator records the new consumed sequence numbers, every try
//! computes the same name, so a crash between "create the run" and "record what it consumed"
//! makes the retry's create fail with AlreadyExists; the retry then records what the existing
//! run says it consumed.

use super::names;
use super::quote::q;
use crate::api::{AssetEvent, AssetSequence, AssetStatus, AssetTrigger};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most events an Asset keeps; older ones are dropped (the sequence number still counts
/// them).
pub const MAX_EVENTS: usize = 50;
/// Most events of one asset copied into a run's `spec.assetEvents`.
pub const MAX_RUN_EVENTS_PER_ASSET: usize = 20;
/// Longest asset name.
pub const MAX_ASSET_NAME: usize = 253;
/// Most extra values of one event, and the longest key and value.
pub const MAX_EXTRA: usize = 32;
pub const MAX_EXTRA_KEY: usize = 63;
pub const MAX_EXTRA_VALUE: usize = 1024;

/// Whether `name` is a valid asset name, or why not.
pub fn check_name(name: &str) -> Result<(), String> {
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
    if name.is_empty() || name.len() > MAX_ASSET_NAME || !first_ok || !rest_ok {
        return Err(format!(
            "{} is not an asset name: use 1 to {MAX_ASSET_NAME} letters, digits and / . _ -, starting with a letter or digit",
            q(name)
        ));
    }
    Ok(())
}

/// The name of the Asset object that holds asset `name`: its letters and digits in lower
/// case, other characters as dashes, then a hash of the exact name (so `Sales/Daily` and
/// `sales-daily` get different objects). Always a valid DNS label.
pub fn object_name(name: &str) -> String {
    let mut readable = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && (readable.is_empty() || readable.ends_with('-'))) {
            readable.push(c);
        }
    }
    readable.truncate(50);
    let readable = readable.trim_end_matches('-');
    let hash = names::short_hash(name);
    if readable.is_empty() {
        format!("asset-{hash}")
    } else {
        format!("{readable}-{hash}")
    }
}

/// Checks the extra values of an event from outside (`weir asset update`, the HTTP trigger).
pub fn check_extra(extra: &BTreeMap<String, String>) -> Result<(), String> {
    if extra.len() > MAX_EXTRA {
        return Err(format!(
            "{} extra values, more than the {MAX_EXTRA} allowed",
            extra.len()
        ));
    }
    for (key, value) in extra {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_EXTRA_KEY
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !key_ok {
            return Err(format!(
                "extra key {} must be 1 to {MAX_EXTRA_KEY} letters, digits, _ or -",
                q(key)
            ));
        }
        if value.len() > MAX_EXTRA_VALUE {
            return Err(format!(
                "extra value {} is {} bytes, more than the {MAX_EXTRA_VALUE} allowed",
                q(key),
                value.len()
            ));
        }
    }
    Ok(())
}

/// An event about to be recorded: everything but its sequence number and time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewEvent {
    pub source: String,
    pub pipeline_run: Option<String>,
    pub task: Option<String>,
    pub logical_date: Option<Timestamp>,
    pub extra: BTreeMap<String, String>,
    /// What makes it unique; an event with a key already in the history is not recorded.
    pub key: Option<String>,
}

/// What recording an event comes to.
#[derive(Clone, Debug, PartialEq)]
pub enum Recorded {
    /// The status with the event appended, and the event's sequence number.
    Added(AssetStatus, u64),
    /// An event with the same key is in the history already, with this sequence number.
    Already(u64),
}

/// Appends `event` to `status` at `now` with the next sequence number, keeping at most
/// [`MAX_EVENTS`]; an event whose key is already in the history is not recorded again.
pub fn record(status: &AssetStatus, event: NewEvent, now: Timestamp) -> Recorded {
    if let Some(key) = &event.key
        && let Some(existing) = status.events.iter().find(|e| e.key.as_ref() == Some(key))
    {
        return Recorded::Already(existing.sequence);
    }
    let sequence = status.sequence + 1;
    let mut next = status.clone();
    next.sequence = sequence;
    next.last_update_time = Some(Time(now));
    next.events.push(AssetEvent {
        asset: None,
        sequence,
        time: Time(now),
        source: event.source,
        pipeline_run: event.pipeline_run,
        task: event.task,
        logical_date: event.logical_date.map(Time),
        extra: event.extra,
        key: event.key,
    });
    let over = next.events.len().saturating_sub(MAX_EVENTS);
    next.events.drain(..over);
    Recorded::Added(next, sequence)
}

/// The `consumers` fields of an Asset listing `pipelines` (sorted, without repeats).
pub fn with_consumers(status: &AssetStatus, mut pipelines: Vec<String>) -> AssetStatus {
    pipelines.sort();
    pipelines.dedup();
    AssetStatus {
        consumer_list: (!pipelines.is_empty()).then(|| pipelines.join(",")),
        consumers: pipelines,
        ..status.clone()
    }
}

/// What the pipeline side knows when it decides on an asset-triggered run.
#[derive(Clone, Debug)]
pub struct TriggerInput<'a> {
    pub trigger: &'a AssetTrigger,
    /// The pipeline's `status.consumedAssets`.
    pub consumed: &'a [AssetSequence],
    /// The status of each asset named in the trigger that has an Asset object.
    pub assets: &'a BTreeMap<String, AssetStatus>,
    /// When the Pipeline was created: events before it do not count. (Kubernetes keeps
    /// whole seconds of both times, so an event of the same second counts.)
    pub created: Timestamp,
    /// Unfinished runs of the pipeline, and its `maxActiveRuns`.
    pub unfinished: u32,
    pub max_active_runs: Option<u32>,
    pub now: Timestamp,
}

/// Why no asset-triggered run is made now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// `spec.assets.suspend`: events keep being counted.
    Suspended,
    /// `maxActiveRuns` runs are unfinished: events keep being counted, and one run takes
    /// them all once a slot is free.
    MaxActiveRuns,
    /// The condition does not hold: these assets have no new event (in the window).
    Waiting(Vec<String>),
}

/// A run to make: its events (oldest first, each with its asset's name), the consumed
/// sequence numbers to record once it exists, and the data interval it covers.
#[derive(Clone, Debug, PartialEq)]
pub struct AssetRun {
    pub events: Vec<AssetEvent>,
    pub consumed: Vec<AssetSequence>,
    pub interval_start: Timestamp,
    pub interval_end: Timestamp,
}

/// Whether the trigger's condition holds now, and the run it makes.
pub fn plan_asset_run(input: &TriggerInput<'_>) -> Result<AssetRun, Hold> {
    let trigger = input.trigger;
    let window = trigger
        .within
        .as_deref()
        .and_then(|w| super::duration::parse(w).ok());
    let since = since(input.created, window, input.now);
    let consumed_of = |asset: &str| {
        input
            .consumed
            .iter()
            .find(|c| c.asset == asset)
            .map_or(0, |c| c.sequence)
    };
    let updated = |asset: &String| {
        input.assets.get(asset).is_some_and(|s| {
            s.sequence > consumed_of(asset) && s.last_update_time.as_ref().is_some_and(|t| t.0 >= since)
        })
    };
    let (holds, missing): (bool, Vec<String>) = if trigger.all.is_empty() {
        (trigger.any.iter().any(updated), trigger.any.clone())
    } else {
        let missing: Vec<String> = trigger.all.iter().filter(|a| !updated(a)).cloned().collect();
        (missing.is_empty(), missing)
    };
    if !holds {
        return Err(Hold::Waiting(missing));
    }
    if trigger.suspend {
        return Err(Hold::Suspended);
    }
    if input.max_active_runs.is_some_and(|max| input.unfinished >= max) {
        return Err(Hold::MaxActiveRuns);
    }
    let mut events = Vec::new();
    let mut consumed = Vec::new();
    for asset in unique(trigger.assets()) {
        let Some(status) = input.assets.get(asset) else {
            continue;
        };
        let fresh: Vec<&AssetEvent> = status
            .events
            .iter()
            .filter(|e| e.sequence > consumed_of(asset) && e.time.0 >= since)
            .collect();
        let keep = fresh.len().saturating_sub(MAX_RUN_EVENTS_PER_ASSET);
        events.extend(fresh[keep..].iter().map(|e| AssetEvent {
            asset: Some(asset.clone()),
            ..(*e).clone()
        }));
        consumed.push(AssetSequence {
            asset: asset.clone(),
            sequence: status.sequence.max(consumed_of(asset)),
        });
    }
    // Oldest first. Times have whole seconds: events of one second keep the order they were
    // gathered in (by asset as declared, then by sequence), never one asset's newer event
    // before its older one's neighbour from another asset.
    events.sort_by_key(|e| e.time.0);
    // The data the events are about: their logical dates when any has one, else their times.
    let mut dates: Vec<Timestamp> = events
        .iter()
        .filter_map(|e| e.logical_date.as_ref().map(|t| t.0))
        .collect();
    if dates.is_empty() {
        dates = events.iter().map(|e| e.time.0).collect();
    }
    let interval_start = dates.iter().copied().min().unwrap_or(input.now);
    let interval_end = dates.iter().copied().max().unwrap_or(input.now);
    Ok(AssetRun {
        events,
        consumed,
        interval_start,
        interval_end,
    })
}

/// The first instant whose events count: from the Pipeline's creation on, and within the
/// window.
fn since(created: Timestamp, window: Option<Duration>, now: Timestamp) -> Timestamp {
    let window_start = window
        .and_then(|w| jiff::SignedDuration::try_from(w).ok())
        .and_then(|w| now.checked_sub(w).ok());
    match window_start {
        Some(start) if start > created => start,
        _ => created,
    }
}

fn unique<'a>(names: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut seen = Vec::new();
    for name in names {
        if !seen.contains(&name) {
            seen.push(name);
        }
    }
    seen
}

/// The name of the asset-triggered run made after `consumed` (the pipeline's consumed
/// sequence numbers before it): `<pipeline>-asset-<hash>`, the hash taken over the
/// pipeline's uid and `consumed`, in a fixed order. The same until the consumed numbers are
/// recorded, different after.
pub fn run_name(pipeline: &str, uid: &str, consumed: &[AssetSequence]) -> String {
    let mut sorted = consumed.to_vec();
    sorted.sort();
    let mut key = format!("{uid};");
    for c in &sorted {
        key.push_str(&format!("{}={};", c.asset, c.sequence));
    }
    names::child_name(pipeline, &format!("asset-{}", names::short_hash(&key)))
}

/// `consumed` with `run`'s numbers taken in: what the pipeline records once the run exists.
/// Numbers never go back.
pub fn advance(consumed: &[AssetSequence], run: &[AssetSequence]) -> Vec<AssetSequence> {
    let mut out: BTreeMap<&str, u64> = consumed.iter().map(|c| (c.asset.as_str(), c.sequence)).collect();
    for c in run {
        let entry = out.entry(c.asset.as_str()).or_insert(0);
        *entry = (*entry).max(c.sequence);
    }
    out.into_iter()
        .map(|(asset, sequence)| AssetSequence {
            asset: asset.to_string(),
            sequence,
        })
        .collect()
}

/// Checks a pipeline's `spec.assets`; every problem with its field path.
pub fn check_trigger(trigger: &AssetTrigger) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    match (trigger.all.is_empty(), trigger.any.is_empty()) {
        (true, true) => errors.push(("assets".into(), "name the assets in `all` or `any`".into())),
        (false, false) => errors.push(("assets".into(), "set either `all` or `any`, not both".into())),
        _ => {}
    }
    for (field, list) in [("all", &trigger.all), ("any", &trigger.any)] {
        for (i, name) in list.iter().enumerate() {
            if let Err(e) = check_name(name) {
                errors.push((format!("assets.{field}[{i}]"), e));
            }
        }
    }
    if let Some(within) = &trigger.within
        && let Err(e) = super::duration::parse(within)
    {
        errors.push(("assets.within".into(), e));
    }
    errors
}

#[cfg(test)]
mod tests;
