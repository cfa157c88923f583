//! Golden output of `weir graph` for every example, in every format (snapshots in
//! `tests/snapshots/`; after an intended change, review them with `cargo insta review`, or
//! rerun with `INSTA_UPDATE=always` and read the diff).

use std::path::Path;
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

fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_example_in_every_format() {
    let names = examples();
    assert!(names.len() >= 5, "examples: {names:?}");
    for name in names {
        for format in ["text", "dot", "mermaid"] {
            let file = format!("examples/{name}.yaml");
            let out = weir(&["graph", &file, "--format", format]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "weir graph {file} --format {format}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            insta::with_settings!({ prepend_module_to_snapshot => false, omit_expression => true }, {
                insta::assert_snapshot!(format!("graph_{format}_{name}"), text);
            });
        }
    }
}

#[test]
fn an_invalid_pipeline_is_not_drawn() {
    let out = weir(&["graph", "tests/fixtures/invalid/cycle.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dependency cycle: extract -> transform -> load -> extract"),
        "{err}"
    );
}

#[test]
fn a_file_with_several_pipelines_needs_a_choice() {
    let dir = std::env::temp_dir().join(format!("weir-graph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let two = dir.join("two.yaml");
    let diamond = std::fs::read_to_string(repo().join("examples/diamond.yaml")).unwrap();
    let flaky = std::fs::read_to_string(repo().join("examples/flaky-task.yaml")).unwrap();
    // The Pipelines only: with exactly one PipelineRun, the run would be the choice.
    let pipeline_of = |text: &str| text.split("\n---\n").next().unwrap().to_string();
    std::fs::write(
        &two,
        format!("{}\n---\n{}", pipeline_of(&diamond), pipeline_of(&flaky)),
    )
    .unwrap();
    let out = weir(&["graph", two.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("choose one with --pipeline NAME"), "{err}");
    assert!(err.contains("Pipeline diamond, Pipeline flaky-task"), "{err}");
    let out = weir(&["graph", two.to_str().unwrap(), "--pipeline", "flaky-task"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Pipeline flaky-task: 1 task in 1 step"));
    std::fs::remove_dir_all(&dir).unwrap();
}
