//! Manifest files as `weir validate`, `weir run` and `weir graph` read them: YAML, the CRD
//! schema, engine validation, and for what passes, the graph and every task resolved.

use crate::inputs::{self, Mutation};
use crate::{ceilings, fail, fuzz, meter};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use weir::engine::resolve::{RunContext, RunIdentity, TaskValues, resolve_ready};
use weir::manifest::{Manifest, Schemas, check_text};

/// Schemas to lend, one per thread checking at the same time (building one takes a while).
static SCHEMAS: Mutex<Vec<Schemas>> = Mutex::new(Vec::new());

/// The stack of a program's main thread, where `weir validate` and `weir run` read files.
/// (Test threads get 2 MiB, and the debug build needs about 45 KiB per level of YAML nesting.)
const MAIN_STACK: usize = 8 << 20;

/// Longest message a problem may have for the small inputs fuzzed here: a message quotes
/// what it is about, shortened, and says what to do.
const MAX_MESSAGE: usize = 2_048;

/// How far the inputs of a target got: read as YAML, Weir objects found, objects valid
/// (and so drawn and resolved), counted on the thread running the target and printed with
/// its summary, to show its inputs reach past the first check.
#[derive(Clone, Copy, Default)]
struct Reach {
    inputs: usize,
    yaml: usize,
    objects: usize,
    valid: usize,
}

thread_local! {
    static REACH: std::cell::Cell<Reach> = std::cell::Cell::new(Reach::default());
}

fn reach_summary() -> String {
    let r = REACH.with(|r| r.take());
    format!(
        "{} inputs: {} read as YAML, {} Weir objects, {} valid",
        r.inputs, r.yaml, r.objects, r.valid
    )
}

/// Everything Weir does with a manifest file, checked: no panic, a bounded cost, problems
/// that say something and point inside the file, and agreement between the checks.
pub fn check_manifest(text: &str) -> Result<(), TestCaseError> {
    let schemas = SCHEMAS.lock().unwrap().pop().unwrap_or_default();
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(MAIN_STACK)
            .spawn_scoped(scope, move || {
                let mut seen = Reach::default();
                let (result, usage) = meter::measure(|| check_manifest_inner(text, &schemas, &mut seen));
                SCHEMAS.lock().unwrap().push(schemas);
                (result, usage, seen)
            })
            .expect("a thread to check on")
            .join()
    });
    // A thread that panicked took its schemas with it; the next check builds new ones.
    let (result, usage, seen) =
        outcome.map_err(|panic| fail(format!("panicked: {}", crate::panic_message(&*panic))))?;
    REACH.with(|r| {
        let mut total = r.get();
        total.inputs += seen.inputs;
        total.yaml += seen.yaml;
        total.objects += seen.objects;
        total.valid += seen.valid;
        r.set(total);
    });
    let ceiling = if text.contains('&') {
        ceilings::MANIFEST_WITH_ANCHORS
    } else {
        ceilings::MANIFEST
    };
    ceiling.check(text.len(), usage).map_err(fail)?;
    result
}

fn check_manifest_inner(text: &str, schemas: &Schemas, seen: &mut Reach) -> Result<(), TestCaseError> {
    let report = check_text(text, "fuzz.yaml", schemas);
    *seen = Reach {
        inputs: 1,
        yaml: usize::from(
            !report
                .problems
                .iter()
                .any(|p| p.source == weir::manifest::Source::Yaml),
        ),
        objects: report.objects.len(),
        valid: report.objects.iter().filter(|o| o.valid).count(),
    };
    let lines = text.split(['\n', '\r']).count() as u64 + 1;
    for p in &report.problems {
        let shown = p.to_string();
        prop_assert!(
            !p.message.trim().is_empty(),
            "a problem without a message: {shown}"
        );
        prop_assert!(
            p.message.len() <= MAX_MESSAGE,
            "a {}-byte message: {}",
            p.message.len(),
            shown.chars().take(300).collect::<String>()
        );
        prop_assert!(p.loc.line <= lines, "{shown} points past the end ({lines} lines)");
    }
    for object in report.objects.iter().filter(|o| o.valid) {
        match &object.manifest {
            Some(Manifest::Pipeline(p)) => exercise(&p.spec, None)?,
            Some(Manifest::PipelineRun(r)) => {
                if let Some(spec) = &r.spec.pipeline_spec {
                    exercise(spec, Some(&r.spec))?;
                }
            }
            // A Pool is its schema and nothing more: there is nothing further to exercise.
            Some(Manifest::Pool(_)) => {}
            other => return Err(fail(format!("a valid object that was not read: {other:?}"))),
        }
    }
    let _ = report.select(None);
    Ok(())
}

/// What happens to a valid pipeline next: it is drawn, and its tasks are resolved with its
/// params (defaults, or the run's) and made-up upstream outputs.
fn exercise(
    spec: &weir::api::PipelineSpec,
    run: Option<&weir::api::PipelineRunSpec>,
) -> Result<(), TestCaseError> {
    let pipeline = weir::engine::validate(spec)
        .map_err(|e| fail(format!("valid to weir validate, invalid to the engine: {e}")))?;
    let _ = weir::graph::text("fuzz", &pipeline);
    let _ = weir::graph::dot("fuzz", &pipeline);
    let _ = weir::graph::mermaid("fuzz", &pipeline);
    let given: BTreeMap<String, Value> = run.map(|r| r.params.clone()).unwrap_or_default();
    let Ok(context) = RunContext::new(RunIdentity::default(), spec, run, &given) else {
        return Ok(());
    };
    let outputs = |task: &str, key: &str| -> Option<Value> {
        match (task.len() + key.len()) % 3 {
            0 => None,
            1 => Some(Value::String(format!("[\"{task}\",\"{key}\"]"))),
            _ => Some(Value::String(key.repeat(3))),
        }
    };
    for index in 0..pipeline.len() {
        let values = TaskValues {
            run: &context,
            outputs: &outputs,
            item: None,
            lenient: pipeline.is_finally(index),
        };
        let _ = resolve_ready(&pipeline, index, &values);
    }
    Ok(())
}

/// A generated manifest, written as YAML or JSON, sometimes with a node replaced by a value
/// of another type and a few text mutations.
fn generated() -> impl Strategy<Value = String> {
    (
        inputs::manifest_value(),
        any::<u8>(),
        proptest::option::weighted(0.2, (any::<usize>(), inputs::json_value())),
        prop_oneof![
            2 => Just(vec![]),
            1 => proptest::collection::vec(inputs::mutation(), 1..3),
        ],
    )
        .prop_map(|(mut value, style, swap, mutations)| {
            if let Some((k, with)) = swap {
                inputs::replace_node(&mut value, k, with);
            }
            let mut text = inputs::to_text(&value, style);
            for m in &mutations {
                inputs::apply(&mut text, m);
            }
            text
        })
}

#[test]
fn fuzz_generated_manifests() {
    fuzz("generated-manifests", 2_000, generated(), |text| {
        check_manifest(&text)
    });
    eprintln!("fuzz generated-manifests: {}", reach_summary());
}

/// The examples and the invalid fixtures, each with a few edits.
#[test]
fn fuzz_mutated_corpus() {
    let corpus = inputs::corpus();
    let count = corpus.len();
    let strategy = (0..count, proptest::collection::vec(inputs::mutation(), 1..5));
    fuzz(
        "mutated-corpus",
        4_000,
        strategy,
        |(i, mutations): (usize, Vec<Mutation>)| {
            let mut text = corpus[i].1.clone();
            for m in &mutations {
                inputs::apply(&mut text, m);
            }
            check_manifest(&text)
        },
    );
    eprintln!("fuzz mutated-corpus: {}", reach_summary());
}

/// YAML made to cost: alias bombs (billion laughs), deep nesting, huge scalars and keys,
/// documents by the thousand, and odd encodings, each placed in a real manifest.
#[derive(Clone, Debug)]
pub enum Stress {
    AliasBomb {
        levels: u8,
        fanout: u8,
        flow: bool,
    },
    Nesting {
        depth: u16,
        flow: bool,
        maps: bool,
    },
    Scalar {
        bytes: u32,
        field: u8,
        quoted: bool,
    },
    Documents {
        count: u16,
    },
    WideList {
        items: u32,
    },
    Encoding {
        kind: u8,
    },
    /// A `forEach.matrix` over lists of long strings from a param: each instance holds
    /// one element of every list.
    FanOut {
        items: u16,
        bytes: u32,
        keys: u8,
    },
    /// Many tasks, each depending on a name near one of theirs (a typo to suggest a fix
    /// for), or with a long name.
    ManyTasks {
        tasks: u16,
        name_len: u16,
    },
    /// Many misspelt fields in one task.
    UnknownFields {
        fields: u32,
    },
}

fn stress() -> impl Strategy<Value = Stress> {
    prop_oneof![
        (1u8..12, 2u8..12, any::<bool>()).prop_map(|(levels, fanout, flow)| Stress::AliasBomb {
            levels,
            fanout,
            flow
        }),
        (1u16..400, any::<bool>(), any::<bool>()).prop_map(|(depth, flow, maps)| Stress::Nesting {
            depth,
            flow,
            maps
        }),
        (
            prop_oneof![1u32..4096, 4096u32..(1 << 20), Just(4 << 20), Just((4 << 20) + 1)],
            any::<u8>(),
            any::<bool>()
        )
            .prop_map(|(bytes, field, quoted)| Stress::Scalar { bytes, field, quoted }),
        (1u16..1_500).prop_map(|count| Stress::Documents { count }),
        (1u32..200_000).prop_map(|items| Stress::WideList { items }),
        any::<u8>().prop_map(|kind| Stress::Encoding { kind }),
        (1u16..120, 1u32..20_000, 1u8..4).prop_map(|(items, bytes, keys)| Stress::FanOut {
            items,
            bytes,
            keys
        }),
        (1u16..2_500, prop_oneof![Just(8u16), 1u16..300, Just(20_000)])
            .prop_map(|(tasks, name_len)| Stress::ManyTasks { tasks, name_len }),
        (1u32..20_000).prop_map(|fields| Stress::UnknownFields { fields }),
    ]
}

const HEAD: &str = "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: stress\nspec:\n";

pub fn stress_text(s: &Stress) -> String {
    match *s {
        Stress::AliasBomb { levels, fanout, flow } => {
            let mut out = format!(
                "{HEAD}  params:\n    - name: p\n      default:\n        l0: &l0 [\"lol\", \"lol\"]\n"
            );
            for l in 1..=levels {
                let refs = vec![format!("*l{}", l - 1); fanout as usize];
                if flow {
                    out.push_str(&format!("        l{l}: &l{l} [{}]\n", refs.join(", ")));
                } else {
                    out.push_str(&format!("        l{l}: &l{l}\n"));
                    for r in refs {
                        out.push_str(&format!("          - {r}\n"));
                    }
                }
            }
            out.push_str(&format!(
                "  tasks:\n    - name: a\n      image: busybox\n      args: *l{levels}\n"
            ));
            out
        }
        Stress::Nesting { depth, flow, maps } => {
            let d = depth as usize;
            let value = match (flow, maps) {
                (true, false) => format!("{}{}", "[".repeat(d), "]".repeat(d)),
                (true, true) => format!("{}1{}", "{a: ".repeat(d), "}".repeat(d)),
                (false, _) => {
                    let mut v = String::new();
                    for i in 0..d {
                        v.push('\n');
                        v.push_str(&" ".repeat(8 + 2 * i));
                        v.push_str(if maps { "a:" } else { "-" });
                    }
                    v.push_str(" 1");
                    v
                }
            };
            format!(
                "{HEAD}  params:\n    - name: p\n      default: {value}\n  tasks:\n    - {{name: a, image: busybox}}\n"
            )
        }
        Stress::Scalar { bytes, field, quoted } => {
            let big = "x".repeat(bytes as usize);
            let big = if quoted { format!("\"{big}\"") } else { big };
            match field % 6 {
                0 => format!("{HEAD}  tasks:\n    - name: {big}\n      image: busybox\n"),
                1 => {
                    format!("{HEAD}  tasks:\n    - name: a\n      image: busybox\n      dependsOn: [{big}]\n")
                }
                2 => format!(
                    "{HEAD}  schedule:\n    cron: {big}\n  tasks:\n    - {{name: a, image: busybox}}\n"
                ),
                3 => format!("{HEAD}  tasks:\n    - name: a\n      image: busybox\n      timeout: {big}\n"),
                4 => format!(
                    "{HEAD}  tasks:\n    - name: a\n      image: busybox\n      args: [\"{{{{ {big} }}}}\"]\n"
                ),
                _ => {
                    format!("{HEAD}  tasks:\n    - name: a\n      image: busybox\n      ? {big}\n      : 1\n")
                }
            }
        }
        Stress::Documents { count } => {
            let doc = format!("{HEAD}  tasks:\n    - {{name: a, image: busybox}}\n");
            vec![doc; count as usize].join("---\n")
        }
        Stress::WideList { items } => {
            let mut out = format!("{HEAD}  tasks:\n    - name: a\n      image: busybox\n      args: [");
            for i in 0..items {
                out.push_str(if i % 2 == 0 { "x," } else { "{{ run.name }}," });
            }
            out.push_str("]\n");
            out
        }
        Stress::FanOut { items, bytes, keys } => {
            let list: Vec<String> = (0..items)
                .map(|i| format!("{i}{}", "x".repeat(bytes as usize)))
                .collect();
            let matrix: Vec<String> = (0..keys)
                .map(|k| format!("k{k}: \"{{{{ params.l }}}}\""))
                .collect();
            format!(
                "{HEAD}  params:\n    - name: l\n      type: List\n      default: [{}]\n  tasks:\n    - name: a\n      image: busybox\n      args: [\"{{{{ item.k0 }}}}\"]\n      forEach:\n        maxInstances: 10000\n        matrix: {{{}}}\n",
                list.join(", "),
                matrix.join(", ")
            )
        }
        Stress::ManyTasks { tasks, name_len } => {
            let pad = "n".repeat(name_len as usize);
            // Within the file limit, where the cost is.
            let tasks = (tasks as usize).min((4 << 20) / (2 * name_len as usize + 64));
            let mut out = format!("{HEAD}  tasks:\n");
            for i in 0..tasks {
                out.push_str(&format!(
                    "    - {{name: t{pad}-{i:05}, image: busybox, dependsOn: [t{pad}x{i:05}]}}\n"
                ));
            }
            out
        }
        Stress::UnknownFields { fields } => {
            let mut out = format!("{HEAD}  tasks:\n    - name: a\n      image: busybox\n");
            for i in 0..fields {
                out.push_str(&format!("      imag{i}: x\n"));
            }
            out
        }
        Stress::Encoding { kind } => {
            let base = format!("{HEAD}  tasks:\n    - name: a\n      image: busybox\n");
            match kind % 6 {
                0 => format!("\u{feff}{base}"),
                1 => base.replace('\n', "\r\n"),
                2 => base.replace('\n', "\r"),
                3 => base.replace("  ", "\t"),
                4 => format!("{base}\0"),
                // What UTF-16 looks like when read as UTF-8 by mistake, lossily.
                _ => String::from_utf8_lossy(
                    &base
                        .encode_utf16()
                        .flat_map(u16::to_le_bytes)
                        .collect::<Vec<u8>>(),
                )
                .into_owned(),
            }
        }
    }
}

#[test]
fn fuzz_costly_yaml() {
    fuzz("costly-yaml", 60, stress(), |s| check_manifest(&stress_text(&s)));
    eprintln!("fuzz costly-yaml: {}", reach_summary());
}
