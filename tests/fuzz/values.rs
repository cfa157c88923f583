//! The single values a manifest or a task hands Weir: templates, cron expressions in time
//! zones (and the schedule arithmetic on them), durations, task outputs, params, the dates
//! of `weir backfill`, and pipeline specs as the operator gets them from the API server.

use crate::inputs;
use crate::{ceilings, fail, fuzz, meter};
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use weir::engine::schedule::{self, CronSchedule, ParsedSchedule, TickInput};
use weir::engine::template::{self, Reference, Template, Values};
use weir::engine::{duration, outputs};

/// Runs `f` on an input of `len` bytes within the ceiling for single values.
fn bounded<R>(len: usize, f: impl FnOnce() -> Result<R, TestCaseError>) -> Result<R, TestCaseError> {
    let (result, usage) = meter::measure(f);
    ceilings::VALUE.check(len, usage).map_err(fail)?;
    result
}

/// Values a template is rendered with: each reference's text, a list, a long value or none.
struct Echo {
    long: usize,
}

impl Values for Echo {
    fn get(&self, r: &Reference) -> Result<Value, String> {
        let name = r.to_string();
        Ok(match name.len() % 5 {
            0 => Value::String(name),
            1 => serde_json::json!(["a", 1, {"k": "v"}]),
            2 => Value::String("v".repeat(self.long)),
            3 => Value::Null,
            _ => return Err(format!("no value for {name}")),
        })
    }
}

fn check_template(text: &str, long: usize) -> Result<(), TestCaseError> {
    bounded(text.len() + long, || {
        let parsed = Template::parse(text);
        match &parsed {
            Ok(t) => {
                let refs = t.references().count();
                prop_assert!(
                    refs <= text.matches("{{").count(),
                    "more references than openings"
                );
                if !text.contains("{{") {
                    let plain = t.render(&Echo { long });
                    prop_assert_eq!(plain.as_deref(), Ok(text), "plain text renders as itself");
                }
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
        let rendered = template::render(text, &Echo { long });
        if let (Ok(out), Ok(t)) = (&rendered, &parsed) {
            prop_assert!(
                out.len() <= text.len() + t.references().count() * long.max(64),
                "rendered text is longer than its parts"
            );
            prop_assert!(out.len() <= template::MAX_RENDERED_BYTES);
        }
        let _ = template::render_value(text, &Echo { long });
        Ok(())
    })
}

#[test]
fn fuzz_templates() {
    let long = prop_oneof![Just(0usize), 1usize..100, Just(300_000)];
    fuzz("templates", 10_000, (inputs::template(), long), |(text, long)| {
        check_template(&text, long)
    });
}

fn check_duration(text: &str) -> Result<(), TestCaseError> {
    bounded(text.len(), || {
        match duration::parse(text) {
            Ok(d) => {
                prop_assert!(d.as_millis() <= 1_000_000_000_000_000, "{text:?} gives {d:?}");
                let shown = duration::format(d);
                prop_assert!(!shown.is_empty());
            }
            Err(e) => prop_assert!(e.contains("duration"), "{e}"),
        }
        Ok(())
    })
}

#[test]
fn fuzz_durations() {
    fuzz("durations", 10_000, inputs::duration(), |text| {
        check_duration(&text)
    });
}

/// Instants spread over everything a `Timestamp` holds, the ends included.
fn instant() -> impl Strategy<Value = Timestamp> {
    let min = Timestamp::MIN.as_second();
    let max = Timestamp::MAX.as_second();
    prop_oneof![
        4 => (0i64..4_102_444_800).prop_map(|s| Timestamp::from_second(s).unwrap()),
        1 => (min..=max).prop_map(|s| Timestamp::from_second(s).unwrap()),
        1 => prop_oneof![Just(Timestamp::MIN), Just(Timestamp::MAX), Just(Timestamp::UNIX_EPOCH)],
        1 => (0i64..4_102_444_800, 1i32..1_000_000_000).prop_map(|(s, n)| Timestamp::new(s, n).unwrap()),
    ]
}

fn check_cron(expression: &str, tz: Option<&str>, probes: &[Timestamp]) -> Result<(), TestCaseError> {
    bounded(expression.len() + tz.map_or(0, str::len), || {
        let cron = match CronSchedule::parse(expression, tz) {
            Ok(c) => c,
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for (field, message) in &errors {
                    prop_assert!(field == "cron" || field == "timezone", "{field}");
                    prop_assert!(!message.is_empty() && message.len() <= 1_024, "{message}");
                }
                return Ok(());
            }
        };
        for &t in probes {
            if let Some(next) = cron.next_after(t) {
                prop_assert!(next > t, "next_after({t}) = {next}");
            }
            if let Some(at) = cron.at_or_after(t) {
                prop_assert!(at >= t, "at_or_after({t}) = {at}");
            }
            if let Some(prev) = cron.at_or_before(t) {
                prop_assert!(prev <= t, "at_or_before({t}) = {prev}");
            }
            if let Some(before) = cron.before(t) {
                prop_assert!(before < t, "before({t}) = {before}");
            }
            let until = t
                .saturating_add(jiff::SignedDuration::from_hours(24 * 7))
                .unwrap_or(t);
            prop_assert!(cron.count_between(t, until) <= schedule::MAX_INTERVALS);
            if let Ok(intervals) = cron.intervals(t, until, 50) {
                for w in intervals.windows(2) {
                    prop_assert!(w[0].end == w[1].start && w[0].start < w[0].end);
                }
            }
        }
        Ok(())
    })
}

#[test]
fn fuzz_cron_and_time_zones() {
    let strategy = (
        inputs::cron(),
        proptest::option::weighted(0.7, inputs::timezone()),
        proptest::collection::vec(instant(), 1..4),
    );
    fuzz("cron", 3_000, strategy, |(expression, tz, probes)| {
        check_cron(&expression, tz.as_deref(), &probes)
    });
}

/// A `spec.schedule` as written, planned at made-up moments: whatever it says, the plan is
/// made, and the runs it creates are within the schedule.
#[test]
fn fuzz_schedule_plans() {
    let spec = (
        prop_oneof![
            3 => inputs::cron(),
            2 => proptest::sample::select(&["*/5 * * * *", "0 2 * * *", "* * * * * *", "0 0 29 2 *", "30 2 * * *"][..]).prop_map(str::to_string),
        ],
        proptest::option::weighted(0.5, inputs::timezone()),
        proptest::option::of(instant()),
        proptest::option::of(instant()),
        any::<bool>(),
        0u8..3,
        proptest::option::of(inputs::duration()),
        any::<bool>(),
    );
    let tick = (
        instant(),
        proptest::option::of(instant()),
        0u32..20,
        proptest::option::of(0u32..20),
        instant(),
    );
    fuzz("schedule-plans", 1_000, (spec, tick), |(spec, tick)| {
        let (cron, timezone, start, end, catchup, policy, deadline, suspend) = spec;
        let time = |t: Option<Timestamp>| t.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
        let schedule = weir::api::Schedule {
            cron,
            timezone,
            start_time: time(start),
            end_time: time(end),
            catchup,
            concurrency_policy: Some(match policy {
                0 => weir::api::ConcurrencyPolicy::Allow,
                1 => weir::api::ConcurrencyPolicy::Forbid,
                _ => weir::api::ConcurrencyPolicy::Replace,
            }),
            starting_deadline: deadline,
            suspend,
        };
        let len = schedule.cron.len();
        bounded(len, || {
            let Ok(parsed) = ParsedSchedule::parse(&schedule) else {
                return Ok(());
            };
            let (created, last, unfinished, max_active, now) = tick;
            let input = TickInput {
                created,
                last_schedule: last,
                unfinished,
                max_active_runs: max_active,
                now,
            };
            let plan = schedule::plan_ticks(&parsed, &input);
            let room = max_active.unwrap_or(schedule::DEFAULT_CATCHUP_WINDOW).max(1) as usize;
            prop_assert!(
                plan.create.len() <= room.max(1),
                "{} runs at once",
                plan.create.len()
            );
            for i in &plan.create {
                prop_assert!(i.start < i.end && i.end <= now, "{i:?} at {now}");
                let _ = schedule::run_name("p", i.logical_date());
            }
            for (_, n) in &plan.skipped {
                prop_assert!(*n <= schedule::MAX_INTERVALS);
            }
            Ok(())
        })
    });
}

fn check_outputs(text: &str, declared: &[String]) -> Result<(), TestCaseError> {
    bounded(text.len(), || {
        match outputs::parse(text, declared) {
            Ok(map) => {
                for d in declared {
                    prop_assert!(map.contains_key(d), "declared {d:?} is missing from {map:?}");
                }
            }
            Err(e) => prop_assert!(!e.is_empty() && e.len() <= 1_024 + text.len().min(512), "{e}"),
        }
        Ok(())
    })
}

const OUTPUT_PARTS: &[&str] = &[
    "{", "}", "[", "]", "\"", "\"k\"", ":", ",", "1", "1e999", "-0", "null", "true", "\\u0000", "\\ud800",
    "k", "=", "v", " ", "\n", "\r\n", "#", "rows=42", "=x", "k==v", "\u{feff}", "é", "\0",
];

#[test]
fn fuzz_outputs() {
    let text = prop_oneof![
        6 => inputs::joined(OUTPUT_PARTS, 0..20),
        // Around the termination message's limit, where text is cut.
        2 => (outputs::MAX_BYTES - 8..outputs::MAX_BYTES + 8, any::<bool>(), inputs::joined(OUTPUT_PARTS, 0..3)).prop_map(|(n, json, tail)| {
            let mut t = if json { format!("{{\"v\": \"{}", "x".repeat(n)) } else { format!("v={}", "x".repeat(n)) };
            t.truncate(n);
            t.push_str(&tail);
            t
        }),
        1 => "\\PC{0,64}",
        1 => (1usize..200).prop_map(|d| format!("{}1{}", "{\"a\":".repeat(d), "}".repeat(d))),
    ];
    let declared = proptest::collection::vec(
        proptest::sample::select(&["k", "v", "rows", ""][..]).prop_map(str::to_string),
        0..3,
    );
    fuzz("outputs", 10_000, (text, declared), |(text, declared)| {
        check_outputs(&text, &declared)
    });
}

#[test]
fn fuzz_params_and_dates() {
    let strategy = (
        inputs::json_value(),
        any::<bool>(),
        prop_oneof![inputs::timestamp_text(), inputs::junk(), "[0-9T:+Z -]{0,25}"],
        proptest::option::of(inputs::timezone()),
    );
    fuzz("params-and-dates", 6_000, strategy, |(value, list, date, tz)| {
        bounded(value.to_string().len() + date.len(), || {
            let type_ = if list {
                weir::api::ParamType::List
            } else {
                weir::api::ParamType::String
            };
            if let Err(e) = weir::engine::params::coerce(type_, value) {
                prop_assert!(e.contains("expected") || e.contains("list items"), "{e}");
            }
            let tz = tz
                .and_then(|name| jiff::tz::TimeZone::get(&name).ok())
                .unwrap_or(jiff::tz::TimeZone::UTC);
            let _ = schedule::parse_instant(&date, &tz);
            if let (Ok(start), Ok(end)) = (
                schedule::parse_instant(&date, &tz),
                schedule::parse_range_end(&date, &tz),
            ) {
                prop_assert!(start <= end, "{date}: {start} after {end}");
            }
            Ok(())
        })
    });
}

/// Pipeline specs as the operator receives them (any that deserialize, past the schema):
/// validation reports every problem without a panic, and what it accepts can be planned.
#[test]
fn fuzz_validate() {
    fuzz("validate", 2_000, inputs::pipeline_spec(), |value| {
        let Ok(spec) = serde_json::from_value::<weir::api::PipelineSpec>(value) else {
            return Ok(());
        };
        bounded(4_096, || {
            match weir::engine::validate(&spec) {
                Ok(p) => {
                    prop_assert!(!p.is_empty());
                    let _ = weir::graph::layers(&p);
                }
                Err(errors) => {
                    prop_assert!(!errors.0.is_empty());
                    for e in &errors.0 {
                        prop_assert!(!e.message.is_empty() && !e.field.is_empty(), "{e}");
                        prop_assert!(e.message.len() <= 2_048, "{e}");
                    }
                }
            }
            Ok(())
        })
    });
}
