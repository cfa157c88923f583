//! `validate`: every problem at once, each naming the task and the field.

use super::support::valid;
use crate::api::{PipelineSpec, RetryPolicy, TaskDefaults, TriggerRule};
use crate::engine::fixture::{self, pipeline};
use crate::engine::validate::MAX_TASKS;
use crate::engine::{ValidationError, validate};
use k8s_openapi::api::core::v1::EnvVar;
use std::time::Duration;

fn problems(spec: &PipelineSpec) -> Vec<ValidationError> {
    match validate(spec) {
        Ok(_) => panic!("pipeline should be invalid"),
        Err(e) => e.0,
    }
}

/// The one error about `field`, failing when there is none or several.
fn error_at<'a>(errors: &'a [ValidationError], field: &str) -> &'a ValidationError {
    let found: Vec<_> = errors.iter().filter(|e| e.field == field).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one error at {field}, got {found:?} in {errors:#?}"
    );
    found[0]
}

fn env(name: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some("x".into()),
        ..Default::default()
    }
}

/// A pipeline as a person might write it, with nearly every mistake there is.
const MANY_PROBLEMS: &str = r#"
parallelism: 0
timeout: forever
defaults:
  env:
    - { name: REGION, value: eu }
    - { name: REGION, value: us }
  retries:
    limit: 500
    delay: soon
tasks:
  - name: extract
    image: busybox
    dependsOn: [load]
  - name: transform
    image: busybox
    dependsOn: [extract]
  - name: load
    image: busybox
    dependsOn: [transform]
  - name: report
    image: busybox
    dependsOn: [report, tranform, extract, extract, no-such-step]
  - name: Load_Data
    image: busybox
  - name: this-task-name-is-far-too-long-to-fit-in-a-kubernetes-object-name
    image: busybox
  - name: no-image
  - name: bad-image
    image: "busybox latest"
  - name: timeouts
    image: busybox
    timeout: 5d
  - name: zero-timeout
    image: busybox
    timeout: 0s
  - name: retries
    image: busybox
    retries:
      limit: 3
      delay: 5m
      maxDelay: 1m
      backoffFactor: 0.5
      retryOn:
        exitCodes: [1, 2]
        exceptExitCodes: [2]
  - name: bad-retry-durations
    image: busybox
    retries:
      limit: 1
      delay: 1y
      maxDelay: "-1s"
  - name: env
    image: busybox
    env:
      - { name: MODE, value: a }
      - { name: "", value: b }
      - { name: MODE, value: c }
  - name: waits-for-finally
    image: busybox
    dependsOn: [cleanup]
  - name: notify
    image: busybox
  - name: twice
    image: busybox
  - name: twice
    image: busybox
finally:
  - name: cleanup
    image: busybox
    dependsOn: [report]
  - name: notify
    image: busybox
"#;

#[test]
fn reports_every_problem_at_once() {
    let spec: PipelineSpec = serde_saphyr::from_str(MANY_PROBLEMS).unwrap();
    let errors = problems(&spec);
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("validate_many_problems", text.join("\n"));
    });

    // Each problem names its task and field (checked structurally, not only in the text).
    let e = error_at(&errors, "tasks[0].dependsOn");
    assert_eq!(e.task.as_deref(), Some("extract"));
    assert_eq!(
        e.message,
        "dependency cycle: extract -> transform -> load -> extract"
    );
    let report: Vec<_> = errors
        .iter()
        .filter(|e| e.field == "tasks[3].dependsOn")
        .collect();
    assert!(report.iter().all(|e| e.task.as_deref() == Some("report")));
    let messages: Vec<&str> = report.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "a task cannot depend on itself",
            "unknown task \"tranform\" (did you mean \"transform\"?)",
            "\"extract\" is listed twice",
            "unknown task \"no-such-step\"",
        ]
    );
    assert_eq!(
        error_at(&errors, "tasks[4].name").task.as_deref(),
        Some("Load_Data")
    );
    assert!(
        error_at(&errors, "tasks[5].name")
            .message
            .contains("65 characters")
    );
    assert!(error_at(&errors, "tasks[6].image").message.contains("no image"));
    assert!(
        error_at(&errors, "tasks[8].timeout")
            .message
            .contains("unknown unit \"d\"")
    );
    assert!(
        error_at(&errors, "tasks[9].timeout")
            .message
            .contains("longer than zero")
    );
    assert!(
        error_at(&errors, "tasks[10].retries.backoffFactor")
            .message
            .contains("between 1 and 100")
    );
    assert!(
        error_at(&errors, "tasks[10].retries.retryOn")
            .message
            .contains("exit code 2")
    );
    assert_eq!(
        error_at(&errors, "tasks[10].retries.maxDelay").message,
        "1m is shorter than delay 5m"
    );
    assert!(
        error_at(&errors, "tasks[11].retries.delay")
            .message
            .contains("\"1y\"")
    );
    assert!(
        error_at(&errors, "tasks[11].retries.maxDelay")
            .message
            .contains("\"-1s\"")
    );
    assert!(
        error_at(&errors, "tasks[12].env[1].name")
            .message
            .contains("empty")
    );
    assert!(
        error_at(&errors, "tasks[12].env[2].name")
            .message
            .contains("\"MODE\" is set twice")
    );
    assert!(
        error_at(&errors, "tasks[13].dependsOn")
            .message
            .contains("\"cleanup\" is a finally task")
    );
    assert_eq!(error_at(&errors, "tasks[16].name").task.as_deref(), Some("twice"));
    assert_eq!(
        error_at(&errors, "finally[1].name").task.as_deref(),
        Some("notify")
    );
    assert!(
        error_at(&errors, "finally[0].dependsOn")
            .message
            .contains("cannot depend on \"report\"")
    );
    assert_eq!(error_at(&errors, "parallelism").task, None);
    assert_eq!(error_at(&errors, "timeout").task, None);
    assert_eq!(error_at(&errors, "defaults.env[1].name").task, None);
    assert!(
        error_at(&errors, "defaults.retries.limit")
            .message
            .contains("500")
    );
    assert!(
        error_at(&errors, "defaults.retries.delay")
            .message
            .contains("\"soon\"")
    );
    assert_eq!(errors.len(), 27, "{errors:#?}");
}

#[test]
fn display_names_task_and_field_and_joins_problems() {
    let spec = pipeline()
        .task("a")
        .after(["missing"])
        .task("c")
        .after(["c"])
        .build();
    let err = validate(&spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "task \"a\" (tasks[0].dependsOn): unknown task \"missing\"; \
         task \"c\" (tasks[1].dependsOn): a task cannot depend on itself"
    );
}

#[test]
fn a_valid_pipeline_is_indexed() {
    let spec = pipeline()
        .task("b")
        .after(["a"])
        .task("a")
        .finally("f")
        .parallelism(3)
        .run_timeout("1h30m")
        .build();
    let p = valid(&spec);
    assert_eq!((p.len(), p.main_count), (3, 2));
    assert_eq!((p.index["b"], p.index["a"], p.index["f"]), (0, 1, 2));
    assert!(p.is_finally(2) && !p.is_finally(1));
    assert_eq!(p.name(2), "f");
    assert_eq!(p.parallelism, Some(3));
    assert_eq!(p.timeout, Some(Duration::from_secs(5400)));
    assert_eq!(p.dag.upstream(0), &[1]);
    assert_eq!(p.dag.topological_order(), &[1, 2, 0]);
}

#[test]
fn cycle_message_gives_the_path_in_run_order() {
    // b runs after a, a after b.
    let spec = pipeline().task("a").after(["b"]).task("b").after(["a"]).build();
    let errors = problems(&spec);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].task.as_deref(), Some("a"));
    assert_eq!(errors[0].field, "tasks[0].dependsOn");
    assert_eq!(errors[0].message, "dependency cycle: a -> b -> a");

    // c after b after a after c; d hangs off the cycle and is not part of it.
    let spec = pipeline()
        .task("d")
        .after(["a"])
        .task("a")
        .after(["c"])
        .task("b")
        .after(["a"])
        .task("c")
        .after(["b"])
        .build();
    let errors = problems(&spec);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message, "dependency cycle: a -> b -> c -> a");
    assert_eq!(errors[0].field, "tasks[1].dependsOn");
}

#[test]
fn one_cycle_per_tangle_and_cycles_among_finally_tasks() {
    let spec = pipeline()
        .task("a")
        .after(["b"])
        .task("b")
        .after(["a"])
        .task("c")
        .after(["d"])
        .task("d")
        .after(["c"])
        .finally("f")
        .after(["g"])
        .finally("g")
        .after(["f"])
        .build();
    let messages: Vec<String> = problems(&spec).into_iter().map(|e| e.to_string()).collect();
    assert_eq!(
        messages,
        [
            "task \"a\" (tasks[0].dependsOn): dependency cycle: a -> b -> a",
            "task \"c\" (tasks[2].dependsOn): dependency cycle: c -> d -> c",
            "task \"f\" (finally[0].dependsOn): dependency cycle: f -> g -> f",
        ]
    );
}

#[test]
fn cycles_are_reported_alongside_other_problems() {
    let mut spec = pipeline()
        .task("a")
        .after(["b", "missing"])
        .task("b")
        .after(["a"])
        .task("Bad_Name")
        .timeout("soon")
        .build();
    spec.tasks[1].env = vec![env("X"), env("X")];
    let errors = problems(&spec);
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "tasks[2].name",
            "tasks[0].dependsOn",
            "tasks[1].env[1].name",
            "tasks[2].timeout",
            "tasks[0].dependsOn"
        ]
    );
    assert_eq!(errors[4].message, "dependency cycle: a -> b -> a");
}

#[test]
fn duplicate_names_do_not_make_up_cycles() {
    // Which "a" does b depend on? Either way, no cycle should be claimed through it.
    let spec = pipeline()
        .task("a")
        .after(["b"])
        .task("b")
        .after(["a"])
        .task("a")
        .build();
    let errors = problems(&spec);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].field, "tasks[2].name");
    assert!(errors[0].message.contains("duplicate task name"));

    // A cycle elsewhere is still found.
    let spec = pipeline()
        .task("a")
        .task("a")
        .task("x")
        .after(["y"])
        .task("y")
        .after(["x"])
        .build();
    let messages: Vec<String> = problems(&spec).into_iter().map(|e| e.message).collect();
    assert!(
        messages.contains(&"dependency cycle: x -> y -> x".to_string()),
        "{messages:?}"
    );
}

#[test]
fn self_dependency() {
    let errors = problems(&pipeline().task("a").after(["a"]).build());
    assert_eq!(errors.len(), 1, "reported once, not also as a cycle: {errors:?}");
    assert_eq!(errors[0].task.as_deref(), Some("a"));
    assert_eq!(errors[0].message, "a task cannot depend on itself");
}

#[test]
fn unknown_dependency_hints_only_plausible_names() {
    let spec = pipeline()
        .task("extract")
        .task("transform")
        .after(["extrct"])
        .task("load")
        .after(["xyz"])
        .finally("cleanup")
        .after(["cleanpu"])
        .finally("notify")
        .after(["lod"])
        .build();
    let messages: Vec<String> = problems(&spec).into_iter().map(|e| e.message).collect();
    assert_eq!(
        messages,
        [
            "unknown task \"extrct\" (did you mean \"extract\"?)",
            "unknown task \"xyz\"",
            // A task never suggests itself...
            "unknown task \"cleanpu\"",
            // ...nor a task it may not depend on (a finally task on a main task).
            "unknown task \"lod\"",
        ]
    );
}

#[test]
fn duplicate_names_within_and_across_sections() {
    let spec = pipeline().task("a").task("b").task("a").finally("b").build();
    let errors = problems(&spec);
    let found: Vec<(Option<&str>, &str)> = errors
        .iter()
        .map(|e| (e.task.as_deref(), e.field.as_str()))
        .collect();
    assert_eq!(
        found,
        [(Some("a"), "tasks[2].name"), (Some("b"), "finally[0].name")]
    );
}

#[test]
fn names_must_be_dns_labels_of_at_most_63_characters() {
    let ok = "a".repeat(63);
    assert!(validate(&pipeline().task(&ok).build()).is_ok());
    let long = "a".repeat(64);
    for (name, wanted) in [
        (long.as_str(), "64 characters; at most 63"),
        ("UPPER", "lowercase letters"),
        ("-dash", "starting and ending"),
        ("dash-", "starting and ending"),
        ("dot.ted", "lowercase letters"),
        ("under_score", "lowercase letters"),
    ] {
        let errors = problems(&pipeline().task(name).build());
        assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        assert_eq!(errors[0].task.as_deref(), Some(name));
        assert_eq!(errors[0].field, "tasks[0].name");
        assert!(
            errors[0].message.contains(wanted),
            "{name}: {}",
            errors[0].message
        );
    }
    let errors = problems(&pipeline().task("").build());
    assert_eq!(
        (errors[0].task.as_deref(), errors[0].message.as_str()),
        (None, "task name is empty")
    );
}

#[test]
fn image_comes_from_the_task_or_the_defaults() {
    let mut spec = pipeline().task("a").task("b").build();
    spec.defaults = None;
    spec.tasks[0].image = Some("alpine:3".into());
    let errors = problems(&spec);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].task.as_deref(), errors[0].field.as_str()),
        (Some("b"), "tasks[1].image")
    );

    spec.defaults = Some(TaskDefaults {
        image: Some("busybox".into()),
        ..Default::default()
    });
    assert!(validate(&spec).is_ok());
    spec.tasks[1].image = Some(" ".into());
    assert_eq!(
        errors_of(&spec),
        ["tasks[1].image: \" \" is not a valid image reference"]
    );
}

/// `field: message` of every error.
fn errors_of(spec: &PipelineSpec) -> Vec<String> {
    problems(spec)
        .into_iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect()
}

#[test]
fn durations_are_checked_where_they_appear() {
    let mut spec = pipeline().task("a").timeout("10").run_timeout("0ms").build();
    spec.defaults.as_mut().unwrap().timeout = Some("1w".into());
    assert_eq!(
        errors_of(&spec),
        [
            "tasks[0].timeout: \"10\" is not a duration: missing unit (ms, s, m or h) after 10",
            "timeout: \"0ms\" must be longer than zero",
            "defaults.timeout: \"1w\" is not a duration: unknown unit \"w\" (use ms, s, m or h)",
        ]
    );
}

#[test]
fn retry_policies_are_checked() {
    let policy = |limit, delay: Option<&str>, factor, max: Option<&str>| RetryPolicy {
        limit,
        delay: delay.map(Into::into),
        backoff_factor: factor,
        max_delay: max.map(Into::into),
        retry_on: None,
        disruptions: None,
    };
    let check = |p: RetryPolicy| {
        let mut spec = pipeline().task("a").build();
        spec.tasks[0].retries = Some(p);
        validate(&spec).err().map(|e| e.to_string())
    };
    assert_eq!(check(policy(100, Some("0s"), Some(100.0), Some("1h"))), None);
    assert_eq!(check(policy(3, None, Some(1.0), None)), None);
    assert_eq!(
        check(policy(3, Some("1m"), None, Some("1m"))),
        None,
        "equal is fine"
    );
    assert_eq!(
        check(policy(101, None, None, None)).unwrap(),
        "task \"a\" (tasks[0].retries.limit): 101 retries is more than the limit of 100"
    );
    let disruptions = |d| RetryPolicy {
        disruptions: Some(d),
        ..policy(0, None, None, None)
    };
    assert_eq!(check(disruptions(100)), None);
    assert_eq!(
        check(disruptions(101)).unwrap(),
        "task \"a\" (tasks[0].retries.disruptions): 101 disruptions is more than the limit of 100"
    );
    for factor in [0.99, 100.5, f64::NAN, f64::INFINITY, -2.0] {
        let e = check(policy(1, None, Some(factor), None)).unwrap();
        assert!(
            e.contains("(tasks[0].retries.backoffFactor)") && e.contains("must be between 1 and 100"),
            "{e}"
        );
    }
    assert_eq!(
        check(policy(1, Some("30s"), None, Some("10s"))).unwrap(),
        "task \"a\" (tasks[0].retries.maxDelay): 10s is shorter than delay 30s"
    );
    let e = check(policy(1, Some("x"), None, Some("5"))).unwrap();
    assert!(
        e.contains("(tasks[0].retries.delay)") && e.contains("(tasks[0].retries.maxDelay)"),
        "{e}"
    );
}

#[test]
fn pipeline_level_values() {
    let spec = pipeline().task("a").parallelism(0).build();
    assert_eq!(errors_of(&spec), ["parallelism: must be at least 1"]);
    let spec = PipelineSpec::default();
    assert_eq!(errors_of(&spec), ["tasks: a pipeline needs at least one task"]);
    let spec = fixture::fan_out(MAX_TASKS + 1);
    assert_eq!(
        errors_of(&spec),
        ["tasks: 10001 tasks is more than the limit of 10000"]
    );
    assert!(validate(&fixture::fan_out(MAX_TASKS)).is_ok());
}

#[test]
fn finally_and_main_tasks_do_not_depend_on_each_other() {
    let spec = pipeline()
        .task("a")
        .after(["f"])
        .finally("f")
        .after(["a"])
        .build();
    assert_eq!(
        errors_of(&spec),
        [
            "tasks[0].dependsOn: \"f\" is a finally task; tasks cannot depend on finally tasks",
            "finally[0].dependsOn: finally task cannot depend on \"a\" from tasks: finally tasks run after all of them anyway",
        ]
    );
    // Finally tasks may depend on each other, with any trigger rule.
    let spec = pipeline()
        .task("a")
        .finally("f")
        .finally("g")
        .after(["f"])
        .rule(TriggerRule::AllDone)
        .build();
    assert!(validate(&spec).is_ok());
}

#[test]
fn environment_variable_names() {
    let mut spec = pipeline().task("a").build();
    spec.tasks[0].env = vec![env("A"), env("B"), env("A"), env("")];
    spec.defaults.as_mut().unwrap().env = vec![env("A"), env("B")];
    assert_eq!(
        errors_of(&spec),
        [
            "tasks[0].env[2].name: environment variable \"A\" is set twice",
            "tasks[0].env[3].name: environment variable name is empty"
        ],
        "a task may override a default of the same name"
    );
}

#[test]
fn pool_fields_are_checked_and_priorities_follow_the_weight_rule() {
    let mut spec = pipeline()
        .task("a")
        .task("b")
        .after(["a"])
        .task("c")
        .after(["b"])
        .build();
    spec.tasks[0].pool = Some("GPU pool".into());
    spec.tasks[1].pool_slots = Some(0);
    spec.tasks[2].pool_slots = Some(2);
    assert_eq!(
        errors_of(&spec),
        [
            "tasks[0].pool: \"GPU pool\" is not a valid Pool name: lowercase letters, digits, '-' and '.', at most 253 characters",
            "tasks[1].poolSlots: poolSlots must be at least 1",
            "tasks[2].poolSlots: poolSlots without a pool: set pool on the task or defaults.pool",
        ]
    );

    // A default pool: every task uses it, weights add up downstream (Airflow's default).
    let mut spec = pipeline()
        .task("a")
        .task("b")
        .after(["a"])
        .task("c")
        .after(["b"])
        .build();
    spec.defaults.as_mut().unwrap().pool = Some("gpu".into());
    spec.tasks[1].pool_slots = Some(2);
    spec.tasks[2].priority_weight = Some(10);
    let p = valid(&spec);
    let run_specs: Vec<_> = (0..3)
        .map(|i| crate::engine::resolve::task_run_spec(&p, i))
        .collect();
    let pools: Vec<_> = run_specs
        .iter()
        .map(|s| (s.pool.as_deref(), s.pool_slots, s.priority))
        .collect();
    assert_eq!(
        pools,
        [
            (Some("gpu"), None, Some(12)),
            (Some("gpu"), Some(2), Some(11)),
            (Some("gpu"), None, Some(10)),
        ]
    );
    spec.defaults.as_mut().unwrap().weight_rule = Some(crate::api::WeightRule::Upstream);
    spec.tasks[0].weight_rule = Some(crate::api::WeightRule::Absolute);
    let p = valid(&spec);
    assert_eq!([p.priority(0), p.priority(1), p.priority(2)], [1, 2, 12]);

    // Without a pool, no task carries pool fields.
    let p = valid(&pipeline().task("a").build());
    let plain = crate::engine::resolve::task_run_spec(&p, 0);
    assert_eq!((plain.pool, plain.pool_slots, plain.priority), (None, None, None));
}

/// Artifacts: each input names an artifact a task upstream declares; names, paths and the
/// command `weir exec` needs are checked, every problem naming its task and field.
#[test]
fn artifact_inputs_must_come_from_upstream_declarations() {
    let spec: PipelineSpec = serde_saphyr::from_str(
        r#"
tasks:
  - name: train
    image: busybox
    command: [train]
    artifacts:
      - {name: model, path: /out/model.pkl}
      - {name: model, path: out/relative}
  - name: sibling
    image: busybox
    command: [check]
    inputs: [{from: tasks.train.artifacts.model, path: /in/model.pkl}]
  - name: deploy
    image: busybox
    dependsOn: [sibling]
    inputs:
      - {from: tasks.train.artifacts.model, path: /in/model.pkl}
      - {from: tasks.train.artifacts.weights, path: /in/w}
      - {from: tasks.nope.artifacts.model, path: /in/x}
      - {from: tasks.train.outputs.model, path: /in/../etc}
"#,
    )
    .unwrap();
    let errors = problems(&spec);
    let message = |field: &str| error_at(&errors, field).message.clone();
    assert!(message("tasks[0].artifacts[1]").contains("declared twice"));
    assert!(message("tasks[0].artifacts[1].path").contains("absolute path"));
    let e = error_at(&errors, "tasks[1].inputs[0].from");
    assert_eq!(e.task.as_deref(), Some("sibling"));
    assert!(e.message.contains("not upstream of \"sibling\""), "{e}");
    // deploy reads train's model through sibling, which depends on nothing: not upstream.
    assert!(message("tasks[2].inputs[0].from").contains("not upstream"));
    assert!(message("tasks[2].inputs[1].from").contains("declares no artifact \"weights\""));
    assert!(message("tasks[2].inputs[2].from").contains("no task \"nope\""));
    assert!(message("tasks[2].inputs[3].from").contains("tasks.<task>.artifacts.<name>"));
    assert!(message("tasks[2].command").contains("needs a command"));
    assert!(message("tasks[2].inputs[3].path").contains("without . or .."));

    // Made upstream, the same inputs are fine.
    let ok: PipelineSpec = serde_saphyr::from_str(
        r#"
tasks:
  - name: train
    image: busybox
    command: [train]
    artifacts: [{name: model, path: "/out/{{ run.name }}/model.pkl"}]
  - name: check
    image: busybox
    dependsOn: [train]
    command: [check]
  - name: deploy
    image: busybox
    dependsOn: [check]
    command: [deploy]
    inputs: [{from: tasks.train.artifacts.model, path: /in/model.pkl}]
"#,
    )
    .unwrap();
    assert!(validate(&ok).is_ok(), "{:?}", validate(&ok).err());
}

#[test]
fn an_azure_store_names_its_account_and_only_it_does() {
    let spec = |store: &str| -> PipelineSpec {
        serde_json::from_value(serde_json::json!({
            "tasks": [{"name": "a", "image": "busybox"}],
            "artifactStore": serde_json::from_str::<serde_json::Value>(store).unwrap(),
        }))
        .unwrap()
    };
    let errors = problems(&spec(r#"{"provider": "Azure", "bucket": "models"}"#));
    let e = error_at(&errors, "spec.artifactStore.account");
    assert!(e.message.contains("needs account"), "{e:?}");
    let errors = problems(&spec(r#"{"bucket": "models", "account": "weirdata"}"#));
    let e = error_at(&errors, "spec.artifactStore.account");
    assert!(e.message.contains("Azure stores only"), "{e:?}");
    valid(&spec(
        r#"{"provider": "Azure", "bucket": "models", "account": "weirdata"}"#,
    ));
    valid(&spec(r#"{"provider": "GCS", "bucket": "models"}"#));
}

#[test]
fn sensor_fields_are_checked_with_messages_that_say_what_to_do() {
    let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
        "tasks": [
            {"name": "nothing", "wait": {"pokeInterval": "soon"}},
            {"name": "two", "wait": {"delay": "1m", "asset": {"name": "sales"}}},
            {"name": "container", "image": "busybox", "command": ["true"], "outputs": [{"name": "x"}],
             "wait": {"time": {"offset": "2 hours"}}},
            {"name": "resolved", "wait": {"time": {"at": "2026-12-01T00:00:00Z"}}},
            {"name": "other", "wait": {"pipelineRun": {"pipeline": " ", "logicalDateOffset": "-1d",
             "task": "{{ params.nope }}"}}},
            {"name": "object", "wait": {"object": {"apiVersion": "a/b/c", "kind": "", "name": "x",
             "condition": {"type": "Ready", "status": "true"}, "field": {"path": "status..phase", "value": "1"}}}},
            {"name": "asset", "wait": {"asset": {"name": "-bad name"}}},
        ]
    }))
    .unwrap();
    let text = errors_of(&spec);
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("validate_sensors", text.join("\n"));
    });
}

#[test]
fn a_valid_sensor_of_each_kind() {
    let spec: PipelineSpec = serde_json::from_value(serde_json::json!({
        "params": [{"name": "upstream", "default": "load"}],
        "tasks": [
            {"name": "delay", "wait": {"delay": "1m"}},
            {"name": "time", "wait": {"time": {"from": "dataIntervalEnd", "offset": "-30m"}}},
            {"name": "run", "wait": {"pipelineRun": {"pipeline": "{{ params.upstream }}", "logicalDateOffset": "-24h"}}},
            {"name": "object", "wait": {"pokeInterval": "5s", "object": {"apiVersion": "apps/v1", "kind": "Deployment",
             "name": "model", "condition": {"type": "Available"}}}},
            {"name": "asset", "wait": {"asset": {"name": "warehouse/sales/daily", "since": "runStart"}}},
        ]
    }))
    .unwrap();
    let valid = validate(&spec).expect("valid");
    assert!((0..valid.len()).all(|i| valid.waits(i)));
}

#[test]
fn an_approval_task_runs_no_container_and_keeps_its_timeout_in_approval() {
    let spec: PipelineSpec = serde_saphyr::from_str(
        r#"
defaults: {image: busybox, timeout: 10m}
tasks:
  - name: gate
    image: busybox
    timeout: 1h
    retries: {limit: 2}
    forEach: {items: [a, b]}
    approval: {timeout: soon, onTimeout: Approve}
  - name: bare
    approval: {onTimeout: Approve}
  - name: fine
    approval: {timeout: 24h, onTimeout: Reject, message: "deploy?"}
"#,
    )
    .unwrap();
    let errors = problems(&spec);
    for (field, words) in [
        ("tasks[0].image", "an approval task runs no container"),
        ("tasks[0].timeout", "approval.timeout"),
        ("tasks[0].retries", "not retried"),
        ("tasks[0].forEach", "cannot fan out"),
        ("tasks[0].approval.timeout", ""),
        ("tasks[1].approval.onTimeout", "needs approval.timeout"),
    ] {
        let e = error_at(&errors, field);
        assert!(e.message.contains(words), "{field}: {}", e.message);
    }
    assert!(
        errors.iter().all(|e| e.task.as_deref() != Some("fine")),
        "{errors:#?}"
    );
}
