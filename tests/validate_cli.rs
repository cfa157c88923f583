//! `weir validate` as people and pre-commit hooks use it: the built binary on the examples
//! (all valid) and on `tests/fixtures/invalid/` (each file broken in one way, whose message
//! must name it, with its line).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("running weir")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_examples_are_valid() {
    let out = weir(&["validate", "examples"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.ends_with(": all valid\n"), "{text}");
}

/// Each broken file, and what its message must say (with the line it points at).
const BROKEN: &[(&str, &str)] = &[
    (
        "bad-cron.yaml:8:11:",
        "spec.schedule.cron: \"61 2 * * *\" is not a cron expression",
    ),
    (
        "bad-duration.yaml:11:16:",
        "spec.tasks[0].timeout: task \"backup\": \"5d\" is not a duration: unknown unit \"d\"",
    ),
    (
        "bad-template.yaml:13:25:",
        "{{ params.regoin }}: no parameter \"regoin\" is declared",
    ),
    (
        "bad-trigger-rule.yaml:14:20:",
        "spec.tasks[1].triggerRule: \"AllDOne\" is not one of AllSucceeded, AllDone, AllFailed, OneSucceeded, OneFailed, NoneFailed (did you mean \"AllDone\"?)",
    ),
    (
        "bad-yaml.yaml:11:14:",
        "invalid YAML: illegal placement of ':' indicator",
    ),
    (
        "cycle.yaml:11:18:",
        "dependency cycle: extract -> transform -> load -> extract",
    ),
    (
        "missing-image.yaml:8:7:",
        "spec.tasks[0].image: task \"extract\": no image: set image on the task or defaults.image",
    ),
    (
        "deadlines-and-email.yaml:8:32:",
        "spec.deadline.from: TaskStart is for a task's deadline (tasks[].deadline)",
    ),
    (
        "deadlines-and-email.yaml:17:14:",
        "spec.notifications[0].email.to[0]: \"oncall\" is not an email address",
    ),
    (
        "name-too-long.yaml:8:13:",
        "name is 70 characters; at most 63 fit in a Kubernetes name",
    ),
    (
        "pool-slots.yaml:22:18:",
        "spec.tasks[1].poolSlots: task \"evaluate\": poolSlots must be at least 1",
    ),
    (
        "pool-slots.yaml:9:1:",
        "spec.tasks[0].poolSlots: task \"train\": takes 2 slot(s) of pool \"gpu\", which has only 1: it would wait until the pool is made larger",
    ),
    (
        "typo-field.yaml:13:7:",
        "spec.tasks[1].dependOn: unknown field \"dependOn\" (did you mean \"dependsOn\"?)",
    ),
    (
        "unknown-dependency.yaml:13:19:",
        "unknown task \"tranform\" (did you mean \"transform\"?)",
    ),
    (
        "wrong-types.yaml:13:18:",
        "spec.tasks[0].env[0].value: expected a string, got the number 500 (put it in quotes to make it a string)",
    ),
    (
        "wrong-types.yaml:15:16:",
        "spec.tasks[0].retries.limit: expected an integer, got the string \"three\"",
    ),
];

#[test]
fn each_broken_file_is_named_with_its_problem_and_line() {
    let out = weir(&["validate", "tests/fixtures/invalid"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (at, message) in BROKEN {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("tests/fixtures/invalid/{at}")))
            .unwrap_or_else(|| panic!("no problem reported at {at}:\n{text}"));
        assert!(
            line.contains(message),
            "at {at}, expected {message:?} in:\n{line}"
        );
    }
    // Every file of the directory is reported, none is passed over.
    let files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures/invalid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(
            text.contains(&format!("tests/fixtures/invalid/{name}:")),
            "{name} is not reported:\n{text}"
        );
    }
}

#[test]
fn every_problem_of_a_file_is_reported_not_just_the_first() {
    let out = weir(&["validate", "tests/fixtures/invalid/many-problems.yaml"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let expected = [
        "many-problems.yaml:7:3: Pipeline many-problems: spec.paralelism: unknown field \"paralelism\" (did you mean \"parallelism\"?)",
        "many-problems.yaml:9:13: Pipeline many-problems: spec.tasks[0].name: task \"Extract\": name must be lowercase letters",
        "many-problems.yaml:14:19: Pipeline many-problems: spec.tasks[1].dependsOn: task \"load\": unknown task \"transform\"",
        "many-problems.yaml:15:16: Pipeline many-problems: spec.tasks[1].timeout: expected a string, got the number 10",
        "many-problems.yaml:23:3: PipelineRun many-problems-run: spec: pipelineRef or pipelineSpec is required",
        "many-problems.yaml:23:12: PipelineRun many-problems-run: spec.timeout: \"2d\" is not a duration",
    ];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected.len() + 1, "{text}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(line.contains(want), "expected {want:?} in:\n{line}");
    }
    assert_eq!(lines.last(), Some(&"1 file, 2 objects: 6 problems in 1 file"));
}

#[test]
fn valid_and_broken_files_together_fail_and_name_only_the_broken() {
    let out = weir(&[
        "validate",
        "examples/diamond.yaml",
        "tests/fixtures/invalid/cycle.yaml",
        "examples/flaky-task.yaml",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("diamond.yaml"), "{text}");
    assert!(text.contains("cycle.yaml:11:18:"), "{text}");
    assert!(
        text.ends_with("3 files, 5 objects: 1 problem in 1 file\n"),
        "{text}"
    );
}

#[test]
fn json_output_is_for_tools() {
    let out = weir(&[
        "validate",
        "--output",
        "json",
        "tests/fixtures/invalid",
        "examples/diamond.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(doc["valid"], false);
    let problems = doc["problems"].as_array().unwrap();
    let typo = problems
        .iter()
        .find(|p| p["file"] == "tests/fixtures/invalid/typo-field.yaml")
        .unwrap();
    assert_eq!(typo["line"], 13);
    assert_eq!(typo["column"], 7);
    assert_eq!(typo["kind"], "Pipeline");
    assert_eq!(typo["name"], "typo-field");
    assert_eq!(typo["source"], "schema");
    assert_eq!(typo["path"], "spec.tasks[1].dependOn");
    let cycle = problems
        .iter()
        .find(|p| p["file"] == "tests/fixtures/invalid/cycle.yaml")
        .unwrap();
    assert_eq!(cycle["source"], "engine");
    assert_eq!(cycle["task"], "extract");
    let files = doc["files"].as_array().unwrap();
    let diamond = files
        .iter()
        .find(|f| f["file"] == "examples/diamond.yaml")
        .unwrap();
    assert_eq!(diamond["valid"], true);
    assert_eq!(diamond["objects"].as_array().unwrap().len(), 2);
}

#[test]
fn a_missing_file_is_a_problem_not_a_crash() {
    let out = weir(&["validate", "no/such/file.yaml"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("no/such/file.yaml: cannot read:"), "{text}");
}

/// A pre-commit hook runs it on a whole repository: hundreds of files in one call, one
/// summary line.
#[test]
fn hundreds_of_files_in_one_call() {
    let dir = std::env::temp_dir().join(format!("weir-validate-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = std::fs::read_to_string(repo().join("examples/partitioned-etl.yaml")).unwrap();
    for i in 0..500 {
        let text = example.replace("partitioned-etl", &format!("partitioned-etl-{i}"));
        std::fs::write(dir.join(format!("p{i:03}.yaml")), text).unwrap();
    }
    // Speed is measured, not asserted here (docs/local-runner.md has the figure): on a
    // shared machine a wall-clock limit fails for reasons that are not Weir's.
    let out = weir(&["validate", dir.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.ends_with("500 files, 1000 objects: all valid\n"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
