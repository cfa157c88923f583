//! Params, templates, `when` and fan-out through validation, resolution and planning.

use super::support::{at, t0, valid};
use crate::api::{
    ForEach, OutputSpec, ParamSpec, ParamType, PipelineSpec, TaskPhase, WhenCondition, WhenOperator,
};
use crate::engine::fixture::pipeline;
use crate::engine::resolve::{self, RunContext, TaskValues};
use crate::engine::{ObservedTask, Prepared, RunInput, ValidPipeline, plan_run, validate};
use serde_json::json;
use std::collections::BTreeMap;

fn with_outputs(mut spec: PipelineSpec, task: &str, names: &[&str]) -> PipelineSpec {
    let t = spec.tasks.iter_mut().find(|t| t.name == task).unwrap();
    t.outputs = names
        .iter()
        .map(|n| OutputSpec {
            name: n.to_string(),
            description: None,
        })
        .collect();
    spec
}

fn task_mut<'a>(spec: &'a mut PipelineSpec, name: &str) -> &'a mut crate::api::TaskSpec {
    spec.tasks.iter_mut().find(|t| t.name == name).unwrap()
}

/// What the planner learns of a ready task from its resolution: whether it runs, how wide.
fn prepare(valid: &ValidPipeline, task: usize, values: &TaskValues<'_>) -> Prepared {
    match resolve::resolve_ready(valid, task, values) {
        resolve::Resolved::Run(specs) => Prepared::Run {
            instances: specs.len() as u32,
        },
        resolve::Resolved::Skip(note) => Prepared::Skip(note),
        resolve::Resolved::Fail(note) => Prepared::Fail(note),
    }
}

fn errors(spec: &PipelineSpec) -> String {
    validate(spec).err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn template_references_are_checked_before_anything_runs() {
    let mut spec = pipeline().task("a").task("b").task("c").after(["b"]).build();
    spec = with_outputs(spec, "a", &["rows"]);
    spec.params = vec![ParamSpec {
        name: "region".into(),
        default: Some(json!("eu")),
        ..Default::default()
    }];
    task_mut(&mut spec, "b").args = vec!["{{ params.regoin }}".into(), "{{ tasks.a.outputs.rows }}".into()];
    task_mut(&mut spec, "c").args = vec![
        "{{ tasks.b.outputs.x }}".into(),
        "{{ item }}".into(),
        "{{ run.date }}".into(),
        "{{ tasks.a.outputs.rows".into(),
    ];
    let text = errors(&spec);
    for expected in [
        r#"task "b" (tasks[1].args[0]): {{ params.regoin }}: no parameter "regoin" is declared"#,
        r#"task "b" (tasks[1].args[1]): {{ tasks.a.outputs.rows }}: task "a" is not upstream of "b" (add it to dependsOn)"#,
        r#"task "c" (tasks[2].args[0]): {{ tasks.b.outputs.x }}: task "b" declares no output "x""#,
        r#"task "c" (tasks[2].args[1]): {{ item }} is only available in a task with forEach"#,
        r#"unknown run field "date""#,
        "unclosed",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn outputs_of_transitive_upstream_tasks_are_allowed() {
    let mut spec = pipeline()
        .task("a")
        .task("b")
        .after(["a"])
        .task("c")
        .after(["b"])
        .finally("report")
        .build();
    spec = with_outputs(spec, "a", &["rows"]);
    task_mut(&mut spec, "c").args = vec!["{{ tasks.a.outputs.rows }}".into()];
    spec.finally[0].args = vec!["{{ tasks.a.outputs.rows }}".into()];
    assert!(validate(&spec).is_ok(), "{}", errors(&spec));
}

#[test]
fn params_are_defaulted_and_checked() {
    let mut spec = pipeline().task("a").build();
    spec.params = vec![
        ParamSpec {
            name: "region".into(),
            default: Some(json!("eu")),
            ..Default::default()
        },
        ParamSpec {
            name: "date".into(),
            ..Default::default()
        },
        ParamSpec {
            name: "parts".into(),
            type_: ParamType::List,
            default: Some(json!(["a"])),
            ..Default::default()
        },
    ];
    let given = BTreeMap::from([
        ("date".to_string(), json!("2026-01-01")),
        ("parts".to_string(), json!("x,y")),
    ]);
    let params = crate::engine::params::effective_params(&spec, &given).unwrap();
    assert_eq!(params["region"], json!("eu"));
    assert_eq!(params["parts"], json!(["x", "y"]));
    let wrong = BTreeMap::from([
        ("dat".to_string(), json!("1")),
        ("parts".to_string(), json!({"a": 1})),
    ]);
    let problems = crate::engine::params::effective_params(&spec, &wrong)
        .unwrap_err()
        .join("\n");
    assert!(problems.contains(r#"unknown parameter "dat""#), "{problems}");
    assert!(problems.contains(r#"parameter "date" is required"#), "{problems}");
    assert!(
        problems.contains(r#"parameter "parts": expected a list of strings"#),
        "{problems}"
    );
}

fn context() -> RunContext {
    RunContext {
        name: "etl-1".into(),
        namespace: "data".into(),
        logical_date: Some(t0()),
        params: BTreeMap::from([
            ("env".to_string(), json!("prod")),
            ("regions".to_string(), json!(["eu", "us"])),
        ]),
        ..Default::default()
    }
}

#[test]
fn when_conditions_and_matrix_expansion() {
    let mut spec = pipeline().task("check").task("publish").after(["check"]).build();
    spec = with_outputs(spec, "check", &["status"]);
    spec.params = vec![
        ParamSpec {
            name: "env".into(),
            default: Some(json!("dev")),
            ..Default::default()
        },
        ParamSpec {
            name: "regions".into(),
            type_: ParamType::List,
            default: Some(json!([])),
            ..Default::default()
        },
    ];
    let publish = task_mut(&mut spec, "publish");
    publish.when = vec![WhenCondition {
        input: "{{ tasks.check.outputs.status }}".into(),
        operator: WhenOperator::In,
        values: vec!["ok".into(), "warn".into()],
    }];
    publish.for_each = Some(ForEach {
        matrix: BTreeMap::from([
            ("region".to_string(), json!("{{ params.regions }}")),
            ("size".to_string(), json!(["s", "m", "l"])),
        ]),
        ..Default::default()
    });
    publish.args = vec!["{{ item.region }}-{{ item.size }} {{ run.logicalDate }}".into()];
    let valid = valid(&spec);
    let i = valid.index["publish"];
    let ctx = context();
    let ok = |_: &str, _: &str| Some(json!("ok"));
    let values = TaskValues {
        run: &ctx,
        outputs: &ok,
        item: None,
        lenient: false,
    };
    assert_eq!(prepare(&valid, i, &values), Prepared::Run { instances: 6 });
    let items = resolve::items(&valid, i, &values).unwrap();
    assert_eq!(items[0], json!({"region": "eu", "size": "s"}));
    assert_eq!(items[5], json!({"region": "us", "size": "l"}));
    let spec4 = resolve::resolve_task(
        &valid,
        i,
        Some(4),
        &TaskValues {
            item: Some(&items[4]),
            ..values
        },
    )
    .unwrap();
    assert_eq!(spec4.args, vec!["us-m 2024-05-01T12:00:00Z"]);
    assert_eq!(spec4.instance, Some(4));

    let bad = |_: &str, _: &str| Some(json!("failed"));
    let values = TaskValues {
        run: &ctx,
        outputs: &bad,
        item: None,
        lenient: false,
    };
    assert!(matches!(prepare(&valid, i, &values), Prepared::Skip(m) if m.contains("when[0] is false")));
    let none = |_: &str, _: &str| None;
    let values = TaskValues {
        run: &ctx,
        outputs: &none,
        item: None,
        lenient: false,
    };
    assert!(
        matches!(prepare(&valid, i, &values), Prepared::Fail(m) if m.contains(r#"task "check" has no output "status""#))
    );
}

#[test]
fn too_many_instances_fail_with_a_clear_message() {
    let mut spec = pipeline().task("wide").build();
    spec.params = vec![ParamSpec {
        name: "xs".into(),
        type_: ParamType::List,
        default: Some(json!([])),
        ..Default::default()
    }];
    task_mut(&mut spec, "wide").for_each = Some(ForEach {
        items: Some(json!("{{ params.xs }}")),
        max_instances: Some(3),
        ..Default::default()
    });
    let valid = valid(&spec);
    let mut ctx = context();
    ctx.params.insert("xs".into(), json!(["1", "2", "3", "4"]));
    let none = |_: &str, _: &str| None;
    let values = TaskValues {
        run: &ctx,
        outputs: &none,
        item: None,
        lenient: false,
    };
    assert!(
        matches!(prepare(&valid, 0, &values), Prepared::Fail(m) if m.contains("4 instances, more than maxInstances 3"))
    );
    ctx.params.insert("xs".into(), json!([]));
    let values = TaskValues {
        run: &ctx,
        outputs: &none,
        item: None,
        lenient: false,
    };
    assert!(matches!(prepare(&valid, 0, &values), Prepared::Skip(_)));
}

/// A fan-out copies what each instance reads: 10,000 instances of a matrix over long strings
/// (or of specs that repeat a long value) would hold gigabytes while a step is worked out.
/// Both stop at `MAX_FAN_OUT_BYTES`, before they are built, and fail the task saying so.
#[test]
fn a_fan_out_holding_too_much_fails_before_it_is_built() {
    let mut spec = pipeline().task("wide").build();
    spec.params = vec![ParamSpec {
        name: "xs".into(),
        type_: ParamType::List,
        default: Some(json!([])),
        ..Default::default()
    }];
    task_mut(&mut spec, "wide").for_each = Some(ForEach {
        matrix: BTreeMap::from([
            ("a".to_string(), json!("{{ params.xs }}")),
            ("b".to_string(), json!("{{ params.xs }}")),
        ]),
        max_instances: Some(10_000),
        ..Default::default()
    });
    task_mut(&mut spec, "wide").args = vec!["{{ item.a }}".into()];
    let valid = valid(&spec);
    let mut ctx = context();
    let none = |_: &str, _: &str| None;
    let long = |n: usize, len: usize| json!((0..n).map(|i| format!("{i:0len$}")).collect::<Vec<_>>());
    // 100 x 100 combinations of 20 KB: 200 MB of values.
    ctx.params.insert("xs".into(), long(100, 10_000));
    let values = TaskValues {
        run: &ctx,
        outputs: &none,
        item: None,
        lenient: false,
    };
    let Prepared::Fail(m) = prepare(&valid, 0, &values) else {
        panic!("a matrix of 200 MB is refused");
    };
    assert!(
        m.contains("10000 combinations holding 200020000 bytes of values, more than the 33554432 (32 MiB)"),
        "{m}"
    );
    // 100 x 100 combinations of 8 KB hold 80 MB: refused too. 40 x 40 of 8 KB: 12.8 MB and
    // 1,600 specs of 4 KB: under the limit.
    ctx.params.insert("xs".into(), long(40, 4_000));
    let values = TaskValues {
        run: &ctx,
        outputs: &none,
        item: None,
        lenient: false,
    };
    assert_eq!(prepare(&valid, 0, &values), Prepared::Run { instances: 1_600 });
    // Each spec repeats its item 10 times: 1,600 specs of 40 KB pass 32 MiB.
    task_mut(&mut spec, "wide").args = vec!["{{ item.a }}".repeat(10)];
    let valid = super::support::valid(&spec);
    let Prepared::Fail(m) = prepare(&valid, 0, &values) else {
        panic!("1,600 specs of 40 KB are refused");
    };
    assert!(
        m.contains("forEach instances' resolved specs are") && m.contains("(32 MiB) one fan-out may hold"),
        "{m}"
    );
}

/// Drives a fan-out of 10,000 instances through the planner as the operator would, with
/// parallelism 50: every instance starts exactly once, never more than 50 at a time, and
/// the downstream task starts only after all of them.
#[test]
fn ten_thousand_instances_run_under_parallelism() {
    const N: u32 = 10_000;
    let mut spec = pipeline()
        .task("wide")
        .task("join")
        .after(["wide"])
        .parallelism(50)
        .build();
    spec.params = vec![ParamSpec {
        name: "xs".into(),
        type_: ParamType::List,
        default: Some(json!([])),
        ..Default::default()
    }];
    task_mut(&mut spec, "wide").for_each = Some(ForEach {
        items: Some(json!("{{ params.xs }}")),
        max_instances: Some(N),
        ..Default::default()
    });
    let valid = valid(&spec);
    let (wide, join) = (valid.index["wide"], valid.index["join"]);
    let prepare = |t: usize| {
        if t == wide {
            Prepared::Run { instances: N }
        } else {
            Prepared::Run { instances: 1 }
        }
    };
    let mut observed: Vec<Option<ObservedTask>> = vec![None; 2];
    let mut instances: Vec<Vec<Option<ObservedTask>>> = vec![Vec::new(), Vec::new()];
    let mut started = vec![0u32; N as usize];
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10_000, "the run does not finish");
        let plan = plan_run(&RunInput {
            pipeline: &valid,
            observed: &observed,
            cancel_requested: false,
            started_at: t0(),
            timeout: None,
            now: at(rounds),
            instances: &instances,
            prepare: &prepare,
        });
        if plan.outcome.is_some() {
            assert_eq!(plan.states[wide], TaskPhase::Succeeded);
            break;
        }
        // Finish everything that was running, then start what the plan says.
        for slot in instances[wide].iter_mut().flatten() {
            slot.phase = TaskPhase::Succeeded;
        }
        if let Some(o) = observed[join].as_mut() {
            o.phase = TaskPhase::Succeeded;
        }
        assert!(
            plan.start_instances.len() <= 50,
            "{} instances started at once",
            plan.start_instances.len()
        );
        for &(t, k) in &plan.start_instances {
            assert_eq!(t, wide);
            started[k as usize] += 1;
            let v = &mut instances[wide];
            if v.len() <= k as usize {
                v.resize(k as usize + 1, None);
            }
            v[k as usize] = Some(ObservedTask {
                phase: TaskPhase::Running,
                cancel_requested: false,
            });
        }
        for &t in &plan.start {
            assert_eq!(t, join);
            assert!(
                instances[wide]
                    .iter()
                    .all(|o| o.is_some_and(|o| o.phase == TaskPhase::Succeeded))
            );
            observed[t] = Some(ObservedTask {
                phase: TaskPhase::Running,
                cancel_requested: false,
            });
        }
    }
    assert!(
        started.iter().all(|&n| n == 1),
        "every instance starts exactly once"
    );
}

#[test]
fn a_fan_in_too_large_for_kubernetes_is_refused_clearly() {
    let mut spec = pipeline().task("wide").task("join").after(["wide"]).build();
    spec = with_outputs(spec, "wide", &["blob"]);
    task_mut(&mut spec, "join").args = vec!["{{ tasks.wide.outputs.blob }}".into()];
    let valid = valid(&spec);
    let ctx = context();
    let huge = |_: &str, _: &str| Some(json!("x".repeat(600 * 1024)));
    let values = TaskValues {
        run: &ctx,
        outputs: &huge,
        item: None,
        lenient: false,
    };
    let err = resolve::resolve_task(&valid, valid.index["join"], None, &values).unwrap_err();
    assert!(
        err.contains("more than the 524288") && err.contains("1.5 MiB"),
        "{err}"
    );
}
