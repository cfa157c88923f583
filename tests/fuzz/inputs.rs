//! Inputs that know the grammar: names, durations, cron expressions, time zones, templates
//! and whole manifests built from their parts (mostly plausible, often a little wrong), and
//! mutations of real manifests (the examples and the invalid fixtures) that a YAML author,
//! an editor or an attacker could make.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use std::path::Path;

/// Text made of `pieces`, each chosen from `parts`, so that the interesting tokens meet.
pub fn joined(parts: &'static [&'static str], pieces: std::ops::Range<usize>) -> BoxedStrategy<String> {
    proptest::collection::vec(select(parts), pieces)
        .prop_map(|v| v.concat())
        .boxed()
}

/// One of `valid`, or now and then one of `odd`.
fn mostly(valid: &'static [&'static str], odd: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        16 => select(valid).prop_map(Value::from),
        1 => select(odd).prop_map(Value::from),
    ]
    .boxed()
}

/// Any short text, control characters and non-ASCII included.
pub fn junk() -> BoxedStrategy<String> {
    prop_oneof![
        "\\PC{0,12}",
        ".{0,12}",
        proptest::collection::vec(any::<char>(), 0..8).prop_map(|c| c.into_iter().collect()),
    ]
    .boxed()
}

const NAMES: &[&str] = &["a", "b", "c", "extract", "load", "transform", "x-1", "f0"];

const ODD_NAMES: &[&str] = &[
    "",
    "Extract",
    "a_b",
    "-a",
    "a-",
    "a.b",
    "é",
    "0",
    "this-name-is-sixty-four-characters-long-which-is-one-too-many-xx",
    "null",
    "true",
];

pub fn name() -> BoxedStrategy<String> {
    prop_oneof![
        24 => select(NAMES).prop_map(str::to_string),
        6 => "[a-z][a-z0-9]{0,8}",
        1 => select(ODD_NAMES).prop_map(str::to_string),
        1 => junk(),
    ]
    .boxed()
}

const DURATION_PARTS: &[&str] = &[
    "0",
    "1",
    "5",
    "30",
    "90",
    "1.5",
    ".5",
    "5.",
    "1..5",
    "99999999999999999999",
    "1e3",
    "-",
    "+",
    "ms",
    "s",
    "m",
    "h",
    "d",
    "us",
    "µs",
    "H",
    " ",
    "",
    "inf",
    "NaN",
];

pub fn duration() -> BoxedStrategy<String> {
    prop_oneof![
        12 => (1u32..100_000, select(&["ms", "s", "m", "h"][..])).prop_map(|(n, u)| format!("{n}{u}")),
        4 => joined(DURATION_PARTS, 0..7),
        1 => "[0-9.]{1,400}[smh]{1,2}",
        1 => junk(),
    ]
    .boxed()
}

const CRON_FIELDS: &[&str] = &[
    "*",
    "?",
    "0",
    "1",
    "5",
    "7",
    "12",
    "23",
    "29",
    "30",
    "31",
    "59",
    "60",
    "61",
    "-1",
    "99999999999",
    "4294967296",
    "1-5",
    "5-1",
    "0-59",
    "*/5",
    "*/0",
    "*/100",
    "1-30/7",
    "0/15",
    "1,2,3",
    "1,,2",
    "MON",
    "mon",
    "SUN",
    "MON-FRI",
    "FRI-MON",
    "JAN",
    "DEC",
    "FEB",
    "JAN-DEC/2",
    "L",
    "5L",
    "LW",
    "15W",
    "W",
    "L-3",
    "MON#2",
    "5#6",
    "1#1",
    "#",
    "/",
    "-",
    ",",
    "",
    "@",
    "x",
];

const CRON_MACROS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "@reboot",
    "@every 5m",
    "@",
];

pub fn cron() -> BoxedStrategy<String> {
    let field = prop_oneof![
        8 => select(CRON_FIELDS).prop_map(str::to_string),
        2 => (0u32..70, 0u32..70).prop_map(|(a, b)| format!("{a}-{b}")),
        1 => "[0-9*/,LW#?A-Z-]{1,6}",
    ];
    let separator = select(&[" ", " ", " ", "  ", "\t", ""][..]);
    prop_oneof![
        6 => select(&["*/5 * * * *", "0 2 * * *", "0 0 * * MON-FRI", "30 6 1 * *", "0 */2 * * *", "15 3 * * 0", "0 0 0 * * *"][..]).prop_map(str::to_string),
        10 => proptest::collection::vec((field, separator), 3..8).prop_map(|fields| {
            let mut out = String::new();
            for (f, sep) in fields {
                if !out.is_empty() {
                    out.push_str(sep);
                }
                out.push_str(&f);
            }
            out
        }),
        2 => select(CRON_MACROS).prop_map(str::to_string),
        1 => junk(),
    ]
    .boxed()
}

const TIMEZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "America/Sao_Paulo",
    "Pacific/Apia",
    "Etc/GMT+12",
    "Etc/GMT-14",
    "",
    "utc",
    "EST5EDT",
    "Europe/../../etc/passwd",
    "/etc/localtime",
    "UTC\0",
    "Europe/Berlin ",
    "posix/Europe/Berlin",
    "right/UTC",
    "Factory",
    "+01:00",
    "<+01>-1",
    "Europe/",
    "Europe//Berlin",
];

pub fn timezone() -> BoxedStrategy<String> {
    prop_oneof![
        8 => select(TIMEZONES).prop_map(str::to_string),
        1 => "[A-Za-z_/+-]{0,20}",
        1 => junk(),
    ]
    .boxed()
}

const TEMPLATE_PARTS: &[&str] = &[
    "{{",
    "}}",
    "{",
    "}",
    " ",
    "params.",
    "run.",
    "tasks.",
    ".outputs.",
    "item",
    "item.",
    ".",
    "p",
    "a",
    "o",
    "k",
    "name",
    "logicalDate",
    "x-y",
    "_",
    "{{ params.p }}",
    "{{ run.name }}",
    "{{ run.logicalDate }}",
    "{{ tasks.a.outputs.o }}",
    "{{ item }}",
    "{{ item.k }}",
    "{{}}",
    "{{{",
    "}}}",
    "é",
    "\n",
    "\0",
    "$",
    "\"",
];

pub fn template() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(&["x", "--day={{ run.logicalDate }}", "{{ params.p }}", "{{ tasks.a.outputs.o }}", "{{ item }}", "{{ item.k }}", "s3://{{ params.q }}/{{ run.name }}", "{{ tasks.b.outputs.rows }}"][..]).prop_map(str::to_string),
        8 => joined(TEMPLATE_PARTS, 0..10),
        1 => junk(),
    ]
    .boxed()
}

pub fn timestamp_text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (1970i32..2100, 1u8..13, 1u8..29, 0u8..24).prop_map(|(y, mo, d, h)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:00:00Z")),
        1 => select(&[
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2024-02-30T00:00:00Z",
            "2024-03-31T02:30:00+01:00",
            "2024-03-31",
            "yesterday",
            "",
        ][..]).prop_map(str::to_string),
    ]
    .boxed()
}

/// Any JSON value, small.
pub fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        name().prop_map(Value::String),
        template().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(name(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Sometimes leaves a field out, sometimes puts a value of the wrong type in its place.
fn field(value: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        20 => Just(None),
        40 => value.prop_map(Some),
        1 => json_value().prop_map(Some),
    ]
    .boxed()
}

fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect(),
    )
}

fn strings(element: BoxedStrategy<String>, len: std::ops::Range<usize>) -> BoxedStrategy<Value> {
    proptest::collection::vec(element, len)
        .prop_map(|v| v.into_iter().map(Value::String).collect())
        .boxed()
}

fn text(s: BoxedStrategy<String>) -> BoxedStrategy<Value> {
    s.prop_map(Value::String).boxed()
}

fn retries() -> BoxedStrategy<Value> {
    (
        prop_oneof![20 => 0u32..5, 1 => 99u32..102, 1 => Just(u32::MAX)].prop_map(|n| Some(Value::from(n))),
        field(text(duration())),
        field(prop_oneof![8 => Just(1.0), 8 => Just(2.0), 1 => Just(0.5), 1 => Just(100.5), 1 => any::<f64>()].prop_map(Value::from)),
        field(text(duration())),
        field(
            (
                proptest::collection::vec(-2i32..300, 0..3),
                proptest::collection::vec(-2i32..300, 0..3),
                proptest::collection::vec(mostly(&["Error", "OOMKilled", "Evicted"], &["Oops"]), 0..2),
            )
                .prop_map(|(codes, except, reasons)| json!({"exitCodes": codes, "exceptExitCodes": except, "reasons": reasons})),
        ),
    )
        .prop_map(|(limit, delay, factor, max, on)| {
            object(vec![
                ("limit", limit),
                ("delay", delay),
                ("backoffFactor", factor),
                ("maxDelay", max),
                ("retryOn", on),
            ])
        })
        .boxed()
}

fn env() -> BoxedStrategy<Value> {
    proptest::collection::vec(
        (
            mostly(&["A", "B", "PATH", "C", "D"], &["", "a b"]),
            field(text(template())),
        ),
        0..3,
    )
    .prop_map(|vars| {
        vars.into_iter()
            .map(|(n, v)| object(vec![("name", Some(n)), ("value", v)]))
            .collect()
    })
    .boxed()
}

fn for_each() -> BoxedStrategy<Value> {
    let list = prop_oneof![
        strings(name(), 0..4),
        text(template()),
        proptest::collection::vec(json_value(), 0..3).prop_map(Value::Array),
    ];
    (
        field(list.clone()),
        field(
            proptest::collection::btree_map(select(&["k", "r", "x"][..]), list, 0..3).prop_map(|m| json!(m)),
        ),
        field(
            prop_oneof![8 => 1u32..100, 1 => 0u32..1, 1 => Just(10_000), 1 => Just(10_001)]
                .prop_map(Value::from),
        ),
    )
        .prop_map(|(items, matrix, max)| {
            object(vec![("items", items), ("matrix", matrix), ("maxInstances", max)])
        })
        .boxed()
}

fn when() -> BoxedStrategy<Value> {
    proptest::collection::vec(
        (
            text(template()),
            mostly(&["Equals", "NotEquals", "In", "NotIn", "In"], &["equals", "Is"]).prop_map(Some),
            strings(template(), 1..3),
        ),
        0..2,
    )
    .prop_map(|conds| {
        conds
            .into_iter()
            .map(|(input, op, values)| {
                object(vec![
                    ("input", Some(input)),
                    ("operator", op),
                    ("values", Some(values)),
                ])
            })
            .collect()
    })
    .boxed()
}

fn task(names: Vec<String>) -> BoxedStrategy<Value> {
    let dep = if names.is_empty() {
        name()
    } else {
        prop_oneof![4 => select(names), 1 => name()].boxed()
    };
    let trigger = mostly(
        &[
            "AllSucceeded",
            "AllDone",
            "AllFailed",
            "OneSucceeded",
            "OneFailed",
            "NoneFailed",
        ],
        &["AllSucceded"],
    );
    (
        (
            field(mostly(
                &["busybox", "busybox:1.36", "python:3.12"],
                &["", " ", "a b", "é"],
            )),
            field(strings(template(), 0..3)),
            field(strings(template(), 0..3)),
            field(env()),
            field(strings(dep.boxed(), 0..3)),
            field(trigger),
        ),
        (
            field(retries()),
            field(text(duration())),
            field(when()),
            field(
                proptest::collection::vec(mostly(&["o", "rows", "o"], &[""]), 0..3)
                    .prop_map(|names| Value::Array(names.into_iter().map(|n| json!({"name": n})).collect())),
            ),
            field(for_each()),
        ),
    )
        .prop_map(
            |((image, command, args, env, deps, rule), (retries, timeout, when, outputs, fe))| {
                vec![
                    ("image", image),
                    ("command", command),
                    ("args", args),
                    ("env", env),
                    ("dependsOn", deps),
                    ("triggerRule", rule),
                    ("retries", retries),
                    ("timeout", timeout),
                    ("when", when),
                    ("outputs", outputs),
                    ("forEach", fe),
                ]
            },
        )
        .prop_map(object)
        .boxed()
}

fn schedule() -> BoxedStrategy<Value> {
    (
        text(cron()),
        field(text(timezone())),
        field(text(timestamp_text())),
        field(text(timestamp_text())),
        field(any::<bool>().prop_map(Value::Bool)),
        field(mostly(&["Allow", "Forbid", "Replace"], &["Deny"])),
        field(text(duration())),
    )
        .prop_map(|(cron, tz, start, end, catchup, policy, deadline)| {
            object(vec![
                ("cron", Some(cron)),
                ("timezone", tz),
                ("startTime", start),
                ("endTime", end),
                ("catchup", catchup),
                ("concurrencyPolicy", policy),
                ("startingDeadline", deadline),
            ])
        })
        .boxed()
}

fn params() -> BoxedStrategy<Value> {
    proptest::collection::vec(
        (
            select(&["p", "q", "p", "regions"][..]),
            field(mostly(&["String", "List"], &["list", "map"])),
            field(json_value()),
        ),
        0..3,
    )
    .prop_map(|ps| {
        ps.into_iter()
            .map(|(n, t, d)| object(vec![("name", Some(Value::from(n))), ("type", t), ("default", d)]))
            .collect()
    })
    .boxed()
}

/// A pipeline's spec: tasks named from a small pool (so dependencies often resolve), with
/// every kind of field.
pub fn pipeline_spec() -> BoxedStrategy<Value> {
    proptest::collection::vec(name(), 1..6)
        .prop_flat_map(|names| {
            let tasks = names
                .iter()
                .map(|n| {
                    let n = n.clone();
                    task(names.clone()).prop_map(move |mut t| {
                        t["name"] = Value::String(n.clone());
                        t
                    })
                })
                .collect::<Vec<_>>();
            let finally = proptest::collection::vec(task(names.clone()), 0..2).prop_map(|ts| {
                ts.into_iter()
                    .enumerate()
                    .map(|(i, mut t)| {
                        t["name"] = Value::String(format!("f{i}"));
                        t
                    })
                    .collect::<Vec<_>>()
            });
            (
                tasks,
                finally,
                field(params()),
                field(
                    (
                        text(
                            select(&["busybox", "busybox", ""][..])
                                .prop_map(str::to_string)
                                .boxed(),
                        )
                        .prop_map(Some),
                        field(text(duration())),
                        field(retries()),
                        field(env()),
                    )
                        .prop_map(|(image, timeout, retries, env)| {
                            object(vec![
                                ("image", image),
                                ("timeout", timeout),
                                ("retries", retries),
                                ("env", env),
                            ])
                        }),
                ),
                field(schedule()),
                (
                    field(
                        prop_oneof![16 => Just(4i64), 1 => Just(0), 1 => Just(-1), 1 => Just(4_294_967_296)]
                            .prop_map(Value::from),
                    ),
                    field(text(duration())),
                    field(prop_oneof![8 => Just(2i64), 1 => Just(0)].prop_map(Value::from)),
                ),
            )
        })
        .prop_map(
            |(tasks, finally, params, defaults, schedule, (parallelism, timeout, max_active))| {
                object(vec![
                    ("tasks", Some(Value::Array(tasks))),
                    ("finally", (!finally.is_empty()).then_some(Value::Array(finally))),
                    ("params", params),
                    ("defaults", defaults),
                    ("schedule", schedule),
                    ("parallelism", parallelism),
                    ("timeout", timeout),
                    ("maxActiveRuns", max_active),
                ])
            },
        )
        .boxed()
}

/// A whole Pipeline or PipelineRun (inline spec or reference), as JSON.
pub fn manifest_value() -> BoxedStrategy<Value> {
    let labels = prop_oneof![
        8 => proptest::collection::btree_map("[a-z./]{1,8}", "[a-z0-9]{0,5}", 0..3).prop_map(|m| json!(m)),
        1 => json_value(),
    ];
    let metadata = (name(), field(labels))
        .prop_map(|(n, labels)| object(vec![("name", Some(Value::String(n))), ("labels", labels)]));
    prop_oneof![
        3 => (metadata.clone(), pipeline_spec()).prop_map(|(m, spec)| {
            json!({"apiVersion": "weir.dev/v1alpha1", "kind": "Pipeline", "metadata": m, "spec": spec})
        }),
        1 => (metadata.clone(), pipeline_spec(), field(text(duration())), field(proptest::collection::btree_map(select(&["p", "q"][..]), json_value(), 0..3).prop_map(|m| json!(m)))).prop_map(|(m, spec, timeout, params)| {
            json!({"apiVersion": "weir.dev/v1alpha1", "kind": "PipelineRun", "metadata": m,
                   "spec": object(vec![("pipelineSpec", Some(spec)), ("timeout", timeout), ("params", params)])})
        }),
        1 => (metadata, name(), mostly(&["weir.dev/v1alpha1"], &["weir.dev/v1", "v1", ""]), mostly(&["PipelineRun"], &["Pipeline", "Pipline", "TaskRun", ""])).prop_map(|(m, target, api, kind)| {
            json!({"apiVersion": api, "kind": kind, "metadata": m, "spec": {"pipelineRef": {"name": target}}})
        }),
    ]
    .boxed()
}

/// Replaces the `k`-th node (in pre-order, modulo their count) of `value` with `with`.
pub fn replace_node(value: &mut Value, k: usize, with: Value) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, k: &mut usize, with: &mut Option<Value>) {
        if *k == 0 {
            if let Some(w) = with.take() {
                *v = w;
            }
            return;
        }
        *k -= 1;
        match v {
            Value::Array(a) => a.iter_mut().for_each(|c| walk(c, k, with)),
            Value::Object(o) => o.values_mut().for_each(|c| walk(c, k, with)),
            _ => {}
        }
    }
    let mut k = k % count(value);
    walk(value, &mut k, &mut Some(with));
}

/// How a manifest is written out.
pub fn to_text(value: &Value, style: u8) -> String {
    match style % 3 {
        0 => serde_saphyr::to_string(value).expect("JSON values are YAML"),
        1 => serde_json::to_string(value).expect("JSON"),
        _ => serde_json::to_string_pretty(value).expect("JSON"),
    }
}

/// Tokens a mutation puts in: YAML's syntax and its traps, Weir's fields and templates.
pub const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a\n",
    "? ",
    ": ",
    "- ",
    "-",
    "---\n",
    "...\n",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "|\n",
    ">-\n",
    "!!str ",
    "!!binary ",
    "!!int ",
    "!!map ",
    "!!seq ",
    "!custom ",
    "%YAML 1.2\n",
    "%TAG ! tag:x,2000:\n",
    "#",
    "\t",
    "\r\n",
    "\r",
    "\n",
    "\n  ",
    "\n    - ",
    "\u{feff}",
    "\0",
    "\u{85}",
    "\u{2028}",
    "\u{202e}",
    "~",
    "null",
    ".nan",
    ".inf",
    "-.inf",
    "0x1F",
    "0o17",
    "1e400",
    "-0",
    "99999999999999999999999",
    "18446744073709551616",
    "true",
    "on",
    "yes",
    "1_000",
    "2024-01-01",
    "{{",
    "}}",
    "{{ params.p }}",
    "{{ tasks.a.outputs.o }}",
    "{{ item }}",
    "*/5",
    "@daily",
    "1h30m",
    "é",
    "𝕏",
    "\\",
    "\\u0000",
    "\\x00",
    "apiVersion: weir.dev/v1alpha1\n",
    "kind: Pipeline\n",
    "kind: PipelineRun\n",
    "dependsOn: [a]",
    "finally:",
    "forEach:",
    "matrix:",
    "tasks:",
    "name: a",
    "image: busybox",
    "cron: ",
    "timezone: ",
    "timeout: ",
    "limit: ",
    "&b [*a, *a, *a, *a]",
];

/// One edit of a text. Positions are taken modulo the text's length and moved to a character
/// boundary, so every mutation of UTF-8 text is UTF-8 text.
#[derive(Clone, Debug)]
pub enum Mutation {
    Insert(usize, &'static str),
    Delete(usize, usize),
    Replace(usize, usize, &'static str),
    /// Repeats a span (`times` copies): long lists, long lines.
    Repeat(usize, usize, u8),
    /// Copies a span elsewhere (pieces of one manifest in another place).
    Splice(usize, usize, usize),
    /// Changes the indentation of the line at the position.
    Indent(usize, i8),
    InsertChar(usize, char),
    /// Replaces what follows the first `: ` (or `- `) on the line with a value that may fit:
    /// the YAML stays YAML, and the schema and the engine get to judge the value.
    Value(usize, &'static str),
    /// Copies the line after itself (a duplicate key, one more list item).
    DuplicateLine(usize),
    DeleteLine(usize),
}

/// Values a field may get: right ones, near misses, wrong types.
pub const VALUES: &[&str] = &[
    "a",
    "b",
    "extract",
    "busybox",
    "\"\"",
    "1",
    "0",
    "-1",
    "100",
    "101",
    "4294967296",
    "2.5",
    "1.0",
    "true",
    "null",
    "~",
    "[]",
    "{}",
    "[a]",
    "[a, a]",
    "[b, a]",
    "{name: a}",
    "[{name: a, image: busybox}]",
    "1h30m",
    "5d",
    "0s",
    "30s",
    "\"0 2 * * *\"",
    "\"*/5 * * * *\"",
    "\"61 * * * *\"",
    "\"@daily\"",
    "Europe/Berlin",
    "Mars/Olympus",
    "\"{{ params.p }}\"",
    "\"{{ tasks.a.outputs.o }}\"",
    "\"{{ item }}\"",
    "\"{{ run.nope }}\"",
    "\"{{\"",
    "AllDone",
    "AllSucceded",
    "In",
    "Forbid",
    "list",
    "string",
    "weir.dev/v1alpha1",
    "Pipeline",
    "PipelineRun",
    "2024-03-01T00:00:00Z",
    "yesterday",
    "&x a",
    "*x",
];

pub fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        12 => (any::<usize>(), select(VALUES)).prop_map(|(p, v)| Mutation::Value(p, v)),
        3 => any::<usize>().prop_map(Mutation::DuplicateLine),
        3 => any::<usize>().prop_map(Mutation::DeleteLine),
        4 => (any::<usize>(), select(TOKENS)).prop_map(|(p, t)| Mutation::Insert(p, t)),
        3 => (any::<usize>(), 1usize..16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        3 => (any::<usize>(), 1usize..8, select(TOKENS)).prop_map(|(p, n, t)| Mutation::Replace(p, n, t)),
        1 => (any::<usize>(), 1usize..40, 2u8..40).prop_map(|(p, n, k)| Mutation::Repeat(p, n, k)),
        2 => (any::<usize>(), 1usize..80, any::<usize>()).prop_map(|(p, n, to)| Mutation::Splice(p, n, to)),
        2 => (any::<usize>(), -4i8..5).prop_map(|(p, d)| Mutation::Indent(p, d)),
        1 => (any::<usize>(), any::<char>()).prop_map(|(p, c)| Mutation::InsertChar(p, c)),
    ]
    .boxed()
}

fn boundary(text: &str, pos: usize) -> usize {
    if text.is_empty() {
        return 0;
    }
    let mut p = pos % (text.len() + 1);
    while !text.is_char_boundary(p) {
        p -= 1;
    }
    p
}

/// The line at a position: its start, and its end before the newline.
fn line(text: &str, pos: usize) -> (usize, usize) {
    let p = boundary(text, pos);
    let start = text[..p].rfind('\n').map_or(0, |i| i + 1);
    let end = text[p..].find('\n').map_or(text.len(), |i| p + i);
    (start, end)
}

fn span(text: &str, pos: usize, len: usize) -> (usize, usize) {
    let start = boundary(text, pos);
    let mut end = (start + len).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

pub fn apply(text: &mut String, m: &Mutation) {
    match *m {
        Mutation::Insert(p, t) => {
            let p = boundary(text, p);
            text.insert_str(p, t);
        }
        Mutation::Delete(p, n) => {
            let (s, e) = span(text, p, n);
            text.replace_range(s..e, "");
        }
        Mutation::Replace(p, n, t) => {
            let (s, e) = span(text, p, n);
            text.replace_range(s..e, t);
        }
        Mutation::Repeat(p, n, k) => {
            let (s, e) = span(text, p, n);
            let piece = text[s..e].repeat(k as usize);
            text.insert_str(e, &piece);
        }
        Mutation::Splice(p, n, to) => {
            let (s, e) = span(text, p, n);
            let piece = text[s..e].to_string();
            let to = boundary(text, to);
            text.insert_str(to, &piece);
        }
        Mutation::Indent(p, d) => {
            let p = boundary(text, p);
            let line_start = text[..p].rfind('\n').map_or(0, |i| i + 1);
            if d >= 0 {
                text.insert_str(line_start, &" ".repeat(d as usize));
            } else {
                let spaces = text[line_start..].bytes().take_while(|&b| b == b' ').count();
                let cut = spaces.min(d.unsigned_abs() as usize);
                text.replace_range(line_start..line_start + cut, "");
            }
        }
        Mutation::InsertChar(p, c) => {
            let p = boundary(text, p);
            text.insert(p, c);
        }
        Mutation::Value(p, v) => {
            let (start, end) = line(text, p);
            let l = &text[start..end];
            if let Some(i) = l.find(": ").or_else(|| l.find("- ")) {
                text.replace_range(start + i + 2..end, v);
            }
        }
        Mutation::DuplicateLine(p) => {
            let (start, end) = line(text, p);
            let copy = format!("{}\n", &text[start..end]);
            let at = (end + 1).min(text.len());
            text.insert_str(at, &copy);
        }
        Mutation::DeleteLine(p) => {
            let (start, end) = line(text, p);
            text.replace_range(start..(end + 1).min(text.len()), "");
        }
    }
}

/// The manifests in the repository: every example and every invalid fixture, plus a few
/// written here for YAML's corners.
pub fn corpus() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["examples", "tests/fixtures/invalid"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("corpus directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("corpus file");
            out.push((f.strip_prefix(root).unwrap().display().to_string(), text));
        }
    }
    assert!(
        out.len() >= 10,
        "the corpus is the examples and the invalid fixtures"
    );
    for (name, text) in [
        (
            "anchors",
            "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: anchors}\nspec:\n  defaults: &d\n    image: busybox\n  tasks:\n    - &t\n      name: a\n      env: &e [{name: X, value: \"1\"}]\n    - <<: *t\n      name: b\n      dependsOn: [a]\n      env: *e\n",
        ),
        (
            "flow",
            "{apiVersion: weir.dev/v1alpha1, kind: Pipeline, metadata: {name: f}, spec: {tasks: [{name: a, image: busybox, args: ['{{ params.p }}']}], params: [{name: p, default: x}]}}\n",
        ),
        (
            "block-scalars",
            "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: b\nspec:\n  schedule:\n    cron: >-\n      0 2\n      * * *\n    timezone: Europe/Berlin\n  tasks:\n    - name: a\n      image: busybox\n      command:\n        - |\n          echo {{ run.logicalDate }}\n",
        ),
    ] {
        out.push((name.to_string(), text.to_string()));
    }
    out
}
