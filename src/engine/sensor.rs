//! Sensors, the pure part: what a wait task's spec becomes when its TaskRun is made
//! (templates rendered, moments of the run worked out: [`resolve`]), and what one look at
//! what it waits for finds ([`Look`]), from objects the controller read. No client, no clock.

use super::duration;
use super::quote::q;
use super::template::{self, Values};
use crate::api::wait::{ObjectWait, RunMoment, WaitSpec};
use crate::api::{AssetEvent, RunPhase, TaskPhase};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;
use std::time::Duration;

/// What one look at a sensor's condition found.
#[derive(Clone, Debug, PartialEq)]
pub enum Look {
    /// Not yet: what it waits for, and for a time, how long until it holds.
    Wait { message: String, left: Option<Duration> },
    /// It holds; the message says how.
    Holds(String),
    /// It can never hold (what it waits for failed): the attempt fails.
    Fails(String),
}

fn wait(message: String) -> Look {
    Look::Wait { message, left: None }
}

/// `2h`, `-30m`: a duration that may count back.
pub fn parse_offset(text: &str) -> Result<SignedDuration, String> {
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let d = SignedDuration::try_from(duration::parse(magnitude)?)
        .map_err(|_| format!("{} is too long an offset", q(text)))?;
    Ok(if negative { -d } else { d })
}

/// The moments of a run that sensors count from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunMoments {
    pub logical_date: Option<Timestamp>,
    pub data_interval_start: Option<Timestamp>,
    pub data_interval_end: Option<Timestamp>,
    pub started: Option<Timestamp>,
}

/// A moment of the run; a run without a logical date or data interval (started by hand)
/// counts from its start.
pub fn moment(run: &RunMoments, which: RunMoment) -> Option<Timestamp> {
    let given = match which {
        RunMoment::LogicalDate => run.logical_date,
        RunMoment::DataIntervalStart => run.data_interval_start,
        RunMoment::DataIntervalEnd => run.data_interval_end,
        RunMoment::RunStart => None,
    };
    given.or(run.started)
}

fn shifted(at: Timestamp, offset: Option<&str>, field: &str) -> Result<Timestamp, String> {
    let Some(text) = offset else { return Ok(at) };
    let d = parse_offset(text).map_err(|e| format!("{field}: {e}"))?;
    at.checked_add(d).map_err(|e| format!("{field}: {e}"))
}

/// The wait spec of a TaskRun: templates rendered, the moments it counts from worked out.
/// An error names the field.
pub fn resolve(wait: &mut WaitSpec, run: &RunMoments, values: &dyn Values) -> Result<(), String> {
    let render =
        |field: &str, text: &str| template::render(text, values).map_err(|e| format!("wait.{field}: {e}"));
    let no_moment = |field: &str, which: RunMoment| {
        format!(
            "wait.{field}: the run has no {} and no start time to count from",
            which.as_str()
        )
    };
    if let Some(time) = &mut wait.time {
        let from = time.from.unwrap_or(RunMoment::DataIntervalEnd);
        let base = moment(run, from).ok_or_else(|| no_moment("time.from", from))?;
        time.at = Some(Time(shifted(base, time.offset.as_deref(), "wait.time.offset")?));
    }
    if let Some(other) = &mut wait.pipeline_run {
        other.pipeline = render("pipelineRun.pipeline", &other.pipeline)?;
        if let Some(task) = &other.task {
            other.task = Some(render("pipelineRun.task", task)?);
        }
        let date = run.logical_date.ok_or_else(|| {
            "wait.pipelineRun: the run has no logical date (it was started by hand), so there is no run of the same date to wait for: set the run's spec.logicalDate".to_string()
        })?;
        let field = "wait.pipelineRun.logicalDateOffset";
        other.logical_date = Some(Time(shifted(date, other.logical_date_offset.as_deref(), field)?));
    }
    if let Some(object) = &mut wait.object {
        object.name = render("object.name", &object.name)?;
        if let Some(field) = &mut object.field {
            field.value = render("object.field.value", &field.value)?;
        }
    }
    if let Some(asset) = &mut wait.asset {
        asset.name = render("asset.name", &asset.name)?;
        let since = asset.since.unwrap_or(RunMoment::LogicalDate);
        let base = moment(run, since).ok_or_else(|| no_moment("asset.since", since))?;
        asset.after = Some(Time(base));
    }
    Ok(())
}

/// `wait.time`: holds from `at` on.
pub fn time_look(at: Timestamp, now: Timestamp) -> Look {
    match Duration::try_from(at.duration_since(now)) {
        Ok(left) if !left.is_zero() => Look::Wait {
            message: format!("waiting until {at} ({} left)", duration::format(left)),
            left: Some(left),
        },
        _ => Look::Holds(format!("it is past {at}")),
    }
}

/// What the controller read of one run of the other pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct OtherRun {
    pub name: String,
    pub created: Timestamp,
    pub logical_date: Option<Timestamp>,
    pub phase: Option<RunPhase>,
    /// Why it failed, if it did.
    pub message: Option<String>,
    /// The phase of the task waited for (absent from the run's status while pending).
    pub task: Option<TaskPhase>,
}

/// `wait.pipelineRun`: the newest run of `pipeline` for `date` decides (a run made again
/// for a date replaces the one before). Holds once it (or its `task`) succeeded; fails once
/// it (or its task) can no longer succeed.
pub fn run_look(pipeline: &str, task: Option<&str>, date: Timestamp, runs: &[OtherRun]) -> Look {
    let what = match task {
        Some(t) => format!("task {} of pipeline {}'s run for {date}", q(t), q(pipeline)),
        None => format!("pipeline {}'s run for {date}", q(pipeline)),
    };
    let Some(run) = runs
        .iter()
        .filter(|r| r.logical_date == Some(date))
        .max_by_key(|r| (r.created, r.name.clone()))
    else {
        return wait(format!("waiting for {what} (no such run yet)"));
    };
    let name = &run.name;
    let why = run
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    match (task, run.phase) {
        (None, Some(RunPhase::Succeeded)) => Look::Holds(format!("{what} ({name}) succeeded")),
        (None, Some(phase @ (RunPhase::Failed | RunPhase::Cancelled))) => {
            Look::Fails(format!("{what} ({name}) ended {phase:?}{why}"))
        }
        (None, _) => wait(format!("waiting for {what} ({name}) to succeed")),
        (Some(_), _) => match run.task {
            Some(TaskPhase::Succeeded) => Look::Holds(format!("{what} ({name}) succeeded")),
            Some(phase) if phase.is_terminal() => Look::Fails(format!("{what} ({name}) ended {phase:?}")),
            _ if matches!(run.phase, Some(RunPhase::Failed | RunPhase::Cancelled)) => {
                Look::Fails(format!("{what}: the run ({name}) ended without it{why}"))
            }
            _ => wait(format!("waiting for {what} ({name}) to succeed")),
        },
    }
}

/// `wait.object`: `object` is what the API server returned (none: not found).
pub fn object_look(spec: &ObjectWait, object: Option<&Value>) -> Look {
    let who = format!("{} {}", spec.kind, q(&spec.name));
    let Some(object) = object else {
        return wait(format!("waiting for {who} to exist"));
    };
    if let Some(want) = &spec.condition {
        let status = want.status.as_deref().unwrap_or("True");
        let found = object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(want.type_.as_str()));
        let now = found.and_then(|c| c.get("status")).and_then(Value::as_str);
        if now != Some(status) {
            let now = now.unwrap_or("not set");
            let type_ = &want.type_;
            return wait(format!("waiting for {who} to be {type_}={status} (now {now})"));
        }
    }
    if let Some(field) = &spec.field {
        let now = field_value(object, &field.path);
        if now.as_deref() != Some(field.value.as_str()) {
            let now = now.map_or("not set".to_string(), |v| q(&v).to_string());
            return wait(format!(
                "waiting for {who}'s {} to be {} (now {now})",
                field.path,
                q(&field.value)
            ));
        }
    }
    Look::Holds(match (&spec.condition, &spec.field) {
        (None, None) => format!("{who} exists"),
        _ => format!("{who} is as waited for"),
    })
}

/// The value at a dotted path (`status.loadBalancer.ingress.0.ip`) as text: strings as
/// they are, anything else as JSON.
pub fn field_value(object: &Value, path: &str) -> Option<String> {
    let mut at = object;
    for key in path.split('.') {
        at = match at {
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            other => other.get(key)?,
        };
    }
    match at {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// `wait.asset`: holds on an event recorded after `after` (`events` oldest first; none when
/// the asset does not exist yet).
pub fn asset_look(name: &str, after: Timestamp, events: &[AssetEvent]) -> Look {
    match events.iter().rev().find(|e| e.time.0 > after) {
        Some(e) => Look::Holds(format!(
            "asset {} updated at {} (event {})",
            q(name),
            e.time.0,
            e.sequence
        )),
        None => {
            let last = events.last().map_or("never updated".to_string(), |e| {
                format!("last update {}", e.time.0)
            });
            wait(format!(
                "waiting for asset {} to be updated after {after} ({last})",
                q(name)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wait::{AssetWait, FieldValue, ObjectCondition, PipelineRunWait, TimeWait};
    use serde_json::json;
    use std::collections::HashMap;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    struct Params(HashMap<&'static str, &'static str>);

    impl Values for Params {
        fn get(&self, r: &template::Reference) -> Result<Value, String> {
            self.0
                .get(r.to_string().as_str())
                .map(|v| Value::String(v.to_string()))
                .ok_or_else(|| format!("no value for {r}"))
        }
    }

    fn scheduled() -> RunMoments {
        RunMoments {
            logical_date: Some(ts("2026-12-01T00:00:00Z")),
            data_interval_start: Some(ts("2026-12-01T00:00:00Z")),
            data_interval_end: Some(ts("2026-12-02T00:00:00Z")),
            started: Some(ts("2026-12-02T00:05:00Z")),
        }
    }

    #[test]
    fn offsets_may_count_back() {
        assert_eq!(parse_offset("2h").unwrap(), SignedDuration::from_hours(2));
        assert_eq!(parse_offset("-30m").unwrap(), SignedDuration::from_mins(-30));
        assert!(parse_offset("--1h").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn resolving_works_out_moments_and_renders_templates() {
        let mut spec = WaitSpec {
            time: Some(TimeWait {
                offset: Some("2h".into()),
                ..Default::default()
            }),
            pipeline_run: Some(PipelineRunWait {
                pipeline: "{{ params.upstream }}".into(),
                logical_date_offset: Some("-24h".into()),
                ..Default::default()
            }),
            asset: Some(AssetWait {
                name: "sales/{{ params.upstream }}".into(),
                since: Some(RunMoment::RunStart),
                ..Default::default()
            }),
            ..Default::default()
        };
        let values = Params(HashMap::from([("params.upstream", "load")]));
        resolve(&mut spec, &scheduled(), &values).unwrap();
        assert_eq!(spec.time.unwrap().at, Some(Time(ts("2026-12-02T02:00:00Z"))));
        let other = spec.pipeline_run.unwrap();
        assert_eq!(other.pipeline, "load");
        assert_eq!(other.logical_date, Some(Time(ts("2026-11-30T00:00:00Z"))));
        let asset = spec.asset.unwrap();
        assert_eq!(asset.name, "sales/load");
        assert_eq!(asset.after, Some(Time(ts("2026-12-02T00:05:00Z"))));
    }

    #[test]
    fn a_run_started_by_hand_counts_from_its_start_but_has_no_date_to_match() {
        let by_hand = RunMoments {
            started: Some(ts("2026-12-03T08:00:00Z")),
            ..Default::default()
        };
        let mut spec = WaitSpec {
            time: Some(TimeWait::default()),
            ..Default::default()
        };
        resolve(&mut spec, &by_hand, &Params(HashMap::new())).unwrap();
        assert_eq!(spec.time.unwrap().at, Some(Time(ts("2026-12-03T08:00:00Z"))));
        let mut spec = WaitSpec {
            pipeline_run: Some(PipelineRunWait {
                pipeline: "load".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = resolve(&mut spec, &by_hand, &Params(HashMap::new())).unwrap_err();
        assert!(e.contains("has no logical date"), "{e}");
        let mut spec = WaitSpec {
            object: Some(ObjectWait {
                name: "{{ params.missing }}".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = resolve(&mut spec, &by_hand, &Params(HashMap::new())).unwrap_err();
        assert!(
            e.starts_with("wait.object.name: no value for params.missing"),
            "{e}"
        );
    }

    #[test]
    fn a_time_holds_from_its_moment() {
        let at = ts("2026-12-02T02:00:00Z");
        assert_eq!(
            time_look(at, ts("2026-12-02T01:00:00Z")),
            Look::Wait {
                message: "waiting until 2026-12-02T02:00:00Z (1h0m left)".into(),
                left: Some(Duration::from_secs(3600)),
            }
        );
        assert!(matches!(time_look(at, at), Look::Holds(_)));
    }

    fn other(name: &str, created: i64, phase: RunPhase, task: Option<TaskPhase>) -> OtherRun {
        OtherRun {
            name: name.into(),
            created: Timestamp::from_second(created).unwrap(),
            logical_date: Some(ts("2026-12-01T00:00:00Z")),
            phase: Some(phase),
            message: None,
            task,
        }
    }

    #[test]
    fn the_newest_run_of_the_date_decides() {
        let date = ts("2026-12-01T00:00:00Z");
        assert!(
            matches!(run_look("load", None, date, &[]), Look::Wait { message, .. } if message.contains("no such run yet"))
        );
        let mut earlier_date = other("load-0", 5, RunPhase::Succeeded, None);
        earlier_date.logical_date = Some(ts("2026-11-30T00:00:00Z"));
        let runs = [other("load-1", 1, RunPhase::Failed, None), earlier_date.clone()];
        assert_eq!(
            run_look("load", None, date, &runs),
            Look::Fails("pipeline \"load\"'s run for 2026-12-01T00:00:00Z (load-1) ended Failed".into())
        );
        let runs = [
            other("load-1", 1, RunPhase::Failed, None),
            other("load-2", 2, RunPhase::Succeeded, None),
        ];
        assert!(matches!(run_look("load", None, date, &runs), Look::Holds(_)));
        let runs = [other("load-2", 2, RunPhase::Running, None)];
        assert!(matches!(run_look("load", None, date, &runs), Look::Wait { .. }));
    }

    #[test]
    fn a_task_of_the_run_decides_on_its_own() {
        let date = ts("2026-12-01T00:00:00Z");
        let running = |task| [other("load-1", 1, RunPhase::Running, task)];
        assert!(matches!(
            run_look("load", Some("copy"), date, &running(None)),
            Look::Wait { .. }
        ));
        assert!(matches!(
            run_look("load", Some("copy"), date, &running(Some(TaskPhase::Succeeded))),
            Look::Holds(_)
        ));
        assert!(matches!(
            run_look("load", Some("copy"), date, &running(Some(TaskPhase::UpstreamFailed))),
            Look::Fails(m) if m.contains("ended UpstreamFailed")
        ));
        let failed = [other("load-1", 1, RunPhase::Failed, None)];
        assert!(matches!(
            run_look("load", Some("copy"), date, &failed),
            Look::Fails(m) if m.contains("ended without it")
        ));
    }

    fn deployment(condition: Option<ObjectCondition>, field: Option<FieldValue>) -> ObjectWait {
        ObjectWait {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "model".into(),
            condition,
            field,
        }
    }

    #[test]
    fn an_object_must_exist_then_have_its_condition_and_field() {
        let exists = deployment(None, None);
        assert_eq!(
            object_look(&exists, None),
            wait("waiting for Deployment \"model\" to exist".into())
        );
        let object =
            json!({"status": {"conditions": [{"type": "Available", "status": "False"}], "readyReplicas": 1}});
        assert!(matches!(object_look(&exists, Some(&object)), Look::Holds(_)));
        let available = deployment(
            Some(ObjectCondition {
                type_: "Available".into(),
                status: None,
            }),
            None,
        );
        assert_eq!(
            object_look(&available, Some(&object)),
            wait("waiting for Deployment \"model\" to be Available=True (now False)".into())
        );
        let two = deployment(
            None,
            Some(FieldValue {
                path: "status.readyReplicas".into(),
                value: "2".into(),
            }),
        );
        assert_eq!(
            object_look(&two, Some(&object)),
            wait("waiting for Deployment \"model\"'s status.readyReplicas to be \"2\" (now \"1\")".into())
        );
        let ready =
            json!({"status": {"conditions": [{"type": "Available", "status": "True"}], "readyReplicas": 2}});
        assert!(matches!(object_look(&available, Some(&ready)), Look::Holds(_)));
        assert!(matches!(object_look(&two, Some(&ready)), Look::Holds(_)));
    }

    #[test]
    fn field_paths_go_through_maps_and_lists() {
        let object = json!({"status": {"ingress": [{"ip": "10.0.0.9"}], "ok": true, "gone": null}});
        assert_eq!(
            field_value(&object, "status.ingress.0.ip").as_deref(),
            Some("10.0.0.9")
        );
        assert_eq!(field_value(&object, "status.ok").as_deref(), Some("true"));
        assert_eq!(field_value(&object, "status.gone"), None);
        assert_eq!(field_value(&object, "status.ingress.x"), None);
    }

    #[test]
    fn an_asset_holds_on_an_event_after_the_moment() {
        let after = ts("2026-12-01T00:00:00Z");
        let event = |seq, time: &str| AssetEvent {
            sequence: seq,
            time: Time(ts(time)),
            ..Default::default()
        };
        assert_eq!(
            asset_look("sales", after, &[]),
            wait(
                "waiting for asset \"sales\" to be updated after 2026-12-01T00:00:00Z (never updated)".into()
            )
        );
        let old = [event(1, "2026-11-30T12:00:00Z")];
        assert!(
            matches!(asset_look("sales", after, &old), Look::Wait { message, .. } if message.contains("last update 2026-11-30T12:00:00Z"))
        );
        let new = [event(1, "2026-11-30T12:00:00Z"), event(2, "2026-12-01T03:00:00Z")];
        assert_eq!(
            asset_look("sales", after, &new),
            Look::Holds("asset \"sales\" updated at 2026-12-01T03:00:00Z (event 2)".into())
        );
    }
}
