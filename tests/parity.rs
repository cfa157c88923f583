//! Parity: a pipeline behaves the same on a laptop (`weir run`) and in a cluster.
//!
//! Each case (every example, then small pipelines aimed at the risky corners) is applied to
//! the test control plane, where the operator runs it (the node agent runs pods' commands as
//! local processes), and at the same time run by the built `weir run` in a directory of its
//! own. Both results are reduced to the same plain facts — the run's phase and reason, each
//! task's final state, and per task run (fan-out instances included) its phase, its attempts'
//! failure reasons, the failure reason of a failed one and its outputs — and compared key by
//! key, so a failure names exactly what differs.
//!
//! Both sides read the same file: the PipelineRun in it names the run (`weir run --name`, so
//! `WEIR_TASK_RUN` and `{{ run.name }}` agree) and gives its params, which `weir run` takes
//! from the file as the operator does; passing them again with `--param` would hide a runner
//! that ignored the PipelineRun's own.

mod common;

use common::*;
use kube::api::Api;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use weir::api::{FailureReason, PipelineRun, TaskRun, condition_types, labels};
use weir_testenv::TestNamespace;

/// How long every case of a test together may take on the cluster; they take seconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What is compared: `run` → `Failed (TaskFailed)`, `task load` → `UpstreamFailed`,
/// `process[2] phase` → `Failed`, `process[2] reason` → `Error`, `process[2] attempts` →
/// `Error(75) Succeeded`, `process[2] output rows` → `5`.
type Facts = BTreeMap<String, String>;

/// One pipeline to run both ways, and facts it must show besides agreeing (what the case is
/// about, so that two sides broken the same way do not pass).
struct Case {
    name: String,
    yaml: String,
    run: String,
    expect: Vec<(&'static str, &'static str)>,
}

impl Case {
    fn new(name: &str, yaml: String, expect: &[(&'static str, &'static str)]) -> Case {
        let run = run_name(name, &yaml);
        Case {
            name: name.to_string(),
            yaml,
            run,
            expect: expect.to_vec(),
        }
    }
}

/// The name of the file's only PipelineRun (the file must be valid: both sides would refuse
/// it otherwise, and agree for the wrong reason).
fn run_name(case: &str, yaml: &str) -> String {
    let report = weir::manifest::check_text(yaml, case, &weir::manifest::Schemas::new());
    assert!(report.problems.is_empty(), "{case}: {:#?}", report.problems);
    let selected = report.select(None).unwrap_or_else(|e| panic!("{case}: {e}"));
    let run: &PipelineRun = selected
        .run
        .unwrap_or_else(|| panic!("{case} has no PipelineRun"));
    run.metadata.name.clone().expect("the PipelineRun has a name")
}

fn attempt_text(phase: &str, reason: Option<&str>, exit_code: Option<i64>) -> String {
    match (reason, exit_code) {
        // An exit code is part of the reason only for `Error` (what `retryOn` reads).
        (Some("Error"), Some(code)) => format!("Error({code})"),
        (Some(reason), _) => reason.to_string(),
        (None, _) => phase.to_string(),
    }
}

fn unit_label(task: &str, instance: Option<String>) -> String {
    match instance {
        Some(k) => format!("{task}[{k}]"),
        None => task.to_string(),
    }
}

/// `weir run` in a directory of its own; the facts of its `run.json`.
fn run_locally(case: &Case) -> Facts {
    let dir = std::env::temp_dir().join(format!("weir-parity-{}-{}", case.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pipeline.yaml");
    std::fs::write(&file, &case.yaml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command
        .args(["run", "pipeline.yaml", "--plain", "--name", &case.run])
        .current_dir(&dir);
    // What the test runner was started with (WEIR_KUBECONFIG, say) is not the tasks' business.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("WEIR_") {
            command.env_remove(name);
        }
    }
    let out = command.output().expect("running weir run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let record_path: PathBuf = dir.join(".weir-run").join(&case.run).join("run.json");
    let record: serde_json::Value = std::fs::read_to_string(&record_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            panic!(
                "{}: weir run left no readable {} (exit {:?}):\n{text}",
                case.name,
                record_path.display(),
                out.status.code()
            )
        });
    let facts = local_facts(&record);
    // The exit code says the same as the record (0 exactly when the run succeeded).
    let succeeded = record["phase"] == "Succeeded";
    assert_eq!(
        out.status.code(),
        Some(if succeeded { 0 } else { 1 }),
        "{}: exit code vs run.json phase {}:\n{text}",
        case.name,
        record["phase"]
    );
    let _ = std::fs::remove_dir_all(&dir);
    facts
}

fn local_facts(record: &serde_json::Value) -> Facts {
    let str_of = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut facts = Facts::new();
    facts.insert(
        "run".into(),
        format!("{} ({})", str_of(&record["phase"]), str_of(&record["reason"])),
    );
    for (task, state) in record["states"].as_object().expect("run.json has states") {
        facts.insert(format!("task {task}"), str_of(state));
    }
    for unit in record["taskRuns"].as_array().expect("run.json has taskRuns") {
        let label = unit_label(
            &str_of(&unit["task"]),
            unit["instance"].as_u64().map(|k| k.to_string()),
        );
        let phase = str_of(&unit["phase"]);
        let attempts: Vec<&serde_json::Value> = unit["attempts"].as_array().into_iter().flatten().collect();
        let texts: Vec<String> = attempts
            .iter()
            .map(|a| attempt_text(&str_of(&a["phase"]), a["reason"].as_str(), a["exitCode"].as_i64()))
            .collect();
        facts.insert(format!("{label} attempts"), texts.join(" "));
        if phase == "Failed" {
            let last = attempts.last().map(|a| str_of(&a["reason"])).unwrap_or_default();
            facts.insert(format!("{label} reason"), last);
        }
        facts.insert(format!("{label} phase"), phase);
        for (key, value) in unit["outputs"].as_object().into_iter().flatten() {
            facts.insert(format!("{label} output {key}"), output_fact(key, str_of(value)));
        }
    }
    facts
}

/// The PipelineRun once finished, or as it is after `RUN_TIMEOUT` (a run stuck on the
/// cluster is a difference to report with the rest, not a reason to stop comparing).
async fn settled_run(ns: &TestNamespace, run_name: &str, deadline: Instant) -> (PipelineRun, bool) {
    let api: Api<PipelineRun> = ns.api();
    loop {
        let run = api
            .get(run_name)
            .await
            .unwrap_or_else(|e| panic!("PipelineRun {run_name}: {e}"));
        let done = run
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_terminal());
        if done || Instant::now() >= deadline {
            return (run, done);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The finished PipelineRun and its TaskRuns, as facts.
async fn cluster_facts(ns: &TestNamespace, run_name: &str, deadline: Instant) -> Facts {
    let (run, done) = settled_run(ns, run_name, deadline).await;
    let mut facts = Facts::new();
    let status = run.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("<none>".to_string(), |p| format!("{p:?}"));
    let reason = weir::api::condition::find(&status.conditions, condition_types::SUCCEEDED)
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    let outcome = if done {
        format!("{phase} ({reason})")
    } else {
        format!(
            "{phase} ({reason}), not finished after {}s",
            RUN_TIMEOUT.as_secs()
        )
    };
    facts.insert("run".into(), outcome);
    assert_eq!(
        status.tasks_omitted, None,
        "{run_name}: the summary left tasks out"
    );
    for task in &status.tasks {
        facts.insert(format!("task {}", task.name), task.phase.as_str().to_string());
    }
    for tr in task_runs_of(ns, run_name).await {
        facts.extend(task_run_facts(&tr));
    }
    facts
}

fn task_run_facts(tr: &TaskRun) -> Facts {
    let label = unit_label(
        &tr.spec.task_name,
        tr.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::INSTANCE))
            .cloned(),
    );
    let mut facts = Facts::new();
    let status = tr.status.clone().unwrap_or_default();
    let phase = status.phase.map(|p| p.as_str()).unwrap_or("<none>").to_string();
    let texts: Vec<String> = status
        .attempts
        .iter()
        .map(|a| {
            attempt_text(
                &format!("{:?}", a.phase),
                a.reason.map(FailureReason::as_str),
                a.exit_code.map(i64::from),
            )
        })
        .collect();
    facts.insert(format!("{label} attempts"), texts.join(" "));
    if phase == "Failed" {
        let reason = weir::api::condition::find(&status.conditions, condition_types::SUCCEEDED)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        facts.insert(format!("{label} reason"), reason);
    }
    facts.insert(format!("{label} phase"), phase);
    for (key, value) in status.outputs {
        facts.insert(format!("{label} output {key}"), output_fact(&key, value));
    }
    facts
}

/// Every key where the two sides differ, as `case: key: local X, cluster Y`.
fn differences(case: &str, local: &Facts, cluster: &Facts) -> Vec<String> {
    let shown = |v: Option<&String>| v.map_or("<absent>".to_string(), |v| format!("{v:?}"));
    local
        .keys()
        .chain(cluster.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|key| local.get(*key) != cluster.get(*key))
        .map(|key| {
            format!(
                "{case}: {key}: local {}, cluster {}",
                shown(local.get(key)),
                shown(cluster.get(key))
            )
        })
        .collect()
}

/// An output as compared: an artifact's entry by its size and digest (its key names the
/// namespace and store layout, which differ between the two sides by design).
fn output_fact(key: &str, value: String) -> String {
    if !key.starts_with("weir.artifact.") {
        return value;
    }
    match serde_json::from_str::<weir::api::ArtifactRef>(&value) {
        Ok(r) => format!("{} bytes, sha256 {}", r.size, r.sha256),
        Err(e) => format!("not an artifact ({e}): {value}"),
    }
}

/// Runs every case both ways at once (one namespace and operator for all of them, the local
/// runs in parallel) and fails with every difference and unmet expectation found.
async fn assert_same_both_ways(prefix: &str, cases: Vec<Case>) {
    let started = Instant::now();
    // A store for the cases with artifacts (the local side keeps them in its run directory).
    let s3 = common::s3::S3Server::start(prefix);
    let (ns, _op) = common::s3::setup_with_store(prefix, &s3, common::s3::SECRET_KEY).await;
    for case in &cases {
        ns.apply(&case.yaml);
    }
    let cases: Vec<std::sync::Arc<Case>> = cases.into_iter().map(std::sync::Arc::new).collect();
    let local_runs: Vec<_> = cases
        .iter()
        .map(|case| {
            let case = case.clone();
            tokio::task::spawn_blocking(move || run_locally(&case))
        })
        .collect();
    let mut problems = Vec::new();
    let mut compared = Vec::new();
    let deadline = Instant::now() + RUN_TIMEOUT;
    for (case, local) in cases.iter().zip(local_runs) {
        let cluster = cluster_facts(&ns, &case.run, deadline).await;
        let local = local
            .await
            .unwrap_or_else(|e| panic!("{}: the local run: {e}", case.name));
        problems.extend(differences(&case.name, &local, &cluster));
        for (key, want) in &case.expect {
            for (side, facts) in [("local", &local), ("cluster", &cluster)] {
                if facts.get(*key).map(String::as_str) != Some(*want) {
                    problems.push(format!(
                        "{}: {key}: expected {want:?}, {side} has {:?}",
                        case.name,
                        facts.get(*key)
                    ));
                }
            }
        }
        compared.push(format!("{}: {} facts", case.name, cluster.len()));
        if !problems.is_empty() {
            eprintln!(
                "---- {} ----\nlocal: {local:#?}\ncluster: {cluster:#?}",
                case.name
            );
        }
    }
    eprintln!(
        "{prefix}: compared {} in {:.1}s",
        compared.join(", "),
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "local and cluster runs differ:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn every_example_behaves_the_same_locally_and_in_the_cluster() {
    let names = example_names();
    assert!(names.len() >= 6, "examples/: {names:?}");
    let cases = names
        .iter()
        .map(|name| Case::new(name, example(name), &[("run", "Succeeded (Succeeded)")]))
        .collect();
    assert_same_both_ways("parity-examples", cases).await;
}

/// A failing task: its downstream task is upstream-failed, an alert (`OneFailed`) runs and
/// one with nothing to alert about is skipped, a task that reads the failed task's output
/// fails before it starts, and the `finally` task runs and reads the missing output as empty.
/// (In brackets: the test control plane, Kubernetes 1.20.2 built with Go 1.19, refuses an
/// empty string inside a list of a custom resource, kubernetes/kubernetes#99804, so an env
/// value rendered empty would stop the TaskRun from being created at all.)
const ALERTING: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: alerting}
spec:
  defaults: {image: busybox}
  tasks:
    - name: extract
      command: [sh, -c, 'echo "rows=7" > "$WEIR_OUTPUTS"']
      outputs: [{name: rows}]
    - name: check
      dependsOn: [extract]
      command: [sh, -c, 'echo "3 bad rows" >&2; exit 3']
      outputs: [{name: verdict}]
    - name: load
      dependsOn: [check]
      command: [sh, -c, 'echo loading']
    - name: alert
      dependsOn: [extract, check]
      triggerRule: OneFailed
      command: [sh, -c, 'echo "sent=page" > "$WEIR_OUTPUTS"']
      outputs: [{name: sent}]
    - name: all-clear
      dependsOn: [extract]
      triggerRule: OneFailed
      command: [sh, -c, 'echo "nothing failed upstream"']
    - name: summary
      dependsOn: [check]
      triggerRule: AllDone
      command: [sh, -c, 'echo "verdict: {{ tasks.check.outputs.verdict }}"']
  finally:
    - name: cleanup
      env:
        - {name: ROWS, value: "{{ tasks.extract.outputs.rows }}"}
        - {name: VERDICT, value: "[{{ tasks.check.outputs.verdict }}]"}
      command: [sh, -c, 'echo "seen=rows $ROWS verdict $VERDICT" > "$WEIR_OUTPUTS"']
      outputs: [{name: seen}]
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: alerting-run}
spec:
  pipelineRef: {name: alerting}
"#;

/// `when` conditions: one false (the task and its downstream are skipped), one true; a
/// `NoneFailed` task runs after a skipped one.
const GATED: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: gated}
spec:
  params: [{name: mode, default: live}]
  defaults: {image: busybox}
  tasks:
    - name: decide
      command: [sh, -c, 'echo "mode=$1" > "$WEIR_OUTPUTS"', sh, "{{ params.mode }}"]
      outputs: [{name: mode}]
    - name: publish
      dependsOn: [decide]
      when: [{input: "{{ tasks.decide.outputs.mode }}", operator: Equals, values: [live]}]
      command: [sh, -c, 'echo published']
    - name: notify
      dependsOn: [publish]
      command: [sh, -c, 'echo notified']
    - name: rehearse
      dependsOn: [decide]
      when: [{input: "{{ tasks.decide.outputs.mode }}", operator: NotIn, values: [live, prod]}]
      command: [sh, -c, 'echo "rehearsed=$1" > "$WEIR_OUTPUTS"', sh, "{{ tasks.decide.outputs.mode }}"]
      outputs: [{name: rehearsed}]
    - name: tally
      dependsOn: [publish, rehearse]
      triggerRule: NoneFailed
      command: [sh, -c, 'echo "done=yes" > "$WEIR_OUTPUTS"']
      outputs: [{name: done}]
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: gated-dry}
spec:
  pipelineRef: {name: gated}
  params: {mode: dry}
"#;

/// Fan-out over a List param and over a matrix (one list from a param, one from an
/// output), fan-in of both, and a fan-out over an empty list (skipped).
const FANNING: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: fanning}
spec:
  params:
    - {name: parts, type: List}
    - {name: nothing, type: List, default: []}
  parallelism: 3
  defaults: {image: busybox}
  tasks:
    - name: days
      command: [sh, -c]
      args:
        - |
          echo 'days=["mon","tue"]' > "$WEIR_OUTPUTS"
      outputs: [{name: days}]
    - name: size
      forEach: {items: "{{ params.parts }}"}
      command: [sh, -c, 'echo "len=${#1}" > "$WEIR_OUTPUTS"', sh, "{{ item }}"]
      outputs: [{name: len}]
    - name: grid
      dependsOn: [days]
      forEach:
        matrix:
          part: "{{ params.parts }}"
          day: "{{ tasks.days.outputs.days }}"
      command: [sh, -c, 'echo "cell=$1/$2" > "$WEIR_OUTPUTS"', sh, "{{ item.part }}", "{{ item.day }}"]
      outputs: [{name: cell}]
    - name: collect
      dependsOn: [size, grid]
      env:
        - {name: LENS, value: "{{ tasks.size.outputs.len }}"}
        - {name: CELLS, value: "{{ tasks.grid.outputs.cell }}"}
      command: [sh, -c, 'printf "lens=%s\ncells=%s\n" "$LENS" "$CELLS" > "$WEIR_OUTPUTS"']
      outputs: [{name: lens}, {name: cells}]
    - name: none
      forEach: {items: "{{ params.nothing }}"}
      command: [sh, -c, 'echo "$1"', sh, "{{ item }}"]
    - name: after-none
      dependsOn: [none]
      command: [sh, -c, 'echo after']
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: fanning-run}
spec:
  pipelineRef: {name: fanning}
  params: {parts: [a, bb, ccc]}
"#;

/// One instance of a fan-out fails: the others still run, the task fails, a downstream task
/// is upstream-failed and an `AllDone` one reads the outputs of the instances that succeeded.
const PICKY: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: picky}
spec:
  defaults: {image: busybox}
  tasks:
    - name: check
      forEach: {items: [a, bb, ccc, dddd]}
      command: [sh, -c, '[ ${#1} -ne 3 ] || exit 4; echo "ok=$1" > "$WEIR_OUTPUTS"', sh, "{{ item }}"]
      outputs: [{name: ok}]
    - name: merge
      dependsOn: [check]
      command: [sh, -c, 'echo merged']
    - name: salvage
      dependsOn: [check]
      triggerRule: AllDone
      env: [{name: OKS, value: "{{ tasks.check.outputs.ok }}"}]
      command: [sh, -c, 'echo "oks=$OKS" > "$WEIR_OUTPUTS"']
      outputs: [{name: oks}]
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: picky-run}
spec:
  pipelineRef: {name: picky}
"#;

/// Declared outputs that are missing (some written, none written; retried), and outputs
/// given as a JSON object with non-string values.
const FORGETFUL: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: forgetful}
spec:
  defaults: {image: busybox}
  tasks:
    - name: count
      command: [sh, -c, 'echo "other=1" > "$WEIR_OUTPUTS"']
      outputs: [{name: rows}]
      retries: {limit: 1, delay: 500ms}
    - name: report
      dependsOn: [count]
      command: [sh, -c, 'echo "{{ tasks.count.outputs.rows }} rows"']
    - name: silent
      command: [sh, -c, 'true']
      outputs: [{name: rows}]
    - name: json
      command: [sh, -c]
      args:
        - |
          echo '{"rows": 5, "ok": true, "extra": "kept?"}' > "$WEIR_OUTPUTS"
      outputs: [{name: rows}, {name: ok}]
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: forgetful-run}
spec:
  pipelineRef: {name: forgetful}
"#;

/// Retries: success on the third attempt, a limit reached, an exit code never retried, a
/// reason not retried, and an attempt past its timeout.
const RETRYING: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: retrying}
spec:
  defaults: {image: busybox}
  tasks:
    - name: third-time
      command: [sh, -c, '[ "$WEIR_ATTEMPT" -ge 3 ] || exit 75; echo "attempt=$WEIR_ATTEMPT" > "$WEIR_OUTPUTS"']
      outputs: [{name: attempt}]
      retries: {limit: 4, delay: 500ms, backoffFactor: 2}
    - name: gives-up
      command: [sh, -c, 'exit 9']
      retries: {limit: 1, delay: 500ms}
    - name: bad-input
      command: [sh, -c, 'exit 2']
      retries: {limit: 3, delay: 500ms, retryOn: {exceptExitCodes: [2]}}
    - name: wrong-reason
      command: [sh, -c, 'exit 1']
      retries: {limit: 3, delay: 500ms, retryOn: {reasons: [OOMKilled]}}
    - name: slow
      command: [sh, -c, 'sleep 40']
      timeout: 1s
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {name: retrying-run}
spec:
  pipelineRef: {name: retrying}
"#;

#[tokio::test]
async fn the_risky_corners_behave_the_same_locally_and_in_the_cluster() {
    let cases = vec![
        Case::new(
            "alerting",
            ALERTING.to_string(),
            &[
                ("run", "Failed (TaskFailed)"),
                ("task check", "Failed"),
                ("check reason", "Error"),
                ("task load", "UpstreamFailed"),
                ("task alert", "Succeeded"),
                ("task all-clear", "Skipped"),
                ("task summary", "Failed"),
                ("task cleanup", "Succeeded"),
                ("cleanup output seen", "rows 7 verdict []"),
            ],
        ),
        // The example with a check failing: the alert handles it and the run succeeds.
        Case::new(
            "data-quality-failing",
            example("data-quality").replace("value: none", "value: check-duplicates"),
            &[
                ("run", "Succeeded (Succeeded)"),
                ("task check-duplicates", "Failed"),
                ("check-duplicates reason", "Error"),
                ("task alert", "Succeeded"),
                ("task report", "Succeeded"),
            ],
        ),
        Case::new(
            "gated",
            GATED.to_string(),
            &[
                ("run", "Succeeded (Succeeded)"),
                ("task publish", "Skipped"),
                ("task notify", "Skipped"),
                ("task rehearse", "Succeeded"),
                ("rehearse output rehearsed", "dry"),
                ("task tally", "Succeeded"),
            ],
        ),
        Case::new(
            "fanning",
            FANNING.to_string(),
            &[
                ("run", "Succeeded (Succeeded)"),
                ("size[2] output len", "3"),
                ("task grid", "Succeeded"),
                ("task collect", "Succeeded"),
                ("task none", "Skipped"),
                ("task after-none", "Skipped"),
            ],
        ),
        Case::new(
            "picky",
            PICKY.to_string(),
            &[
                ("run", "Failed (TaskFailed)"),
                ("task check", "Failed"),
                ("check[2] attempts", "Error(4)"),
                ("check[3] phase", "Succeeded"),
                ("task merge", "UpstreamFailed"),
                ("task salvage", "Succeeded"),
            ],
        ),
        Case::new(
            "forgetful",
            FORGETFUL.to_string(),
            &[
                ("run", "Failed (TaskFailed)"),
                ("count attempts", "OutputError OutputError"),
                ("count reason", "OutputError"),
                ("task report", "UpstreamFailed"),
                ("silent reason", "OutputError"),
                ("json output rows", "5"),
            ],
        ),
        Case::new(
            "retrying",
            RETRYING.to_string(),
            &[
                ("run", "Failed (TaskFailed)"),
                ("third-time attempts", "Error(75) Error(75) Succeeded"),
                ("third-time output attempt", "3"),
                ("gives-up attempts", "Error(9) Error(9)"),
                ("bad-input attempts", "Error(2)"),
                ("wrong-reason attempts", "Error(1)"),
                ("slow reason", "DeadlineExceeded"),
            ],
        ),
    ];
    assert_same_both_ways("parity-corners", cases).await;
}

/// A fan-out whose second instance's spec cannot be resolved (its item, repeated in `args`,
/// makes the spec larger than the 512 KiB Weir allows), while the first resolves. Such a
/// spec is refused (docs/concepts.md, Fan-out): the task fails, both ways, and no instance
/// runs its templates unrendered. Only the task's state is expected, not how the instance
/// fails: refusing the instance and failing the task before it starts are both right.
#[tokio::test]
async fn a_fan_out_instance_whose_spec_cannot_be_resolved_fails_both_ways() {
    let big = "x".repeat(6000);
    let yaml = format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: oversized}}
spec:
  params: [{{name: parts, type: List}}]
  defaults: {{image: busybox}}
  tasks:
    - name: process
      forEach: {{items: "{{{{ params.parts }}}}"}}
      command: [sh, -c, 'echo "len=${{#1}}" > "$WEIR_OUTPUTS"', sh, "{repeated}"]
      outputs: [{{name: len}}]
    - name: after
      dependsOn: [process]
      command: [sh, -c, 'echo after']
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: oversized-run}}
spec:
  pipelineRef: {{name: oversized}}
  params: {{parts: [a, {big}]}}
"#,
        repeated = "{{ item }}".repeat(100),
    );
    assert_same_both_ways(
        "parity-oversized",
        vec![Case::new(
            "oversized",
            yaml,
            &[
                ("run", "Failed (TaskFailed)"),
                ("task process", "Failed"),
                ("task after", "UpstreamFailed"),
            ],
        )],
    )
    .await;
}
